//! Hostile input over real sockets: SMTP smuggling and line-ending tricks,
//! pipelining cut into arbitrary pieces, floods that must neither deadlock
//! nor grow memory, path escapes under `--per-recipient`, and control
//! characters that must never reach the log or a prepended header raw.

use crate::harness::{
    Client, Rng, Server, assert_whole, file_with_id, files_in, queued_id, split_stored,
};
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// What a strict (CRLF) session stores for the DATA text `wire`: it ends at
/// the first CRLF "." CRLF (counting the CRLF that ended DATA), lines end
/// only at CRLF, one leading dot is removed, and CRLF becomes LF.
fn strict_model(wire: &[u8]) -> Vec<u8> {
    let s = [b"\r\n", wire].concat();
    let end = s
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .expect("no end of data in the model input");
    let content = &s[2..end + 2];
    let mut out = Vec::new();
    let mut rest = content;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..i];
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.push(b'\n');
        rest = &rest[i + 2..];
    }
    assert!(rest.is_empty(), "content ends with CRLF");
    out
}

#[test]
fn smuggled_end_of_data_sequences_are_content() {
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
    let forged: &[u8] =
        b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n.\r\n";
    let server = Server::start(&[]);
    for (n, smuggle) in smuggles.iter().enumerate() {
        let what = smuggle.escape_ascii().to_string();
        let mut c = server.ehlo();
        c.open_data();
        let wire = [b"Subject: s\r\n\r\nx", *smuggle, forged].concat();
        c.send(&wire);
        let reply = c.reply();
        let id = queued_id(&reply).unwrap_or_else(|| panic!("{what}: got {reply:?}"));
        // The forged commands were text: the next reply answers our QUIT.
        c.send("QUIT\r\n");
        assert_eq!(c.reply(), "221 2.0.0 Bye\r\n", "{what}");
        assert_eq!(server.new_files().len(), n + 1, "{what}: one message each");
        let file = file_with_id(server.maildir(), &id).expect("stored file");
        let (head, text) = split_stored(&file);
        assert!(head.contains("Delivered-To: b@y.test\n"), "{what}: {head}");
        assert!(!head.contains("victim"), "{what}: {head}");
        assert_eq!(
            text.escape_ascii().to_string(),
            strict_model(&wire).escape_ascii().to_string(),
            "{what}"
        );
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("MAIL FROM:<evil@x.test>") && text.contains("forged"));
    }
}

#[test]
fn a_crlf_session_never_switches_to_bare_lf() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 ");
    c.cmd("EHLO c", "250-");
    // A command line holding a bare LF or CR is one error, never two commands.
    c.send("NOOP\nQUIT\r\n");
    c.expect("500 5.5.2");
    c.send("NOOP\rQUIT\r\n");
    c.expect("500 5.5.2");
    c.send("NOOP\n");
    c.send("NOOP\r\n");
    c.expect("500 5.5.2");
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    // Bare-LF dot lines, then a real end.
    c.send("one\n.\ntwo\r\n.\r\n");
    let id = queued_id(&c.reply()).expect("queued");
    let reply = c.mail("a@x.test", &["b@y.test"], "again\n.\n\r\n");
    assert!(queued_id(&reply).is_some(), "{reply}");
    c.cmd("QUIT", "221 2.0.0");
    let (_, text) = split_stored(&file_with_id(server.maildir(), &id).unwrap());
    assert_eq!(text, b"one\n.\ntwo\n");
    // A bare LF in strict DATA is logged, once per session.
    assert!(server.wait_log("closed after 2 messages", Duration::from_secs(5)));
    assert_eq!(
        server.log().matches("bare LF in message text").count(),
        1,
        "{}",
        server.log()
    );
}

#[test]
fn a_loopback_nc_session_uses_bare_lf_for_good() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 ");
    c.send("HELO me\n");
    c.expect("250 mx.test");
    // A CR before the LF is dropped; it does not switch the mode.
    c.send("NOOP\r\n");
    c.expect("250 2.0.0");
    c.send("NOOP\n");
    c.expect("250 2.0.0");
    // A bare CR never ends a line: one error, not NOOP then QUIT.
    c.send("NOOP\rQUIT\n");
    c.expect("500 5.5.2");
    c.send("MAIL FROM:<a@x.test>\nRCPT TO:<b@y.test>\nDATA\n");
    c.expect("250 2.1.0");
    c.expect("250 2.1.5");
    c.expect("354 ");
    c.send("Subject: nc\n\nhello\r\n..dot\na\r.\rb\n.\n");
    let id = queued_id(&c.reply()).expect("queued");
    c.send("QUIT\n");
    c.expect("221 2.0.0");
    let (_, text) = split_stored(&file_with_id(server.maildir(), &id).unwrap());
    assert_eq!(
        text.escape_ascii().to_string(),
        "Subject: nc\\n\\nhello\\n.dot\\na\\r.\\rb\\n"
    );
}

