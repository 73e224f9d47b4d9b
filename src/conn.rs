//! One connection from greeting to close: timed, capped reads through one
//! buffered reader, the session fed line by line, replies flushed when the
//! input buffer is drained, and messages streamed to the writer. Never
//! touches the file system.

use crate::maildir::StoreError;
use crate::message::{self, Trace};
use crate::proxy::{self, Cidr, Origin};
use crate::smtp::{
    COMMAND_READ_MAX, Envelope, Limits, LineEnd, Reply, Session, Step, StoreFailure, read_line,
};
use crate::writer::{self, Handle, Upload};
use log::{debug, trace, warn};
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often a blocked read wakes to check its deadline and shutdown.
const POLL: Duration = Duration::from_millis(200);
/// One DATA phase may last at most this long (SPEC limits).
const DATA_MAX: Duration = Duration::from_secs(3600);
/// Message text is read in pieces of at most this many bytes.
const DATA_PIECE: usize = 8 * 1024;
const READ_BUFFER: usize = 16 * 1024;
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
    seq: AtomicU64,
    pid: u32,
}

impl Shared {
    pub fn new(host: String, limits: Limits, timeout: Duration) -> Shared {
        Shared {
            host,
            limits,
            timeout,
            shutdown: AtomicBool::new(false),
            proxy_from: Vec::new(),
            seq: AtomicU64::new(0),
            pid: std::process::id(),
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
/// timeout) and only logged.
pub fn serve(stream: TcpStream, shared: &Shared, writer: &Handle) {
    let peer = match stream.peer_addr() {
        // On a dual-stack listener an IPv4 peer shows as ::ffff:a.b.c.d;
        // 127.0.0.1 that way is still loopback, and logged as 127.0.0.1.
        Ok(p) => SocketAddr::new(p.ip().to_canonical(), p.port()),
        Err(_) => return, // already gone
    };
    debug!("{peer}: connected");
    match Conn::new(stream, peer, shared, writer).and_then(|mut c| c.run().map(|()| c)) {
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
        Ok(origin) => {
            // LOCAL: the proxy's own health check; UNKNOWN: no address.
            debug!("{peer}: PROXY header {origin:?}, the proxy is the client");
            Ok(peer)
        }
        Err(e) => Err(io::Error::new(ErrorKind::InvalidData, e)),
    }
}

/// A socket reader with a deadline, checked between reads and while
/// blocked, and an early exit at shutdown while a command is awaited.
struct Timed<'a> {
    stream: TcpStream,
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
    out: BufWriter<TcpStream>,
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
    ) -> io::Result<Conn<'a>> {
        stream.set_nodelay(true)?; // replies are batched by the flush rule instead
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(shared.timeout))?;
        let out = BufWriter::with_capacity(4096, stream.try_clone()?);
        let timed = Timed {
            stream,
            shared,
            deadline: Instant::now(),
            data_until: None,
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, timed);
        let peer = proxied_client(&mut reader, peer, shared)?;
        Ok(Conn {
            session: Session::new(&shared.host, shared.limits.clone(), peer.ip().is_loopback()),
            reader,
            out,
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

    fn run(&mut self) -> io::Result<()> {
        if self.shared.stopping() {
            return self.close(&[Reply::shutting_down(&self.shared.host)]);
        }
        let greeting = self.session.greeting();
        self.send(&greeting)?;
        self.out.flush()?;
        loop {
            let in_data = self.session.in_data();
            if !in_data && self.shared.stopping() {
                let reply = self.session.closing(Reply::shutting_down);
                return self.close(&[reply]);
            }
            self.arm(in_data);
            let (max, skip) = if in_data {
                (DATA_PIECE, false)
            } else {
                (COMMAND_READ_MAX, true)
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
            if !in_data {
                trace!("{}: <<< {}", self.peer, self.line.escape_ascii());
            }
            let pending = !self.reader.buffer().is_empty();
            let step = self.session.feed(&self.line, end, pending, &mut self.body);
            if !self.act(step)? {
                return Ok(());
            }
            if self.reader.buffer().is_empty() {
                self.out.flush()?; // the pipelined batch is answered; not before
            }
        }
    }

    /// Does what the session asked; false once the connection is closed.
    fn act(&mut self, step: Step) -> io::Result<bool> {
        match step {
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
                self.start_upload();
                self.send(&r)?;
            }
            Step::Content => self.pass_on(),
            Step::Deliver(envelope) => {
                let reply = self.deliver(envelope);
                self.send(&reply)?;
            }
            Step::Discard(r) => {
                self.upload = None; // aborts: nothing is stored
                self.body.clear();
                self.send(&r)?;
                self.warn_bare_lf();
            }
        }
        Ok(true)
    }

    fn start_upload(&mut self) {
        let now = SystemTime::now();
        self.id = self.shared.next_id(now);
        let trace = Trace {
            id: self.id.clone(),
            peer: self.peer.ip(),
            host: self.shared.host.clone(),
            received: now,
        };
        self.failed = None;
        self.body.clear();
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

    fn send(&mut self, reply: &Reply) -> io::Result<()> {
        trace!("{}: >>> {}", self.peer, reply.to_string().escape_debug());
        write!(self.out, "{reply}")
    }

    /// Writes the last replies, sends FIN, and drains what the client still
    /// sends for a moment, so that a reset does not destroy the reply.
    fn close(&mut self, replies: &[Reply]) -> io::Result<()> {
        for r in replies {
            self.send(r)?;
        }
        self.out.flush()?;
        let timed = self.reader.get_mut();
        timed.stream.shutdown(Shutdown::Write)?;
        timed.deadline = Instant::now() + LINGER;
        timed.data_until = None;
        let _ = io::copy(&mut Read::take(timed, LINGER_BYTES), &mut io::sink());
        Ok(())
    }
}
