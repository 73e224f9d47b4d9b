//! Pipelining SMTP load generator for `scripts/bench` (std only).
//!
//! Opens `--conns` connections to `--addr`, says EHLO on each (the server
//! must advertise PIPELINING), then sends `--messages` messages in all,
//! spread over the connections. Each message goes out as one write:
//! `MAIL FROM`, `RCPT TO`, `DATA`, the message of `--size` octets and the
//! final dot. The four replies are then read and checked (250, 250, 354,
//! 250). Latency is measured from the end of that write (the final dot) to
//! the final `250`.
//!
//! With `--bdat N` (N at least 1; the server must advertise CHUNKING too)
//! each message goes out instead as `MAIL FROM`, `RCPT TO` and N pipelined
//! `BDAT` chunks (the last one `LAST`) in one write, the same message text
//! without dot-stuffing or final dot; then 2 + N replies are read (all 250).
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:2525 \
//!     --conns 32 --messages 20000 --size 1024 [--bdat 2]
//! ```
//!
//! The last line of output is machine-readable:
//! `loadgen: messages=N failed=F secs=S msgs_per_sec=R p50_ms=A p99_ms=B max_ms=C`.
//! Exit status: 0 when every message got its 250, 1 when some failed, 2 for
//! a usage error, 3 when the server does not advertise PIPELINING (or,
//! with `--bdat`, CHUNKING).

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a single connect, read or write may take before the run gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a reply line may be before it counts as a protocol error.
const MAX_REPLY_LINE: usize = 4096;

struct Config {
    addr: SocketAddr,
    conns: usize,
    messages: usize,
    size: usize,
    /// BDAT chunks per message; 0: DATA.
    chunks: usize,
}

fn usage() -> &'static str {
    "usage: loadgen --addr HOST:PORT [--conns N] [--messages N] [--size BYTES] [--bdat CHUNKS]"
}

fn parse_args() -> Result<Config, String> {
    let mut addr = None;
    let mut conns = 32usize;
    let mut messages = 10_000usize;
    let mut size = 1024usize;
    let mut chunks = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage().to_string());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {}", usage()))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("bad value for {flag}: {value:?}"))
        };
        match flag.as_str() {
            "--addr" => {
                let resolved = value
                    .to_socket_addrs()
                    .map_err(|e| format!("bad value for --addr: {value:?}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("bad value for --addr: {value:?}"))?;
                addr = Some(resolved);
            }
            "--conns" => conns = number()?,
            "--messages" => messages = number()?,
            "--size" => size = number()?,
            "--bdat" => chunks = number()?.max(1),
            _ => return Err(format!("unknown flag {flag}; {}", usage())),
        }
    }
    let addr = addr.ok_or_else(|| format!("--addr is required; {}", usage()))?;
    if conns == 0 || messages == 0 {
        return Err("--conns and --messages must be at least 1".to_string());
    }
    Ok(Config {
        addr,
        conns: conns.min(messages),
        messages,
        size,
        chunks,
    })
}

/// The message body shared by every message: headers, then lines of 76
/// octets plus CRLF, cut so that the whole is `size` octets and ends in CRLF,
/// then the final dot. No line starts with a dot, so no stuffing is needed.
fn build_body(size: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(size + 8);
    body.extend_from_slice(
        b"From: <loadgen@bench.example>\r\n\
          To: <sink@bench.example>\r\n\
          Subject: loadgen\r\n\r\n",
    );
    let mut line = 0usize;
    while body.len() + 2 < size {
        let room = size - body.len() - 2;
        let text = format!("{line:08} ");
        let mut l: Vec<u8> = text.into_bytes();
        while l.len() < 76 {
            l.push(b'a' + (l.len() % 26) as u8);
        }
        l.truncate(room.min(76));
        body.extend_from_slice(&l);
        body.extend_from_slice(b"\r\n");
        line += 1;
    }
    if body.len() < size {
        // a size too small for the headers: pad the last line
        body.resize(size.saturating_sub(2), b'x');
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    body
}

/// Reads one (possibly multi-line) reply; returns its code and its lines.
fn read_reply(reader: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<String>)> {
    let mut lines = Vec::new();
    loop {
        let mut raw = Vec::new();
        let n = reader
            .by_ref()
            .take(MAX_REPLY_LINE as u64)
            .read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        if line.len() < 3 || !line.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad reply line {line:?}"),
            ));
        }
        let code: u16 = line[..3].parse().unwrap_or(0);
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok((code, lines));
        }
        if lines.len() > 100 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply of more than 100 lines",
            ));
        }
    }
}

