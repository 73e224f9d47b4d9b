//! The SMTP state machine: framed lines in, `Step`s out. It performs no I/O
//! and reads no clock; the connection loop does what a `Step` asks.
//!
//! This file holds the session's types, `feed` and the command dispatch,
//! and the error and junk counters. The commands live by concern:
//! - `transaction.rs`: HELO/EHLO, MAIL (and its space check), RCPT;
//! - `message.rs`: DATA, BDAT and the end of a message (`Deliver`/`Discard`);
//! - `security.rs`: AUTH and STARTTLS;
//! - `hooks.rs`: the `--fail` rules and the refusals kept for `--events`.

mod hooks;
mod message;
mod security;
mod transaction;

use super::auth::{Credentials, Exchange};
use super::chunk::Chunks;
use super::command::{Command, CommandError, is_data};
use super::data::{Body, Fed};
use super::fail::{Hooks, Injection, Refusal, Stage};
use super::line::{Framing, LineEnd};
use super::path::MailParams;
use super::reply::Reply;
use hooks::Fired;

/// Protocol errors that end a session (Postfix's smtpd_hard_error_limit).
const MAX_ERRORS: u32 = 20;
/// NOOP/RSET/VRFY/HELP allowed before each counts as an error.
const MAX_JUNK: u32 = 100;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_size: u64,
    pub max_recipients: usize,
    /// Lower-case domains accepted for recipients; empty accepts any.
    pub domains: Vec<String>,
    /// With `--per-recipient`: whether an address makes a usable mailbox
    /// directory name (refused at RCPT rather than failing every retry).
    pub mailbox_fits: Option<fn(&str) -> bool>,
}

/// One mail transaction, as handed to storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse path; empty for the null sender.
    pub from: String,
    pub rcpts: Vec<String>,
    pub params: MailParams,
    /// The HELO/EHLO name the client gave.
    pub helo: String,
    /// `SMTP`, `ESMTP` or `UTF8SMTP`, for the Received header.
    pub protocol: &'static str,
    /// Recipients refused so far (a DATA with none accepted is `554`).
    pub refused: usize,
    /// The message's size as RFC 1870 counts it, set at its end.
    pub size: u64,
    /// The user of a successful AUTH (for `--events`).
    pub user: Option<String>,
}

/// Why storing a message failed, as the session replies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    NoSpace,
    Other,
}

/// What the connection loop must do after one piece of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Reply(Reply),
    /// Write these replies, flush, close.
    Close(Vec<Reply>),
    /// MAIL was accepted pending room for this many bytes: answer with
    /// `Session::space_checked`.
    CheckSpace(u64),
    /// Write the `354`; message text follows.
    StartData(Reply),
    /// A piece of message text went to the output buffer (or, in BDAT,
    /// nothing to answer yet): read on.
    Content,
    /// The final dot: store the message, then answer with `Session::stored`.
    Deliver(Envelope),
    /// The final dot of a message that is not kept (too big, or refused
    /// by `--fail`).
    Discard(Reply),
    /// `--fail ...=drop`: close the connection with no reply.
    Drop,
    /// `--fail ...=delay SECS`: wait, then do the step.
    Delay(std::time::Duration, Box<Step>),
    /// Write the `220`, flush, drop whatever input is buffered (it was
    /// pipelined before the handshake: never commands), do the TLS
    /// handshake, then call `Session::tls_started`.
    StartTls(Reply),
    /// Check these credentials, then answer with `Session::authenticated`.
    Authenticate(Credentials),
}

