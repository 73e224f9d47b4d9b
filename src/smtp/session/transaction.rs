//! The transaction commands: HELO/EHLO, MAIL (and the answer to its space
//! check), RCPT.

use super::hooks::Fired;
use super::security::protocol;
use super::{Envelope, Greeting, Session, State, Step, Tls};
use crate::smtp::fail::Stage;
use crate::smtp::path::{MailParams, Path};
use crate::smtp::reply::Reply;

/// RCPTs past `max_recipients` answered before each counts as an error
/// (Postfix's smtpd_recipient_overshoot_limit).
const MAX_OVERSHOOT: u32 = 1000;

impl Session {
    pub(super) fn on_helo(&mut self, name: &str, esmtp: bool) -> Step {
        let delay = match self.inject(Stage::Helo, Some(name), None, None) {
            Fired::No => None,
            Fired::Delay(d) => Some(d),
            Fired::Instead(step) => return step,
        };
        self.helo = Some(Greeting {
            name: name.to_string(),
            esmtp,
        });
        self.state = State::Idle; // RFC 5321 §4.1.4: HELO/EHLO resets the transaction
        Step::Reply(if esmtp {
            self.extensions(Reply::ehlo(&self.host, self.limits.max_size))
        } else {
            Reply::helo(&self.host)
        })
        .after(delay)
    }

    pub(super) fn on_mail(&mut self, from: Path<'_>, params: MailParams) -> Step {
        if self.helo.is_none() {
            return self.error(Reply::bad_sequence("send HELO/EHLO first"));
        }
        if !matches!(self.state, State::Idle) {
            return self.error(Reply::bad_sequence("nested MAIL command"));
        }
        if let Some(refusal) = self.mail_refusal() {
            self.report(Stage::Mail, &refusal, None, Some(from.as_str()));
            return self.error(refusal);
        }
        let delay = match self.inject(Stage::Mail, Some(from.as_str()), None, Some(from.as_str())) {
            Fired::No => None,
            Fired::Delay(d) => Some(d),
            Fired::Instead(step) => return step,
        };
        if let Some(reply) = self.sender_refusal(&from, &params) {
            self.report(Stage::Mail, &reply, None, Some(from.as_str()));
            return self.error(reply).after(delay);
        }
        let Some(envelope) = self.open_envelope(&from, params) else {
            return self.error(Reply::bad_sequence("send HELO/EHLO first"));
        };
        self.state = State::Mail(envelope);
        Step::CheckSpace(self.limits.max_size).after(delay)
    }

    /// What the sender and its parameters refuse by themselves: a
    /// non-ASCII address without SMTPUTF8, a SIZE over `--max-size`.
    fn sender_refusal(&self, from: &Path<'_>, params: &MailParams) -> Option<Reply> {
        if !from.as_str().is_ascii() && !params.smtputf8 {
            Some(Reply::needs_smtputf8(550))
        } else if params.size.is_some_and(|n| n > self.limits.max_size) {
            Some(Reply::too_big())
        } else {
            None
        }
    }

    /// The transaction MAIL opens, with the HELO name and the RFC 3848
    /// protocol name; `None` before HELO/EHLO.
    fn open_envelope(&self, from: &Path<'_>, params: MailParams) -> Option<Envelope> {
        let Greeting { name, esmtp } = self.helo.as_ref()?;
        let tls = self.security.tls == Tls::Active;
        let protocol = protocol(*esmtp, params.smtputf8, tls, self.user.is_some());
        Some(Envelope {
            from: from.as_str().to_string(),
            rcpts: Vec::new(),
            params,
            helo: name.clone(),
            protocol,
            refused: 0,
            size: 0,
            user: self.user.clone(),
        })
    }

    pub(super) fn on_rcpt(&mut self, to: Path<'_>) -> Step {
        match &self.state {
            State::Mail(_) => {}
            State::Chunked(..) => return self.error(Reply::bad_sequence("RCPT after BDAT")),
            _ => return self.error(Reply::bad_sequence("need MAIL command")),
        }
        let delay = match self.inject(Stage::Rcpt, Some(to.as_str()), None, Some(to.as_str())) {
            Fired::No => None,
            Fired::Delay(d) => Some(d),
            Fired::Instead(step) => {
                if let State::Mail(env) = &mut self.state {
                    env.refused += 1; // a DATA with none accepted is 554
                }
                return step;
            }
        };
        self.rcpt(to).after(delay)
    }

