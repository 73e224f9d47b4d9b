//! One connection from greeting to close: timed, capped reads through one
//! buffered reader over a plain or TLS `Stream`, the session fed line by
//! line, replies flushed when the input buffer is drained, and messages
//! streamed to the writer. STARTTLS and the password check are done here
//! when the session asks. Never touches the file system.

use crate::events::{Events, Refused};
use crate::maildir::StoreError;
use crate::message::{self, Trace};
use crate::proxy::{self, Cidr, Origin};
use crate::smtp::fail::{self, Counter, Refusal, Stage};
use crate::smtp::{
    AuthPolicy, COMMAND_READ_MAX, Credentials, Envelope, Limits, LineEnd, Reply, Security, Session,
    Step, StoreFailure, Tls, read_line, read_octets,
};
use crate::users::Users;
use crate::writer::{self, Handle, Upload};
use log::{Level, debug, info, log_enabled, trace, warn};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often a blocked read wakes to check its deadline and shutdown.
const POLL: Duration = Duration::from_millis(200);
/// One DATA phase may last at most this long (SPEC limits).
const DATA_MAX: Duration = Duration::from_secs(3600);
/// Message text is read in pieces of at most this many bytes.
const DATA_PIECE: usize = 8 * 1024;
const READ_BUFFER: usize = 16 * 1024;
/// Replies are written out when this much is waiting, as a BufWriter would.
const OUT_BUFFER: usize = 4096;
/// After the last reply, input is drained this long (or this much) so the
/// reply is not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 1 << 20;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub host: String,
    pub limits: Limits,
    pub timeout: Duration,
    pub shutdown: AtomicBool,
    /// `--proxy-from`: peers that must send a PROXY header first.
    pub proxy_from: Vec<Cidr>,
    /// TLS and AUTH, as configured.
    pub secure: Secure,
    seq: AtomicU64,
    pid: u32,
    /// `--events`: refusals are written here before their reply.
    pub events: Option<Arc<Events>>,
    /// `--fail` rules and their counters, and whether to report refusals.
    pub hooks: fail::Hooks,
}

/// The `--fail` counters: per stage, across all connections. One atomic
/// increment per arrival gives each arrival its own number, so `every 3`
/// picks exactly a third of them however the connections interleave.
#[derive(Debug, Default)]
pub struct StageCounters([AtomicU64; 5]);

impl Counter for StageCounters {
    fn arrive(&self, stage: Stage) -> u64 {
        self.0[stage.index()].fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// TLS and AUTH as configured: the rustls configuration and who may log in.
#[derive(Default)]
pub struct Secure {
    pub tls: Option<Arc<ServerConfig>>,
    /// `--tls-required` (applies to `--listen` addresses).
    pub tls_required: bool,
    pub users: Option<Users>,
    pub auth_insecure: bool,
}

impl std::fmt::Debug for Secure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secure")
            .field("tls", &self.tls.is_some())
            .field("tls_required", &self.tls_required)
            .field("auth", &self.users.is_some()) // never the hashes
            .field("auth_insecure", &self.auth_insecure)
            .finish()
    }
}

impl Secure {
    /// The session's settings on a plain (`--listen`) or implicit-TLS port.
    fn security(&self, implicit_tls: bool) -> Security {
        Security {
            tls: match (&self.tls, implicit_tls) {
                (_, true) => Tls::Active,
                (Some(_), false) => Tls::Available,
                (None, false) => Tls::Off,
            },
            tls_required: self.tls_required && !implicit_tls,
            auth: match &self.users {
                None => AuthPolicy::Off,
                Some(u) if u.required() => AuthPolicy::Required,
                Some(_) => AuthPolicy::Optional,
            },
            auth_insecure: self.auth_insecure,
        }
    }
}

impl Shared {
    pub fn new(host: String, limits: Limits, timeout: Duration) -> Shared {
        Shared {
            host,
            limits,
            timeout,
            shutdown: AtomicBool::new(false),
            proxy_from: Vec::new(),
            secure: Secure::default(),
            seq: AtomicU64::new(0),
            pid: std::process::id(),
            events: None,
            hooks: fail::Hooks::default(),
        }
    }

    /// The `refused` event of a connection the full pool turns away.
    pub fn report_busy(&self, peer: IpAddr, reply: &Reply) {
        let refusal = Refusal {
            stage: Stage::Connect,
            reply: reply.clone(),
            from: None,
            to: Vec::new(),
            address: None,
        };
        self.report(peer, &refusal);
    }

