//! SPEC "Behind a proxy, and on more than one host": `--proxy-from`, with
//! hand-made PROXY v1 and v2 headers sent over real sockets.

use crate::harness::{Client, Server, TIMEOUT, split_stored, wait_until};
use ppp::v2::{Builder, Protocol};
use std::io::Read;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// A version 2 PROXY header, built by the ppp crate.
fn v2_proxy(source: &str, destination: &str) -> Vec<u8> {
    let addresses: (SocketAddr, SocketAddr) =
        (source.parse().unwrap(), destination.parse().unwrap());
    Builder::with_addresses(0x21, Protocol::Stream, addresses)
        .build()
        .unwrap()
}

/// A version 2 LOCAL header (a health check: no addresses).
fn v2_local() -> Vec<u8> {
    Builder::new(0x20, 0x00).build().unwrap()
}

fn v2_tcp4() -> Vec<u8> {
    v2_proxy("198.51.100.9:41000", "192.0.2.1:25")
}

fn v2_tcp6() -> Vec<u8> {
    v2_proxy("[2001:db8::9]:41000", "[2001:db8::1]:25")
}

fn proxied() -> Server {
    Server::start(&["--proxy-from", "127.0.0.0/8"])
}

/// Sends `header`, then one message; returns the stored file's prepended block.
fn deliver_through(server: &Server, header: &[u8]) -> String {
    let mut c = server.client();
    c.send(header);
    c.expect("220 ");
    c.cmd("EHLO relay.test", "250");
    let reply = c.mail("a@x.test", &["b@y.test"], "Subject: p\r\n\r\nhi\r\n");
    assert!(reply.starts_with("250 "), "{reply}");
    c.cmd("QUIT", "221");
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    split_stored(&files[0]).0
}

/// Reads what the server sends until it closes, failing on a hang.
fn everything_sent(c: &mut Client) -> Vec<u8> {
    let mut got = Vec::new();
    let mut stream = c.stream().try_clone().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        // A reset after close is fine: the point is that nothing came first.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("server did not close: {e}; got {:?}", got.escape_ascii()),
    }
    got
}

#[test]
fn v1_tcp4_source_is_the_client_in_received_and_logs() {
    let server = proxied();
    let block = deliver_through(&server, b"PROXY TCP4 198.51.100.9 192.0.2.1 41000 25\r\n");
    assert!(block.contains("(198.51.100.9)"), "{block}");
    assert!(!block.contains("127.0.0.1"), "{block}");
    assert!(server.wait_log("198.51.100.9:41000: closed after 1 messages", TIMEOUT));
}

#[test]
fn v1_tcp6_source_is_the_client() {
    let server = proxied();
    let block = deliver_through(&server, b"PROXY TCP6 2001:db8::9 2001:db8::1 41000 25\r\n");
    assert!(block.contains("2001:db8::9"), "{block}");
    assert!(!block.contains("127.0.0.1"), "{block}");
}

#[test]
fn v2_tcp4_and_tcp6_sources_are_the_client() {
    let server = proxied();
    let block = deliver_through(&server, &v2_tcp4());
    assert!(block.contains("(198.51.100.9)"), "{block}");
    let server = proxied();
    let block = deliver_through(&server, &v2_tcp6());
    assert!(block.contains("2001:db8::9"), "{block}");
}

#[test]
fn v2_local_and_v1_unknown_use_the_socket_peer() {
    let server = proxied();
    let block = deliver_through(&server, &v2_local());
    assert!(block.contains("(127.0.0.1)"), "{block}");
    let server = proxied();
    let block = deliver_through(&server, b"PROXY UNKNOWN\r\n");
    assert!(block.contains("(127.0.0.1)"), "{block}");
}