/// Through a dual-stack listener an IPv4 client is `::ffff:127.0.0.1`: still
/// loopback, so a person at plain `nc` gets bare-LF lines, and the Received
/// header names 127.0.0.1. (A peer that is not loopback is always strict:
/// tested in `smtp::session` — tests here send only to loopback addresses.)
#[test]
fn an_ipv4_peer_on_a_dual_stack_listener_is_still_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let Ok(server) = Server::try_start_logged(
        &dir.path().join("Maildir"),
        &["--listen", "[::]:0"],
        "debug",
    ) else {
        eprintln!("note: this host cannot listen on [::]; test skipped");
        return;
    };
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], server.addr.port())));
    c.expect("220 ");
    c.send("HELO me\n");
    c.expect("250 mx.test");
    c.send("MAIL FROM:<a@x.test>\nRCPT TO:<b@y.test>\nDATA\n");
    c.expect("250 2.1.0");
    c.expect("250 2.1.5");
    c.expect("354 ");
    c.send("a\n.\n");
    let id = queued_id(&c.reply()).expect("queued");
    let (head, text) = split_stored(&file_with_id(server.maildir(), &id).unwrap());
    assert_eq!(text, b"a\n");
    assert!(head.contains("Received: from me (127.0.0.1)"), "{head}");
}

/// A batch of pipelined transactions with awkward content: stuffed dots,
/// bare CR and LF, lines just under, at and over the server's 8 KiB read
/// piece, a message over `--max-size`, errors and junk commands between.
fn pipelined_batch() -> Vec<u8> {
    let mut s = String::from("EHLO stress.test\r\n");
    s += "MAIL FROM:<a@x.test> SIZE=29000 BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n";
    s += "Subject: one\r\n\r\n..stuffed\r\n.\r\r\nbare\nlf\r\nbare\rcr\r\n.\n\r\n";
    s += &"L".repeat(10_000);
    s += "\r\n";
    s += &"M".repeat(8191);
    s += "\r\n";
    s += &"N".repeat(8192);
    s += ".x\r\n..\r\n.\r\n";
    s += "NOOP\r\nRSET\r\nVRFY x\r\nHELP\r\nFOO\r\n";
    s += "MAIL FROM:<>\r\nRCPT TO:<d@y.test>\r\nDATA\r\nshort\r\n.\r\n";
    s += "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";
    s += &format!("{}\r\n", "B".repeat(98)).repeat(320);
    s += ".\r\n";
    s += "MAIL FROM:<z@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nlast\r\n.\r\nQUIT\r\n";
    s.into_bytes()
}

enum Cut {
    Whole,
    Bytes,
    Random(u64),
}

/// Sends `batch` in pieces as `cut` says, then reads every reply.
fn run_batch(server: &Server, batch: &[u8], cut: &Cut) -> String {
    let mut c = server.client();
    c.stream().set_nodelay(true).unwrap();
    c.expect("220 ");
    match cut {
        Cut::Whole => c.send(batch),
        Cut::Bytes => batch.chunks(1).for_each(|b| c.send(b)),
        Cut::Random(seed) => {
            let mut rng = Rng::new(*seed);
            let mut rest = batch;
            while !rest.is_empty() {
                let n = if rng.next().is_multiple_of(2) {
                    rng.range(1, 9)
                } else {
                    rng.range(1, 5000)
                };
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                c.send(piece);
                rest = tail;
            }
        }
    }
    c.read_to_end()
}

/// Queue ids replaced, so transcripts of different runs compare.
fn without_ids(replies: &str) -> String {
    replies
        .split_inclusive("\r\n")
        .map(|l| match queued_id(l) {
            Some(_) => "250 2.0.0 Ok: queued as ID\r\n",
            None => l,
        })
        .collect()
}

/// Each queued message of a transcript: its envelope headers and text.
fn stored_messages(maildir: &Path, replies: &str) -> Vec<(String, Vec<u8>)> {
    replies
        .split_inclusive("\r\n")
        .filter_map(queued_id)
        .map(|id| {
            let file = file_with_id(maildir, &id).unwrap_or_else(|| panic!("no file for {id}"));
            assert_whole(&file);
            let (head, text) = split_stored(&file);
            let envelope = head.split("Received: ").next().unwrap().to_string();
            (envelope, text)
        })
        .collect()
}

