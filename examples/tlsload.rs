//! TLS load generator for `scripts/bench --tls` (issue 9): STARTTLS, then
//! mail, with rustls as the client (certificates are not checked: a sink's
//! self-signed one is the case here). Kept apart from `loadgen.rs` (std
//! only, plain text) so each stays small.
//!
//! ```text
//! tlsload --addr 127.0.0.1:2525 --mode sessions   --conns 32 --messages 10000
//! tlsload --addr 127.0.0.1:2525 --mode handshakes --conns 16 --messages 2000
//! tlsload --addr 127.0.0.1:2525 --mode hold       --conns 64 --secs 3
//! ```
//!
//! - `sessions`: `--conns` long TLS sessions; each message is one pipelined
//!   write (MAIL, RCPT, DATA, 1 KiB, the dot), then its four replies.
//! - `handshakes`: every message on a new connection: greeting, EHLO,
//!   STARTTLS, handshake, EHLO, the message, QUIT; `--conns` at a time.
//! - `hold`: opens `--conns` sessions up to EHLO after the handshake, prints
//!   `tlsload: holding N sessions`, waits `--secs`, then QUITs each.
//!
//! Last line: `tlsload: mode=M messages=N failed=F secs=S per_sec=R`.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(60);
const BODY: usize = 1024;

type Tls = BufReader<StreamOwned<ClientConnection, TcpStream>>;

#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[allow(deprecated)] // ring, as mailsink uses
fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

fn reply(r: &mut impl BufRead, want: u16) -> io::Result<()> {
    loop {
        let mut line = Vec::new();
        if r.by_ref().take(4096).read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        if line.len() < 4 || line[..3] != *want.to_string().as_bytes() {
            let text = String::from_utf8_lossy(&line);
            return Err(io::Error::other(format!("expected {want}, got {text:?}")));
        }
        if line[3] != b'-' {
            return Ok(());
        }
    }
}

/// Greeting, EHLO, STARTTLS, handshake, EHLO: a session ready for MAIL.
fn open(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Tls> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    {
        // Unbuffered until the 220 to STARTTLS: nothing of the handshake
        // may end up in a plain-text buffer.
        let mut plain = BufReader::with_capacity(1, &tcp);
        reply(&mut plain, 220)?;
        (&tcp).write_all(b"EHLO tlsload.bench.example\r\n")?;
        reply(&mut plain, 250)?;
        (&tcp).write_all(b"STARTTLS\r\n")?;
        reply(&mut plain, 220)?;
    }
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let mut tls = BufReader::with_capacity(16 * 1024, tls);
    send(&mut tls, b"EHLO tlsload.bench.example\r\n")?;
    reply(&mut tls, 250)?;
    Ok(tls)
}

fn send(tls: &mut Tls, bytes: &[u8]) -> io::Result<()> {
    let s = tls.get_mut();
    s.write_all(bytes)?;
    s.flush()
}

/// One pipelined message and its four replies.
fn message(tls: &mut Tls, batch: &[u8]) -> io::Result<()> {
    send(tls, batch)?;
    for code in [250, 250, 354, 250] {
        reply(tls, code)?;
    }
    Ok(())
}

fn batch() -> Vec<u8> {
    let mut b = b"MAIL FROM:<tlsload@bench.example>\r\nRCPT TO:<sink@bench.example>\r\nDATA\r\n\
        Subject: tlsload\r\n\r\n"
        .to_vec();
    while b.len() < BODY {
        b.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxy\r\n",
        );
    }
    b.extend_from_slice(b".\r\n");
    b
}

struct Args {
    addr: SocketAddr,
    mode: String,
    conns: usize,
    messages: usize,
    secs: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 2525)),
        mode: "sessions".into(),
        conns: 32,
        messages: 10_000,
        secs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let n = || v.parse::<usize>().map_err(|_| format!("bad {flag} {v:?}"));
        match flag.as_str() {
            "--addr" => {
                a.addr = v
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut i| i.next())
                    .ok_or(format!("bad --addr {v:?}"))?
            }
            "--mode" => a.mode = v.clone(),
            "--conns" => a.conns = n()?.max(1),
            "--messages" => a.messages = n()?,
            "--secs" => a.secs = n()? as u64,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// Runs `work(i)` for `count` items on `conns` threads; returns failures.
fn spread(conns: usize, count: usize, work: impl Fn(usize) -> io::Result<()> + Sync) -> usize {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..conns {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    if let Err(e) = work(i)
                        && failed.fetch_add(1, Ordering::Relaxed) < 3
                    {
                        eprintln!("tlsload: {e}");
                    }
                }
            });
        }
    });
    failed.into_inner()
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tlsload: {e}");
            return ExitCode::from(2);
        }
    };
    let config = client_config();
    let body = batch();
    let start = Instant::now();
    let (done, failed) = match a.mode.as_str() {
        "handshakes" => {
            let failed = spread(a.conns, a.messages, |_| {
                let mut tls = open(a.addr, &config)?;
                message(&mut tls, &body)?;
                send(&mut tls, b"QUIT\r\n")?;
                reply(&mut tls, 221)
            });
            (a.messages - failed, failed)
        }
        "sessions" => {
            let per = a.messages.div_ceil(a.conns);
            let failed = spread(a.conns, a.conns, |i| {
                let mut tls = open(a.addr, &config)?;
                let n = per.min(a.messages.saturating_sub(i * per));
                for _ in 0..n {
                    message(&mut tls, &body)?;
                }
                send(&mut tls, b"QUIT\r\n")?;
                reply(&mut tls, 221)
            });
            (a.messages - failed * per, failed * per)
        }
        "hold" => {
            let mut held = Vec::new();
            for _ in 0..a.conns {
                match open(a.addr, &config) {
                    Ok(t) => held.push(t),
                    Err(e) => {
                        eprintln!("tlsload: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            println!("tlsload: holding {} sessions", held.len());
            let _ = io::stdout().flush();
            thread::sleep(Duration::from_secs(a.secs));
            for t in &mut held {
                let _ = send(t, b"QUIT\r\n");
            }
            (0, 0)
        }
        other => {
            eprintln!("tlsload: unknown --mode {other:?}");
            return ExitCode::from(2);
        }
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tlsload: mode={} messages={done} failed={failed} secs={secs:.3} per_sec={:.1}",
        a.mode,
        done as f64 / secs.max(1e-9)
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