    /// Writes a `refused` event (`--events`), before its reply is sent.
    pub fn report(&self, peer: IpAddr, r: &Refusal) {
        if let Some(events) = &self.events {
            events.refused(&Refused {
                stage: r.stage.name(),
                reply: &r.reply,
                time: SystemTime::now(),
                peer,
                from: r.from.as_deref(),
                to: &r.to,
                address: r.address.as_deref(),
            });
        }
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    fn next_id(&self, now: SystemTime) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        message::queue_id(now, self.pid, seq)
    }
}

/// Serves one connection to its end. Errors are the peer's doing (reset,
/// timeout, a failed TLS handshake) and only logged. `implicit_tls`: the
/// connection came to a `--tls-listen` port.
pub fn serve(stream: TcpStream, implicit_tls: bool, shared: &Shared, writer: &Handle) {
    let peer = match stream.peer_addr() {
        // On a dual-stack listener an IPv4 peer shows as ::ffff:a.b.c.d;
        // 127.0.0.1 that way is still loopback, and logged as 127.0.0.1.
        Ok(p) => SocketAddr::new(p.ip().to_canonical(), p.port()),
        Err(_) => return, // already gone
    };
    debug!("{peer}: connected");
    let conn = Conn::new(stream, peer, shared, writer, implicit_tls);
    match conn.and_then(|mut c| c.run(implicit_tls).map(|()| c)) {
        Ok(c) => debug!(
            "{}: closed after {} messages, {} protocol errors",
            c.peer,
            c.messages,
            c.session.errors()
        ),
        Err(e) => debug!("{peer}: connection ended: {e}"),
    }
}

/// `--proxy-from`: a peer in a listed range must first send a PROXY
/// header, read through the session's own reader under the command
/// timeout, before the greeting. The client it names is the peer from here
/// on; without a valid header the connection closes with nothing sent.
fn proxied_client(
    reader: &mut BufReader<Timed>,
    peer: SocketAddr,
    shared: &Shared,
) -> io::Result<SocketAddr> {
    if !shared.proxy_from.iter().any(|c| c.contains(peer.ip())) {
        return Ok(peer);
    }
    reader.get_mut().deadline = Instant::now() + shared.timeout;
    match proxy::read_header(reader) {
        Ok(Origin::Client(c)) => {
            let client = SocketAddr::new(c.ip().to_canonical(), c.port());
            debug!("{peer}: PROXY header for {client}");
            Ok(client)
        }
        Ok(Origin::Local) => {
            debug!("{peer}: PROXY LOCAL (the proxy's own health check)");
            Ok(peer)
        }
        Ok(Origin::Unknown) => {
            debug!("{peer}: PROXY header without a client address, the proxy is the client");
            Ok(peer)
        }
        Err(e) => Err(io::Error::new(ErrorKind::InvalidData, e)),
    }
}

/// The connection's bytes: plain TCP, or TLS over it (rustls on the same
/// blocking socket, whose read timeout is the poll interval).
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A peer that closes without close_notify is gone, as in plain text.
            Stream::Tls(t) => match t.read(buf) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// A socket reader with a deadline, checked between reads and while
/// blocked, and an early exit at shutdown while a command is awaited.
struct Timed<'a> {
    stream: Stream,
    shared: &'a Shared,
    deadline: Instant,
    /// In DATA: each read moves the deadline, up to this hard limit.
    data_until: Option<Instant>,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if Instant::now() >= self.deadline {
                return Err(ErrorKind::TimedOut.into());
            }
            match self.stream.read(buf) {
                Ok(n) => {
                    if let Some(hard) = self.data_until {
                        self.deadline = hard.min(Instant::now() + self.shared.timeout);
                    }
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.data_until.is_none() && self.shared.stopping() {
                        // Not `Interrupted`: read_until would retry that.
                        return Err(io::Error::other(Stopping));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Timed<'_> {
    /// Turns the plain stream into TLS: the handshake must finish within
    /// `--timeout`, and gives up at shutdown, as a command read does.
    /// `early`: handshake bytes the reader already took from the socket
    /// (after a PROXY header on an implicit-TLS port).
    fn start_tls(&mut self, config: &Arc<ServerConfig>, mut early: &[u8]) -> io::Result<()> {
        let Stream::Plain(tcp) = &self.stream else {
            return Err(io::Error::other("TLS is already active"));
        };
        let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp.try_clone()?);
        while !early.is_empty() {
            tls.conn.read_tls(&mut early)?;
            tls.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        }
        self.data_until = None;
        self.deadline = Instant::now() + self.shared.timeout;
        while tls.conn.is_handshaking() {
            if Instant::now() >= self.deadline {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            match tls.conn.complete_io(&mut tls.sock) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.shared.stopping() {
                        return Err(io::Error::other(Stopping));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// `TLSv1.3 with cipher ...` once TLS is up.
    fn tls(&self) -> Option<String> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(t) => crate::tls::describe(&t.conn),
        }
    }
}

/// The marker error of a read cut short by shutdown.
#[derive(Debug)]
struct Stopping;

impl std::fmt::Display for Stopping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server shutting down")
    }
}

impl std::error::Error for Stopping {}

struct Conn<'a> {
    session: Session,
    reader: BufReader<Timed<'a>>,
    /// Replies not yet written; see the flush rule in `run`.
    out: Vec<u8>,
    shared: &'a Shared,
    writer: &'a Handle,
    peer: SocketAddr,
    line: Vec<u8>,
    body: Vec<u8>,
    upload: Option<Upload<'a>>,
    failed: Option<StoreError>,
    /// The queue id of the message in DATA.
    id: String,
    messages: u32,
}

