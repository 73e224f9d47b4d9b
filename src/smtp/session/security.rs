//! AUTH and STARTTLS (SPEC "Authentication" and "TLS"): what EHLO offers,
//! what MAIL needs first, the SASL exchange as values, and the session
//! after the handshake.

use super::{AuthPolicy, Session, State, Step, Tls};
use crate::smtp::auth::{self, AUTH_LINE_MAX, Credentials, Exchange, Outcome};
use crate::smtp::command::COMMAND_READ_MAX;
use crate::smtp::line::LineEnd;
use crate::smtp::reply::Reply;

impl Session {
    /// How long a line the connection should read before skipping: AUTH
    /// lines and SASL responses may be 12288 octets (RFC 4954 §4).
    pub fn line_max(&self) -> usize {
        if self.security.auth == AuthPolicy::Off {
            COMMAND_READ_MAX
        } else {
            AUTH_LINE_MAX
        }
    }

    /// Whether `line`, about to be fed, carries credentials (an AUTH
    /// command or a SASL response): never to be logged.
    pub fn secret(&self, line: &[u8]) -> bool {
        matches!(self.state, State::Auth(_)) || crate::smtp::command::is_auth(line)
    }

    /// The user of a successful AUTH, if any (for the tests; storage gets
    /// it through `Envelope::user`).
    #[cfg(test)]
    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// After the handshake the session is as after the greeting (RFC 3207
    /// §4.2): no HELO/EHLO, no transaction, no AUTH.
    pub fn tls_started(&mut self) {
        self.security.tls = Tls::Active;
        self.helo = None;
        self.state = State::Idle;
        self.user = None;
    }

    /// The answer to `Step::Authenticate`: `ok` when the credentials
    /// passed. The password goes out of memory here.
    pub fn authenticated(&mut self, credentials: Credentials, ok: bool) -> Step {
        if ok {
            self.user = Some(credentials.user);
            Step::Reply(Reply::auth_ok())
        } else {
            self.error(Reply::auth_invalid())
        }
    }

    pub(super) fn extensions(&self, mut ehlo: Reply) -> Reply {
        if self.security.tls == Tls::Available {
            ehlo.lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            ehlo.lines.push("AUTH PLAIN LOGIN".into());
        }
        ehlo
    }

    fn auth_offered(&self) -> bool {
        let s = &self.security;
        let tls = s.tls == Tls::Active;
        let allowed_here = tls || !s.tls_required; // --tls-required: after STARTTLS
        s.auth != AuthPolicy::Off && allowed_here && (tls || self.loopback || s.auth_insecure)
    }

    /// What MAIL needs first: STARTTLS under `--tls-required`, AUTH with
    /// a password file.
    pub(super) fn mail_refusal(&self) -> Option<Reply> {
        let s = &self.security;
        if s.tls_required && s.tls != Tls::Active {
            Some(Reply::tls_first())
        } else if s.auth == AuthPolicy::Required && self.user.is_none() {
            Some(Reply::auth_required())
        } else {
            None
        }
    }

    pub(super) fn on_starttls(&mut self, arg: &str) -> Step {
        let refusal = match self.security.tls {
            Tls::Off => Reply::not_implemented(),
            _ if !arg.is_empty() => Reply::syntax("STARTTLS takes no argument"),
            Tls::Active => Reply::bad_sequence("TLS already active"),
            Tls::Available if self.helo.is_none() => Reply::bad_sequence("send HELO/EHLO first"),
            Tls::Available if !matches!(self.state, State::Idle) => {
                Reply::bad_sequence("MAIL transaction in progress")
            }
            Tls::Available => return Step::StartTls(Reply::tls_ready()),
        };
        self.error(refusal)
    }

    pub(super) fn on_auth(&mut self, args: &str) -> Step {
        let s = self.security;
        let refusal = if s.auth == AuthPolicy::Off {
            Reply::not_implemented()
        } else if !self.helo.as_ref().is_some_and(|g| g.esmtp) {
            Reply::bad_sequence("send EHLO first")
        } else if self.user.is_some() {
            Reply::bad_sequence("already authenticated")
        } else if !matches!(self.state, State::Idle) {
            Reply::bad_sequence("MAIL transaction in progress")
        } else if s.tls_required && s.tls != Tls::Active {
            Reply::tls_first()
        } else if !self.auth_offered() {
            Reply::encryption_required()
        } else {
            return self.exchange(auth::start(args));
        };
        self.error(refusal)
    }