impl Step {
    fn after(self, delay: Option<std::time::Duration>) -> Step {
        match delay {
            Some(d) => Step::Delay(d, Box::new(self)),
            None => self,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tls {
    /// Not configured: STARTTLS is `502`.
    #[default]
    Off,
    /// Configured, not started: EHLO offers STARTTLS.
    Available,
    /// Running (after STARTTLS, or implicit TLS).
    Active,
}

/// Who may use AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthPolicy {
    /// Not configured: AUTH is `502`.
    #[default]
    Off,
    /// `--auth-any`: offered, not required.
    Optional,
    /// `--auth-file`: MAIL needs a successful AUTH first.
    Required,
}

/// The TLS and AUTH settings of one session (SPEC "Authentication", "TLS").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Security {
    pub tls: Tls,
    /// `--tls-required` on a `--listen` address.
    pub tls_required: bool,
    pub auth: AuthPolicy,
    /// `--auth-insecure`: offer AUTH without TLS to any peer.
    pub auth_insecure: bool,
}

#[derive(Debug)]
enum State {
    Idle,
    /// Inside an AUTH exchange: the next line is a SASL response.
    Auth(Exchange),
    Mail(Envelope),
    Data(Envelope, Body),
    /// BDAT: between the chunks of a transaction.
    Chunked(Envelope, Chunks),
    /// BDAT: reading `left` more raw octets of a chunk of `size`.
    Chunk {
        envelope: Envelope,
        chunks: Chunks,
        left: u64,
        size: u64,
        last: bool,
    },
    /// The octets of a refused chunk, read and dropped; then `reply`, and
    /// the session is back in state `then`.
    Skip {
        left: u64,
        reply: Reply,
        then: Box<State>,
    },
    Closed,
}

/// What the client said in HELO/EHLO; RSET keeps it.
#[derive(Debug)]
struct Greeting {
    name: String,
    /// EHLO rather than HELO.
    esmtp: bool,
}

/// Bare LFs in the message text of a strict session, logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BareLf {
    None,
    /// Seen; the warning is due.
    Seen,
    /// The warning was handed out.
    Told,
}

#[derive(Debug)]
pub struct Session {
    host: String,
    limits: Limits,
    framing: Framing,
    helo: Option<Greeting>,
    state: State,
    errors: u32,
    junk: u32,
    overshoot: u32,
    commands: u64,
    bare_lf: BareLf,
    loopback: bool,
    security: Security,
    /// The user of a successful AUTH.
    user: Option<String>,
    hooks: Hooks,
    /// The last reported refusal, until the connection takes it.
    refusal: Option<Refusal>,
    injection: Option<Injection>,
    /// The envelope's sender and recipients at the last Deliver (for a
    /// refusal at storing), kept only when reporting.
    delivering: Option<(String, Vec<String>)>,
}

impl Session {
    /// `loopback`: the peer may switch the session to bare-LF lines.
    pub fn new(host: &str, limits: Limits, loopback: bool) -> Session {
        Session {
            host: host.to_string(),
            limits,
            framing: if loopback {
                Framing::Unknown
            } else {
                Framing::Strict
            },
            helo: None,
            state: State::Idle,
            errors: 0,
            junk: 0,
            overshoot: 0,
            commands: 0,
            bare_lf: BareLf::None,
            loopback,
            security: Security::default(),
            user: None,
            hooks: Hooks::default(),
            refusal: None,
            injection: None,
            delivering: None,
        }
    }

    /// With `--fail` rules and `--events` reporting.
    pub fn with_hooks(mut self, hooks: Hooks) -> Session {
        self.hooks = hooks;
        self
    }

    /// The start of the session: the greeting, or what a `connect` rule says
    /// instead (a reply there closes the connection).
    pub fn open(&mut self) -> Step {
        match self.inject(Stage::Connect, None, None, None) {
            Fired::No => Step::Reply(self.greeting()),
            Fired::Delay(d) => Step::Reply(self.greeting()).after(Some(d)),
            Fired::Instead(Step::Reply(r)) => self.close(r),
            Fired::Instead(step) => step,
        }
    }

    /// Sets up TLS and AUTH for this session.
    pub fn secured(mut self, security: Security) -> Session {
        self.security = security;
        self
    }

