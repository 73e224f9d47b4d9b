//! Faults: connections dropped (FIN and RST) inside DATA, `kill -9` and
//! SIGTERM in the middle of a stream of messages, and a Maildir whose file
//! system fills up. Nothing acknowledged is lost and nothing partial
//! appears in `new/`.

use crate::harness::{Server, assert_whole, files_in, queued_id, split_stored, wait_until};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);
const OPEN_DATA: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    Ok(s)
}

/// Waits until what the server sent, unread, holds `needle`.
fn peek_until(s: &TcpStream, needle: &str) -> bool {
    let mut buf = vec![0u8; 4096];
    wait_until(TIMEOUT, || {
        let n = s.peek(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).contains(needle)
    })
}

/// Reads (consumes) what the server sends until it holds `needle` and ends
/// at a line end.
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + TIMEOUT;
    let done = |got: &[u8]| String::from_utf8_lossy(got).contains(needle) && got.ends_with(b"\r\n");
    while !done(&got) && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// Every reply read, then closed: the server sees FIN.
    Fin,
    /// Closed with the 354 unread: the kernel sends RST.
    Rst,
}

#[test]
fn a_connection_dropped_inside_data_stores_nothing() {
    let server = Server::start(&[]);
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "b".repeat(78)).repeat(2600)
    );
    let points: [(&str, &[u8]); 8] = [
        ("right after 354", b""),
        (
            "inside the headers",
            b"Subject: drop\r\nFrom: <a@x.test>\r\n",
        ),
        ("in the middle of a line", b"Subject: drop\r\n\r\nhalf a li"),
        ("before the final dot", b"Subject: drop\r\n\r\nbody\r\n"),
        (
            "after the dot, before CRLF",
            b"Subject: drop\r\n\r\nbody\r\n.",
        ),
        ("after the dot and CR", b"Subject: drop\r\n\r\nbody\r\n.\r"),
        ("after bare-LF dots", b"Subject: drop\r\n\r\nbody\n.\n\r.\r"),
        ("with a tmp file open", big.as_bytes()),
    ];
    for how in [Ending::Fin, Ending::Rst] {
        for (point, text) in points {
            let what = format!("{how:?} {point}");
            let mut s = connect(server.addr).unwrap();
            s.write_all(OPEN_DATA).unwrap();
            match how {
                Ending::Fin => assert!(read_until(&mut s, "354 ").contains("354 "), "{what}"),
                Ending::Rst => assert!(peek_until(&s, "354 "), "{what}"),
            }
            s.write_all(text).unwrap();
            if text.len() > 100_000 {
                // The text is past the first chunk: the writer has a file.
                let tmp = server.maildir().join("tmp");
                assert!(
                    wait_until(TIMEOUT, || files_in(&tmp).len() == 1),
                    "{what}: no tmp file"
                );
            }
            let peer = s.local_addr().unwrap();
            drop(s);
            let seen = match how {
                Ending::Fin => format!("{peer}: closed after 0 messages"),
                Ending::Rst => format!("{peer}: connection ended"),
            };
            assert!(
                server.wait_log(&seen, TIMEOUT),
                "{what}: no {seen:?} in\n{}",
                server.log()
            );
            assert!(
                wait_until(TIMEOUT, || files_in(&server.maildir().join("tmp"))
                    .is_empty()),
                "{what}: tmp/ keeps {:?}",
                files_in(&server.maildir().join("tmp"))
            );
            assert!(
                server.new_files().is_empty(),
                "{what}: stored {:?}",
                server.new_files()
            );
        }
    }
    // A whole message and QUIT, then FIN at once (as `nc -N` does): that
    // one is stored, and it is the only one.
    let mut s = connect(server.addr).unwrap();
    s.write_all(OPEN_DATA).unwrap();
    s.write_all(b"Subject: after\r\n\r\nok\r\n.\r\nQUIT\r\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let replies = read_until(&mut s, "221 ");
    assert!(replies.contains("Ok: queued as"), "{replies}");
    assert_eq!(server.new_files().len(), 1);
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
}