/// The header and the first commands in one segment: nothing after the
/// header is lost, as with pipelining.
#[test]
fn bytes_after_the_header_are_kept() {
    for header in [
        b"PROXY TCP4 198.51.100.9 192.0.2.1 41000 25\r\n".to_vec(),
        v2_tcp4(),
    ] {
        let server = proxied();
        let mut c = server.client();
        let mut all = header.clone();
        all.extend_from_slice(b"EHLO relay.test\r\nNOOP\r\nQUIT\r\n");
        c.send(&all);
        c.expect("220 ");
        c.expect("250-");
        c.expect("250 2.0.0");
        c.expect("221");
    }
}

#[test]
fn missing_malformed_or_truncated_header_closes_with_nothing_sent() {
    let server = proxied();
    let cases: [&[u8]; 6] = [
        b"EHLO relay.test\r\n",                            // no header at all
        b"PROXY TCP4 198.51.100.9 192.0.2.1 41000\r\n",    // a field short
        b"PROXY TCP4 198.51.100.9 192.0.2.1 41000 25\n",   // bare LF
        b"PROXY TCP9 198.51.100.9 192.0.2.1 41000 25\r\n", // protocol
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc6\x33",   // v2 cut short
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c\xc6\x33\x64\x09\xc0\x00\x02\x01\xa0\x28\x00\x19", // v3
    ];
    for bytes in cases {
        let mut c = server.client();
        c.send(bytes);
        let _ = c.stream().shutdown(Shutdown::Write); // EOF ends a cut-short header
        let got = everything_sent(&mut c);
        assert!(
            got.is_empty(),
            "{}: got {:?}",
            bytes.escape_ascii(),
            got.escape_ascii()
        );
    }
    // An oversized v1 line, the connection left open.
    let mut c = server.client();
    c.send(format!("PROXY UNKNOWN {}\r\n", "x".repeat(200)));
    assert!(everything_sent(&mut c).is_empty());
    assert!(server.wait_log("PROXY header too long", TIMEOUT));
    assert!(server.wait_log("malformed PROXY header", TIMEOUT));
    assert!(server.new_files().is_empty());
}

/// A header that does not arrive within --timeout: closed, nothing sent.
#[test]
fn late_header_closes_with_nothing_sent() {
    let server = Server::start(&["--proxy-from", "127.0.0.1", "--timeout", "1"]);
    let start = Instant::now();
    let mut silent = server.client();
    let mut partial = server.client();
    partial.send(b"PROXY TCP4 198.51.");
    assert!(everything_sent(&mut silent).is_empty());
    assert!(everything_sent(&mut partial).is_empty());
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(server.wait_log("no PROXY header in time", TIMEOUT));
}

#[test]
fn a_peer_outside_every_range_is_served_directly() {
    let server = Server::start(&["--proxy-from", "10.0.0.0/8", "--proxy-from", "::1"]);
    let mut c = Client::greeted(server.addr);
    c.cmd("PROXY TCP4 198.51.100.9 192.0.2.1 41000 25", "500 5.5.");
    c.cmd("EHLO client.test", "250");
    let reply = c.mail("a@x.test", &["b@y.test"], "Subject: d\r\n\r\nhi\r\n");
    assert!(reply.starts_with("250 "), "{reply}");
    let block = split_stored(&server.new_files()[0]).0;
    assert!(block.contains("(127.0.0.1)"), "{block}");
}

/// The loopback bare-LF rule follows the proxied source: a proxied client
/// that is not loopback is strict, a loopback one may use bare LF.
#[test]
fn the_bare_lf_rule_follows_the_proxied_source() {
    let server = proxied();
    let mut c = server.client();
    c.send(b"PROXY TCP4 198.51.100.9 192.0.2.1 41000 25\r\n");
    c.expect("220 ");
    c.send(b"NOOP\n");
    c.send(b"QUIT\r\n"); // one line with a bare LF inside: one error
    c.expect("500 5.5.2");
    c.cmd("QUIT", "221");

    let mut c = server.client();
    c.send(b"PROXY TCP4 127.0.0.1 127.0.0.1 41000 25\r\n");
    c.expect("220 ");
    c.send(b"NOOP\n");
    c.expect("250");
    c.send(b"QUIT\n");
    c.expect("221");
}

