//! The SMTP state machine: framed lines in, `Step`s out. It performs no I/O
//! and reads no clock; the connection loop does what a `Step` asks.

use super::auth::{self, AUTH_LINE_MAX, Credentials, Exchange, Outcome};
use super::chunk::Chunks;
use super::command::{COMMAND_READ_MAX, Command, CommandError, is_data};
use super::data::{Body, Fed};
use super::fail::{Action, Hooks, Injection, Refusal, Stage};
use super::line::{Framing, LineEnd};
use super::path::{MailParams, Path};
use super::reply::Reply;

/// Protocol errors that end a session (Postfix's smtpd_hard_error_limit).
const MAX_ERRORS: u32 = 20;
/// NOOP/RSET/VRFY/HELP allowed before each counts as an error.
const MAX_JUNK: u32 = 100;
/// RCPTs past `max_recipients` answered before each counts as an error
/// (Postfix's smtpd_recipient_overshoot_limit).
const MAX_OVERSHOOT: u32 = 1000;

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

/// What a `--fail` rule did to a stage.
enum Fired {
    No,
    Delay(std::time::Duration),
    /// Instead of the normal step.
    Instead(Step),
}

/// TLS on this session, as the connection sets it up.
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

    /// The refusal to report before the reply now being sent, if any.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// The `--fail` rule that fired last, to be logged.
    pub fn take_injection(&mut self) -> Option<Injection> {
        self.injection.take()
    }

    /// Sets up TLS and AUTH for this session.
    pub fn secured(mut self, security: Security) -> Session {
        self.security = security;
        self
    }

    pub fn greeting(&self) -> Reply {
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

    /// Feeds raw octets of the current BDAT chunk, at most `octets_left`
    /// (any more are ignored: the caller reads no further). Message text
    /// goes to `out`.
    pub fn octets(&mut self, octets: &[u8], out: &mut Vec<u8>) -> Step {
        let n = octets.len() as u64;
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Chunk {
                envelope,
                mut chunks,
                left,
                size,
                last,
            } => {
                let take = &octets[..octets
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX))];
                chunks.feed(take, out);
                match left.saturating_sub(n) {
                    0 => self.end_of_chunk(envelope, chunks, size, last, out),
                    left => {
                        self.state = State::Chunk {
                            envelope,
                            chunks,
                            left,
                            size,
                            last,
                        };
                        Step::Content
                    }
                }
            }
            State::Skip { left, reply, then } => match left.saturating_sub(n) {
                0 => {
                    self.state = *then;
                    self.error(reply)
                }
                left => {
                    self.state = State::Skip { left, reply, then };
                    Step::Content
                }
            },
            other => {
                self.state = other;
                Step::Content // no chunk is open: nothing to take
            }
        }
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

    /// The answer to `Step::Deliver`: the queue id, or why storing failed.
    pub fn stored(&mut self, result: Result<&str, StoreFailure>) -> Reply {
        let delivering = self.delivering.take();
        let reply = match result {
            Ok(id) => return Reply::queued(id),
            Err(StoreFailure::NoSpace) => Reply::no_space(),
            Err(StoreFailure::Other) => Reply::store_failed(),
        };
        if let Some((from, to)) = delivering {
            self.refusal = Some(Refusal {
                stage: Stage::Data,
                reply: reply.clone(),
                from: Some(from),
                to,
                address: None,
            });
        }
        reply
    }

    /// The reply for a session ended by shutdown, timeout or the like.
    pub fn closing(&mut self, reply: fn(&str) -> Reply) -> Reply {
        self.state = State::Closed;
        reply(&self.host)
    }

    fn end_of_data(&mut self, env: Envelope, body: Body) -> Step {
        self.state = State::Idle;
        if body.bare_lf && self.bare_lf == BareLf::None {
            self.bare_lf = BareLf::Seen;
        }
        self.end_of_message(env, body.size, body.too_big())
    }

    /// The final dot or the LAST chunk: store, unless too big or a
    /// `--fail` rule says otherwise.
    fn end_of_message(&mut self, mut env: Envelope, size: u64, too_big: bool) -> Step {
        if too_big {
            let reply = Reply::too_big();
            self.report(Stage::Data, &reply, Some(&env), None);
            return Step::Discard(reply);
        }
        env.size = size;
        let delay = match self.inject(Stage::Data, None, Some(&env), None) {
            Fired::No => None,
            Fired::Delay(d) => Some(d),
            Fired::Instead(Step::Reply(r)) => return Step::Discard(r), // nothing stored
            Fired::Instead(step) => return step,
        };
        if self.hooks.report {
            self.delivering = Some((env.from.clone(), env.rcpts.clone()));
        }
        Step::Deliver(env).after(delay)
    }

    /// Counts an arrival at `stage` for the `--fail` rules and applies the
    /// rule that fires, if any. `subject`: the address or HELO name the
    /// globs match; `env`, `address`: for the refusal report.
    fn inject(
        &mut self,
        stage: Stage,
        subject: Option<&str>,
        env: Option<&Envelope>,
        address: Option<&str>,
    ) -> Fired {
        let Some((rules, counter)) = &self.hooks.fail else {
            return Fired::No;
        };
        let Some((rule, n)) = rules.arrive(&**counter, stage, subject) else {
            return Fired::No;
        };
        let action = rule.action.clone();
        self.injection = Some(Injection {
            stage,
            n,
            rule: rule.text.clone(),
        });
        match action {
            Action::Delay(d) => Fired::Delay(d),
            Action::Drop => {
                self.state = State::Closed;
                Fired::Instead(Step::Drop)
            }
            Action::Reply(reply) => {
                self.report(stage, &reply, env, address);
                if reply.code == 421 {
                    return Fired::Instead(self.close(reply)); // as a real 421 does
                }
                Fired::Instead(Step::Reply(reply))
            }
        }
    }

    /// Keeps a refusal for `--events`, with the transaction so far.
    fn report(
        &mut self,
        stage: Stage,
        reply: &Reply,
        env: Option<&Envelope>,
        address: Option<&str>,
    ) {
        if !self.hooks.report {
            return;
        }
        let env = env.or(match &self.state {
            State::Mail(env) | State::Data(env, _) => Some(env),
            _ => None,
        });
        self.refusal = Some(Refusal {
            stage,
            reply: reply.clone(),
            from: env.map(|e| e.from.clone()),
            to: env.map(|e| e.rcpts.clone()).unwrap_or_default(),
            address: address.map(str::to_string),
        });
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

    fn on_helo(&mut self, name: &str, esmtp: bool) -> Step {
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

    fn on_mail(&mut self, from: Path<'_>, params: MailParams) -> Step {
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
        let refusal = if !from.as_str().is_ascii() && !params.smtputf8 {
            Some(Reply::needs_smtputf8(550))
        } else if params.size.is_some_and(|n| n > self.limits.max_size) {
            Some(Reply::too_big())
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.report(Stage::Mail, &reply, None, Some(from.as_str()));
            return self.error(reply).after(delay);
        }
        let Some(Greeting { name: helo, esmtp }) = &self.helo else {
            return self.error(Reply::bad_sequence("send HELO/EHLO first"));
        };
        let protocol = protocol(
            *esmtp,
            params.smtputf8,
            self.security.tls == Tls::Active,
            self.user.is_some(),
        );
        self.state = State::Mail(Envelope {
            from: from.as_str().to_string(),
            rcpts: Vec::new(),
            params,
            helo: helo.clone(),
            protocol,
            refused: 0,
            size: 0,
            user: self.user.clone(),
        });
        Step::CheckSpace(self.limits.max_size).after(delay)
    }

    fn on_rcpt(&mut self, to: Path<'_>) -> Step {
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

    fn on_data(&mut self, pending: bool) -> Step {
        let refusal = match std::mem::replace(&mut self.state, State::Idle) {
            State::Mail(env) if !env.rcpts.is_empty() => {
                self.state = State::Data(env, Body::new(self.limits.max_size));
                return Step::StartData(Reply::start_data());
            }
            State::Mail(env) => {
                let reply = if env.refused > 0 {
                    Reply::no_valid_recipients()
                } else {
                    Reply::bad_sequence("need RCPT command")
                };
                self.state = State::Mail(env);
                reply
            }
            State::Chunked(env, chunks) => {
                self.state = State::Chunked(env, chunks);
                Reply::bad_sequence("DATA after BDAT")
            }
            other => {
                self.state = other;
                if self.helo.is_none() {
                    Reply::bad_sequence("send HELO/EHLO first")
                } else {
                    Reply::bad_sequence("need MAIL command")
                }
            }
        };
        if pending {
            // The waiting bytes would be message text read as commands.
            return self.close(Reply::pipelined_data_refused());
        }
        self.error(refusal)
    }

    /// RFC 3030 BDAT: the first chunk opens the message, each one is read
    /// raw; a refused chunk is read and dropped before its reply.
    fn on_bdat(&mut self, size: u64, last: bool, out: &mut Vec<u8>) -> Step {
        let (envelope, mut chunks) = match std::mem::replace(&mut self.state, State::Closed) {
            State::Mail(env) if !env.rcpts.is_empty() => (env, Chunks::new(self.limits.max_size)),
            State::Chunked(env, chunks) => (env, chunks),
            other => {
                let reply = match &other {
                    State::Mail(_) => Reply::bad_sequence("need RCPT command"),
                    _ if self.helo.is_none() => Reply::bad_sequence("send HELO/EHLO first"),
                    _ => Reply::bad_sequence("need MAIL command"),
                };
                if size == 0 {
                    self.state = other;
                    return self.error(reply);
                }
                self.state = State::Skip {
                    left: size,
                    reply,
                    then: Box::new(other),
                };
                return Step::Content;
            }
        };
        chunks.announce(size);
        if size == 0 {
            return self.end_of_chunk(envelope, chunks, size, last, out);
        }
        self.state = State::Chunk {
            envelope,
            chunks,
            left: size,
            size,
            last,
        };
        Step::Content
    }

    fn end_of_chunk(
        &mut self,
        envelope: Envelope,
        mut chunks: Chunks,
        size: u64,
        last: bool,
        out: &mut Vec<u8>,
    ) -> Step {
        if !last {
            self.state = State::Chunked(envelope, chunks);
            return Step::Reply(Reply::chunk_received(size));
        }
        chunks.finish(out);
        self.state = State::Idle;
        self.end_of_message(envelope, chunks.size(), chunks.too_big())
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

/// AUTH and STARTTLS (SPEC "Authentication" and "TLS").
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
        matches!(self.state, State::Auth(_)) || super::command::is_auth(line)
    }

    /// The user of a successful AUTH, if any.
    pub fn user(&self) -> Option<&str> {
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

    fn extensions(&self, mut ehlo: Reply) -> Reply {
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
    fn mail_refusal(&self) -> Option<Reply> {
        let s = &self.security;
        if s.tls_required && s.tls != Tls::Active {
            Some(Reply::tls_first())
        } else if s.auth == AuthPolicy::Required && self.user.is_none() {
            Some(Reply::auth_required())
        } else {
            None
        }
    }

    fn on_starttls(&mut self, arg: &str) -> Step {
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

    fn on_auth(&mut self, args: &str) -> Step {
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

    fn sasl_response(&mut self, exchange: Exchange, piece: &[u8], end: LineEnd) -> Step {
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
fn protocol(esmtp: bool, utf8: bool, tls: bool, auth: bool) -> &'static str {
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
mod auth_tls_tests {
    // SPEC "Authentication" and "TLS": every state rule, with byte strings.
    use super::super::transcript::{limits, run};
    use super::*;
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
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("421 4.7.0 mx.test Error: too many errors\r\n")
        );
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

fn domain_allowed(to: &Path<'_>, domains: &[String]) -> bool {
    if to.local().eq_ignore_ascii_case("postmaster") || domains.is_empty() {
        return true;
    }
    domains.iter().any(|d| d.eq_ignore_ascii_case(to.domain()))
}

#[cfg(test)]
mod tests {
    use super::super::transcript::{codes, codes_unpipelined, limits, run, talk};
    use super::*;

    const TX: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n";

    fn with(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
        [prefix, rest].concat()
    }

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
    fn message_over_max_size_is_refused_after_the_dot() {
        let big = vec![b'x'; 1100];
        let mut input = with(TX, &big);
        input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        let out = talk(&input);
        assert!(out.stored.is_empty());
        assert!(out.replies.contains("552 5.3.4"));
        assert!(out.replies.ends_with("250 2.0.0 Ok\r\n"));
    }

    #[test]
    fn recipients_limit_domains_and_postmaster() {
        let mut s = Session::new(
            "h",
            Limits {
                domains: vec!["ok.test".into()],
                ..limits()
            },
            false,
        );
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
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("421 4.7.0 mx.test Error: too many errors\r\n")
        );
    }

    #[test]
    fn data_with_every_recipient_refused() {
        let mut s = Session::new(
            "h",
            Limits {
                domains: vec!["ok.test".into()],
                ..limits()
            },
            false,
        );
        let out = run(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<a@bad.test>\r\nDATA\r\n",
            &[],
            64,
        );
        assert!(
            out.replies
                .ends_with("554 5.5.1 Error: no valid recipients\r\n")
        );
    }

    #[test]
    fn data_refused_with_input_waiting_closes() {
        let out = talk(b"EHLO c\r\nMAIL FROM:<a@x>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
        assert!(out.closed);
        assert!(
            out.replies
                .ends_with("554 5.5.0 Error: DATA refused with input pending, closing\r\n")
        );
        assert!(out.stored.is_empty());
    }

    #[test]
    fn only_a_refused_data_command_closes_on_waiting_input() {
        let out = talk(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA now\r\ntext\r\n");
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("554 5.5.0 Error: DATA refused with input pending, closing\r\n")
        );
        let out = talk(b"EHLO c\r\nDATAX\r\nNOOP\r\n");
        assert!(!out.closed);
        assert!(
            out.replies
                .ends_with("500 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n")
        );
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

    const TX_MAIL: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n";

    /// The replies after EHLO, MAIL and RCPT, and what was stored.
    fn bdat(rest: &[u8]) -> (String, Vec<Vec<u8>>, bool) {
        let out = talk(&with(TX_MAIL, rest));
        let replies = out.replies.split_once("250 2.1.5 Ok\r\n").unwrap().1;
        (replies.to_string(), out.stored, out.closed)
    }

    #[test]
    fn bdat_reads_exactly_n_raw_octets_then_the_next_command() {
        // SPEC CHUNKING: exactly n octets, taken raw, then the next command.
        let (replies, stored, _) = bdat(b"BDAT 5 LAST\r\nhelloNOOP\r\n");
        assert_eq!(replies, "250 2.0.0 Ok: queued as ID\r\n250 2.0.0 Ok\r\n");
        assert_eq!(stored, [b"hello".to_vec()]);
    }

    #[test]
    fn chunks_before_last_get_their_octet_count() {
        let (replies, stored, _) = bdat(b"BDAT 3\r\nabcBDAT 0\r\nBDAT 2\r\ndeBDAT 0 LAST\r\n");
        assert_eq!(
            replies,
            "250 2.0.0 3 octets received\r\n250 2.0.0 0 octets received\r\n250 2.0.0 2 octets received\r\n250 2.0.0 Ok: queued as ID\r\n"
        );
        assert_eq!(stored, [b"abcde".to_vec()]);
    }

    #[test]
    fn bdat_zero_last_alone_stores_an_empty_message() {
        let (replies, stored, _) = bdat(b"BDAT 0 LAST\r\n");
        assert_eq!(replies, "250 2.0.0 Ok: queued as ID\r\n");
        assert_eq!(stored, [Vec::<u8>::new()]);
    }

    #[test]
    fn chunk_text_is_stored_as_data_would_store_it() {
        // CRLF becomes LF (also across chunks); no dot-unstuffing, no end
        // of data: a "." line, a bare LF and command text are content.
        let text = b"Subject: t\r\n\r\n..a\r\n.\r\nQUIT\r\nb\nc\rd\r";
        let (a, b) = text.split_at(13);
        let mut input = format!("BDAT {}\r\n", a.len()).into_bytes();
        input.extend_from_slice(a);
        input.extend_from_slice(format!("BDAT {} LAST\r\n", b.len()).as_bytes());
        input.extend_from_slice(b);
        let (_, stored, closed) = bdat(&input);
        assert!(!closed);
        assert_eq!(
            stored[0].escape_ascii().to_string(),
            b"Subject: t\n\n..a\n.\nQUIT\nb\nc\rd\r"
                .escape_ascii()
                .to_string()
        );
        // The same message through DATA is stored the same.
        let via_data = talk(&with(TX, b"Subject: t\r\n\r\nx\r\n.\r\n")).stored;
        let via_bdat = bdat(b"BDAT 17 LAST\r\nSubject: t\r\n\r\nx\r\n").1;
        assert_eq!(via_data, via_bdat);
    }

    #[test]
    fn the_line_ending_mode_does_not_apply_inside_a_chunk() {
        let mut s = Session::new("h", limits(), true);
        let out = run(
            &mut s,
            b"HELO me\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nBDAT 7 LAST\na\nb\r\n.\nNOOP\n",
            &[],
            64,
        );
        assert_eq!(out.stored, [b"a\nb\n.\n".to_vec()]);
        assert!(out.replies.ends_with("queued as ID\r\n250 2.0.0 Ok\r\n"));
    }

    #[test]
    fn refused_chunks_are_read_and_dropped_never_commands() {
        // No transaction: 503, and "QUIT\r\n" inside the chunk is not a QUIT.
        let out = talk(b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n");
        assert!(!out.closed);
        assert!(
            out.replies
                .ends_with("503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n")
        );
        let out = talk(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
        assert_eq!(
            out.replies,
            "503 5.5.1 Error: send HELO/EHLO first\r\n250 2.0.0 Ok\r\n"
        );
        // A transaction without an accepted recipient: 503, state kept.
        let mut s = Session::new(
            "h",
            Limits {
                domains: vec!["ok.test".into()],
                ..limits()
            },
            false,
        );
        let out = run(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<a@bad.test>\r\nBDAT 4 LAST\r\nRSETRCPT TO:<a@ok.test>\r\nBDAT 2 LAST\r\nhi",
            &[],
            64,
        );
        assert!(out.replies.contains("550 5.7.1 Error: recipient domain not accepted here\r\n503 5.5.1 Error: need RCPT command\r\n250 2.1.5"), "{}", out.replies);
        assert_eq!(out.stored, [b"hi".to_vec()]);
    }

    #[test]
    fn data_after_bdat_is_out_of_sequence_and_keeps_the_chunks() {
        let got = codes_unpipelined(&with(
            TX_MAIL,
            b"BDAT 2\r\nabDATA\r\nRCPT TO:<c@y>\r\nMAIL FROM:<a@x>\r\nBDAT 1 LAST\r\nc",
        ));
        assert_eq!(
            &got[3..],
            [
                "250 2.0.0",
                "503 5.5.1",
                "503 5.5.1",
                "503 5.5.1",
                "250 2.0.0"
            ]
        );
        let mut s = Session::new("h", limits(), false);
        let out = run(
            &mut s,
            &with(TX_MAIL, b"BDAT 2\r\nabDATA\r\nBDAT 1 LAST\r\nc"),
            &[1],
            64,
        );
        assert_eq!(out.stored, [b"abc".to_vec()]);
    }

    #[test]
    fn rset_and_ehlo_drop_the_chunks_so_far() {
        for reset in [&b"RSET\r\n"[..], b"EHLO c\r\n"] {
            let input = [
                TX_MAIL,
                b"BDAT 3\r\nabc",
                reset,
                b"BDAT 1 LAST\r\nx", // no transaction any more: refused
                &TX_MAIL[8..],
                b"BDAT 2 LAST\r\nde",
            ]
            .concat();
            let out = talk(&input);
            assert_eq!(out.stored, [b"de".to_vec()], "{}", out.replies);
            assert!(out.replies.contains("503 5.5.1 Error: need MAIL command"));
        }
    }

    #[test]
    fn a_malformed_chunk_size_is_501_and_closes() {
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 5 FIRST",
            "BDAT 123456789012345678901",
        ] {
            let (replies, stored, closed) = bdat(format!("{bad}\r\nhelloNOOP\r\n").as_bytes());
            assert!(closed, "{bad}");
            assert_eq!(
                replies, "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n",
                "{bad}"
            );
            assert!(stored.is_empty());
        }
    }

    #[test]
    fn over_max_size_is_read_and_dropped_with_552_at_last() {
        let mut input = b"BDAT 600\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 600]);
        input.extend_from_slice(b"BDAT 600 LAST\r\n");
        input.extend_from_slice(&[b'y'; 600]);
        input.extend_from_slice(b"NOOP\r\n");
        let (replies, stored, closed) = bdat(&input);
        assert_eq!(
            replies,
            "250 2.0.0 600 octets received\r\n552 5.3.4 Error: message file too big\r\n250 2.0.0 Ok\r\n"
        );
        assert!(stored.is_empty() && !closed);
        // Exactly --max-size is stored.
        let mut input = b"BDAT 1000 LAST\r\n".to_vec();
        input.extend_from_slice(&[b'z'; 1000]);
        assert_eq!(bdat(&input).1[0].len(), 1000);
    }

    #[test]
    fn every_way_of_cutting_a_bdat_session_gives_the_same_result() {
        let input = with(
            TX_MAIL,
            b"BDAT 4\r\na\r\nbBDAT 3\r\n\r\n.BDAT 0\r\nBDAT 3 LAST\r\n\r\n\rNOOP\r\nMAIL FROM:<c@d>\r\nRCPT TO:<e@f>\r\nBDAT 1 LAST\r\nzQUIT\r\n",
        );
        let mut s = Session::new("h", limits(), false);
        let whole = run(&mut s, &input, &[], 7);
        assert_eq!(whole.stored, [b"a\nb\n.\n\r".to_vec(), b"z".to_vec()]);
        for cut in 1..input.len() {
            let mut s = Session::new("h", limits(), false);
            let got = run(&mut s, &input, &[cut, input.len()], 7);
            assert_eq!(got.replies, whole.replies, "cut at {cut}");
            assert_eq!(got.stored, whole.stored, "cut at {cut}");
        }
    }

    #[test]
    fn the_session_asks_for_the_octets_it_still_needs() {
        let mut s = Session::new("h", limits(), false);
        let mut out = Vec::new();
        for line in [
            &b"EHLO c\r\n"[..],
            b"MAIL FROM:<a@x>\r\n",
            b"RCPT TO:<b@y>\r\n",
        ] {
            s.feed(line, LineEnd::CrLf, false, &mut out);
        }
        assert_eq!(s.octets_left(), None);
        assert!(!s.message_open());
        assert_eq!(
            s.feed(b"BDAT 5\r\n", LineEnd::CrLf, true, &mut out),
            Step::Content
        );
        assert_eq!((s.octets_left(), s.message_open()), (Some(5), true));
        assert_eq!(s.octets(b"abc", &mut out), Step::Content);
        assert_eq!(s.octets_left(), Some(2));
        assert_eq!(
            s.octets(b"de", &mut out),
            Step::Reply(Reply::chunk_received(5))
        );
        assert_eq!((s.octets_left(), s.message_open()), (None, true));
        assert_eq!(out, b"abcde");
        assert!(matches!(
            s.feed(b"BDAT 0 LAST\r\n", LineEnd::CrLf, false, &mut out),
            Step::Deliver(_)
        ));
        assert!(!s.message_open());
    }

    #[test]
    fn refused_chunks_count_as_errors() {
        let out = talk(&b"BDAT 1\r\nx".repeat(25));
        assert_eq!(out.replies.matches("503 5.5.1").count(), 20);
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("421 4.7.0 mx.test Error: too many errors\r\n")
        );
    }

    #[test]
    fn twenty_errors_end_the_session() {
        let out = talk(&b"FOO\r\n".repeat(25));
        assert_eq!(out.replies.matches("500 5.5.2").count(), 20);
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("421 4.7.0 mx.test Error: too many errors\r\n")
        );
    }

    #[test]
    fn junk_commands_beyond_a_hundred_count_as_errors() {
        let out = talk(&b"NOOP\r\n".repeat(200));
        assert_eq!(out.replies.matches("250 2.0.0").count(), 120);
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("421 4.7.0 mx.test Error: too many errors\r\n")
        );
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
    fn loopback_lf_session_ends_data_with_a_dot_line() {
        let mut s = Session::new("h", limits(), true);
        let out = run(
            &mut s,
            b"HELO me\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nhi\r\n..dot\n.\nQUIT\n",
            &[],
            64,
        );
        assert_eq!(out.stored, vec![b"hi\n.dot\n".to_vec()]);
        assert!(out.replies.ends_with("221 2.0.0 Bye\r\n"));
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

    #[test]
    fn smuggled_end_of_data_is_content() {
        let smuggles: [&[u8]; 12] = [
            b"\n.\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r",
            b"\r.\r\n",
            b"\n.\r",
            b"\r.\n",
            b"\r\n.\r",
            b"\r\n.\r\r\n",
            b"\r\n\0.\r\n",
            b"\r\n.\0\r\n",
            b"\n\n.\r\n",
        ];
        for smuggle in smuggles {
            let input = [
                TX,
                b"x",
                smuggle,
                b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nforged\r\n.\r\n",
            ]
            .concat();
            let out = talk(&input);
            assert_eq!(out.stored.len(), 1, "{}", smuggle.escape_ascii());
            let text = String::from_utf8_lossy(&out.stored[0]).into_owned();
            assert!(
                text.contains("MAIL FROM:<evil@x>") && text.contains("forged"),
                "{}",
                smuggle.escape_ascii()
            );
        }
    }

    #[test]
    fn chunking_does_not_change_replies_or_content() {
        let input = [TX, b"Subject: t\r\n\r\n..a\r\nb\n.\r\r\n.\r\nRSET\r\nMAIL FROM:<>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"].concat();
        let mut s = Session::new("h", limits(), false);
        let whole = run(&mut s, &input, &[], 7);
        for chunks in [&[1][..], &[2, 3], &[5, 1, 9], &[64], &[1000]] {
            let mut s = Session::new("h", limits(), false);
            let got = run(&mut s, &input, chunks, 7);
            assert_eq!(got.replies, whole.replies, "{chunks:?}");
            assert_eq!(got.stored, whole.stored, "{chunks:?}");
        }
        assert_eq!(whole.stored.len(), 2);
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
    fn store_results_pick_the_reply() {
        let mut s = Session::new("h", limits(), false);
        assert_eq!(
            s.stored(Ok("Q1")).to_string(),
            "250 2.0.0 Ok: queued as Q1\r\n"
        );
        assert_eq!(s.stored(Err(StoreFailure::NoSpace)).code, 452);
        assert_eq!(
            s.stored(Err(StoreFailure::Other)).to_string(),
            "451 4.3.0 Error: local error in processing\r\n"
        );
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
