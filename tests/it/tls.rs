//! SPEC "TLS": STARTTLS and implicit TLS through the real binary over real
//! TLS (a rustls client that pins the self-signed certificate by the
//! SHA-256 fingerprint the server logs, or trusts a PEM certificate).

use crate::harness::{Client, Server, TIMEOUT, run, wait_until};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(deprecated)] // ring, as the server uses
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `AB:CD:...`, computed here, not by the code under test.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = d.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Accepts exactly the certificate with this fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("fingerprint differs".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The fingerprint the server logged for its self-signed certificate.
pub fn logged_fingerprint(server: &Server) -> String {
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("SHA-256 fingerprint "))
        .unwrap_or_else(|| panic!("no fingerprint in the log:\n{log}"));
    line.rsplit(' ').next().unwrap().to_string()
}

/// A client that trusts only the server's logged certificate.
pub fn pinned(server: &Server) -> Arc<ClientConfig> {
    pinned_to(server, rustls::DEFAULT_VERSIONS)
}

/// As `pinned`, speaking only these TLS versions.
fn pinned_to(
    server: &Server,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Pinned {
        fingerprint: logged_fingerprint(server),
        provider: Arc::clone(&provider),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Arc::new(config)
}

/// The `--tls-listen` address (logged with `(TLS)`).
pub fn tls_addr(server: &Server) -> SocketAddr {
    let log = server.log();
    log.lines()
        .filter(|l| l.ends_with(" (TLS)"))
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no TLS listener in the log:\n{log}"))
}

/// SMTP over TLS: whole replies read, as `harness::Client` does.
pub struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Does the handshake over `tcp` (fresh, or after `220` to STARTTLS).
    pub fn over(tcp: TcpStream, config: &Arc<ClientConfig>, name: &str) -> io::Result<TlsClient> {
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        let name = ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
        let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient {
            reader: BufReader::new(tls),
        })
    }

    /// Connects to an implicit-TLS port and reads the greeting.
    pub fn implicit(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsClient {
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        let mut c = TlsClient::over(tcp, config, "localhost").unwrap();
        c.expect("220 ");
        c
    }

    /// Greeting, EHLO, STARTTLS, handshake on a `--listen` port.
    pub fn starttls(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsClient {
        let mut plain = Client::greeted(addr);
        let ehlo = plain.cmd("EHLO c", "250");
        assert!(
            ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
            "{ehlo}"
        );
        plain.cmd("STARTTLS", "220 2.0.0 ");
        let tcp = plain.stream().try_clone().unwrap();
        TlsClient::over(tcp, config, "localhost").unwrap()
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.reader.get_ref().conn.protocol_version()
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let tls = self.reader.get_mut();
        tls.write_all(bytes.as_ref()).unwrap();
        tls.flush().unwrap();
    }

    /// One whole reply; "" at the end of the stream.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return all,
                Err(e) => panic!("reading a reply: {e} (so far {all:?})"),
            }
            all.push_str(&line);
            if line.is_empty() || line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    pub fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    pub fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(format!("{line}\r\n"));
        self.expect(prefix)
    }

    /// MAIL, RCPT, DATA and the text; the reply to the final dot.
    pub fn mail(&mut self, from: &str, to: &str, text: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
        self.cmd(&format!("RCPT TO:<{to}>"), "250 2.1.5");
        self.cmd("DATA", "354");
        self.send(format!("{text}.\r\n"));
        self.reply()
    }

    /// Everything until the server closes.
    pub fn rest(&mut self) -> String {
        let mut v = Vec::new();
        let _ = self.reader.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }
}

fn stored_text(server: &Server) -> String {
    assert!(wait_until(TIMEOUT, || !server.new_files().is_empty()));
    std::fs::read_to_string(&server.new_files()[0]).unwrap()
}