/// A message the stream clients send: the marker ties a stored file back
/// to its sender and says what its text must be.
fn stream_text(marker: &str, n: usize) -> String {
    let lines = [5, 250, 1200][n % 3]; // about 0.3, 15 and 70 KB
    let mut text = format!("Subject: {marker}\r\nMessage-ID: <{marker}@x.test>\r\n\r\n");
    for i in 0..lines {
        text.push_str(&format!("{marker} line {i} {}\r\n", "=".repeat(40)));
    }
    text.push_str(&format!("END {marker}\r\n"));
    text
}

/// What one stream client saw.
#[derive(Default)]
struct Tally {
    /// (queue id, marker) of each message answered with 250.
    acked: Vec<(String, String)>,
    /// Replies that should never happen, whatever the fault.
    wrong: Vec<String>,
}

/// One client sending messages back to back on one session until the
/// server goes away (or `stop`).
fn stream_client(
    addr: SocketAddr,
    t: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Tally {
    let mut tally = Tally::default();
    let Ok(s) = connect(addr) else { return tally };
    let Ok(mut reader) = s.try_clone().map(BufReader::new) else {
        return tally;
    };
    let mut out = s;
    let mut reply = |expect: &str, tally: &mut Tally| -> Option<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        if all.starts_with(expect) {
            Some(all)
        } else {
            if !all.starts_with("421 4.3.2") {
                tally.wrong.push(all);
            }
            None
        }
    };
    if reply("220 ", &mut tally).is_none()
        || out.write_all(b"EHLO c\r\n").is_err()
        || reply("250", &mut tally).is_none()
    {
        return tally;
    }
    for n in 0..2000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let marker = format!("t{t}-n{n}");
        if out
            .write_all(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
            .is_err()
        {
            break;
        }
        if reply("250 2.1.0", &mut tally).is_none()
            || reply("250 2.1.5", &mut tally).is_none()
            || reply("354 ", &mut tally).is_none()
        {
            break;
        }
        let text = stream_text(&marker, n);
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.write_all(b".\r\n"))
            .is_err()
        {
            break;
        }
        match reply("250 2.0.0 Ok: queued as ", &mut tally) {
            Some(r) => {
                tally.acked.push((queued_id(&r).unwrap(), marker));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            None => break,
        }
    }
    tally
}

/// Runs 8 stream clients, calls `fault` once `at_least` messages are
/// acknowledged, and returns what the clients saw.
fn stream_with_fault(server: &Server, at_least: usize, fault: impl FnOnce()) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (addr, stop, acked) = (server.addr, Arc::clone(&stop), Arc::clone(&acked));
            thread::spawn(move || stream_client(addr, t, stop, acked))
        })
        .collect();
    let enough = wait_until(Duration::from_secs(20), || {
        acked.load(Ordering::SeqCst) >= at_least
    });
    fault();
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for c in clients {
        let t = c.join().expect("a stream client panicked");
        all.acked.extend(t.acked);
        all.wrong.extend(t.wrong);
    }
    assert!(
        enough,
        "only {} messages acknowledged before the fault",
        acked.load(Ordering::SeqCst)
    );
    all
}

/// Checks every file in new/ is whole and holds a complete message, and
/// every acknowledged message is one of them; returns their number.
fn check_stored(maildir: &Path, tally: &Tally) -> usize {
    let mut by_id: HashMap<String, PathBuf> = HashMap::new();
    let files = files_in(&maildir.join("new"));
    for file in &files {
        assert_whole(file);
        let (head, text) = split_stored(file);
        let id = head
            .split(" id ")
            .nth(1)
            .and_then(|r| r.split([';', '\n']).next())
            .expect("id in Received")
            .to_string();
        let text = String::from_utf8(text).unwrap();
        let marker = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("Subject: "))
            .expect("Subject")
            .to_string();
        let n: usize = marker.split("-n").nth(1).unwrap().parse().unwrap();
        assert!(
            text == stream_text(&marker, n).replace("\r\n", "\n"),
            "{}: partial or altered text",
            file.display()
        );
        by_id.insert(id, file.clone());
    }
    for (id, marker) in &tally.acked {
        let file = by_id
            .get(id)
            .unwrap_or_else(|| panic!("message {marker} acknowledged as {id} but not in new/"));
        assert!(
            split_stored(file)
                .1
                .starts_with(format!("Subject: {marker}\n").as_bytes())
        );
    }
    files.len()
}

