//! Every limit in SPEC, reached through a real socket: line lengths,
//! message size (counted as RFC 1870 counts it) in bounded memory, SIZE,
//! recipients, errors and junk commands, HTTP, timeouts and the pool.

use crate::harness::{
    Client, Server, assert_whole, file_with_id, files_in, queued_id, split_stored, wait_until,
};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn command_lines_of_512_octets_pass_and_513_do_not() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let line = |len: usize| format!("NOOP {}\r\n", "x".repeat(len - "NOOP \r\n".len()));
    c.send(line(512));
    c.expect("250 2.0.0");
    c.send(line(513));
    c.expect("500 5.5.2");
    c.send(line(5000)); // the rest is skipped, not read as commands
    c.expect("500 5.5.2");
    c.cmd("NOOP", "250 2.0.0");
    let rcpt = |len: usize| {
        let local = "r".repeat(len - "RCPT TO:<@y.test>\r\n".len());
        format!("RCPT TO:<{local}@y.test>\r\n")
    };
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.send(rcpt(512));
    c.expect("250 2.1.5");
    c.send(rcpt(513));
    c.expect("500 5.5.2");
}

#[test]
fn a_line_without_end_is_skipped_in_bounded_memory() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let before = server.peak_rss_kib();
    c.send("NOOP ");
    let block = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        c.send(&block); // 4 MiB and no line end
    }
    // Other sessions are served meanwhile.
    let mut other = server.ehlo();
    other.cmd("NOOP", "250 2.0.0");
    c.send("\r\nNOOP\r\n");
    c.expect("500 5.5.2");
    c.expect("250 2.0.0");
    let grown = server.peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 1024,
        "peak RSS grew by {grown} KiB for a 4 MiB line"
    );
}

#[test]
fn two_hundred_mib_over_max_size_is_refused_in_bounded_memory() {
    let server = Server::start(&["--max-size", "1000000"]);
    let mut c = server.ehlo();
    // One message first, so the steady state is in the baseline.
    let reply = c.mail("a@x.test", &["b@y.test"], "Subject: warm\r\n\r\nup\r\n");
    assert!(queued_id(&reply).is_some(), "{reply}");
    let before = server.peak_rss_kib();
    c.open_data();
    let mut block = format!("{}\r\n", "x".repeat(1022))
        .repeat(1024)
        .into_bytes(); // 1 MiB
    for i in 0..200 {
        block[0] = b'a' + (i % 26) as u8;
        c.send(&block);
    }
    c.send(".\r\n");
    c.expect("552 5.3.4");
    c.cmd("NOOP", "250 2.0.0");
    assert_eq!(server.new_files().len(), 1, "only the warm-up message");
    assert!(wait_until(Duration::from_secs(5), || files_in(
        &server.maildir().join("tmp")
    )
    .is_empty()));
    let grown = server.peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "peak RSS grew by {grown} KiB for 200 MiB"
    );
}

#[test]
fn a_large_accepted_message_is_never_held_whole() {
    let server = Server::start(&["--max-size", "200000000"]);
    let mut c = server.ehlo();
    let reply = c.mail("a@x.test", &["b@y.test"], "Subject: warm\r\n\r\nup\r\n");
    assert!(queued_id(&reply).is_some(), "{reply}");
    let before = server.peak_rss_kib();
    c.open_data();
    c.send("Subject: big\r\n\r\n");
    let block = format!("{}\r\n", "y".repeat(1022)).repeat(1024); // 1 MiB
    for _ in 0..96 {
        c.send(&block);
    }
    c.send(".\r\n");
    let id = queued_id(&c.reply()).expect("queued");
    let file = file_with_id(server.maildir(), &id).unwrap();
    assert_whole(&file);
    assert!(std::fs::metadata(&file).unwrap().len() > 96 * 1023 * 1024);
    let grown = server.peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 40 * 1024,
        "peak RSS grew by {grown} KiB for a 96 MiB message"
    );
}

#[test]
fn size_parameter_over_the_limit_or_malformed() {
    let server = Server::start(&["--max-size", "1000"]);
    let mut c = server.ehlo();
    let ehlo = c.cmd("EHLO c", "250-");
    assert!(ehlo.contains("250-SIZE 1000\r\n"), "{ehlo}");
    c.cmd("MAIL FROM:<a@x.test> SIZE=1001", "552 5.3.4");
    c.cmd(
        "MAIL FROM:<a@x.test> SIZE=18446744073709551615",
        "552 5.3.4",
    );
    // SPEC: 20 digits is a valid SIZE, too big even past 64 bits.
    c.cmd(
        "MAIL FROM:<a@x.test> SIZE=99999999999999999999",
        "552 5.3.4",
    );
    for bad in [
        "SIZE=",
        "SIZE",
        "SIZE=abc",
        "SIZE=-1",
        "SIZE=1e3",
        "SIZE= 10",
        "SIZE=123456789012345678901",
    ] {
        c.cmd(&format!("MAIL FROM:<a@x.test> {bad}"), "501 5.5.4");
    }
    c.cmd("MAIL FROM:<a@x.test> SIZE=1000", "250 2.1.0");
    c.cmd("RSET", "250 2.0.0");
    c.cmd("MAIL FROM:<a@x.test> SIZE=0", "250 2.1.0");
}

