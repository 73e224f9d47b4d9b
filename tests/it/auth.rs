//! SPEC "Authentication": AUTH PLAIN and LOGIN through the real binary,
//! in plain text to loopback and over TLS; the password never reaches
//! anything the server writes.

use crate::harness::{Client, Server, TIMEOUT, run, wait_until};
use crate::tls::{TlsClient, pinned, received};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::Path;

/// `htpasswd -nbB -C 5 alice s3cret`
const ALICE: &str = "alice:$2y$05$f49uliBGt5lyhgCBkI5u9eyGGPHIPIpWi6gDAx0xW/Q0X2dil6.LC\n";

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

fn password_file(dir: &Path) -> String {
    let path = dir.join("users");
    std::fs::write(&path, ALICE).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_password_file_requires_auth_before_mail() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&["--auth-file", &password_file(dir.path())]);
    let mut c = Client::greeted(s.addr);
    let ehlo = c.cmd("EHLO c", "250");
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    c.cmd("MAIL FROM:<a@x>", "530 5.7.0 Authentication required");
    c.cmd(
        &format!("AUTH PLAIN {}", STANDARD.encode("\0alice\0wrong")),
        "535 5.7.8 Authentication credentials invalid",
    );
    c.cmd(
        &format!("AUTH PLAIN {}", STANDARD.encode("\0bob\0s3cret")),
        "535 5.7.8",
    );
    c.cmd("AUTH PLAIN", "334 ");
    c.cmd(
        &STANDARD.encode("\0alice\0s3cret"),
        "235 2.7.0 Authentication successful",
    );
    c.cmd("AUTH PLAIN", "503 5.5.1");
    assert!(c.mail("a@x", &["b@y"], "hi\r\n").starts_with("250 2.0.0"));
    assert!(wait_until(TIMEOUT, || s.new_files().len() == 1));
    let r = received(&s.new_files()[0]);
    assert!(r.contains(" with ESMTPA id "), "{r}");
    // the harness captures stderr on a thread of its own: wait for the lines
    let stored = || s.log().contains("to=<b@y> auth=alice size=");
    assert!(wait_until(TIMEOUT, stored), "{}", s.log());
    assert!(s.log().contains("127.0.0.1") && s.log().contains("authenticated as alice"));
}

#[test]
fn login_over_starttls_is_esmtpsa() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&[
        "--tls-self-signed",
        "--auth-file",
        &password_file(dir.path()),
    ]);
    let mut c = TlsClient::starttls(s.addr, &pinned(&s));
    let ehlo = c.cmd("EHLO c", "250");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.cmd(&b64("alice"), "334 UGFzc3dvcmQ6");
    c.cmd(&b64("s3cret"), "235 2.7.0");
    assert!(c.mail("a@x", "b@y", "hi\r\n").starts_with("250 2.0.0"));
    assert!(wait_until(TIMEOUT, || s.new_files().len() == 1));
    let r = received(&s.new_files()[0]);
    assert!(
        r.contains("(using TLSv1.3 with cipher ") && r.contains(" with ESMTPSA id "),
        "{r}"
    );
}

#[test]
fn the_password_never_appears_in_what_the_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("m");
    let file = password_file(dir.path());
    let mut s = Server::try_start_logged(
        &root,
        &[
            "--tls-self-signed",
            "--auth-file",
            &file,
            "--listen",
            "127.0.0.1:0",
        ],
        "trace",
    )
    .unwrap();
    let secrets = ["s3cret", "n0t-s3cret"];
    // Plain text to loopback: PLAIN with and without an initial response,
    // LOGIN, right and wrong.
    let mut c = Client::greeted(s.addr);
    c.cmd("EHLO c", "250");
    c.cmd(
        &format!("AUTH PLAIN {}", STANDARD.encode("\0alice\0n0t-s3cret")),
        "535",
    );
    c.cmd("AUTH LOGIN", "334");
    c.cmd(&b64("alice"), "334");
    c.cmd(&b64("n0t-s3cret"), "535");
    c.cmd("AUTH PLAIN", "334");
    c.cmd(&STANDARD.encode("\0alice\0s3cret"), "235");
    assert!(
        c.mail("a@x", &["b@y"], "Subject: one\r\n\r\nhi\r\n")
            .starts_with("250")
    );
    c.cmd("QUIT", "221");
    // Over TLS.
    let mut t = TlsClient::starttls(s.addr, &pinned(&s));
    t.cmd("EHLO c", "250");
    t.cmd("AUTH LOGIN", "334");
    t.cmd(&b64("alice"), "334");
    t.cmd(&b64("s3cret"), "235");
    assert!(
        t.mail("a@x", "b@y", "Subject: two\r\n\r\nhi\r\n")
            .starts_with("250")
    );
    t.cmd("QUIT", "221");
    assert!(wait_until(TIMEOUT, || s.new_files().len() == 2));
    s.signal("TERM");
    assert!(s.wait_exit(TIMEOUT).is_some());
    let log = s.log();
    assert!(log.contains("(AUTH data, "), "trace logging was on: {log}");
    let mut written = log.clone();
    for f in s.new_files() {
        written.push_str(&std::fs::read_to_string(f).unwrap());
    }
    for secret in secrets {
        for form in [
            secret.to_string(),
            b64(secret),
            STANDARD.encode(format!("\0alice\0{secret}")),
        ] {
            assert!(!written.contains(&form), "{form:?} was written:\n{written}");
        }
    }
}

