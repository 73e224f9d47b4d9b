//! SPEC "CHUNKING (RFC 3030)" through the real binary and real sockets:
//! BDAT chunks however the bytes are split, pipelined, refused, cut off,
//! too big, and stored exactly as DATA stores a message.

use crate::harness::{
    Client, Server, assert_whole, file_with_id, files_in, queued_id, split_stored, stored_bodies,
    wait_until,
};
use std::io::Write;
use std::time::{Duration, Instant};

/// EHLO, MAIL and RCPT, each checked.
fn ready(server: &Server) -> Client {
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c
}

fn bdat(size: usize, last: bool, text: &[u8]) -> Vec<u8> {
    let last = if last { " LAST" } else { "" };
    [format!("BDAT {size}{last}\r\n").as_bytes(), text].concat()
}

#[test]
fn chunking_is_advertised_and_a_message_is_stored_as_data_stores_it() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 ");
    let ehlo = c.cmd("EHLO client.test", "250-");
    assert!(ehlo.contains("\r\n250-CHUNKING\r\n"), "{ehlo}");
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    let text = b"Subject: chunks\r\n\r\n..not unstuffed\r\n.\r\n";
    c.send(bdat(9, false, &text[..9]));
    c.expect("250 2.0.0 9 octets received");
    c.send(bdat(text.len() - 9, true, &text[9..]));
    let id = queued_id(&c.reply()).expect("queued");
    // The same text through DATA, dot-stuffed as DATA needs it.
    let reply = c.mail(
        "a@x.test",
        &["b@y.test"],
        "Subject: chunks\r\n\r\n...not unstuffed\r\n..\r\n",
    );
    assert!(queued_id(&reply).is_some(), "{reply}");
    let files = server.new_files();
    assert_eq!(files.len(), 2);
    for f in &files {
        assert_whole(f);
    }
    let bodies: Vec<Vec<u8>> = files.iter().map(|f| split_stored(f).1).collect();
    assert_eq!(bodies[0], b"Subject: chunks\n\n..not unstuffed\n.\n");
    assert_eq!(bodies[0], bodies[1]);
    let bdat_file = file_with_id(server.maildir(), &id).expect("the BDAT message");
    let (head, _) = split_stored(&bdat_file);
    assert!(
        head.starts_with("Return-Path: <a@x.test>\nDelivered-To: b@y.test\nReceived: from client.test (127.0.0.1)\n\tby "),
        "{head}"
    );
    assert!(head.contains("with ESMTP id "), "{head}");
}

/// One session with two chunked messages; returns its whole input.
fn two_messages() -> Vec<u8> {
    [
        &b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"[..],
        &bdat(7, false, b"A: 1\r\n\r"),
        &bdat(12, false, b"\nQUIT\r\nRSET\r"),
        &bdat(0, false, b""),
        &bdat(3, true, b"\nz\r"),
        b"MAIL FROM:<>\r\nRCPT TO:<c@y.test>\r\n",
        &bdat(0, true, b""),
        b"QUIT\r\n",
    ]
    .concat()
}

const TWO_MESSAGES_REPLIES: &str = "250 2.0.0 7 octets received\r\n250 2.0.0 12 octets received\r\n250 2.0.0 0 octets received\r\n";

fn check_two_messages(server: &Server, replies: &str, runs: usize) {
    assert_eq!(
        replies.matches(TWO_MESSAGES_REPLIES).count(),
        runs,
        "{replies}"
    );
    assert_eq!(
        replies.matches("Ok: queued as").count(),
        2 * runs,
        "{replies}"
    );
    let mut bodies = stored_bodies(server.maildir());
    bodies.sort();
    let mut want: Vec<Vec<u8>> = (0..runs)
        .flat_map(|_| [b"".to_vec(), b"A: 1\n\nQUIT\nRSET\nz\r".to_vec()])
        .collect();
    want.sort();
    assert_eq!(bodies, want);
}

#[test]
fn pipelined_chunks_in_one_write_with_command_text_inside() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 ");
    c.send(two_messages());
    let replies = c.read_to_end();
    assert!(replies.ends_with("221 2.0.0 Bye\r\n"), "{replies}");
    check_two_messages(&server, &replies, 1);
}