    pub(super) fn sasl_response(&mut self, exchange: Exchange, piece: &[u8], end: LineEnd) -> Step {
        if matches!(end, LineEnd::TooLong | LineEnd::Cut) || piece.len() > AUTH_LINE_MAX {
            return self.error(Reply::line_too_long());
        }
        let text = &piece[..piece.len() - end.terminator_len(piece)];
        self.exchange(auth::respond(exchange, text))
    }

    fn exchange(&mut self, outcome: Outcome) -> Step {
        match outcome {
            Outcome::Challenge(reply, next) => {
                self.state = State::Auth(next);
                Step::Reply(reply)
            }
            Outcome::Done(credentials) => Step::Authenticate(credentials),
            Outcome::Fail(reply) => self.error(reply),
        }
    }
}

/// RFC 3848: SMTP, ESMTP or UTF8SMTP, with `S` under TLS and `A` after AUTH.
pub(super) fn protocol(esmtp: bool, utf8: bool, tls: bool, auth: bool) -> &'static str {
    match (esmtp, utf8, tls, auth) {
        (false, _, false, _) => "SMTP",
        (false, _, true, _) => "SMTPS",
        (true, false, false, false) => "ESMTP",
        (true, false, false, true) => "ESMTPA",
        (true, false, true, false) => "ESMTPS",
        (true, false, true, true) => "ESMTPSA",
        (true, true, false, false) => "UTF8SMTP",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, true, true) => "UTF8SMTPSA",
    }
}

#[cfg(test)]
mod tests {
    // SPEC "Authentication" and "TLS": every state rule, with byte strings.
    use super::{AUTH_LINE_MAX, COMMAND_READ_MAX, protocol};
    use crate::smtp::session::*;
    use crate::smtp::transcript::{limits, run};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn session(loopback: bool, security: Security) -> Session {
        Session::new("mx.test", limits(), loopback).secured(security)
    }

    fn auth(policy: AuthPolicy) -> Security {
        Security {
            auth: policy,
            ..Security::default()
        }
    }

    fn tls(required: bool) -> Security {
        Security {
            tls: Tls::Available,
            tls_required: required,
            auth: AuthPolicy::Optional,
            auth_insecure: false,
        }
    }

    /// The wire replies, one string per reply's last line.
    fn replies(s: &mut Session, input: &[u8]) -> Vec<String> {
        let out = run(s, input, &[1], 64); // one byte a read: never pipelined
        out.replies
            .split_terminator("\r\n")
            .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
            .map(str::to_string)
            .collect()
    }

    fn plain(user: &str, pw: &str) -> String {
        STANDARD.encode(format!("\0{user}\0{pw}"))
    }

    #[test]
    fn ehlo_offers_auth_to_loopback_tls_or_insecure_only() {
        let ehlo = |loopback, sec| {
            let mut s = session(loopback, sec);
            run(&mut s, b"EHLO c\r\n", &[], 64).replies
        };
        assert!(ehlo(true, auth(AuthPolicy::Optional)).ends_with("250 AUTH PLAIN LOGIN\r\n"));
        assert!(!ehlo(false, auth(AuthPolicy::Optional)).contains("AUTH"));
        let insecure = Security {
            auth_insecure: true,
            ..auth(AuthPolicy::Optional)
        };
        assert!(ehlo(false, insecure).contains("AUTH PLAIN LOGIN"));
        let active = Security {
            tls: Tls::Active,
            ..auth(AuthPolicy::Optional)
        };
        assert!(ehlo(false, active).contains("AUTH PLAIN LOGIN"));
        assert!(!ehlo(true, Security::default()).contains("AUTH"));
        assert!(!ehlo(true, Security::default()).contains("STARTTLS"));
    }