#[test]
fn starttls_then_a_message_stored_with_tls_in_received() {
    let s = Server::start(&["--tls-self-signed"]);
    assert!(
        s.log()
            .contains("self-signed certificate for mx.test, localhost, 127.0.0.1, ::1")
    );
    let config = pinned(&s);
    let mut c = TlsClient::starttls(s.addr, &config);
    assert_eq!(c.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // As after the greeting: HELO/EHLO again, STARTTLS no longer offered.
    c.cmd("MAIL FROM:<a@x>", "503 5.5.1");
    let ehlo = c.cmd("EHLO c", "250");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.cmd("STARTTLS", "503 5.5.1");
    assert!(
        c.mail("a@x", "b@y", "Subject: t\r\n\r\nhi\r\n")
            .starts_with("250 2.0.0 Ok: queued")
    );
    c.cmd("QUIT", "221 2.0.0");
    let text = stored_text(&s);
    assert!(
        text.contains("\n\t(using TLSv1.3 with cipher TLS13_") && text.contains(" with ESMTPS id "),
        "{text}"
    );
}

#[test]
fn starttls_replies_and_no_auth_before_the_new_ehlo() {
    let s = Server::start(&["--tls-self-signed", "--auth-any"]);
    let mut plain = Client::greeted(s.addr);
    plain.cmd("STARTTLS", "503 5.5.1"); // before EHLO
    plain.cmd("EHLO c", "250");
    plain.cmd("STARTTLS now", "501 5.5.4");
    plain.cmd("STARTTLS", "220 2.0.0 Ready to start TLS");
    let tcp = plain.stream().try_clone().unwrap();
    let mut c = TlsClient::over(tcp, &pinned(&s), "localhost").unwrap();
    // As after the greeting: no AUTH before EHLO.
    c.cmd("AUTH PLAIN AHUAcA==", "503 5.5.1"); // "\0u\0p"
    c.cmd("EHLO c", "250");
    c.cmd("AUTH PLAIN AHUAcA==", "235 2.7.0");
    assert!(c.mail("a@x", "b@y", "hi\r\n").starts_with("250 2.0.0"));
    assert_eq!(s.new_files().len(), 1);
}

#[test]
fn tls_1_2_is_served_on_both_kinds_of_listener() {
    let s = Server::start(&["--tls-self-signed", "--tls-listen", "127.0.0.1:0"]);
    let config = pinned_to(&s, &[&rustls::version::TLS12]);
    let mut starttls = TlsClient::starttls(s.addr, &config);
    let mut implicit = TlsClient::implicit(tls_addr(&s), &config);
    for c in [&mut starttls, &mut implicit] {
        assert_eq!(c.version(), Some(rustls::ProtocolVersion::TLSv1_2));
        c.cmd("EHLO c", "250");
        assert!(c.mail("a@x", "b@y", "hi\r\n").starts_with("250 2.0.0"));
    }
    assert!(wait_until(TIMEOUT, || s.new_files().len() == 2));
    for f in s.new_files() {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains("(using TLSv1.2 with cipher "), "{text}");
    }
}

#[test]
fn bytes_pipelined_after_starttls_are_thrown_away() {
    // CVE-2011-0411: `STARTTLS\r\nNOOP\r\n` in one write.
    let s = Server::start(&["--tls-self-signed"]);
    let config = pinned(&s);
    let mut plain = Client::greeted(s.addr);
    plain.cmd("EHLO c", "250");
    plain.send("STARTTLS\r\nNOOP\r\n");
    assert_eq!(plain.reply(), "220 2.0.0 Ready to start TLS\r\n");
    // Nothing else in plain text: the server waits for the ClientHello.
    let tcp = plain.stream().try_clone().unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = (&tcp).read(&mut byte);
    assert!(early.is_err(), "plain bytes after 220: {early:?}");
    let mut c = TlsClient::over(tcp, &config, "localhost").unwrap();
    c.send("QUIT\r\n");
    // Exactly the reply to QUIT: none for the NOOP sent before the handshake.
    assert_eq!(c.reply(), "221 2.0.0 Bye\r\n");
    assert_eq!(c.rest(), "");
    assert!(
        s.wait_log("dropped 6 bytes pipelined after STARTTLS", TIMEOUT),
        "{}",
        s.log()
    );
}