impl<'a> Conn<'a> {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        shared: &'a Shared,
        writer: &'a Handle,
        implicit_tls: bool,
    ) -> io::Result<Conn<'a>> {
        stream.set_nodelay(true)?; // replies are batched by the flush rule instead
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(shared.timeout))?;
        let timed = Timed {
            stream: Stream::Plain(stream),
            shared,
            deadline: Instant::now(),
            data_until: None,
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, timed);
        let peer = proxied_client(&mut reader, peer, shared)?;
        Ok(Conn {
            session: Session::new(&shared.host, shared.limits.clone(), peer.ip().is_loopback())
                .secured(shared.secure.security(implicit_tls))
                .with_hooks(shared.hooks.clone()),
            reader,
            out: Vec::with_capacity(OUT_BUFFER),
            shared,
            writer,
            peer,
            line: Vec::with_capacity(COMMAND_READ_MAX),
            body: Vec::new(),
            upload: None,
            failed: None,
            id: String::new(),
            messages: 0,
        })
    }

    fn run(&mut self, implicit_tls: bool) -> io::Result<()> {
        if implicit_tls {
            // RFC 8314: TLS first, then the greeting. What the reader holds
            // (read along with a PROXY header) is the start of the handshake.
            let early = self.reader.buffer().to_vec();
            self.reader.consume(early.len());
            self.handshake(&early)?;
        }
        if self.shared.stopping() {
            return self.close(&[Reply::shutting_down(&self.shared.host)]);
        }
        let opening = self.session.open(); // the greeting, or a --fail connect rule
        if !self.act(opening)? {
            return Ok(());
        }
        self.flush()?;
        loop {
            let octets = self.session.octets_left();
            let in_data = self.session.in_data() || octets.is_some();
            if !in_data && self.shared.stopping() {
                let reply = self.session.closing(Reply::shutting_down);
                return self.close(&[reply]);
            }
            self.arm(in_data);
            if let Some(left) = octets {
                if !self.chunk(left)? {
                    return Ok(());
                }
                continue;
            }
            let (max, skip) = if in_data {
                (DATA_PIECE, false)
            } else {
                (self.session.line_max(), true)
            };
            let end = match read_line(
                &mut self.reader,
                &mut self.line,
                max,
                self.session.framing(),
                skip,
            ) {
                Ok(LineEnd::Eof) => return Ok(()), // peer gone; an unfinished upload is aborted
                Ok(end) => end,
                Err(e) => return self.read_failed(e),
            };
            if !in_data && log_enabled!(Level::Trace) {
                // The AUTH check runs only when the line would be logged.
                if self.session.secret(&self.line) {
                    trace!(
                        "{}: <<< (AUTH data, {} octets, not logged)",
                        self.peer,
                        self.line.len()
                    );
                } else {
                    trace!("{}: <<< {}", self.peer, self.line.escape_ascii());
                }
            }
            let pending = self.input_waiting();
            let step = self.session.feed(&self.line, end, pending, &mut self.body);
            if !self.act(step)? {
                return Ok(());
            }
            // `act` reads nothing, so `pending` still holds (STARTTLS drops
            // the pipelined rest but has flushed already).
            if !pending {
                self.flush()?; // the pipelined batch is answered; not before
            }
        }
    }

    /// Reads raw octets of a BDAT chunk (at most `left`, DATA's piece size
    /// and timeouts) and feeds them; false once the connection is closed.
    fn chunk(&mut self, left: u64) -> io::Result<bool> {
        match read_octets(
            &mut self.reader,
            &mut self.line,
            left.min(DATA_PIECE as u64),
        ) {
            Ok(0) => return Ok(false), // peer gone mid-chunk: the upload is aborted
            Ok(_) => {}
            Err(e) => return self.read_failed(e).map(|()| false),
        }
        let step = self.session.octets(&self.line, &mut self.body);
        if !self.act(step)? {
            return Ok(false);
        }
        if !self.input_waiting() {
            self.flush()?;
        }
        Ok(true)
    }

    /// Does what the session asked; false once the connection is closed.
    fn act(&mut self, step: Step) -> io::Result<bool> {
        if let Some(i) = self.session.take_injection() {
            info!(
                "{}: --fail {:?} fired at {} #{}",
                self.peer,
                i.rule,
                i.stage.name(),
                i.n
            );
        }
        match step {
            Step::Drop => {
                self.flush()?; // earlier replies stand; this step gets none
                let _ = self.reader.get_ref().stream.tcp().shutdown(Shutdown::Both);
                return Ok(false);
            }
            Step::Delay(pause, then) => {
                self.pause(pause);
                return self.act(*then);
            }
            Step::Reply(r) => self.send(&r)?,
            Step::Close(replies) => {
                self.close(&replies)?;
                return Ok(false);
            }
            Step::CheckSpace(bytes) => {
                let reply = self.session.space_checked(self.writer.has_room(bytes));
                self.send(&reply)?;
            }
            Step::StartData(r) => {
                self.body.clear();
                self.start_upload();
                self.send(&r)?;
            }
            Step::Content => {
                self.open_upload();
                self.pass_on();
            }
            Step::Deliver(envelope) => {
                if self.upload.is_none() && self.failed.is_none() {
                    self.start_upload(); // `BDAT 0 LAST` as the only chunk
                }
                let reply = self.deliver(envelope);
                self.send(&reply)?;
            }
            Step::StartTls(r) => self.start_tls(&r)?,
            Step::Authenticate(credentials) => return self.authenticate(credentials),
            Step::Discard(r) => {
                self.upload = None; // aborts: nothing is stored
                self.body.clear();
                self.send(&r)?;
                self.warn_bare_lf();
            }
        }
        if !self.session.message_open() && (self.upload.is_some() || self.failed.is_some()) {
            // BDAT chunks dropped by RSET, EHLO and the like: nothing is stored.
            self.upload = None;
            self.failed = None;
            self.body.clear();
        }
        Ok(true)
    }

    /// BDAT: the first chunk's octets open the upload (DATA opens it at 354).
    fn open_upload(&mut self) {
        if self.upload.is_none() && self.failed.is_none() && self.session.message_open() {
            self.start_upload();
        }
    }

    fn start_upload(&mut self) {
        let now = SystemTime::now();
        self.id = self.shared.next_id(now);
        let trace = Trace {
            id: self.id.clone(),
            peer: self.peer.ip(),
            host: self.shared.host.clone(),
            received: now,
            tls: self.reader.get_ref().tls(),
        };
        self.failed = None;
        self.upload = Some(self.writer.upload(trace));
    }

    /// Hands a full chunk of message text to the writer.
    fn pass_on(&mut self) {
        if self.body.len() < writer::CHUNK {
            return;
        }
        if let (Some(upload), Some(envelope)) = (self.upload.as_mut(), self.session.envelope())
            && let Err(e) = upload.send(envelope, &mut self.body)
        {
            self.failed = Some(e);
            self.upload = None;
        }
        self.body.clear(); // after a failure the rest is read and dropped
    }

    fn deliver(&mut self, envelope: Envelope) -> Reply {
        self.warn_bare_lf();
        let result = match (self.upload.take(), self.failed.take()) {
            (_, Some(e)) => Err(e),
            (Some(upload), None) => upload.finish(envelope, &mut self.body),
            (None, None) => Err(StoreError::UnknownUpload),
        };
        self.body = Vec::new();
        match result {
            Ok(()) => {
                self.messages += 1;
                self.session.stored(Ok(&self.id))
            }
            Err(StoreError::NoSpace(_)) => self.session.stored(Err(StoreFailure::NoSpace)),
            Err(_) => self.session.stored(Err(StoreFailure::Other)),
        }
    }

    fn warn_bare_lf(&mut self) {
        if self.session.take_bare_lf_warning() {
            warn!(
                "{}: bare LF in message text of a CRLF session (kept as content)",
                self.peer
            );
        }
    }

    /// Sets the read deadline: one command line, or the DATA idle gap
    /// within the one-hour cap.
    fn arm(&mut self, in_data: bool) {
        let timed = self.reader.get_mut();
        let now = Instant::now();
        if !in_data {
            timed.data_until = None;
            timed.deadline = now + self.shared.timeout;
        } else if timed.data_until.is_none() {
            timed.data_until = Some(now + DATA_MAX);
            timed.deadline = now + self.shared.timeout;
        }
    }

    fn read_failed(&mut self, e: io::Error) -> io::Result<()> {
        let reply = if e.kind() == ErrorKind::TimedOut {
            self.session.closing(Reply::timeout)
        } else if e.get_ref().is_some_and(|inner| inner.is::<Stopping>()) {
            self.session.closing(Reply::shutting_down)
        } else {
            return Err(e);
        };
        debug!("{}: {e}", self.peer);
        self.close(&[reply])
    }

    /// `--fail ...=delay`: holds this session only, waking at shutdown.
    fn pause(&mut self, pause: Duration) {
        let until = Instant::now() + pause;
        while !self.shared.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    fn send(&mut self, reply: &Reply) -> io::Result<()> {
        if let Some(refusal) = self.session.take_refusal() {
            self.shared.report(self.peer.ip(), &refusal); // before the reply
        }
        trace!("{}: >>> {}", self.peer, reply.to_string().escape_debug());
        write!(self.out, "{reply}")?;
        if self.out.len() >= OUT_BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    /// Input already received: in the reader's buffer, or (under TLS)
    /// decrypted by rustls and not yet taken by the reader.
    fn input_waiting(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        match &mut self.reader.get_mut().stream {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t
                .conn
                .process_new_packets()
                .is_ok_and(|io| io.plaintext_bytes_to_read() > 0),
        }
    }

    /// Writes the waiting replies to the stream (through TLS if it is on).
    fn write_out(&mut self) -> io::Result<()> {
        let stream = &mut self.reader.get_mut().stream;
        stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.reader.get_mut().stream.flush()
    }

    /// RFC 3207: `220`, then the handshake; what the client pipelined after
    /// STARTTLS is thrown away, never read as commands (CVE-2011-0411).
    fn start_tls(&mut self, ready: &Reply) -> io::Result<()> {
        self.send(ready)?;
        self.flush()?;
        let dropped = self.reader.buffer().len();
        self.reader.consume(dropped);
        if dropped > 0 {
            debug!(
                "{}: dropped {dropped} bytes pipelined after STARTTLS",
                self.peer
            );
        }
        self.handshake(&[])?;
        self.session.tls_started();
        Ok(())
    }

    fn handshake(&mut self, early: &[u8]) -> io::Result<()> {
        let Some(config) = self.shared.secure.tls.as_ref() else {
            return Err(io::Error::other("TLS is not configured"));
        };
        let timed = self.reader.get_mut();
        if let Err(e) = timed.start_tls(config, early) {
            // Logged at debug by `serve`; the worker is free again.
            return Err(io::Error::new(
                e.kind(),
                format!("TLS handshake failed: {e}"),
            ));
        }
        debug!("{}: TLS up: {}", self.peer, timed.tls().unwrap_or_default());
        Ok(())
    }

    /// Checks the password (bcrypt for `--auth-file`: CPU only) and hands
    /// the answer to the session; the credentials are dropped there.
    fn authenticate(&mut self, credentials: Credentials) -> io::Result<bool> {
        let ok = self
            .shared
            .secure
            .users
            .as_ref()
            .is_some_and(|u| u.check(&credentials));
        let user = credentials.user.escape_debug().to_string();
        if ok {
            info!("{}: authenticated as {user}", self.peer);
        } else {
            debug!("{}: authentication failed for {user}", self.peer);
        }
        let step = self.session.authenticated(credentials, ok);
        self.act(step)
    }

    /// Writes the last replies, sends FIN, and drains what the client still
    /// sends for a moment, so that a reset does not destroy the reply.
    fn close(&mut self, replies: &[Reply]) -> io::Result<()> {
        for r in replies {
            self.send(r)?;
        }
        self.write_out()?; // the replies go before close_notify
        if let Stream::Tls(t) = &mut self.reader.get_mut().stream {
            t.conn.send_close_notify();
        }
        self.flush()?;
        let tcp = self.reader.get_ref().stream.tcp();
        tcp.shutdown(Shutdown::Write)?;
        linger(tcp);
        Ok(())
    }
}

/// Drains the raw socket (TLS records too, undecrypted) for `LINGER` or
/// `LINGER_BYTES`, until the peer closes.
fn linger(mut tcp: &TcpStream) {
    let deadline = Instant::now() + LINGER;
    let (mut left, mut buf) = (LINGER_BYTES, [0u8; 4096]);
    while left > 0 && Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => left = left.saturating_sub(n as u64),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}
