//! The DATA phase end to end: dot-stuffing, exact content, LF storage,
//! pipelining, many messages and many clients, and the size limit.

use crate::harness::{Client, Server, files_in, split_stored, stored_bodies, stuffed};
use std::collections::BTreeSet;
use std::thread;

/// Message text with CRLF line ends → what the Maildir must hold.
fn as_stored(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(b"\r\n") {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// Sends one message (text with CRLF line ends, unstuffed) and returns the
/// final reply.
fn send_message(c: &mut Client, rcpt: &str, text: &[u8]) -> String {
    c.cmd("MAIL FROM:<a@x.test> BODY=8BITMIME", "250 2.1.0");
    c.cmd(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5");
    c.cmd("DATA", "354 ");
    c.send(stuffed(text));
    c.send(".\r\n");
    c.reply()
}

/// Sends `text` as the only message and checks it comes back exactly.
fn round_trip(text: &[u8]) {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let reply = send_message(&mut c, "b@y.test", text);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    let (_, body) = split_stored(&files[0]);
    let want = as_stored(text);
    assert!(
        body == want,
        "stored {} bytes, want {}; first difference at {:?}",
        body.len(),
        want.len(),
        body.iter().zip(&want).position(|(a, b)| a != b)
    );
    let whole = std::fs::read(&files[0]).unwrap();
    assert!(
        !whole.windows(2).any(|w| w == b"\r\n"),
        "CRLF in the stored file"
    );
}

#[test]
fn dot_stuffed_lines_are_unstuffed() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA", "354 ");
    // Stuffed by hand, so the test does not trust the helper.
    c.send("..\r\n...\r\n..leading\r\nmid.dle\r\n.. space\r\ntrailing.\r\n..\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let (_, body) = split_stored(&server.new_files()[0]);
    assert_eq!(body, b".\n..\n.leading\nmid.dle\n. space\ntrailing.\n.\n");
}

#[test]
fn body_of_only_dots_round_trips() {
    round_trip(b".\r\n..\r\n...\r\n.\r\n. .\r\n");
}

#[test]
fn empty_body_is_stored_as_headers_only() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let reply = c.mail("a@x.test", &["b@y.test"], "");
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let files = server.new_files();
    let (head, body) = split_stored(&files[0]);
    assert!(body.is_empty(), "{body:?}");
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert_eq!(size as usize, head.len());
}

#[test]
fn eight_bit_bytes_round_trip_exactly() {
    // Every octet but CR and LF, NUL included, in lines of varied length.
    let octets: Vec<u8> = (0u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
    let mut text = Vec::new();
    for (i, chunk) in octets.chunks(37).enumerate() {
        text.extend_from_slice(&chunk[i % chunk.len()..]);
        text.extend_from_slice(&chunk[..i % chunk.len()]);
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b"\xff\xfe\x00.\r\n.\xc3\xa9\r\n");
    round_trip(&text);
}

#[test]
fn long_lines_round_trip() {
    let mut text = Vec::new();
    text.extend_from_slice(b"Subject: long\r\n\r\n");
    for len in [998usize, 1000, 1001, 4096, 8191, 8192, 8193, 20_000, 70_000] {
        let line: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        text.extend_from_slice(&line);
        text.extend_from_slice(b"\r\n");
    }
    // A long line that starts with a dot, and one that ends in CR LF split
    // across a read boundary somewhere.
    text.extend_from_slice(&[b'.'; 9000]);
    text.extend_from_slice(b"\r\n");
    text.extend_from_slice(b"tail\r\n");
    round_trip(&text);
}

#[test]
fn dots_inside_or_after_line_starts_are_content() {
    round_trip(b"x . y\r\n.x\r\nx.\r\n");
}

#[test]
fn several_messages_on_one_connection() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let mut ids = BTreeSet::new();
    let mut want = BTreeSet::new();
    for i in 0..6 {
        let text = format!("Subject: number {i}\r\n\r\nbody {i}\r\n");
        let reply = send_message(&mut c, &format!("r{i}@y.test"), text.as_bytes());
        let id = reply
            .strip_prefix("250 2.0.0 Ok: queued as ")
            .expect(&reply)
            .trim()
            .to_string();
        assert!(ids.insert(id), "queue id repeated: {reply}");
        want.insert(as_stored(text.as_bytes()));
    }
    c.cmd("QUIT", "221 2.0.0");
    let got: BTreeSet<Vec<u8>> = stored_bodies(server.maildir()).into_iter().collect();
    assert_eq!(got, want);
    let files = server.new_files();
    assert_eq!(files.len(), 6);
    for (i, f) in files.iter().enumerate() {
        let (head, _) = split_stored(f);
        let id = head
            .split(" id ")
            .nth(1)
            .unwrap()
            .split('\n')
            .next()
            .unwrap();
        assert!(ids.contains(id), "file {i}: id {id} was never acknowledged");
    }
}

#[test]
fn pipelined_batch_is_answered_in_order_and_fully_stored() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    let mut batch = b"EHLO pipe.test\r\n".to_vec();
    let mut want = BTreeSet::new();
    for i in 0..4 {
        let text = format!("Subject: batch {i}\r\n\r\n.line {i}\r\n");
        batch.extend_from_slice(
            format!("MAIL FROM:<s{i}@x.test>\r\nRCPT TO:<r{i}@y.test>\r\n").as_bytes(),
        );
        batch.extend_from_slice(format!("RCPT TO:<q{i}@y.test>\r\nDATA\r\n").as_bytes());
        batch.extend_from_slice(&stuffed(text.as_bytes()));
        batch.extend_from_slice(b".\r\n");
        want.insert(as_stored(text.as_bytes()));
    }
    batch.extend_from_slice(b"NOOP\r\nQUIT\r\n");
    c.send(&batch);
    let ehlo = c.expect("250-mx.test");
    assert!(ehlo.ends_with("250 HELP\r\n"), "{ehlo}");
    for _ in 0..4 {
        c.expect("250 2.1.0 ");
        c.expect("250 2.1.5 ");
        c.expect("250 2.1.5 ");
        c.expect("354 ");
        c.expect("250 2.0.0 Ok: queued as ");
    }
    c.expect("250 2.0.0 ");
    c.expect("221 2.0.0 ");
    assert_eq!(c.read_to_end(), "");
    let got: BTreeSet<Vec<u8>> = stored_bodies(server.maildir()).into_iter().collect();
    assert_eq!(got, want);
    for f in server.new_files() {
        let (head, body) = split_stored(&f);
        let i = body[b"Subject: batch ".len()] - b'0';
        assert!(
            head.starts_with(&format!(
                "Return-Path: <s{i}@x.test>\nDelivered-To: r{i}@y.test\nDelivered-To: q{i}@y.test\n"
            )),
            "{head}"
        );
    }
}

#[test]
fn batch_split_into_tiny_writes_loses_nothing() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    c.stream().set_nodelay(true).unwrap();
    let text = b"Subject: split\r\n\r\n..a\r\nb\r\n";
    let mut batch =
        b"EHLO split.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n".to_vec();
    batch.extend_from_slice(&stuffed(text));
    batch.extend_from_slice(b".\r\nQUIT\r\n");
    for piece in batch.chunks(3) {
        c.send(piece);
    }
    c.expect("250-mx.test");
    c.expect("250 2.1.0 ");
    c.expect("250 2.1.5 ");
    c.expect("354 ");
    c.expect("250 2.0.0 Ok: queued as ");
    c.expect("221 2.0.0 ");
    assert_eq!(stored_bodies(server.maildir()), [as_stored(text)]);
}

