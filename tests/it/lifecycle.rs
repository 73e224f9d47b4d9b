//! Start, stop and start again: SIGTERM and SIGINT store every acknowledged
//! message and exit 0; idle sessions get `421 4.3.2`; a session in DATA
//! finishes; a restart reuses the Maildir.

use crate::harness::{Client, Server, TIMEOUT, files_in, first_lines, stored_bodies, wait_until};
use std::collections::BTreeSet;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

const SHUTDOWN: &str = "421 4.3.2 mx.test Service shutting down";

fn subjects(server: &Server) -> BTreeSet<String> {
    first_lines(server.maildir()).into_iter().collect()
}

fn assert_exit_0(server: &mut Server) {
    let status = server
        .wait_exit(TIMEOUT * 2)
        .expect("mailsink did not exit");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", server.log());
}

/// Sends messages until the server says anything but yes; returns the
/// subjects it acknowledged and the reply that stopped it.
fn send_until_refused(addr: SocketAddr, who: usize, acked: &AtomicUsize) -> (Vec<String>, String) {
    let mut c = Client::greeted(addr);
    c.cmd(&format!("EHLO c{who}.test"), "250-");
    let mut mine = Vec::new();
    for n in 0.. {
        let subject = format!("Subject: c{who} n{n}");
        for (line, want) in [
            ("MAIL FROM:<a@x.test>".to_string(), "250 "),
            (format!("RCPT TO:<c{who}@y.test>"), "250 "),
            ("DATA".to_string(), "354 "),
        ] {
            let reply = match c
                .try_send(format!("{line}\r\n"))
                .and_then(|()| c.try_reply())
            {
                Ok(r) => r,
                Err(e) => e.to_string(),
            };
            if !reply.starts_with(want) {
                return (mine, reply);
            }
        }
        c.send(format!(
            "{subject}\r\n\r\n{}\r\n.\r\n",
            "body ".repeat(n % 50)
        ));
        let reply = c.try_reply().unwrap_or_else(|e| e.to_string());
        if !reply.starts_with("250 2.0.0 ") {
            return (mine, reply);
        }
        mine.push(subject);
        acked.fetch_add(1, Ordering::SeqCst);
    }
    unreachable!()
}

#[test]
fn sigterm_exits_0_with_every_acknowledged_message_stored() {
    let mut server = Server::start(&[]);
    let addr = server.addr;
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|who| {
            let acked = Arc::clone(&acked);
            thread::spawn(move || send_until_refused(addr, who, &acked))
        })
        .collect();
    assert!(wait_until(TIMEOUT, || acked.load(Ordering::SeqCst) >= 40));
    server.signal("TERM");
    let mut want = BTreeSet::new();
    for t in clients {
        let (mine, last) = t.join().unwrap();
        assert!(
            last.starts_with(SHUTDOWN),
            "a client was stopped by {last:?}"
        );
        want.extend(mine);
    }
    assert_exit_0(&mut server);
    assert!(want.len() >= 40);
    assert_eq!(subjects(&server), want, "stored ≠ acknowledged");
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
}

#[test]
fn sigint_exits_0_too() {
    let mut server = Server::start(&[]);
    let mut c = server.ehlo();
    for i in 0..3 {
        let reply = c.mail(
            "a@x.test",
            &["b@y.test"],
            &format!("Subject: {i}\r\n\r\nx\r\n"),
        );
        assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    }
    server.signal("INT");
    c.expect(SHUTDOWN);
    assert_eq!(c.read_to_end(), "");
    assert_exit_0(&mut server);
    let want: BTreeSet<String> = (0..3).map(|i| format!("Subject: {i}")).collect();
    assert_eq!(subjects(&server), want);
}