#[test]
fn pipelined_input_cut_anywhere_gives_the_same_replies_and_files() {
    let server = Server::start(&["--max-size", "30000"]);
    let batch = pipelined_batch();
    let whole = run_batch(&server, &batch, &Cut::Whole);
    assert_eq!(whole.matches("Ok: queued as").count(), 3, "{whole}");
    assert_eq!(whole.matches("552 5.3.4").count(), 1, "{whole}");
    assert_eq!(whole.matches("500 5.5.2").count(), 1, "{whole}");
    assert!(whole.ends_with("221 2.0.0 Bye\r\n"), "{whole}");
    let expected = stored_messages(server.maildir(), &whole);
    let first = &batch[batch.windows(6).position(|w| w == b"DATA\r\n").unwrap() + 6..];
    assert_eq!(expected[0].1, strict_model(first));
    assert_eq!(
        expected[0].0,
        "Return-Path: <a@x.test>\nDelivered-To: b@y.test\nDelivered-To: c@y.test\n"
    );
    for cut in [
        Cut::Bytes,
        Cut::Random(1),
        Cut::Random(2),
        Cut::Random(0xDEAD_BEEF),
    ] {
        let what = match cut {
            Cut::Whole => "whole".to_string(),
            Cut::Bytes => "one byte a write".to_string(),
            Cut::Random(seed) => format!("random pieces, seed {seed}"),
        };
        let got = run_batch(&server, &batch, &cut);
        assert_eq!(without_ids(&got), without_ids(&whole), "{what}");
        let stored = stored_messages(server.maildir(), &got);
        assert!(stored == expected, "{what}: stored messages differ");
    }
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
}

#[test]
fn twenty_thousand_unread_noops_neither_deadlock_nor_grow_memory() {
    let server = Server::start(&[]);
    let before = server.peak_rss_kib();
    let mut c = server.client();
    c.expect("220 ");
    let mut out = c.stream().try_clone().unwrap();
    let (done, finished) = mpsc::channel();
    // Written from another thread and not read until it is all written: a
    // server that answered each line before reading the next would block.
    thread::spawn(move || {
        let batch = "NOOP\r\n".repeat(1000);
        let mut result = Ok(());
        for _ in 0..20 {
            result = out.write_all(batch.as_bytes());
            if result.is_err() {
                break;
            }
        }
        let _ = out.shutdown(Shutdown::Write);
        let _ = done.send(result);
    });
    let written = finished
        .recv_timeout(Duration::from_secs(15))
        .expect("the writer is stuck: the server stopped reading");
    let replies = c.read_to_end();
    // 100 NOOPs are free; the next 20 are errors, and the 20th ends it.
    assert_eq!(
        replies.matches("250 2.0.0 Ok\r\n").count(),
        120,
        "{replies}"
    );
    assert!(
        replies.ends_with("250 2.0.0 Ok\r\n421 4.7.0 mx.test Error: too many errors\r\n"),
        "{replies}"
    );
    assert!(
        written.is_ok(),
        "the server drains what was sent before closing: {written:?}"
    );
    let grown = server.peak_rss_kib().saturating_sub(before);
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
    let mut c = server.client();
    c.expect("220 ");
    c.cmd("NOOP", "250 2.0.0");
}

#[test]
fn data_refused_with_text_waiting_closes_and_stores_nothing() {
    let server = Server::start(&["--domain", "ok.test"]);
    let text = "Subject: smuggled\r\n\r\nMAIL FROM:<e@x.test>\r\nRCPT TO:<v@ok.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let cases: [(&str, &[&str]); 3] = [
        ("EHLO c\r\nDATA\r\n", &["250-"]),
        (
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nDATA\r\n",
            &["250-", "250 2.1.0"],
        ),
        (
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@bad.test>\r\nDATA\r\n",
            &["250-", "250 2.1.0", "550 5.7.1"],
        ),
    ];
    for (commands, before) in cases {
        let mut c = server.client();
        c.expect("220 ");
        c.send(format!("{commands}{text}")); // one write: the text is waiting
        for prefix in before {
            c.expect(prefix);
        }
        c.expect("554 5.5.0");
        assert_eq!(c.read_to_end(), "", "{commands:?}: closed after the 554");
    }
    assert!(server.new_files().is_empty());
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
}