    #[test]
    fn auth_refusals_in_order() {
        let mut s = session(true, auth(AuthPolicy::Optional));
        let got = replies(
            &mut s,
            format!(
                "AUTH PLAIN {p}\r\nHELO c\r\nAUTH PLAIN {p}\r\nEHLO c\r\nMAIL FROM:<a@x>\r\nAUTH PLAIN {p}\r\nRSET\r\n\
                 AUTH CRAM-MD5\r\nAUTH\r\nAUTH PLAIN !!!\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN\r\n*\r\n\
                 AUTH PLAIN {p}\r\nAUTH PLAIN {p}\r\n",
                p = plain("u", "good")
            )
            .as_bytes(),
        );
        assert_eq!(
            got,
            [
                "503 5.5.1 Error: send EHLO first",
                "250 mx.test",
                "503 5.5.1 Error: send EHLO first",
                "250 AUTH PLAIN LOGIN",
                "250 2.1.0 Ok",
                "503 5.5.1 Error: MAIL transaction in progress",
                "250 2.0.0 Ok",
                "504 5.5.4 Unrecognized authentication type",
                "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
                "501 5.5.2 Error: bad base64",
                "334 VXNlcm5hbWU6",
                "501 5.0.0 Authentication cancelled",
                "334 ",
                "501 5.0.0 Authentication cancelled",
                "235 2.7.0 Authentication successful",
                "503 5.5.1 Error: already authenticated",
            ]
        );
        assert_eq!(s.errors(), 9, "each refusal is a protocol error");
        assert_eq!(s.user(), Some("u"));
    }

    #[test]
    fn auth_not_configured_or_not_offered() {
        let mut s = session(true, Security::default());
        assert_eq!(
            replies(&mut s, b"EHLO c\r\nAUTH PLAIN\r\n")[1],
            "502 5.5.1 Error: command not implemented"
        );
        let mut s = session(false, auth(AuthPolicy::Optional));
        assert_eq!(
            replies(&mut s, b"EHLO c\r\nAUTH PLAIN\r\n")[1],
            "538 5.7.11 Encryption required"
        );
        assert_eq!(s.errors(), 1);
    }

    #[test]
    fn a_password_file_requires_auth_before_mail() {
        let mut s = session(true, auth(AuthPolicy::Required));
        let got = replies(
            &mut s,
            format!(
                "EHLO c\r\nMAIL FROM:<a@x>\r\nAUTH PLAIN {}\r\nAUTH LOGIN {}\r\n{}\r\nMAIL FROM:<a@x>\r\n",
                plain("u", "bad"),
                STANDARD.encode("u"),
                STANDARD.encode("good")
            )
            .as_bytes(),
        );
        assert_eq!(
            got[1..],
            [
                "530 5.7.0 Authentication required",
                "535 5.7.8 Authentication credentials invalid",
                "334 UGFzc3dvcmQ6",
                "235 2.7.0 Authentication successful",
                "250 2.1.0 Ok",
            ]
        );
        assert_eq!(s.errors(), 2);
        // --auth-any: AUTH is optional.
        let mut s = session(true, auth(AuthPolicy::Optional));
        assert_eq!(
            replies(&mut s, b"EHLO c\r\nMAIL FROM:<a@x>\r\n")[1],
            "250 2.1.0 Ok"
        );
    }

    #[test]
    fn auth_failures_end_the_session_at_twenty() {
        let mut s = session(true, auth(AuthPolicy::Optional));
        let input = [&b"EHLO c\r\n"[..], &b"AUTH PLAIN !\r\n".repeat(20)].concat();
        let out = run(&mut s, &input, &[], 64);
        assert!(out.ended_for_errors());
    }