#[test]
fn sixteen_concurrent_clients_all_stored_in_distinct_files() {
    const CLIENTS: usize = 16;
    const EACH: usize = 5;
    let server = Server::start(&["--workers", "16"]);
    let addr = server.addr;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            thread::spawn(move || {
                let mut c = Client::greeted(addr);
                c.cmd(&format!("EHLO c{n}.test"), "250-");
                let mut ids = Vec::new();
                for m in 0..EACH {
                    let text = format!("Subject: c{n} m{m}\r\n\r\n{}\r\n", "z".repeat(n * 100 + m));
                    let reply = send_message(&mut c, &format!("c{n}@y.test"), text.as_bytes());
                    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
                    ids.push(reply);
                }
                c.cmd("QUIT", "221 2.0.0");
                ids
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in threads {
        for id in t.join().expect("a client failed") {
            assert!(ids.insert(id.clone()), "queue id repeated: {id}");
        }
    }
    let files = server.new_files();
    assert_eq!(files.len(), CLIENTS * EACH);
    let names: BTreeSet<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), CLIENTS * EACH);
    let mut want = BTreeSet::new();
    for n in 0..CLIENTS {
        for m in 0..EACH {
            want.insert(as_stored(
                format!("Subject: c{n} m{m}\r\n\r\n{}\r\n", "z".repeat(n * 100 + m)).as_bytes(),
            ));
        }
    }
    let got: BTreeSet<Vec<u8>> = stored_bodies(server.maildir()).into_iter().collect();
    assert_eq!(got, want);
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
}