    fn greeting(&self) -> Reply {
        Reply::greeting(&self.host)
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data(..))
    }

    /// Raw octets of a BDAT chunk still to read (`Session::octets`), if the
    /// session is inside one; never `Some(0)`.
    pub fn octets_left(&self) -> Option<u64> {
        match &self.state {
            State::Chunk { left, .. } | State::Skip { left, .. } => Some(*left),
            _ => None,
        }
    }

    /// A message is being received (DATA, or BDAT chunks so far): its text
    /// may be streaming to storage. Once false, what streamed is dropped.
    pub fn message_open(&self) -> bool {
        matches!(
            self.state,
            State::Data(..) | State::Chunked(..) | State::Chunk { .. }
        )
    }

    /// The open transaction, if any.
    pub fn envelope(&self) -> Option<&Envelope> {
        match &self.state {
            State::Mail(env)
            | State::Data(env, _)
            | State::Chunked(env, _)
            | State::Chunk { envelope: env, .. } => Some(env),
            _ => None,
        }
    }

    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// True once per session, after DATA held a bare LF in a strict session.
    pub fn take_bare_lf_warning(&mut self) -> bool {
        let tell = self.bare_lf == BareLf::Seen;
        if tell {
            self.bare_lf = BareLf::Told;
        }
        tell
    }

    /// Feeds one framed piece of input. `pending`: more input is already
    /// buffered (pipelined). Message text goes to `out`.
    pub fn feed(&mut self, piece: &[u8], end: LineEnd, pending: bool, out: &mut Vec<u8>) -> Step {
        if self.framing == Framing::Unknown {
            self.framing = match end {
                LineEnd::CrLf => Framing::Strict,
                LineEnd::Lf => Framing::Lf,
                _ => Framing::Unknown,
            };
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Data(env, mut body) => match body.feed(piece, end, self.framing, out) {
                Fed::More => {
                    self.state = State::Data(env, body);
                    Step::Content
                }
                Fed::End => self.end_of_data(env, body),
            },
            State::Auth(exchange) => {
                self.state = State::Idle;
                self.sasl_response(exchange, piece, end)
            }
            other => {
                self.state = other;
                self.command(piece, end, pending, out)
            }
        }
    }

    /// The reply for a session ended by shutdown, timeout or the like.
    pub fn closing(&mut self, reply: fn(&str) -> Reply) -> Reply {
        self.state = State::Closed;
        reply(&self.host)
    }

    fn command(&mut self, piece: &[u8], end: LineEnd, pending: bool, out: &mut Vec<u8>) -> Step {
        self.commands += 1;
        let first = self.commands == 1;
        let cmd = match Command::read(piece, end) {
            Ok(cmd) => cmd,
            Err(e) if e != CommandError::TooLong && pending && is_data(piece, end) => {
                return self.close(Reply::pipelined_data_refused());
            }
            // The octets after it cannot be delimited (SPEC CHUNKING).
            Err(e @ CommandError::BadChunkSize) => return self.close(e.reply()),
            Err(e) => return self.error(e.reply()),
        };
        match cmd {
            Command::Helo(name) => self.on_helo(name, false),
            Command::Ehlo(name) => self.on_helo(name, true),
            Command::Mail(from, params) => self.on_mail(from, params),
            Command::Rcpt(to) => self.on_rcpt(to),
            Command::Data => self.on_data(pending),
            Command::Rset => {
                self.state = State::Idle;
                self.junk(Reply::ok())
            }
            Command::Noop => self.junk(Reply::ok()),
            Command::Vrfy => self.junk(Reply::cannot_verify()),
            Command::Help => self.junk(Reply::help()),
            Command::Quit => self.close(Reply::bye()),
            Command::NotImplemented => self.error(Reply::not_implemented()),
            Command::StartTls(arg) => self.on_starttls(arg),
            Command::Auth(args) => self.on_auth(args),
            Command::Bdat { size, last } => self.on_bdat(size, last, out),
            Command::HttpVerb if first => self.close(Reply::http_refused()),
            Command::HttpVerb => self.error(Reply::unknown_command()),
            Command::HeaderLike => self.close(Reply::http_refused()),
        }
    }

    fn close(&mut self, reply: Reply) -> Step {
        self.state = State::Closed;
        Step::Close(vec![reply])
    }

    /// Counts a protocol error; the last one allowed also ends the session.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.state = State::Closed;
            return Step::Close(vec![reply, Reply::too_many_errors(&self.host)]);
        }
        Step::Reply(reply)
    }

    fn junk(&mut self, reply: Reply) -> Step {
        self.junk += 1;
        if self.junk > MAX_JUNK {
            return self.error(reply);
        }
        Step::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::super::transcript::{TX, codes, limits, run, talk, with};
    use super::*;

    #[test]
    fn full_transaction_replies_in_order() {
        let got = codes(&with(TX, b"hello\r\n.\r\nQUIT\r\n"));
        assert_eq!(
            got,
            [
                "250 HELP",
                "250 2.1.0",
                "250 2.1.5",
                "354 End",
                "250 2.0.0",
                "221 2.0.0"
            ]
        );
        assert_eq!(
            talk(&with(TX, b"hello\r\n.\r\n")).stored,
            vec![b"hello\n".to_vec()]
        );
    }

    #[test]
    fn http_and_header_lines_close_at_once() {
        let out = talk(b"POST / HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(
            out.replies,
            "221 2.7.0 Error: this is an SMTP server, not a web server\r\n"
        );
        let out = talk(b"EHLO c\r\nUser-Agent: evil\r\nNOOP\r\n");
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("221 2.7.0 Error: this is an SMTP server, not a web server\r\n")
        );
        assert_eq!(codes(b"NOOP\r\nGET /\r\n"), ["250 2.0.0", "500 5.5.2"]);
    }

    #[test]
    fn quit_closes() {
        let out = talk(b"QUIT\r\nNOOP\r\n");
        assert_eq!(out.replies, "221 2.0.0 Bye\r\n");
    }

    #[test]
    fn twenty_errors_end_the_session() {
        let out = talk(&b"FOO\r\n".repeat(25));
        assert_eq!(out.replies.matches("500 5.5.2").count(), 20);
        assert!(out.ended_for_errors());
    }

    #[test]
    fn junk_commands_beyond_a_hundred_count_as_errors() {
        let out = talk(&b"NOOP\r\n".repeat(200));
        assert_eq!(out.replies.matches("250 2.0.0").count(), 120);
        assert!(out.ended_for_errors());
    }

    #[test]
    fn command_length_limits() {
        let ok = format!("NOOP {}\r\n", "x".repeat(512 - 7));
        let long = format!("NOOP {}\r\n", "x".repeat(513 - 7));
        assert_eq!(
            codes(format!("{ok}{long}").as_bytes()),
            ["250 2.0.0", "500 5.5.2"]
        );
        let mail = format!(
            "EHLO c\r\nMAIL FROM:<{}@x> SIZE=10 BODY=8BITMIME\r\n",
            "a".repeat(490)
        );
        assert_eq!(codes(mail.as_bytes()), ["250 HELP", "250 2.1.0"]);
        let huge = format!("{}\r\nNOOP\r\n", "y".repeat(100_000));
        assert_eq!(codes(huge.as_bytes()), ["500 5.5.2", "250 2.0.0"]);
    }

    #[test]
    fn a_bare_lf_in_a_strict_command_is_one_error() {
        assert_eq!(codes(b"NOOP\nNOOP\r\n"), ["500 5.5.2"]);
        assert_eq!(codes(b"NOOP\r\nNO\rOP\r\n"), ["250 2.0.0", "500 5.5.2"]);
    }

    #[test]
    fn framing_is_fixed_by_the_first_line() {
        // CRLF first: strict for good; a later bare-LF line is no command.
        let mut s = Session::new("h", limits(), true);
        let out = run(&mut s, b"NOOP\r\nNOOP\nNOOP\r\n", &[], 64);
        assert_eq!(
            out.replies,
            "250 2.0.0 Ok\r\n500 5.5.2 Error: bare CR or LF in command line\r\n"
        );
        // Not loopback: strict even when the first line ends in LF.
        let mut s = Session::new("h", limits(), false);
        let out = run(&mut s, b"NOOP\nNOOP\r\n", &[], 64);
        assert_eq!(
            out.replies,
            "500 5.5.2 Error: bare CR or LF in command line\r\n"
        );
    }
}