#[test]
fn pipelining_over_tls_answers_in_order() {
    // Two messages of 40 KiB and QUIT in one write: more than the reader's
    // buffer, so part of the batch waits decrypted inside rustls.
    let s = Server::start(&["--tls-self-signed"]);
    let mut c = TlsClient::starttls(s.addr, &pinned(&s));
    c.cmd("EHLO c", "250");
    let body = "x".repeat(78) + "\r\n";
    let one = format!(
        "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: p\r\n\r\n{}.\r\n",
        body.repeat(512)
    );
    c.send(format!("{one}{one}QUIT\r\n"));
    let mut codes = Vec::new();
    loop {
        let r = c.reply();
        if r.is_empty() {
            break;
        }
        codes.push(r[..3].to_string());
    }
    assert_eq!(
        codes,
        [
            "250", "250", "354", "250", "250", "250", "354", "250", "221"
        ]
    );
    assert!(wait_until(TIMEOUT, || s.new_files().len() == 2));
}

#[test]
fn bdat_over_tls() {
    let s = Server::start(&["--tls-self-signed", "--tls-listen", "127.0.0.1:0"]);
    let mut c = TlsClient::implicit(tls_addr(&s), &pinned(&s));
    assert!(c.cmd("EHLO c", "250").contains("CHUNKING"));
    c.cmd("MAIL FROM:<a@x>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y>", "250 2.1.5");
    c.send("BDAT 7\r\nhello\r\nBDAT 9 LAST\r\nworld\r\n\r\n");
    c.expect("250 2.0.0 7 octets received");
    c.expect("250 2.0.0 Ok: queued as ");
    let text = stored_text(&s);
    assert!(
        text.ends_with("\nhello\nworld\n\n") && text.contains("with ESMTPS"),
        "{text}"
    );
}

#[test]
fn implicit_tls_greets_after_the_handshake() {
    let s = Server::start(&["--tls-self-signed", "--tls-listen", "127.0.0.1:0"]);
    let addr = tls_addr(&s);
    assert_ne!(addr, s.addr);
    let mut c = TlsClient::implicit(addr, &pinned(&s));
    let ehlo = c.cmd("EHLO c", "250");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.cmd("STARTTLS", "503 5.5.1");
    assert!(c.mail("a@x", "b@y", "hi\r\n").starts_with("250 2.0.0"));
    c.cmd("QUIT", "221");
    let text = stored_text(&s);
    assert!(
        text.contains("(using TLSv1.3 with cipher") && text.contains("with ESMTPS"),
        "{text}"
    );
}

#[test]
fn a_proxy_header_and_the_client_hello_in_one_write() {
    // The reader takes the ClientHello along with the PROXY header: it must
    // go to rustls, not be lost.
    let s = Server::start(&[
        "--tls-self-signed",
        "--tls-listen",
        "127.0.0.1:0",
        "--proxy-from",
        "127.0.0.1/32",
    ]);
    let config = pinned(&s);
    let tcp = TcpStream::connect_timeout(&tls_addr(&s), TIMEOUT).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(Arc::clone(&config), name).unwrap();
    let mut first = b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 465\r\n".to_vec();
    conn.write_tls(&mut first).unwrap();
    (&tcp).write_all(&first).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let mut c = TlsClient {
        reader: BufReader::new(tls),
    };
    c.expect("220 ");
    c.cmd("EHLO c", "250");
    assert!(c.mail("a@x", "b@y", "hi\r\n").starts_with("250 2.0.0"));
    let text = stored_text(&s);
    assert!(
        text.contains("from c (192.0.2.9)\n\t(using TLSv1.3"),
        "{text}"
    );
}