#[test]
fn too_big_is_552_after_the_dot_and_the_session_goes_on() {
    let server = Server::start(&["--max-size", "1000"]);
    let mut c = server.ehlo();
    let big = format!("{}\r\n", "x".repeat(5000)).repeat(40);
    let reply = send_message(&mut c, "b@y.test", big.as_bytes());
    assert!(reply.starts_with("552 5.3.4 "), "{reply}");
    assert!(server.new_files().is_empty());
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
    // The session is usable, and the transaction was closed.
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1 ");
    let reply = send_message(&mut c, "b@y.test", b"small\r\n");
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    assert_eq!(stored_bodies(server.maildir()), [b"small\n".to_vec()]);
}

#[test]
fn size_limit_counts_wire_octets_without_stuffing() {
    let server = Server::start(&["--max-size", "1000"]);
    let mut c = server.ehlo();
    // Exactly 1000 octets with CRLF: accepted.
    let exact = format!("{}\r\n", "a".repeat(998));
    assert!(send_message(&mut c, "b@y.test", exact.as_bytes()).starts_with("250 2.0.0 "));
    // 1001: refused.
    let over = format!("{}\r\n", "b".repeat(999));
    assert!(send_message(&mut c, "b@y.test", over.as_bytes()).starts_with("552 5.3.4 "));
    // 1000 after unstuffing (1001 on the wire): accepted.
    let dotted = format!(".{}\r\n", "c".repeat(997));
    assert!(send_message(&mut c, "b@y.test", dotted.as_bytes()).starts_with("250 2.0.0 "));
    let got: BTreeSet<Vec<u8>> = stored_bodies(server.maildir()).into_iter().collect();
    let want: BTreeSet<Vec<u8>> =
        [as_stored(exact.as_bytes()), as_stored(dotted.as_bytes())].into();
    assert_eq!(got, want);
}

#[test]
fn refused_data_with_text_waiting_closes_with_554() {
    let server = Server::start(&["--domain", "y.test"]);
    let mut c = server.ehlo();
    // Every RCPT is refused, and the text follows DATA in the same write:
    // it must not be read as commands.
    c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@z.test>\r\nDATA\r\nRSET\r\nMAIL FROM:<e@x.test>\r\n.\r\n");
    c.expect("250 2.1.0 ");
    c.expect("550 5.7.1 ");
    c.expect("554 5.5.0 ");
    assert_eq!(c.read_to_end(), "");
    assert!(server.new_files().is_empty());
}

#[test]
fn lf_only_session_from_loopback_works_like_nc() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    c.send("EHLO nc.test\n");
    c.expect("250-mx.test");
    c.send("MAIL FROM:<a@x.test>\nRCPT TO:<b@y.test>\nDATA\n");
    c.expect("250 2.1.0 ");
    c.expect("250 2.1.5 ");
    c.expect("354 ");
    c.send("Subject: typed\n\nline one\r\n..dot\n.\n");
    c.expect("250 2.0.0 ");
    c.send("QUIT\n");
    c.expect("221 2.0.0 ");
    assert_eq!(
        stored_bodies(server.maildir()),
        [b"Subject: typed\n\nline one\n.dot\n".to_vec()]
    );
}