/// Message text whose RFC 1870 size is exactly `size`: dot-stuffed lines
/// (each stuffed dot is on the wire but not counted), then a filler line.
fn text_of_size(size: usize) -> String {
    let stuffed = format!("..{}\r\n", "d".repeat(40)); // counts 43, sends 44
    let mut text = stuffed.repeat(20); // 860
    let rest = size - 860 - 2;
    text.push_str(&"f".repeat(rest));
    text.push_str("\r\n");
    text
}

#[test]
fn size_is_counted_on_the_wire_with_crlf_without_stuffed_dots() {
    let server = Server::start(&["--max-size", "1000"]);
    let mut c = server.ehlo();
    let exact = text_of_size(1000);
    assert!(exact.len() > 1000, "more than the limit is sent");
    let reply = c.mail("a@x.test", &["b@y.test"], &exact);
    let id = queued_id(&reply).unwrap_or_else(|| panic!("max-size refused: {reply}"));
    let file = file_with_id(server.maildir(), &id).unwrap();
    assert_whole(&file);
    let stored = String::from_utf8(split_stored(&file).1).unwrap();
    let unstuffed = format!(".{}\n", "d".repeat(40)).repeat(20);
    assert_eq!(
        stored,
        format!("{unstuffed}{}\n", "f".repeat(1000 - 860 - 2))
    );
    // One more octet: refused, although what would be stored (LF line
    // ends, no stuffed dots: 1001 - 21 octets) is under the limit.
    let over = text_of_size(1001);
    let reply = c.mail("a@x.test", &["b@y.test"], &over);
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    c.cmd("NOOP", "250 2.0.0");
    assert_eq!(server.new_files().len(), 1);
}

#[test]
fn recipients_past_max_recipients_are_refused() {
    let server = Server::start(&["--max-recipients", "3"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    for i in 0..3 {
        c.cmd(&format!("RCPT TO:<r{i}@y.test>"), "250 2.1.5");
    }
    for i in 3..30 {
        // Not protocol errors: 27 of them do not end the session.
        c.cmd(&format!("RCPT TO:<r{i}@y.test>"), "452 4.5.3");
    }
    c.cmd("DATA", "354");
    c.send("Subject: many\r\n\r\nx\r\n.\r\n");
    let id = queued_id(&c.reply()).expect("queued");
    let (head, _) = split_stored(&file_with_id(server.maildir(), &id).unwrap());
    assert_eq!(head.matches("Delivered-To:").count(), 3, "{head}");
    assert!(!head.contains("r3@"), "{head}");
}

#[test]
fn twenty_errors_end_the_session() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    for i in 0..19 {
        c.cmd(
            ["FOO", "MAIL", "RCPT TO:<a@b>", "DATA x", "HELO"][i % 5],
            "50",
        );
    }
    c.send("BAR\r\n");
    c.expect("500 5.5.2");
    c.expect("421 4.7.0 mx.test Error: too many errors");
    assert_eq!(c.read_to_end(), "");
}

#[test]
fn junk_commands_past_one_hundred_count_as_errors() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let junk = [
        ("NOOP", "250 2.0.0"),
        ("RSET", "250 2.0.0"),
        ("VRFY u", "252 2.0.0"),
        ("HELP", "214 2.0.0"),
    ];
    for i in 0..100 {
        let (cmd, reply) = junk[i % 4];
        c.cmd(cmd, reply);
    }
    // Still answered as usual, but each is an error now: 19 of them and
    // one real error end the session.
    for i in 0..19 {
        let (cmd, reply) = junk[i % 4];
        c.cmd(cmd, reply);
    }
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0"); // real commands are not junk
    c.send("FOO\r\n");
    c.expect("500 5.5.2");
    c.expect("421 4.7.0");
    assert_eq!(c.read_to_end(), "");
}

#[test]
fn http_requests_and_header_lines_close_at_once() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 ");
    c.send("POST /form HTTP/1.1\r\nHost: mx.test\r\nContent-Length: 50\r\n\r\nEHLO x\r\nMAIL FROM:<a@x.test>\r\n");
    c.expect("221 2.7.0");
    assert_eq!(c.read_to_end(), "");
    // A browser's header lines after an accepted command.
    let mut c = server.ehlo();
    c.send("User-Agent: Mozilla/5.0\r\nNOOP\r\n");
    c.expect("221 2.7.0");
    assert_eq!(c.read_to_end(), "");
    // From a loopback nc, with bare LF lines.
    let mut c = server.client();
    c.expect("220 ");
    c.send("GET / HTTP/1.0\n\n");
    c.expect("221 2.7.0");
    assert_eq!(c.read_to_end(), "");
    assert!(server.new_files().is_empty());
}