#[test]
fn auth_is_not_offered_to_a_remote_peer_without_tls() {
    // The PROXY header makes the client a non-loopback address.
    let proxied = |extra: &[&str]| {
        let mut args = vec!["--auth-any", "--proxy-from", "127.0.0.1/32"];
        args.extend_from_slice(extra);
        let s = Server::start(&args);
        let mut c = Client::connect(s.addr);
        c.send("PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n");
        c.expect("220 ");
        let ehlo = c.cmd("EHLO c", "250");
        let auth = c.cmd(&format!("AUTH PLAIN {}", STANDARD.encode("\0u\0p")), "");
        (s, ehlo, auth)
    };
    let (_s, ehlo, auth) = proxied(&[]);
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(auth, "538 5.7.11 Encryption required\r\n");
    let (_s, ehlo, auth) = proxied(&["--auth-insecure"]);
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(auth.starts_with("235 2.7.0"), "{auth}");
}

#[test]
fn tls_required_holds_mail_and_auth_until_starttls() {
    let s = Server::start(&["--tls-self-signed", "--tls-required", "--auth-any"]);
    let mut c = Client::greeted(s.addr);
    let ehlo = c.cmd("EHLO c", "250");
    assert!(
        !ehlo.contains("AUTH") && ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    c.cmd(
        "MAIL FROM:<a@x>",
        "530 5.7.0 Must issue a STARTTLS command first",
    );
    c.cmd(
        "AUTH PLAIN",
        "530 5.7.0 Must issue a STARTTLS command first",
    );
    let mut t = TlsClient::starttls(s.addr, &pinned(&s));
    assert!(t.cmd("EHLO c", "250").contains("AUTH PLAIN LOGIN"));
    assert!(t.mail("a@x", "b@y", "hi\r\n").starts_with("250 2.0.0"));
}

#[test]
fn auth_not_configured_is_502() {
    let s = Server::start(&[]);
    let mut c = Client::greeted(s.addr);
    assert!(!c.cmd("EHLO c", "250").contains("AUTH"));
    c.cmd("AUTH PLAIN", "502 5.5.1");
    c.cmd("STARTTLS", "502 5.5.1");
}

#[test]
fn password_file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("m");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, format!("{ALICE}bob:{{SHA}}xyz=\n")).unwrap();
    let start = |extra: &[&str]| {
        let mut args = vec!["-l", "127.0.0.1:0", "-d", md.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = start(&["--auth-file", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("{} line 2: not a bcrypt hash", bad.display())),
        "{err}"
    );
    let (code, err) = start(&["--auth-file", "/nonexistent/users"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/users"), "{err}");
    let (code, err) = start(&["--auth-insecure"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn auth_replies_and_failures_count_as_protocol_errors() {
    let s = Server::start(&["--auth-any"]);
    let mut c = Client::greeted(s.addr);
    c.cmd("AUTH PLAIN", "503 5.5.1"); // before EHLO
    c.cmd("EHLO c", "250");
    c.cmd("AUTH CRAM-MD5", "504 5.5.4");
    c.cmd("AUTH PLAIN not-base64!", "501 5.5.2");
    // Valid base64, but not authzid NUL user NUL password.
    c.cmd(&format!("AUTH PLAIN {}", b64("no-nuls")), "501 5.5.2");
    c.cmd("AUTH LOGIN", "334 ");
    c.cmd("*", "501 5.0.0");
    c.cmd("AUTH PLAIN", "334 ");
    c.cmd("*", "501 5.0.0");
    c.cmd("MAIL FROM:<a@x>", "250");
    c.cmd(&format!("AUTH PLAIN {}", b64("\0u\0p")), "503 5.5.1"); // in a transaction
    c.cmd("RSET", "250");
    // A 12288-octet AUTH line is read whole: its initial response decodes
    // to a PLAIN message with a long password, accepted by --auth-any.
    let head = format!("AUTH PLAIN {}", b64("\0u\0"));
    let pad = (12288 - 2 - head.len()) / 4 * 3;
    let line = format!("AUTH PLAIN {}", b64(&format!("\0u\0{}", "p".repeat(pad))));
    assert!(
        line.len() + 2 <= 12288 && line.len() + 2 > 12280,
        "{}",
        line.len()
    );
    c.cmd(&line, "235 2.7.0 Authentication successful");
    c.cmd(&format!("AUTH PLAIN {}", b64("\0u\0p")), "503 5.5.1"); // again
    // So far 8 failures; 12 more (all AUTH after success) make 20.
    for _ in 0..11 {
        c.cmd("AUTH LOGIN", "503 5.5.1");
    }
    c.send("AUTH LOGIN\r\n");
    c.expect("503 5.5.1");
    c.expect("421 4.7.0");
}