    #[test]
    fn auth_lines_and_responses_may_be_12288_octets() {
        let pw = "p".repeat(9000);
        let mut line = format!("AUTH PLAIN {}", plain("u", &pw));
        assert!(line.len() < AUTH_LINE_MAX - 2);
        let mut s = session(true, auth(AuthPolicy::Optional));
        let got = replies(&mut s, format!("EHLO c\r\n{line}\r\n").as_bytes());
        assert_eq!(
            got[1], "535 5.7.8 Authentication credentials invalid",
            "read whole, checked"
        );
        line.push_str(&"=".repeat(AUTH_LINE_MAX - line.len() - 1));
        let got = replies(&mut s, format!("{line}\r\nNOOP\r\n").as_bytes());
        assert_eq!(got, ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"]);
        // A LOGIN response of the same size.
        let got = replies(
            &mut s,
            format!("AUTH LOGIN\r\n{}\r\n", STANDARD.encode("u".repeat(9000))).as_bytes(),
        );
        assert_eq!(got, ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"]);
        assert_eq!(s.line_max(), AUTH_LINE_MAX);
        assert_eq!(
            session(true, Security::default()).line_max(),
            COMMAND_READ_MAX
        );
    }

    #[test]
    fn starttls_rules() {
        let mut s = session(true, Security::default());
        assert_eq!(
            replies(&mut s, b"EHLO c\r\nSTARTTLS\r\n")[1],
            "502 5.5.1 Error: command not implemented"
        );
        let mut s = session(false, tls(false));
        let got = replies(
            &mut s,
            b"STARTTLS\r\nEHLO c\r\nSTARTTLS x\r\nMAIL FROM:<a@x>\r\nSTARTTLS\r\nRSET\r\n",
        );
        assert_eq!(
            got,
            [
                "503 5.5.1 Error: send HELO/EHLO first",
                "250 STARTTLS",
                "501 5.5.4 Syntax: STARTTLS takes no argument",
                "250 2.1.0 Ok",
                "503 5.5.1 Error: MAIL transaction in progress",
                "250 2.0.0 Ok",
            ]
        );
        assert_eq!(s.errors(), 3);
        // STARTTLS: 220, then the session is as after the greeting.
        let got = replies(&mut s, b"STARTTLS\r\n");
        assert_eq!(got, ["220 2.0.0 Ready to start TLS"]);
        let got = replies(&mut s, b"MAIL FROM:<a@x>\r\nEHLO c\r\nSTARTTLS\r\n");
        assert_eq!(
            got,
            [
                "503 5.5.1 Error: send HELO/EHLO first",
                "250 AUTH PLAIN LOGIN",
                "503 5.5.1 Error: TLS already active",
            ]
        );
    }

    #[test]
    fn bytes_pipelined_after_starttls_are_not_commands() {
        let mut s = session(false, tls(false));
        // In one read: the driver drops the buffer as conn.rs does.
        let out = run(&mut s, b"EHLO c\r\nSTARTTLS\r\nNOOP\r\nNOOP\r\n", &[], 64);
        assert!(
            out.replies.ends_with("220 2.0.0 Ready to start TLS\r\n"),
            "{}",
            out.replies
        );
    }

    #[test]
    fn tls_required_holds_mail_and_auth_until_starttls() {
        let mut s = session(true, tls(true));
        let got = replies(
            &mut s,
            format!(
                "EHLO c\r\nMAIL FROM:<a@x>\r\nAUTH PLAIN {}\r\n",
                plain("u", "good")
            )
            .as_bytes(),
        );
        assert_eq!(
            got,
            [
                "250 STARTTLS", // no AUTH offered before STARTTLS
                "530 5.7.0 Must issue a STARTTLS command first",
                "530 5.7.0 Must issue a STARTTLS command first",
            ]
        );
        s.tls_started();
        let got = replies(&mut s, b"EHLO c\r\nMAIL FROM:<a@x>\r\n");
        assert_eq!(got, ["250 AUTH PLAIN LOGIN", "250 2.1.0 Ok"]);
    }

    #[test]
    fn the_protocol_names_tls_and_auth() {
        assert_eq!(protocol(true, false, true, true), "ESMTPSA");
        assert_eq!(protocol(true, false, false, true), "ESMTPA");
        assert_eq!(protocol(true, true, true, false), "UTF8SMTPS");
        assert_eq!(protocol(false, false, true, false), "SMTPS");
        let mut s = session(true, tls(false));
        replies(&mut s, b"EHLO c\r\nSTARTTLS\r\n");
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nMAIL FROM:<a@x>\r\n",
            plain("u", "good")
        );
        replies(&mut s, input.as_bytes());
        assert_eq!(s.envelope().map(|e| e.protocol), Some("ESMTPSA"));
    }

    #[test]
    fn auth_lines_and_responses_are_secret() {
        let mut s = session(true, auth(AuthPolicy::Optional));
        assert!(!s.secret(b"EHLO c\r\n"));
        assert!(s.secret(b"auth plain AGEAYg==\r\n"));
        replies(&mut s, b"EHLO c\r\nAUTH LOGIN\r\n");
        assert!(s.secret(b"dXNlcg==\r\n"), "inside the exchange");
        replies(&mut s, b"*\r\n");
        assert!(!s.secret(b"NOOP\r\n"));
    }

    #[test]
    fn tls_started_forgets_auth() {
        let mut s = session(true, tls(false));
        replies(
            &mut s,
            format!("EHLO c\r\nAUTH PLAIN {}\r\n", plain("u", "good")).as_bytes(),
        );
        assert_eq!(s.user(), Some("u"));
        s.tls_started();
        assert_eq!(s.user(), None);
    }
}