/// HAProxy's `option smtpchk` with send-proxy-v2: a LOCAL header, EHLO,
/// QUIT. At the default level (info) it leaves no log line; at debug it does.
#[test]
fn health_checks_log_at_debug_only() {
    let dir = tempfile::tempdir().unwrap();
    for (level, logged) in [("info", false), ("debug", true)] {
        let root = dir.path().join(level);
        let mut server =
            Server::try_start_logged(&root, &["--proxy-from", "127.0.0.1"], level).unwrap();
        for _ in 0..3 {
            let mut c = server.client();
            c.send(v2_local());
            c.expect("220 ");
            c.cmd("EHLO localhost", "250");
            c.cmd("QUIT", "221");
            assert!(c.read_to_end().is_empty());
        }
        server.signal("TERM");
        assert!(server.wait_exit(TIMEOUT).is_some());
        assert!(wait_until(TIMEOUT, || server
            .log()
            .contains("shutdown: stored 0")));
        let log = server.log();
        let peer_lines = log.lines().filter(|l| l.contains("127.0.0.1:")).count();
        let listening = log.lines().filter(|l| l.contains("listening on")).count();
        assert_eq!(peer_lines > listening, logged, "{level}:\n{log}");
    }
}

/// The AUTH offer without TLS depends on a loopback peer: the proxied
/// source decides, not the proxy's address.
#[test]
fn the_auth_offer_follows_the_proxied_source() {
    let server = Server::start(&["--proxy-from", "127.0.0.0/8", "--auth-any"]);
    let ehlo = |header: &[u8]| {
        let mut c = server.client();
        c.send(header);
        c.expect("220 ");
        c.cmd("EHLO relay.test", "250")
    };
    let remote = ehlo(b"PROXY TCP4 198.51.100.9 192.0.2.1 41000 25\r\n");
    assert!(!remote.contains("AUTH"), "{remote}");
    let local = ehlo(b"PROXY TCP4 127.0.0.1 127.0.0.1 41000 25\r\n");
    assert!(local.contains("AUTH"), "{local}");
}

/// --events names the proxied source as the peer.
#[test]
fn events_name_the_proxied_source() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let server = Server::start(&[
        "--proxy-from",
        "127.0.0.0/8",
        "--events",
        events.to_str().unwrap(),
    ]);
    deliver_through(&server, b"PROXY TCP4 198.51.100.9 192.0.2.1 41000 25\r\n");
    assert!(wait_until(TIMEOUT, || std::fs::read_to_string(&events)
        .is_ok_and(|t| t.contains("\"event\":\"stored\""))));
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.contains("\"peer\":\"198.51.100.9\""), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}

/// Several processes on one Maildir, even with one host name: names never
/// collide, and every acknowledged message is there once.
#[test]
fn three_instances_on_one_maildir_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let servers: Vec<Server> = (0..3).map(|_| Server::start_in(&root, &[])).collect();
    let acked: Vec<Vec<String>> = std::thread::scope(|s| {
        let jobs: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(n, server)| {
                s.spawn(move || {
                    let mut c = server.ehlo();
                    (0..100)
                        .map(|i| {
                            let subject = format!("instance {n} message {i}");
                            let reply = c.mail(
                                "a@x.test",
                                &["b@y.test"],
                                &format!("Subject: {subject}\r\n\r\nhi\r\n"),
                            );
                            assert!(reply.starts_with("250 "), "{reply}");
                            subject
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let files = crate::harness::files_in(&root.join("new"));
    assert_eq!(files.len(), 300);
    let mut subjects: Vec<String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let line = text.lines().find(|l| l.starts_with("Subject: ")).unwrap();
            line["Subject: ".len()..].to_string()
        })
        .collect();
    subjects.sort();
    let mut want: Vec<String> = acked.concat();
    want.sort();
    assert_eq!(subjects, want);
}