/// Every regular file under `dir`, at any depth.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn per_recipient_addresses_never_reach_outside_the_maildir() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("a/b/Maildir");
    let server = Server::start_in(&root, &["--per-recipient"]);
    let rcpts = [
        "a/b@x.test",
        "\"../../x\"@x.test",
        ".hidden@x.test",
        "..@x.test",
        "\"/etc/x\"@x.test",
        "\"a/../../../../b\"@X.TEST",
        "ok@x.test",
    ];
    let mut c = server.client();
    c.expect("220 ");
    c.cmd("EHLO c", "250-");
    let reply = c.mail("s@x.test", &rcpts, "Subject: paths\r\n\r\nhi\r\n");
    assert!(queued_id(&reply).is_some(), "{reply}");
    // Nothing outside the root: the tree above it holds only the root.
    let mut above: Vec<PathBuf> = all_files(top.path())
        .into_iter()
        .filter(|p| !p.starts_with(&root))
        .collect();
    above.sort();
    assert!(above.is_empty(), "files outside the Maildir: {above:?}");
    for dir in [top.path(), &top.path().join("a"), &top.path().join("a/b")] {
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{}: {names:?}", dir.display());
    }
    // One file per recipient, each in a Maildir one level below the root,
    // none of them hidden.
    let files = all_files(&root);
    assert_eq!(files.len(), rcpts.len(), "{files:?}");
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap();
        let parts: Vec<_> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        assert_eq!(parts.len(), 3, "{}", rel.display());
        assert_eq!(parts[1], "new", "{}", rel.display());
        assert!(
            !parts[0].starts_with('.'),
            "hidden mailbox {}",
            rel.display()
        );
        assert_whole(file);
    }
    for rcpt in rcpts {
        let want = format!("Delivered-To: {rcpt}\n");
        assert!(
            files.iter().any(|f| split_stored(f).0.contains(&want)),
            "no copy for {rcpt}"
        );
    }
}

#[test]
fn control_characters_never_reach_the_log_or_a_header_raw() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::try_start_logged(&dir.path().join("Maildir"), &[], "trace")
        .unwrap_or_else(|log| panic!("mailsink did not start:\n{log}"));
    let mut c = server.client();
    c.expect("220 ");
    // Each of these is refused; none may land in the log raw.
    let refused: [(&[u8], &str); 9] = [
        (b"HELO evil\x1b[31mred\r\n", "501"),
        (b"EHLO a\0b\r\n", "501"),
        (b"HELO a\rFAKE-LOG-LINE\r\n", "500 5.5.2"),
        (b"EHLO \x1b]0;title\x07\r\n", "501"),
        (b"EHLO c\r\n", "250-"),
        (b"MAIL FROM:<a\x1b[2J@x.test>\r\n", "501"),
        (b"MAIL FROM:<a\0@x.test>\r\n", "501"),
        (
            "MAIL FROM:<a\u{9b}31m@x.test> SMTPUTF8\r\n".as_bytes(),
            "501",
        ),
        // Not an esmtp-keyword (RFC 5321 §4.1.2): a bad argument, 501.
        (b"MAIL FROM:<a@x.test> X\x1b[1m=1\r\n", "501 5.5.4"),
    ];
    for (line, prefix) in refused {
        c.send(line);
        c.expect(prefix);
    }
    c.cmd("MAIL FROM:<s@x.test>", "250 2.1.0");
    for (line, prefix) in [
        (&b"RCPT TO:<b\x1b[0m@y.test>\r\n"[..], "501"),
        (b"RCPT TO:<b\0@y.test>\r\n", "501"),
        (b"RCPT TO:<b\r@y.test>\r\n", "500 5.5.2"),
        // SPEC Paths: a source route must follow the grammar too.
        (b"RCPT TO:<@ro\x1bute:b@y.test>\r\n", "501 5.1.3"),
        (b"RCPT TO:<@route:b@y.test>\r\n", "250 2.1.5"),
    ] {
        c.send(line);
        c.expect(prefix);
    }
    c.cmd("DATA", "354");
    // A raw ESC and a NUL in the Subject, and an encoded word that decodes
    // to CR, LF, ESC and NUL; the same tricks in the Message-ID.
    let subject = "=?utf-8?b?aGkNCkZBS0UtTE9HLUxJTkUbWzMxbQA=?=";
    c.send(format!(
        "Subject: raw \x1b[31m red\0 {subject}\r\nMessage-ID: <id\x1b[0m\r\n {subject}>\r\n\r\nbody\r\n.\r\n"
    ));
    let id = queued_id(&c.reply()).expect("queued");
    c.cmd("QUIT", "221");
    assert!(server.wait_log(&format!("stored id={id}"), Duration::from_secs(5)));
    assert!(server.wait_log("closed after 1 messages", Duration::from_secs(5)));
    let log = server.log();
    assert!(log.contains("<<< "), "trace logging is on: {log}");
    for bad in ['\x1b', '\0', '\r', '\u{9b}', '\x07'] {
        assert!(
            !log.contains(bad),
            "raw {bad:?} in the log:\n{}",
            log.escape_debug()
        );
    }
    assert!(
        !log.lines().any(|l| l.starts_with("FAKE")),
        "a forged log line:\n{log}"
    );
    let (head, _) = split_stored(&file_with_id(server.maildir(), &id).unwrap());
    assert!(
        head.chars()
            .all(|ch| !ch.is_control() || ch == '\n' || ch == '\t'),
        "control character in the prepended headers: {}",
        head.escape_debug()
    );
    assert!(head.contains("Delivered-To: b@y.test\n"), "{head}");
}