    fn rcpt(&mut self, to: Path<'_>) -> Step {
        let State::Mail(env) = &mut self.state else {
            return self.error(Reply::bad_sequence("need MAIL command"));
        };
        let reply = if env.rcpts.len() >= self.limits.max_recipients {
            Reply::too_many_recipients()
        } else if !to.as_str().is_ascii() && !env.params.smtputf8 {
            Reply::needs_smtputf8(553)
        } else if !domain_allowed(&to, &self.limits.domains) {
            Reply::relay_denied()
        } else if self
            .limits
            .mailbox_fits
            .is_some_and(|fits| !fits(to.as_str()))
        {
            Reply::mailbox_name_too_long()
        } else {
            env.rcpts.push(to.as_str().to_string());
            return Step::Reply(Reply::recipient_ok());
        };
        env.refused += 1;
        self.report(Stage::Rcpt, &reply, None, Some(to.as_str()));
        if reply.code == 452 {
            self.overshoot += 1;
            if self.overshoot <= MAX_OVERSHOOT {
                return Step::Reply(reply); // as Postfix, not an error at first
            }
        }
        self.error(reply)
    }

    /// The answer to `Step::CheckSpace`.
    pub fn space_checked(&mut self, room: bool) -> Reply {
        if room {
            Reply::sender_ok()
        } else {
            let state = std::mem::replace(&mut self.state, State::Idle);
            let from = match &state {
                State::Mail(env) => Some(env.from.as_str()),
                _ => None,
            };
            let reply = Reply::no_space();
            self.report(Stage::Mail, &reply, None, from);
            reply
        }
    }
}

fn domain_allowed(to: &Path<'_>, domains: &[String]) -> bool {
    if to.local().eq_ignore_ascii_case("postmaster") || domains.is_empty() {
        return true;
    }
    domains.iter().any(|d| d.eq_ignore_ascii_case(to.domain()))
}

#[cfg(test)]
mod tests {
    use crate::smtp::line::LineEnd;
    use crate::smtp::session::*;
    use crate::smtp::transcript::{codes, codes_unpipelined, limits, ok_test_only, run, talk};

    #[test]
    fn helo_replies_without_enhanced_codes() {
        let out = talk(b"HELO c\r\nHELO\r\n");
        assert_eq!(
            out.replies,
            "250 mx.test\r\n501 Syntax: HELO/EHLO hostname\r\n"
        );
    }