#[test]
fn chunks_split_at_every_byte_give_the_same_messages() {
    let server = Server::start(&[]);
    let input = two_messages();
    let start = input.windows(4).position(|w| w == b"BDAT").unwrap();
    // Every split point inside the chunked part, each a fresh connection;
    // the second write follows once the first is on its way.
    let mut replies = String::new();
    for cut in start..input.len() {
        let mut c = server.client();
        c.expect("220 ");
        c.send(&input[..cut]);
        c.stream().flush().unwrap();
        c.send(&input[cut..]);
        replies.push_str(&c.read_to_end());
    }
    // And once a byte a write.
    let mut c = server.client();
    c.expect("220 ");
    c.stream().set_nodelay(true).unwrap();
    for b in &input {
        c.send([*b]);
    }
    replies.push_str(&c.read_to_end());
    check_two_messages(&server, &replies, input.len() - start + 1);
}

#[test]
fn a_chunk_cut_by_a_dropped_connection_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::try_start_logged(&dir.path().join("Maildir"), &[], "debug")
        .unwrap_or_else(|log| panic!("mailsink did not start:\n{log}"));
    let mut c = ready(&server);
    c.send(bdat(100, false, &[b'a'; 100]));
    c.expect("250 2.0.0 100 octets received");
    c.send(bdat(100, true, &[b'b'; 60]));
    drop(c);
    assert!(server.wait_log("closed after 0 messages", Duration::from_secs(5)));
    assert!(server.new_files().is_empty());
    assert!(wait_until(Duration::from_secs(5), || files_in(
        &server.maildir().join("tmp")
    )
    .is_empty()));
}

#[test]
fn over_max_size_chunks_are_read_and_dropped_with_552_at_last() {
    let server = Server::start(&["--max-size", "1000"]);
    let mut c = ready(&server);
    c.send(bdat(800, false, &[b'x'; 800]));
    c.expect("250 2.0.0 800 octets received");
    c.send(bdat(800, false, &[b'y'; 800]));
    c.expect("250 2.0.0 800 octets received");
    // The octets are never commands, even past the limit.
    c.send(bdat(6, true, b"QUIT\r\n"));
    c.expect("552 5.3.4 ");
    c.cmd("NOOP", "250 2.0.0");
    // A whole new transaction works, and exactly --max-size is accepted.
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.send(bdat(1000, true, &[b'z'; 1000]));
    assert!(queued_id(&c.reply()).is_some());
    let bodies = stored_bodies(server.maildir());
    assert_eq!(bodies, [vec![b'z'; 1000]]);
}

#[test]
fn a_large_chunked_message_is_refused_in_bounded_memory() {
    let server = Server::start(&["--max-size", "1000000"]);
    let mut c = ready(&server);
    c.send(bdat(5, true, b"warm\n"));
    assert!(queued_id(&c.reply()).is_some());
    let before = server.peak_rss_kib();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    let block = vec![b'q'; 1 << 20];
    for _ in 0..64 {
        c.send(bdat(block.len(), false, &block));
    }
    c.send(bdat(0, true, b""));
    let mut replies = String::new();
    for _ in 0..65 {
        replies.push_str(&c.reply());
    }
    assert_eq!(replies.matches("octets received").count(), 64);
    assert!(
        replies.ends_with("552 5.3.4 Error: message file too big\r\n"),
        "{replies}"
    );
    assert_eq!(server.new_files().len(), 1);
    let grown = server.peak_rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB for 64 MiB");
}

#[test]
fn data_after_bdat_is_503_and_the_chunks_stay() {
    let server = Server::start(&[]);
    let mut c = ready(&server);
    c.send(bdat(3, false, b"abc"));
    c.expect("250 2.0.0 3 octets received");
    c.cmd("DATA", "503 5.5.1 ");
    c.send(bdat(3, true, b"def"));
    assert!(queued_id(&c.reply()).is_some());
    assert_eq!(stored_bodies(server.maildir()), [b"abcdef"]);
}