#[test]
fn a_garbage_handshake_and_a_silent_client_are_closed_and_the_next_is_served() {
    let s = Server::start(&[
        "--tls-self-signed",
        "--tls-listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--timeout",
        "2",
    ]);
    let addr = tls_addr(&s);
    let config = pinned(&s);
    // Plain SMTP to the TLS port: the handshake fails, the connection closes.
    let mut garbage = Client::connect(addr);
    garbage.send("EHLO not-tls\r\n");
    let start = Instant::now();
    let _ = garbage.read_to_end(); // a TLS alert at most, then EOF
    assert!(start.elapsed() < TIMEOUT);
    assert!(s.wait_log("TLS handshake failed", TIMEOUT), "{}", s.log());
    // A silent client holds the only worker until --timeout.
    let mut silent = Client::connect(addr);
    assert!(wait_until(TIMEOUT, || s
        .log()
        .matches(": connected")
        .count()
        == 2));
    let mut next = TlsClient::implicit(addr, &config); // waits in the queue
    next.cmd("EHLO c", "250");
    assert!(next.mail("a@x", "b@y", "hi\r\n").starts_with("250 2.0.0"));
    assert_eq!(silent.read_to_end(), "", "closed with nothing sent");
    assert!(s.wait_log("handshake timed out", TIMEOUT), "{}", s.log());
}

#[test]
fn timeouts_and_shutdown_hold_under_tls() {
    let mut s = Server::start(&["--tls-self-signed", "--timeout", "1"]);
    let config = pinned(&s);
    let mut idle = TlsClient::starttls(s.addr, &config);
    idle.send("EHLO c\r\n");
    idle.expect("250");
    assert!(
        idle.reply()
            .starts_with("421 4.4.2 mx.test Error: timeout exceeded")
    );
    let mut c = TlsClient::starttls(s.addr, &config);
    c.cmd("EHLO c", "250");
    s.signal("TERM");
    assert!(c.reply().starts_with("421 4.3.2 "));
    assert!(s.wait_exit(TIMEOUT).is_some_and(|st| st.success()));
}

#[test]
fn certificate_files_are_served_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let s = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // Real chain validation against the certificate as the only root.
    let mut roots = RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    let mut plain = Client::greeted(s.addr);
    plain.cmd("EHLO c", "250");
    plain.cmd("STARTTLS", "220");
    let tcp = plain.stream().try_clone().unwrap();
    let mut c = TlsClient::over(tcp, &config, "mx.test").unwrap();
    c.cmd("EHLO c", "250");
    // The wrong name fails verification on the client side.
    let mut plain = Client::greeted(s.addr);
    plain.cmd("EHLO c", "250");
    plain.cmd("STARTTLS", "220");
    let tcp = plain.stream().try_clone().unwrap();
    assert!(TlsClient::over(tcp, &config, "other.test").is_err());
}

fn start_error(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("m");
    let mut all = vec!["-l", "127.0.0.1:0", "-d", md.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn tls_start_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let made = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(p("c.pem"), made.cert.pem()).unwrap();
    std::fs::write(p("other.pem"), other.serialize_pem()).unwrap();
    std::fs::write(p("junk.pem"), "not pem\n").unwrap();
    let (code, err) = start_error(&[
        "--tls-cert",
        &p("missing.pem"),
        "--tls-key",
        &p("other.pem"),
    ]);
    assert_eq!(code, 1);
    let reasons: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("mailsink: "))
        .collect();
    assert_eq!(reasons.len(), 1, "{err}");
    assert!(reasons[0].contains("missing.pem"), "{err}");
    let (code, err) = start_error(&["--tls-cert", &p("c.pem"), "--tls-key", &p("other.pem")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("other.pem") && err.contains("does not fit"),
        "{err}"
    );
    let (code, err) = start_error(&["--tls-cert", &p("c.pem"), "--tls-key", &p("junk.pem")]);
    assert_eq!(code, 1);
    assert!(err.contains("junk.pem"), "{err}");
    for (args, says) in [
        (&["--tls-cert", "c.pem"][..], "--tls-cert needs --tls-key"),
        (&["--tls-key", "k.pem"][..], "--tls-key needs --tls-cert"),
        (
            &["--tls-listen", "127.0.0.1:0"][..],
            "--tls-listen needs a certificate",
        ),
    ] {
        let (code, err) = start_error(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says) && err.contains("--help"), "{err}");
    }
}

/// Used by auth.rs: a message's first Received header, unfolded.
pub fn received(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("Received: ").unwrap();
    let end = text[start..].find(";").unwrap() + start;
    text[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