    #[test]
    fn sequence_errors_leave_state_alone() {
        // One byte a read: nothing is pending when DATA is refused.
        let got = codes_unpipelined(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nEHLO c\r\nRCPT TO:<b@y>\r\nDATA\r\nMAIL FROM:<a@x>\r\nMAIL FROM:<a@x>\r\nDATA\r\nRCPT TO:<b@y>\r\n");
        assert_eq!(
            got,
            [
                "503 5.5.1",
                "503 5.5.1",
                "503 5.5.1",
                "250 HELP",
                "503 5.5.1",
                "503 5.5.1",
                "250 2.1.0",
                "503 5.5.1",
                "503 5.5.1",
                "250 2.1.5"
            ]
        );
    }

    #[test]
    fn rset_noop_vrfy_help_work_before_helo() {
        let got = codes(b"RSET\r\nNOOP x\r\nVRFY bob\r\nHELP\r\nEXPN a\r\nSTARTTLS\r\nAUTH PLAIN\r\nTURN\r\nETRN x\r\nFOO\r\n");
        assert_eq!(
            got,
            [
                "250 2.0.0",
                "250 2.0.0",
                "252 2.0.0",
                "214 2.0.0",
                "502 5.5.1",
                "502 5.5.1",
                "502 5.5.1",
                "502 5.5.1",
                "502 5.5.1",
                "500 5.5.2"
            ]
        );
    }

    #[test]
    fn rset_clears_the_transaction_but_keeps_helo() {
        let got =
            codes(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRSET\r\nRCPT TO:<b@y>\r\nMAIL FROM:<a@x>\r\n");
        assert_eq!(
            got,
            [
                "250 HELP",
                "250 2.1.0",
                "250 2.0.0",
                "503 5.5.1",
                "250 2.1.0"
            ]
        );
    }

    #[test]
    fn size_parameter_and_limit() {
        let got = codes(b"EHLO c\r\nMAIL FROM:<a@x> SIZE=1001\r\nMAIL FROM:<a@x> SIZE=abc\r\nMAIL FROM:<a@x> X=1\r\nMAIL FROM:<a@x> SIZE=1000\r\n");
        assert_eq!(
            got,
            [
                "250 HELP",
                "552 5.3.4",
                "501 5.5.4",
                "555 5.5.4",
                "250 2.1.0"
            ]
        );
    }

    #[test]
    fn recipients_limit_domains_and_postmaster() {
        let mut s = ok_test_only();
        let out = run(&mut s, b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@OK.test>\r\nRCPT TO:<a@bad.test>\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<postmaster@bad.test>\r\nRCPT TO:<c@ok.test>\r\n", &[], 64);
        let got: Vec<&str> = out
            .replies
            .split_terminator("\r\n")
            .skip(8)
            .map(|l| &l[..9])
            .collect();
        assert_eq!(
            got,
            [
                "250 2.1.0",
                "250 2.1.5",
                "550 5.7.1",
                "250 2.1.5",
                "250 2.1.5",
                "452 4.5.3"
            ]
        );
    }

    #[test]
    fn unusable_mailbox_names_are_refused_at_rcpt() {
        let fits: fn(&str) -> bool = |a| a.len() < 10;
        let limits = Limits {
            mailbox_fits: Some(fits),
            ..limits()
        };
        let mut s = Session::new("h", limits, false);
        let out = run(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<short@x>\r\nRCPT TO:<much-longer@x>\r\n",
            &[],
            64,
        );
        assert!(
            out.replies.ends_with(
                "250 2.1.5 Ok\r\n553 5.1.3 Error: address too long for a mailbox name\r\n"
            )
        );
    }

    #[test]
    fn recipient_overshoot_counts_as_errors_after_a_thousand() {
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x>\r\n".to_vec();
        for _ in 0..1030 {
            input.extend_from_slice(b"RCPT TO:<b@y>\r\n");
        }
        let out = talk(&input);
        assert_eq!(out.replies.matches("452 4.5.3").count(), 1000 + 20);
        assert!(out.ended_for_errors());
    }

    #[test]
    fn smtputf8_addresses_need_the_parameter() {
        let got = codes("EHLO c\r\nMAIL FROM:<jö@x>\r\nMAIL FROM:<a@x>\r\nRCPT TO:<jö@x>\r\nRSET\r\nMAIL FROM:<jö@x> SMTPUTF8\r\nRCPT TO:<jö@x>\r\n".as_bytes());
        assert_eq!(
            got,
            [
                "250 HELP",
                "550 5.6.7",
                "250 2.1.0",
                "553 5.6.7",
                "250 2.0.0",
                "250 2.1.0",
                "250 2.1.5"
            ]
        );
    }

    #[test]
    fn space_check_can_refuse_mail() {
        let mut s = Session::new("h", limits(), false);
        let mut out = Vec::new();
        s.feed(b"EHLO c\r\n", LineEnd::CrLf, false, &mut out);
        assert_eq!(
            s.feed(b"MAIL FROM:<a@x>\r\n", LineEnd::CrLf, false, &mut out),
            Step::CheckSpace(1000)
        );
        assert_eq!(
            s.space_checked(false).to_string(),
            "452 4.3.1 Error: insufficient system storage\r\n"
        );
        assert!(s.envelope().is_none());
    }

    #[test]
    fn envelope_records_protocol_and_helo() {
        let mut s = Session::new("h", limits(), false);
        let mut out = Vec::new();
        for line in [
            &b"EHLO client\r\n"[..],
            b"MAIL FROM:<a@x> SMTPUTF8\r\n",
            b"RCPT TO:<b@y>\r\n",
            b"DATA\r\n",
            b"hi\r\n",
        ] {
            s.feed(line, LineEnd::CrLf, false, &mut out);
        }
        let Step::Deliver(env) = s.feed(b".\r\n", LineEnd::CrLf, false, &mut out) else {
            panic!("no delivery")
        };
        assert_eq!(
            (env.helo.as_str(), env.protocol, env.rcpts.len()),
            ("client", "UTF8SMTP", 1)
        );
    }
}