#[test]
fn rset_drops_the_chunks_so_far() {
    let server = Server::start(&[]);
    let mut c = ready(&server);
    c.send(bdat(9, false, b"dropped\r\n"));
    c.expect("250 2.0.0 9 octets received");
    c.cmd("RSET", "250 2.0.0");
    // No transaction now: the chunk is refused, its octets read and dropped.
    c.send(bdat(6, true, b"QUIT\r\n"));
    c.expect("503 5.5.1 ");
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.send(bdat(4, true, b"kept"));
    assert!(queued_id(&c.reply()).is_some());
    assert_eq!(stored_bodies(server.maildir()), [b"kept"]);
    assert!(wait_until(Duration::from_secs(5), || files_in(
        &server.maildir().join("tmp")
    )
    .is_empty()));
}

#[test]
fn bdat_zero_last_stores_the_message() {
    let server = Server::start(&[]);
    let mut c = ready(&server);
    c.send("BDAT 0 LAST\r\n");
    assert!(queued_id(&c.reply()).is_some());
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.send(bdat(2, false, b"hi"));
    c.expect("250 2.0.0 2 octets received");
    c.send("BDAT 0 LAST\r\n");
    assert!(queued_id(&c.reply()).is_some());
    let mut bodies = stored_bodies(server.maildir());
    bodies.sort();
    assert_eq!(bodies, [b"".to_vec(), b"hi".to_vec()]);
    for f in server.new_files() {
        assert_whole(&f);
    }
}

#[test]
fn a_malformed_chunk_size_is_501_and_closes() {
    let server = Server::start(&[]);
    let overlong = format!("BDAT 5{}", " ".repeat(2000));
    for bad in ["BDAT ten", "BDAT", "BDAT 5 FIRST", "BDAT -5", &overlong] {
        let mut c = ready(&server);
        c.send(format!("{bad}\r\nhelloNOOP\r\n"));
        c.expect("501 5.5.4 ");
        assert_eq!(c.read_to_end(), "", "{bad}");
    }
    assert!(server.new_files().is_empty());
}

#[test]
fn silence_inside_a_chunk_times_out_and_stores_nothing() {
    let server = Server::start(&["--timeout", "1"]);
    let mut c = ready(&server);
    c.send(bdat(10, true, b"only5"));
    let start = Instant::now();
    let reply = c.reply();
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.read_to_end(), "");
    assert!(server.new_files().is_empty());
    assert!(wait_until(Duration::from_secs(5), || files_in(
        &server.maildir().join("tmp")
    )
    .is_empty()));
}

#[test]
fn pipelined_chunks_over_tls_are_read_exactly() {
    // Chunks larger than the reader's buffer, in one write under TLS: part
    // of them waits decrypted inside rustls while the session reads.
    let server = Server::start(&["--tls-self-signed"]);
    let mut c = crate::tls::TlsClient::starttls(server.addr, &crate::tls::pinned(&server));
    c.cmd("EHLO c", "250");
    let text = format!(
        "Subject: tls\r\n\r\n{}",
        ("y".repeat(78) + "\r\n").repeat(512)
    );
    let (a, b) = text.as_bytes().split_at(30_000);
    let mut batch = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n".to_vec();
    batch.extend_from_slice(&bdat(a.len(), false, a));
    batch.extend_from_slice(&bdat(b.len(), true, b));
    batch.extend_from_slice(b"QUIT\r\n");
    c.send(&batch);
    let mut replies = String::new();
    for _ in 0..5 {
        replies.push_str(&c.reply());
    }
    assert!(
        replies.contains("250 2.0.0 30000 octets received\r\n250 2.0.0 Ok: queued as ")
            && replies.ends_with("221 2.0.0 Bye\r\n"),
        "{replies}"
    );
    let bodies = stored_bodies(server.maildir());
    assert_eq!(bodies, [text.replace("\r\n", "\n").into_bytes()]);
}

#[test]
fn bdat_without_an_accepted_recipient_is_503_and_its_octets_are_dropped() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<a@b@y.test>", "501 5.1.3 ");
    c.send(bdat(6, true, b"QUIT\r\n"));
    c.expect("503 5.5.1 ");
    // The QUIT inside the chunk was not a command: the session goes on.
    c.cmd("NOOP", "250 2.0.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.send(bdat(4, true, b"kept"));
    assert!(queued_id(&c.reply()).is_some());
    assert_eq!(stored_bodies(server.maildir()), [b"kept"]);
}