/// Reads the next reply, returning it and how long it took.
fn timed_reply(c: &mut Client) -> (String, Duration) {
    let start = Instant::now();
    let reply = c.reply();
    (reply, start.elapsed())
}

#[test]
fn an_idle_client_is_closed_at_the_timeout() {
    let server = Server::start(&["--timeout", "2"]);
    let mut c = server.ehlo();
    let (reply, took) = timed_reply(&mut c);
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(c.read_to_end(), "");
}

#[test]
fn a_command_trickled_byte_by_byte_is_cut_off_at_the_timeout() {
    let server = Server::start(&["--timeout", "2"]);
    let mut c = server.ehlo();
    let mut out = c.stream().try_clone().unwrap();
    let (stop, stopped) = mpsc::channel::<()>();
    let start = Instant::now();
    // One byte a second, with no line end: the bytes keep coming, but the
    // line is not complete within the timeout.
    let trickle = thread::spawn(move || {
        for b in b"NOOP xxxxxxxxxxxxx".iter() {
            if out.write_all(&[*b]).is_err() {
                return;
            }
            if stopped.recv_timeout(Duration::from_secs(1)) != Err(RecvTimeoutError::Timeout) {
                return;
            }
        }
    });
    let reply = c.reply();
    let took = start.elapsed();
    drop(stop);
    let _ = trickle.join();
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn silence_inside_data_times_out_and_stores_nothing() {
    let server = Server::start(&["--timeout", "2"]);
    let mut c = server.ehlo();
    c.open_data();
    // Data that keeps coming resets the gap: 3 s in all, 0.5 s apart.
    for _ in 0..6 {
        c.send("still here\r\n");
        thread::sleep(Duration::from_millis(500));
    }
    c.send(".\r\n");
    assert!(queued_id(&c.reply()).is_some());
    // Then silence in the middle of a line.
    c.open_data();
    c.send("Subject: cut\r\n\r\nhalf a li");
    let (reply, took) = timed_reply(&mut c);
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(c.read_to_end(), "");
    assert_eq!(server.new_files().len(), 1);
    assert!(wait_until(Duration::from_secs(5), || files_in(
        &server.maildir().join("tmp")
    )
    .is_empty()));
}

/// Waits for the first bytes from the server without consuming them.
fn nothing_waiting(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let result = stream.peek(&mut buf);
    stream.set_nonblocking(false).unwrap();
    matches!(result, Err(ref e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn a_full_pool_refuses_at_once_and_serves_the_queue_when_a_worker_frees() {
    let server = Server::start(&["--workers", "2", "--queue", "1"]);
    let mut first = server.ehlo();
    let _second = server.ehlo();
    let mut queued = server.client(); // waits in the queue: no greeting yet
    let start = Instant::now();
    let mut refused = server.client();
    let reply = refused.reply();
    assert!(reply.starts_with("421 4.3.2"), "{reply}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(refused.read_to_end(), "");
    assert!(
        nothing_waiting(queued.stream()),
        "the queued connection is not served yet"
    );
    first.cmd("QUIT", "221 2.0.0");
    drop(first);
    let start = Instant::now();
    queued.expect("220 mx.test");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    queued.cmd("EHLO c", "250-");
    let reply = queued.mail("a@x.test", &["b@y.test"], "x\r\n");
    assert!(queued_id(&reply).is_some(), "{reply}");
}

#[test]
fn five_hundred_abandoned_connections_do_not_wedge_the_server() {
    let server = Server::start(&["--workers", "4", "--queue", "8"]);
    let mut conns = Vec::new();
    for i in 0..500 {
        let Ok(mut s) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5)) else {
            continue;
        };
        let _ = match i % 4 {
            0 => Ok(()),
            1 => s.write_all(b"EHLO half"),
            2 => s.write_all(
                b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: x\r\n",
            ),
            _ => s.write_all(b"NOOP\r\n"),
        };
        conns.push(s);
    }
    assert!(conns.len() > 400, "only {} connections opened", conns.len());
    // Read what has come on some of them, so that some close with FIN and
    // others (replies unread) with RST.
    for s in conns.iter_mut().step_by(3) {
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let _ = s.read(&mut [0u8; 256]);
    }
    drop(conns);
    // A normal session works once the workers are through the backlog;
    // until then a new connection may be refused with 421 4.3.2.
    let mut last = String::new();
    let served = wait_until(Duration::from_secs(10), || {
        let mut c = server.client();
        last = c.reply();
        if !last.starts_with("220 ") {
            return false;
        }
        c.cmd("EHLO c", "250-");
        last = c.mail("a@x.test", &["b@y.test"], "after the storm\r\n");
        true
    });
    assert!(served && queued_id(&last).is_some(), "last reply: {last:?}");
    assert_eq!(
        server.new_files().len(),
        1,
        "none of the abandoned messages is stored"
    );
}