#[test]
fn idle_sessions_get_421_at_once_and_open_transactions_are_dropped() {
    let mut server = Server::start(&[]);
    let mut greeted = Client::greeted(server.addr);
    let mut helloed = server.ehlo();
    let mut mid = server.ehlo();
    mid.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    mid.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    server.signal("TERM");
    // Nothing is sent: each gets the 421 unasked, then the close.
    for c in [&mut greeted, &mut helloed, &mut mid] {
        let reply = c.reply();
        assert!(reply.starts_with(SHUTDOWN), "{reply:?}");
        assert_eq!(reply.lines().count(), 1);
        assert_eq!(c.read_to_end(), "");
    }
    assert_exit_0(&mut server);
    assert!(server.new_files().is_empty());
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
}

/// What a connection made after shutdown began receives: nothing (refused
/// or reset), or one `421 4.3.2` and the close; never a greeting.
fn newcomer(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    Some(String::from_utf8_lossy(&text).into_owned())
}

#[test]
fn session_in_data_finishes_its_message_at_shutdown() {
    let mut server = Server::start(&[]);
    let mut c = server.ehlo();
    let mut idle = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA", "354 ");
    c.send("Subject: in flight\r\n\r\nfirst half\r\n");
    server.signal("TERM");
    // The idle session's 421 shows that shutdown is under way.
    idle.expect(SHUTDOWN);
    // The listeners close: newcomers are refused or told 421, never greeted.
    let closed = wait_until(TIMEOUT, || match newcomer(server.addr) {
        None => true,
        Some(text) => {
            assert!(
                text.is_empty() || (text.starts_with(SHUTDOWN) && text.lines().count() == 1),
                "{text:?}"
            );
            false
        }
    });
    assert!(closed, "still accepting connections after shutdown began");
    // A slow client: the rest of the text trickles in, with pauses longer
    // than the server's internal read poll (200 ms) but far inside --timeout.
    // The pauses model the client; they wait for no event.
    for i in 0..4 {
        thread::sleep(Duration::from_millis(150));
        c.send(format!("slow line {i}\r\n"));
    }
    c.send("last line\r\n.\r\n");
    c.expect("250 2.0.0 Ok: queued as ");
    c.expect(SHUTDOWN);
    assert_eq!(c.read_to_end(), "");
    assert_exit_0(&mut server);
    let bodies = stored_bodies(server.maildir());
    let want = "Subject: in flight\n\nfirst half\nslow line 0\nslow line 1\nslow line 2\nslow line 3\nlast line\n";
    assert_eq!(bodies, [want.as_bytes().to_vec()]);
}

#[test]
fn restart_on_the_same_maildir_keeps_and_adds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let mut pids = Vec::new();
    let mut before: Vec<_> = Vec::new();
    for round in 0..2 {
        let mut server = Server::start_in(&root, &[]);
        pids.push(server.pid());
        let mut c = server.ehlo();
        for i in 0..2 {
            let reply = c.mail(
                "a@x.test",
                &["b@y.test"],
                &format!("Subject: r{round} m{i}\r\n\r\nx\r\n"),
            );
            assert!(reply.starts_with("250 2.0.0 "), "{reply}");
        }
        c.cmd("QUIT", "221 2.0.0");
        let files = server.new_files();
        for f in &before {
            assert!(files.contains(f), "{f:?} vanished after the restart");
        }
        assert_eq!(files.len(), before.len() + 2);
        before = files;
        server.signal("TERM");
        assert_exit_0(&mut server);
    }
    let names: BTreeSet<String> = before
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4);
    for pid in pids {
        let n = names
            .iter()
            .filter(|n| n.contains(&format!("P{pid}Q")))
            .count();
        assert_eq!(n, 2, "pid {pid} in {names:?}");
    }
    let got: BTreeSet<String> = first_lines(&root).into_iter().collect();
    let want: BTreeSet<String> = ["r0 m0", "r0 m1", "r1 m0", "r1 m1"]
        .iter()
        .map(|s| format!("Subject: {s}"))
        .collect();
    assert_eq!(got, want);
}