fn expect(reader: &mut BufReader<TcpStream>, want: u16, what: &str) -> io::Result<Vec<String>> {
    let (code, lines) = read_reply(reader)?;
    if code != want {
        return Err(io::Error::other(format!(
            "{what}: expected {want}, got {:?}",
            lines.join(" | ")
        )));
    }
    Ok(lines)
}

/// Writes every slice, however the kernel splits the write.
fn write_all_slices(stream: &mut TcpStream, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        let n = stream.write_vectored(bufs)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

struct Connected {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

enum SetupError {
    /// The server does not advertise this extension.
    NotOffered(&'static str),
    Io(io::Error),
}

fn connect(cfg: &Config) -> Result<Connected, SetupError> {
    let stream = TcpStream::connect_timeout(&cfg.addr, IO_TIMEOUT).map_err(SetupError::Io)?;
    let setup = || -> io::Result<(Connected, Vec<String>)> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::with_capacity(16 * 1024, stream.try_clone()?);
        expect(&mut reader, 220, "greeting")?;
        writer.write_all(b"EHLO loadgen.bench.example\r\n")?;
        let lines = expect(&mut reader, 250, "EHLO")?;
        Ok((Connected { writer, reader }, lines))
    };
    let (conn, lines) = setup().map_err(SetupError::Io)?;
    let offers = |ext: &str| {
        lines
            .iter()
            .skip(1)
            .any(|l| l.get(4..).is_some_and(|k| k.eq_ignore_ascii_case(ext)))
    };
    if !offers("PIPELINING") {
        return Err(SetupError::NotOffered("PIPELINING"));
    }
    if cfg.chunks > 0 && !offers("CHUNKING") {
        return Err(SetupError::NotOffered("CHUNKING"));
    }
    Ok(conn)
}

/// One message as MAIL, RCPT and `chunks` pipelined BDAT chunks, the last
/// one LAST: the message text is `id` then `text`, cut into near-equal parts.
fn bdat_write(size: usize, id: &str, text: &[u8], chunks: usize) -> Vec<u8> {
    let message = [id.as_bytes(), text].concat();
    let mut out = format!(
        "MAIL FROM:<loadgen@bench.example> SIZE={size}\r\n\
         RCPT TO:<sink@bench.example>\r\n"
    )
    .into_bytes();
    let mut from = 0;
    for k in 1..=chunks {
        let to = message.len() * k / chunks;
        let last = if k == chunks { " LAST" } else { "" };
        out.extend_from_slice(format!("BDAT {}{last}\r\n", to - from).as_bytes());
        out.extend_from_slice(&message[from..to]);
        from = to;
    }
    out
}

struct Outcome {
    latencies: Vec<Duration>,
    failed: usize,
    error: Option<String>,
}

fn run_connection(
    mut conn: Connected,
    count: usize,
    seq_base: usize,
    body: &[u8],
    size: usize,
    chunks: usize,
    stop: &AtomicBool,
) -> Outcome {
    let mut out = Outcome {
        latencies: Vec::with_capacity(count),
        failed: 0,
        error: None,
    };
    for i in 0..count {
        if stop.load(Ordering::Relaxed) {
            out.failed += count - i;
            return out;
        }
        let head = format!(
            "MAIL FROM:<loadgen@bench.example> SIZE={size}\r\n\
             RCPT TO:<sink@bench.example>\r\n\
             DATA\r\n\
             Message-ID: <{}.{}@loadgen.bench.example>\r\n",
            std::process::id(),
            seq_base + i
        );
        let mut step = || -> io::Result<Duration> {
            if chunks > 0 {
                // The same text as DATA sends, without the final dot.
                let id = &head[head.find("Message-ID").unwrap_or(0)..];
                let text = &body[..body.len() - 3];
                let write = bdat_write(size, id, text, chunks);
                conn.writer.write_all(&write)?;
                let sent = Instant::now();
                expect(&mut conn.reader, 250, "MAIL")?;
                expect(&mut conn.reader, 250, "RCPT")?;
                for _ in 1..chunks {
                    expect(&mut conn.reader, 250, "BDAT")?;
                }
                expect(&mut conn.reader, 250, "BDAT LAST")?;
                return Ok(sent.elapsed());
            }
            let mut slices = [IoSlice::new(head.as_bytes()), IoSlice::new(body)];
            write_all_slices(&mut conn.writer, &mut slices)?;
            let sent = Instant::now();
            expect(&mut conn.reader, 250, "MAIL")?;
            expect(&mut conn.reader, 250, "RCPT")?;
            expect(&mut conn.reader, 354, "DATA")?;
            expect(&mut conn.reader, 250, "final dot")?;
            Ok(sent.elapsed())
        };
        match step() {
            Ok(lat) => out.latencies.push(lat),
            Err(e) => {
                // The session's state is unknown after a failed pipelined
                // batch: give up on this connection.
                out.failed += count - i;
                out.error = Some(e.to_string());
                return out;
            }
        }
    }
    let _ = conn.writer.write_all(b"QUIT\r\n");
    let _ = read_reply(&mut conn.reader);
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1000.0
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("loadgen: {msg}");
            return ExitCode::from(2);
        }
    };
    // The message without the Message-ID header, which is sent per message
    // in the head slice; the Message-ID line takes part of `size`.
    let id_len = format!(
        "Message-ID: <{}.{}@loadgen.bench.example>\r\n",
        std::process::id(),
        cfg.messages
    )
    .len();
    let body = Arc::new(build_body(cfg.size.saturating_sub(id_len)));

    // Connect and EHLO on every connection first, so that the clock only
    // measures mail transactions.
    let mut conns = Vec::with_capacity(cfg.conns);
    for _ in 0..cfg.conns {
        match connect(&cfg) {
            Ok(c) => conns.push(c),
            Err(SetupError::NotOffered(ext)) => {
                eprintln!("loadgen: server at {} does not advertise {ext}", cfg.addr);
                return ExitCode::from(3);
            }
            Err(SetupError::Io(e)) => {
                eprintln!("loadgen: cannot set up a session with {}: {e}", cfg.addr);
                return ExitCode::from(1);
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(cfg.conns + 1));
    let per = cfg.messages / cfg.conns;
    let extra = cfg.messages % cfg.conns;
    let mut handles = Vec::with_capacity(cfg.conns);
    let mut seq_base = 0;
    for (i, conn) in conns.into_iter().enumerate() {
        let count = per + usize::from(i < extra);
        let body = Arc::clone(&body);
        let stop = Arc::clone(&stop);
        let barrier = Arc::clone(&barrier);
        let size = cfg.size;
        let chunks = cfg.chunks;
        let base = seq_base;
        seq_base += count;
        let spawned = thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                barrier.wait();
                run_connection(conn, count, base, &body, size, chunks, &stop)
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("loadgen: cannot start a thread: {e}");
                std::process::exit(1);
            }
        }
    }
    barrier.wait();
    let start = Instant::now();

    let mut latencies = Vec::with_capacity(cfg.messages);
    let mut failed = 0usize;
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(out) => {
                latencies.extend(out.latencies);
                failed += out.failed;
                if let Some(e) = out.error {
                    errors.push(e);
                }
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                errors.push("a connection thread panicked".to_string());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ok = latencies.len();
    for e in errors.iter().take(5) {
        eprintln!("loadgen: error: {e}");
    }
    if errors.len() > 5 {
        eprintln!("loadgen: ... and {} more errors", errors.len() - 5);
    }
    let max_ms = latencies
        .last()
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "loadgen: messages={ok} failed={failed} secs={secs:.3} msgs_per_sec={:.1} \
         p50_ms={:.3} p99_ms={:.3} max_ms={max_ms:.3}",
        ok as f64 / secs.max(1e-9),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