#[test]
fn kill_9_loses_no_acknowledged_message_and_leaves_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let mut server = Server::start_in(&root, &[]);
    let tally = stream_with_fault(&server, 150, || server.signal("KILL"));
    assert!(
        server.wait_exit(TIMEOUT).is_some(),
        "still running after kill -9"
    );
    assert!(
        tally.wrong.is_empty(),
        "unexpected replies: {:?}",
        tally.wrong
    );
    let stored = check_stored(&root, &tally);
    assert!(stored >= tally.acked.len());
    drop(server);
    // A restart on the same Maildir stores again, beside what is there.
    let server = Server::start_in(&root, &[]);
    let mut s = connect(server.addr).unwrap();
    s.write_all(OPEN_DATA).unwrap();
    read_until(&mut s, "354 ");
    s.write_all(b"Subject: again\r\n\r\nafter the kill\r\n.\r\nQUIT\r\n")
        .unwrap();
    assert!(read_until(&mut s, "221 ").contains("Ok: queued as"));
    assert_eq!(server.new_files().len(), stored + 1);
}

#[test]
fn sigterm_mid_stream_exits_0_with_every_acknowledged_message_stored() {
    let mut server = Server::start(&[]);
    let tally = stream_with_fault(&server, 150, || server.signal("TERM"));
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("still running after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(
        tally.wrong.is_empty(),
        "unexpected replies: {:?}",
        tally.wrong
    );
    let stored = check_stored(server.maildir(), &tally);
    assert_eq!(
        stored,
        tally.acked.len(),
        "a stored message was not acknowledged"
    );
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
}

/// A tmpfs mounted for one test, unmounted on drop (even after a panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(path: &Path) -> PathBuf {
    let mut f = std::fs::File::create(path).unwrap();
    for size in [65536, 4096, 512, 1] {
        let block = vec![b'z'; size];
        for _ in 0..4096 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
    }
    path.to_path_buf()
}

#[test]
fn a_full_file_system_answers_452_and_stores_again_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _mount = match Tmpfs::mount(&mnt, "2m") {
        Ok(m) => m,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "note: cannot mount a tmpfs ({}); full-disk test skipped",
                e.trim()
            );
            return;
        }
        Err(e) => panic!("cannot mount a tmpfs in CI: {e}"),
    };
    let root = mnt.join("Maildir");
    let server = Server::start_in(&root, &["--max-size", "300000"]);
    let tmp = root.join("tmp");
    let text = format!(
        "Subject: fill\r\n\r\n{}",
        format!("{}\r\n", "f".repeat(98)).repeat(2000)
    ); // 200 KB
    let mut c = server.client();
    c.expect("220 ");
    c.cmd("EHLO c", "250-");
    // 1. Messages until MAIL finds less room than --max-size.
    let mut stored = 0;
    let refusal = loop {
        let reply = c.transact(&text);
        if queued_id(&reply).is_none() {
            break reply;
        }
        stored += 1;
        assert!(stored < 20, "a 2 MiB file system never filled");
    };
    assert!(refusal.starts_with("452 4.3.1"), "{refusal}");
    assert!(stored >= 5, "only {stored} stored");
    c.cmd("NOOP", "250 2.0.0");
    assert_eq!(server.new_files().len(), stored);
    server.new_files().iter().for_each(|f| assert_whole(f));
    assert!(files_in(&tmp).is_empty());
    // 2. Room at MAIL, none left when the text is written.
    for f in &server.new_files()[..3] {
        std::fs::remove_file(f).unwrap();
    }
    stored -= 3;
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    let filler = fill(&mnt.join("filler"));
    c.send(&text);
    c.send(".\r\n");
    c.expect("452 4.3.1");
    assert!(
        wait_until(TIMEOUT, || files_in(&tmp).is_empty()),
        "tmp/ keeps {:?}",
        files_in(&tmp)
    );
    assert_eq!(server.new_files().len(), stored, "nothing partial in new/");
    server.new_files().iter().for_each(|f| assert_whole(f));
    c.cmd("NOOP", "250 2.0.0");
    c.cmd("MAIL FROM:<a@x.test>", "452 4.3.1");
    // 3. Room again: stored again, on the same session.
    std::fs::remove_file(filler).unwrap();
    let reply = c.transact(&text);
    assert!(queued_id(&reply).is_some(), "{reply}");
    assert_eq!(server.new_files().len(), stored + 1);
    server.new_files().iter().for_each(|f| assert_whole(f));
    c.cmd("QUIT", "221");
}
