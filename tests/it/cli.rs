//! The command line as a user meets it: help, version, usage errors (exit 2),
//! start failures (exit 1), listeners and the host name.

use crate::harness::{Client, Server, run, run_within};
use std::net::TcpListener;
use std::time::Duration;

const OPTIONS: [(&str, &str); 12] = [
    ("-l", "--listen"),
    ("-d", "--maildir"),
    ("-w", "--workers"),
    ("-q", "--queue"),
    ("-H", "--hostname"),
    ("-s", "--max-size"),
    ("-r", "--max-recipients"),
    ("-t", "--timeout"),
    ("", "--domain"),
    ("", "--per-recipient"),
    ("-h", "--help"),
    ("-V", "--version"),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must not start a server, with logging off so that
/// stderr holds only what main prints.
fn fails(args: &[&str]) -> (i32, String) {
    let out = run_within(args, &[("RUST_LOG", "off")], Duration::from_secs(10));
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    (out.status.code().expect("exit code"), text(&out.stderr))
}

#[test]
fn help_lists_every_option_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let help = text(&out.stdout);
        assert!(help.contains("Usage: mailsink"), "{help}");
        for (short, long) in OPTIONS {
            let shown = if short.is_empty() {
                long.to_string()
            } else {
                format!("{short}, {long}")
            };
            assert!(help.contains(&shown), "{flag}: {shown} missing in\n{help}");
        }
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn version_exits_0() {
    for flag in ["--version", "-V"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert_eq!(
            text(&out.stdout),
            format!("mailsink {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn usage_errors_exit_2_with_one_line_naming_flag_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    let md = maildir.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--bogus"], &["bogus"]),
        (&["-Z"], &["Z"]),
        (&["--workers", "many"], &["--workers", "\"many\""]),
        (&["-w", "0"], &["--workers", "\"0\""]),
        (&["--queue", "-3"], &["--queue", "-3"]),
        (&["--listen", "nowhere"], &["--listen", "\"nowhere\""]),
        (&["-l", "127.0.0.1"], &["--listen", "\"127.0.0.1\""]),
        (&["--max-size", "big"], &["--max-size", "\"big\""]),
        (&["--max-recipients", "0"], &["--max-recipients", "\"0\""]),
        (&["--timeout", "1.5"], &["--timeout", "\"1.5\""]),
        (&["--hostname", "a b"], &["--hostname", "\"a b\""]),
        (&["--domain", "a@b"], &["--domain", "\"a@b\""]),
        (&["--workers"], &["workers"]),
        (&["stray"], &["stray"]),
    ];
    for (args, needles) in cases {
        let mut all = vec!["--maildir", md];
        all.extend_from_slice(args);
        let (code, stderr) = fails(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: not one line: {stderr:?}"
        );
        assert!(stderr.starts_with("mailsink: "), "{args:?}: {stderr}");
        assert!(stderr.contains("--help"), "{args:?}: no hint: {stderr}");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
        assert!(
            !maildir.exists(),
            "{args:?}: a usage error created the Maildir"
        );
    }
}

#[test]
fn address_in_use_exits_1_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    let (code, stderr) = fails(&["--listen", &addr, "--maildir", md.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("mailsink: "), "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
}

#[test]
fn second_listener_in_use_also_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("Maildir");
    let args = ["-l", "127.0.0.1:0", "-l", &addr, "-d", md.to_str().unwrap()];
    let (code, stderr) = fails(&args);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn maildir_that_cannot_be_created_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    for md in [file.join("Maildir"), file.clone()] {
        let md = md.to_str().unwrap();
        let (code, stderr) = fails(&["--listen", "127.0.0.1:0", "--maildir", md]);
        assert_eq!(code, 1, "{md}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
        assert!(stderr.starts_with("mailsink: "), "{stderr}");
        assert!(stderr.contains(md), "{md} not named: {stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn port_0_logs_the_bound_port_and_the_maildir() {
    let server = Server::start(&["--listen", "127.0.0.1:0"]);
    assert_ne!(server.addr.port(), 0);
    let log = server.log();
    assert!(
        log.contains(&format!("listening on 127.0.0.1:{}", server.addr.port())),
        "{log}"
    );
    assert!(
        log.contains(server.maildir().to_str().unwrap()),
        "Maildir path not logged: {log}"
    );
    for sub in ["tmp", "new", "cur"] {
        assert!(server.maildir().join(sub).is_dir(), "{sub}/ not created");
    }
    let mut c = Client::greeted(server.addr);
    c.cmd("QUIT", "221 2.0.0");
}

#[test]
fn two_listen_addresses_both_serve() {
    let server = Server::start(&["--listen", "127.0.0.1:0", "-l", "127.0.0.1:0"]);
    assert_eq!(server.addrs.len(), 2, "{}", server.log());
    assert_ne!(server.addrs[0], server.addrs[1]);
    for (i, addr) in server.addrs.iter().enumerate() {
        let mut c = Client::greeted(*addr);
        c.cmd("EHLO client.test", "250-mx.test");
        let reply = c.mail(
            "a@x.test",
            &["b@y.test"],
            &format!("Subject: via {i}\r\n\r\nhi\r\n"),
        );
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        c.cmd("QUIT", "221 2.0.0");
    }
    let mut subjects = crate::harness::first_lines(server.maildir());
    subjects.sort();
    assert_eq!(subjects, ["Subject: via 0", "Subject: via 1"]);
}

#[test]
fn hostname_shows_in_greeting_helo_ehlo_and_received() {
    for flag in ["--hostname", "-H"] {
        let server = Server::start(&[flag, "smtp.example.org"]);
        let mut c = server.client();
        assert_eq!(c.reply(), "220 smtp.example.org ESMTP mailsink\r\n");
        assert_eq!(c.cmd("HELO client.test", "250"), "250 smtp.example.org\r\n");
        let ehlo = c.cmd("EHLO client.test", "250-");
        assert_eq!(ehlo.lines().next(), Some("250-smtp.example.org"));
        c.mail("a@x.test", &["b@y.test"], "hi\r\n");
        let files = server.new_files();
        assert_eq!(files.len(), 1);
        assert!(files[0].to_str().unwrap().contains(".smtp.example.org,S="));
        let (head, _) = crate::harness::split_stored(&files[0]);
        assert!(
            head.contains("\n\tby smtp.example.org (mailsink) with ESMTP id "),
            "{head}"
        );
    }
}

#[test]
fn short_options_take_effect() {
    let server = Server::start(&["-s", "4321", "-r", "1", "-w", "2", "-q", "1", "-t", "30"]);
    let mut c = server.client();
    c.expect("220 ");
    let ehlo = c.cmd("EHLO client.test", "250-");
    assert!(ehlo.contains("\r\n250-SIZE 4321\r\n"), "{ehlo}");
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("RCPT TO:<c@y.test>", "452 4.5.3");
}

#[test]
fn ipv6_and_ipv4_listeners_serve_side_by_side() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this host has no IPv6 loopback");
        return;
    }
    let server = Server::start(&["-l", "[::1]:0", "-l", "127.0.0.1:0"]);
    assert!(
        server.addrs[0].is_ipv6() && server.addrs[1].is_ipv4(),
        "{:?}",
        server.addrs
    );
    for addr in &server.addrs {
        let mut c = Client::greeted(*addr);
        c.cmd("EHLO client.test", "250-mx.test");
        let reply = c.mail(
            "a@x.test",
            &["b@y.test"],
            &format!("Subject: {}\r\n\r\nx\r\n", addr.ip()),
        );
        assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    }
    let mut peers: Vec<String> = server
        .new_files()
        .iter()
        .map(|f| {
            let (head, _) = crate::harness::split_stored(f);
            head.split("Received: from client.test (")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    peers.sort();
    assert_eq!(peers, ["127.0.0.1", "::1"]);
}
