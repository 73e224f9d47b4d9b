//! SPEC "Reading the mail": `list`, `show` and `wait` run as the real
//! binary on Maildirs made by the server and by hand. Every test checks
//! that no file was changed.

use crate::harness::{self, BIN, Server, queued_id, run};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Every file and directory under `root`: contents, mode and mtime.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, std::time::SystemTime)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let bytes = if meta.is_dir() {
                dirs.push(p.clone());
                Vec::new()
            } else if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(
                p,
                (bytes, meta.permissions().mode(), meta.modified().unwrap()),
            );
        }
    }
    out
}

/// Runs a read command and checks that it changed nothing under `root`.
fn read(root: &Path, args: &[&str]) -> Output {
    let before = snapshot(root);
    let mut all = vec![args[0], "-d", root.to_str().unwrap()];
    all.extend_from_slice(&args[1..]);
    let out = run(&all);
    assert_eq!(before, snapshot(root), "mailsink {args:?} changed a file");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit 0 and returns stdout.
fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    stdout(&o)
}

/// A Maildir written by hand: `put("new", name, bytes)`.
struct Hand {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Hand {
    fn new() -> Hand {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Maildir");
        for d in ["new", "cur", "tmp"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        Hand { _dir: dir, root }
    }

    fn put(&self, sub: &str, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.join(sub).join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }
}

const ENVELOPE: &str = "Return-Path: <a@x.test>\nDelivered-To: b@y.test\n";

#[test]
fn server_stored_messages_listed_and_shown_decoded() {
    let s = Server::start(&[]);
    let mut c = s.ehlo();
    let subjects = [
        "Subject: =?UTF-8?B?SGVsbG8g4pyTIHdvcmxk?=", // "Hello ✓ world"
        "Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?=",  // "Café crème"
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= und mehr", // "Grüße und mehr"
    ];
    let mut ids = Vec::new();
    for (i, subject) in subjects.iter().enumerate() {
        let text = format!(
            "{subject}\r\nMessage-ID: <m{i}@x.test>\r\nFrom: A <a{i}@x.test>\r\n\r\nbody {i}\r\n"
        );
        let reply = c.mail(&format!("a{i}@x.test"), &["Bob@Y.test"], &text);
        ids.push(queued_id(&reply).expect(&reply));
    }
    let root = s.maildir();
    let list = ok(read(root, &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    for (line, want) in lines
        .iter()
        .zip(["Hello ✓ world", "Café crème", "Grüße und mehr"])
    {
        assert!(line.contains(want), "{line}");
        assert!(
            line.contains("Bob@Y.test") && line.contains("new/"),
            "{line}"
        );
    }
    // Aligned: the subject column starts at the same place on every line.
    let col: Vec<usize> = lines.iter().map(|l| l.find("@x.test").unwrap()).collect();
    assert!(col.windows(2).all(|w| w[0] == w[1]), "{list}");

    let json = ok(read(root, &["list", "--json"]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["id"], ids[i].as_str());
        assert_eq!(row["from"], format!("a{i}@x.test"));
        assert_eq!(row["to"], serde_json::json!(["Bob@Y.test"]));
        assert_eq!(row["message_id"], format!("<m{i}@x.test>"));
        assert_eq!(row["peer"], "127.0.0.1");
        let file = row["file"].as_str().unwrap();
        assert_eq!(row["size"], fs::metadata(file).unwrap().len());
        assert!(file.ends_with(row["files"][0].as_str().unwrap()));
        assert!(row["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(rows[1]["subject"], "Café crème");

    // show by queue id, by file name, by unique prefix, by path.
    let by_id = ok(read(root, &["show", &ids[0]]));
    assert!(
        by_id.contains("Subject: Hello ✓ world") && by_id.contains("body 0"),
        "{by_id}"
    );
    let file = rows[2]["file"].as_str().unwrap();
    let name = Path::new(file).file_name().unwrap().to_str().unwrap();
    for id in [name, &name[..name.len() - 5], file] {
        let shown = ok(read(root, &["show", id]));
        assert!(shown.contains("Subject: Grüße und mehr"), "{id}: {shown}");
    }
    // A prefix shared by all three lists them and exits 1 (the longest
    // common one: the three may straddle a second).
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["files"][0].as_str().unwrap().trim_start_matches("new/"))
        .collect();
    let len = (0..names[0].len())
        .take_while(|&i| {
            names
                .iter()
                .all(|n| n.as_bytes().get(i) == names[0].as_bytes().get(i))
        })
        .count();
    let common = &names[0][..len];
    let o = read(root, &["show", common]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("matches 3 messages"), "{err}");
    for r in &rows {
        assert!(err.contains(r["files"][0].as_str().unwrap()), "{err}");
    }
    let o = read(root, &["show", "NOSUCHID"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1);

    // The raw view is the file byte for byte.
    assert_eq!(
        read(root, &["show", "--raw", &ids[1]]).stdout,
        fs::read(rows[1]["file"].as_str().unwrap()).unwrap()
    );
    // Filters: envelope, case-insensitive, globs.
    assert_eq!(
        ok(read(root, &["list", "--from", "A1@X.*"]))
            .lines()
            .count(),
        1
    );
    assert_eq!(
        ok(read(root, &["list", "--to", "bob@y.test"]))
            .lines()
            .count(),
        3
    );
    assert_eq!(
        ok(read(root, &["list", "--subject", "CRÈME"]))
            .lines()
            .count(),
        1
    );
    let o = read(root, &["list", "--to", "carol@*"]);
    assert_eq!((o.status.code(), o.stdout.len()), (Some(1), 0));
}

fn multipart_alternative() -> Vec<u8> {
    format!(
        "{ENVELOPE}Subject: alt\nFrom: A <a@x.test>\nTo: b@y.test\nCc: c@y.test\nDate: Sat, 05 Dec 2026 20:00:00 +0000\n\
         Content-Type: multipart/alternative; boundary=\"b1\"\n\n\
         --b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
         Reset your password: https://x.test/reset?token=3Dabcdef012345=\n6789&user=3D42\nThanks=\n\n\
         --b1\nContent-Type: text/html; charset=utf-8\n\n\
         <p>Reset: <a href=\"https://x.test/reset?token=abcdef0123456789&amp;user=42\">here</a>\
         <a href=\"https://x.test/help\">help</a></p>\n--b1--\n"
    )
    .into_bytes()
}

#[test]
fn multipart_alternative_text_html_and_links() {
    let h = Hand::new();
    h.put("new", "1700000001.M1P1.hand", &multipart_alternative());
    let shown = ok(read(&h.root, &["show", "1700000001"]));
    assert!(
        shown.contains("From: A <a@x.test>\nTo: b@y.test\nCc: c@y.test\nSubject: alt\n"),
        "{shown}"
    );
    // The QP soft break inside the URL is joined.
    assert!(
        shown.contains(
            "Reset your password: https://x.test/reset?token=abcdef0123456789&user=42\nThanks"
        ),
        "{shown}"
    );
    assert!(!shown.contains("<p>"));
    let text = ok(read(&h.root, &["show", "--text", "1700000001"]));
    assert!(
        text.starts_with(
            "Reset your password: https://x.test/reset?token=abcdef0123456789&user=42"
        ),
        "{text}"
    );
    let html = ok(read(&h.root, &["show", "--html", "1700000001"]));
    assert!(html.starts_with("<p>Reset: <a href="), "{html}");
    // Each URL once, in order: the text part's, then the HTML's new one;
    // the HTML's &amp; is decoded, so the reset link is not repeated.
    let links = ok(read(&h.root, &["show", "--links", "1700000001"]));
    assert_eq!(
        links,
        "https://x.test/reset?token=abcdef0123456789&user=42\nhttps://x.test/help\n"
    );
}

#[test]
fn html_only_message_shown_as_text() {
    let h = Hand::new();
    h.put(
        "new",
        "1700000002.M1P1.hand",
        format!("{ENVELOPE}Subject: html\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{}\n",
            b64(b"<html><style>p{}</style><body><h1>Welcome</h1><p>Confirm at <a href=\"https://x.test/c?a=1&amp;b=2\">this link</a>.</p></body></html>")).as_bytes(),
    );
    let shown = ok(read(&h.root, &["show", "1700000002"]));
    assert!(
        shown.contains("Welcome\n") && shown.contains("Confirm at this link."),
        "{shown}"
    );
    assert!(!shown.contains('<') && !shown.contains("p{}"), "{shown}");
    assert_eq!(
        ok(read(&h.root, &["show", "--links", "1700000002"])),
        "https://x.test/c?a=1&b=2\n"
    );
    let o = read(&h.root, &["show", "--html", "1700000002"]);
    assert!(stdout(&o).starts_with("<html>"));
    // No link at all: nothing matched, exit 1.
    h.put(
        "new",
        "1700000003.M1P1.hand",
        format!("{ENVELOPE}Subject: plain\n\nno links here\n").as_bytes(),
    );
    assert_eq!(
        read(&h.root, &["show", "--links", "1700000003"])
            .status
            .code(),
        Some(1)
    );
    let o = read(&h.root, &["show", "--html", "1700000003"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no HTML part"));
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push('\n');
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for j in 0..4 {
            if j <= chunk.len() {
                out.push(T[(n >> (18 - 6 * j) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn windows_1252_base64_text_and_binary_attachment_byte_for_byte() {
    let h = Hand::new();
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let msg = format!(
        "{ENVELOPE}Subject: =?windows-1252?Q?=93quoted=94?=\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\n\
         Content-Type: text/plain; charset=windows-1252\nContent-Transfer-Encoding: base64\n\n{}\n--zz\n\
         Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"data.bin\"\n\
         Content-Transfer-Encoding: base64\n\n{}\n--zz\nContent-Type: image/png; name=\"p.png\"\nContent-Transfer-Encoding: base64\n\n{}\n--zz--\n",
        b64(b"Price: \x80 5 \x96 caf\xe9 \x93ok\x94"),
        b64(&binary),
        b64(b"\x89PNG"),
    );
    h.put("cur", "1700000004.M1P1.hand:2,S", msg.as_bytes());
    let shown = ok(read(&h.root, &["show", "1700000004"]));
    assert!(shown.contains("Subject: “quoted”"), "{shown}");
    assert!(shown.contains("Price: € 5 – café “ok”"), "{shown}");
    assert!(
        shown.contains("1. data.bin  application/octet-stream  3000 bytes"),
        "{shown}"
    );
    assert!(shown.contains("2. p.png  image/png  4 bytes"), "{shown}");
    assert_eq!(
        read(&h.root, &["show", "--part", "1", "1700000004"]).stdout,
        binary
    );
    assert_eq!(
        read(&h.root, &["show", "--part", "2", "1700000004"]).stdout,
        b"\x89PNG"
    );
    let o = read(&h.root, &["show", "--part", "3", "1700000004"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no attachment 3: the message has 2"));
    let json: serde_json::Value =
        serde_json::from_str(&ok(read(&h.root, &["show", "--json", "1700000004"]))).unwrap();
    assert_eq!(json["attachments"][0]["size"], 3000);
    assert_eq!(json["attachments"][1]["name"], "p.png");
    assert_eq!(json["subject"], "“quoted”");
    assert!(json["text"].as_str().unwrap().contains("€ 5"));
}

#[test]
fn broken_mime_cur_flags_and_vanished_files() {
    let h = Hand::new();
    // A continuation line first, a lone CR, an unterminated multipart.
    h.put("new", "1700000010.M1P1.hand", b" stray\nSubject: broken one\nX: a\rb\nContent-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\nhalf a part");
    h.put(
        "cur",
        "1700000011.M1P1.hand:2,RS",
        format!("{ENVELOPE}Subject: seen and replied\n\nbody\n").as_bytes(),
    );
    h.put(
        "new",
        "1700000012.M1P1.hand",
        b"\x00\xff\xfe garbage without headers",
    );
    // A name whose file is gone: a dangling symlink reads as vanished.
    std::os::unix::fs::symlink(
        h.root.join("nowhere"),
        h.root.join("new/1700000011.M2P1.gone"),
    )
    .unwrap();
    let list = ok(read(&h.root, &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].contains("broken one") && lines[0].contains("new/1700000010"));
    assert!(
        lines[1].contains("seen and replied") && lines[1].contains("cur/1700000011.M1P1.hand:2,RS")
    );
    assert!(lines[2].contains("new/1700000012"));
    for line in list.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_err(); // table, not JSON
    }
    for l in ok(read(&h.root, &["list", "--json"])).lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }
    let shown = ok(read(&h.root, &["show", "1700000010"]));
    assert!(
        shown.contains("Subject: broken one") && shown.contains("half a part"),
        "{shown}"
    );
    assert!(ok(read(&h.root, &["show", "1700000011.M1P1.hand"])).contains("seen and replied"));
    assert!(ok(read(&h.root, &["show", "1700000012"])).contains("garbage"));
}

#[test]
fn the_log_line_uses_the_same_header_decoder() {
    let s = Server::start(&[]);
    let mut c = s.ehlo();
    // A continuation line first makes a plain mailparse::parse_headers
    // fail; the reader and the log line both still find the Subject.
    let r = c.mail(
        "a@x.test",
        &["b@y.test"],
        " stray\r\nSubject: =?ISO-8859-1?Q?Caf=E9?=\r\nMessage-ID: <log@x.test>\r\n\r\nbody\r\n",
    );
    let id = queued_id(&r).unwrap();
    assert!(s.wait_log(&format!("stored id={id}"), Duration::from_secs(5)));
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("stored id={id}")))
        .unwrap();
    assert!(
        line.contains("subject=\"Café\" message-id=\"<log@x.test>\""),
        "{line}"
    );
    let listed = ok(read(s.maildir(), &["list", "--json"]));
    let row: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(
        (row["subject"].as_str(), row["message_id"].as_str()),
        (Some("Café"), Some("<log@x.test>"))
    );
}

#[test]
fn per_recipient_root_lists_every_mailbox() {
    let s = Server::start(&["--per-recipient"]);
    let mut c = s.ehlo();
    let r = c.mail(
        "a@x.test",
        &["b@y.test", "c@z.test"],
        "Subject: to both\r\n\r\nhi\r\n",
    );
    let id = queued_id(&r).unwrap();
    c.mail("a@x.test", &["c@z.test"], "Subject: to c\r\n\r\nhi\r\n");
    let root = s.maildir();
    let list = ok(read(root, &["list"]));
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(
        list.contains("b@y.test/new/") && list.contains("c@z.test/new/"),
        "{list}"
    );
    let only_c = ok(read(root, &["list", "--to", "C@Z.TEST", "--json"]));
    assert_eq!(only_c.lines().count(), 2);
    // One queue id, two copies: ambiguous, both named.
    let o = read(root, &["show", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("b@y.test/new/") && stderr(&o).contains("c@z.test/new/"));
    // A filter picks one.
    assert!(ok(read(root, &["show", &id, "--to", "b@*"])).contains("Subject: to both"));
}

#[test]
fn since_uses_the_time_in_the_file_name() {
    let h = Hand::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    h.put(
        "new",
        &format!("{}.M1P1.old", now - 7200),
        format!("{ENVELOPE}Subject: old\n\n").as_bytes(),
    );
    h.put(
        "new",
        &format!("{}.M1P1.new", now - 60),
        format!("{ENVELOPE}Subject: recent\n\n").as_bytes(),
    );
    let l = ok(read(&h.root, &["list", "--since", "10m"]));
    assert!(l.contains("recent") && !l.contains("old"), "{l}");
    assert_eq!(
        ok(read(&h.root, &["list", "--since", "3h"]))
            .lines()
            .count(),
        2
    );
    let at = jiff_like_rfc3339(now - 3600);
    let l = ok(read(&h.root, &["list", "--since", &at]));
    assert!(l.contains("recent") && !l.contains("old"), "{at}: {l}");
    let o = read(&h.root, &["list", "--since", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--since"));
}

/// An RFC 3339 time as Unix seconds (via `date`).
fn epoch(t: &str) -> u64 {
    let o = Command::new("date")
        .args(["-u", "-d", t, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().parse().unwrap()
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (via `date`, to stay independent
/// of the code under test).
fn jiff_like_rfc3339(secs: u64) -> String {
    let o = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn exit_status_and_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for cmd in [&["list"][..], &["show", "x"], &["wait", "--timeout", "0"]] {
        let mut args = vec![cmd[0], "-d", missing.to_str().unwrap()];
        args.extend_from_slice(&cmd[1..]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("cannot read Maildir") || err.contains("no message"),
            "{err}"
        );
        assert!(!missing.exists(), "a read command created the Maildir");
    }
    let h = Hand::new();
    assert_eq!(
        read(&h.root, &["list"]).status.code(),
        Some(1),
        "empty: nothing matched"
    );
    assert_eq!(run(&["list", "--bogus"]).status.code(), Some(2));
    assert_eq!(
        run(&["show", "--raw", "--text", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["wait", "--count", "x"]).status.code(), Some(2));
    let help = run(&["wait", "--help"]);
    assert!(stdout(&help).contains("--timeout") && help.status.success());
}

#[test]
fn list_output_to_a_closed_pipe_is_not_a_panic() {
    let h = Hand::new();
    for i in 0..3000 {
        h.put(
            "new",
            &format!("{}.M1P1.h", 1700000000 + i),
            format!("{ENVELOPE}Subject: n{i}\n\n").as_bytes(),
        );
    }
    let mut child = Command::new(BIN)
        .args(["list", "-d", h.root.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then closed
    let o = child.wait_with_output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
}

/// Starts `mailsink wait` with `args` on `root`.
fn spawn_wait(root: &Path, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("wait")
        .arg("-d")
        .arg(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child with a deadline (a hang fails the test).
fn finish(mut child: std::process::Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wait did not finish within {within:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn wait_sees_a_message_sent_from_another_thread() {
    let s = Server::start(&[]);
    let root = s.maildir().to_path_buf();
    let before = snapshot(&root);
    let addr = s.addr;
    let waiter = spawn_wait(&root, &["--subject", "token", "--json", "--timeout", "20"]);
    let sender = thread::spawn(move || {
        let mut c = harness::Client::greeted(addr);
        c.cmd("EHLO t", "250");
        c.mail("a@x.test", &["b@y.test"], "Subject: other\r\n\r\nx\r\n");
        queued_id(&c.mail(
            "a@x.test",
            &["b@y.test"],
            "Subject: Your token\r\n\r\nx\r\n",
        ))
        .unwrap()
    });
    let o = finish(waiter, Duration::from_secs(30));
    let id = sender.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["subject"], "Your token");
    // Only new files appeared; none that was there changed.
    let after = snapshot(&root);
    for (p, v) in before {
        assert_eq!(after.get(&p).map(|a| &a.0), Some(&v.0), "{}", p.display());
    }
}

#[test]
fn wait_counts_messages_already_there_and_times_out() {
    let h = Hand::new();
    h.put(
        "new",
        "1700000020.M1P1.h",
        format!("{ENVELOPE}Subject: one\n\n").as_bytes(),
    );
    let out = ok(read(&h.root, &["wait", "--timeout", "5"]));
    assert!(out.contains("one"), "{out}");
    let started = Instant::now();
    let o = read(&h.root, &["wait", "--count", "2", "--timeout", "1"]);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "mailsink: timed out after 1s: 1 of 2 messages matched\n"
    );
    assert!(o.stdout.is_empty());
    // A file written by hand into cur/, and a mailbox that appears later.
    let waiter = spawn_wait(&h.root, &["--count", "3", "--timeout", "20"]);
    let root = h.root.clone();
    thread::spawn(move || {
        fs::write(
            root.join("cur/1700000021.M1P1.h:2,S"),
            format!("{ENVELOPE}Subject: two\n\n"),
        )
        .unwrap();
        fs::create_dir_all(root.join("c@z.test/tmp")).unwrap();
        fs::create_dir_all(root.join("c@z.test/new")).unwrap();
        fs::write(
            root.join("c@z.test/tmp/m"),
            format!("{ENVELOPE}Subject: three\n\n"),
        )
        .unwrap();
        fs::rename(
            root.join("c@z.test/tmp/m"),
            root.join("c@z.test/new/1700000022.M1P1.h"),
        )
        .unwrap();
    });
    let o = finish(waiter, Duration::from_secs(30));
    let out = ok(o);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().nth(2).unwrap().contains("three"), "{out}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// `show --raw` is the file byte for byte, and `list --json` always
    /// parses, whatever the file holds.
    #[test]
    fn raw_is_exact_and_list_json_parses(
        head in proptest::collection::vec(prop_oneof![
            Just(b"Subject: =?utf-8?b?w6k=?=\n".to_vec()),
            Just(b"Content-Type: multipart/mixed; boundary=x\n".to_vec()),
            Just(b"Return-Path: <\xff@x>\n".to_vec()),
            Just(b"Delivered-To: \"q\\\"\"@x\n".to_vec()),
            Just(b" folded\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"--x\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ], 0..12)
    ) {
        let h = Hand::new();
        let bytes: Vec<u8> = head.concat();
        let p = h.put("new", "1700000030.M1P1.prop", &bytes);
        let raw = read(&h.root, &["show", "--raw", "1700000030"]);
        prop_assert_eq!(raw.status.code(), Some(0));
        prop_assert_eq!(&raw.stdout, &fs::read(&p).unwrap());
        let list = read(&h.root, &["list", "--json"]);
        prop_assert_eq!(list.status.code(), Some(0));
        let text = String::from_utf8(list.stdout).unwrap();
        prop_assert_eq!(text.lines().count(), 1);
        for line in text.lines() {
            prop_assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "{}", line);
        }
        for view in ["--text", "--json", "--links", "--html"] {
            let o = read(&h.root, &["show", view, "1700000030"]);
            prop_assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
            prop_assert!(o.status.code() == Some(0) || o.status.code() == Some(1));
        }
    }
}

#[test]
fn list_json_carries_the_stored_events_fields() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let s = Server::start(&["--events", events.to_str().unwrap()]);
    let mut c = s.ehlo();
    c.mail(
        "a@x.test",
        &["b@y.test", "c@y.test"],
        "Subject: =?UTF-8?Q?=C3=A9v=C3=A9nement?=\r\nMessage-ID: <e@x.test>\r\n\r\nhi\r\n",
    );
    c.mail("a@x.test", &["b@y.test"], "No-Subject: here\r\n\r\nhi\r\n");
    let stored: Vec<serde_json::Value> = fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["event"] == "stored")
        .collect();
    let listed: Vec<serde_json::Value> = ok(read(s.maildir(), &["list", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((stored.len(), listed.len()), (2, 2));
    for (e, l) in stored.iter().zip(&listed) {
        for field in [
            "event",
            "id",
            "peer",
            "helo",
            "tls",
            "auth",
            "from",
            "to",
            "files",
            "subject",
            "message_id",
        ] {
            assert_eq!(e[field], l[field], "{field}");
        }
        // The event's time and the file name's are two clock readings
        // of the same delivery.
        let (te, tl) = (
            epoch(e["time"].as_str().unwrap()),
            epoch(l["time"].as_str().unwrap()),
        );
        assert!(te.abs_diff(tl) <= 2, "{e} {l}");
    }
    assert_eq!(listed[0]["subject"], "événement");
    assert_eq!(listed[1]["subject"], serde_json::Value::Null);
}

#[test]
fn list_dates_are_in_local_time() {
    let h = Hand::new();
    h.put(
        "new",
        "1700000000.M1P1.h",
        format!("{ENVELOPE}Subject: tz\n\n").as_bytes(),
    );
    let list = |tz: &str| {
        let o = harness::run_within(
            &["list", "-d", h.root.to_str().unwrap()],
            &[("TZ", tz)],
            Duration::from_secs(30),
        );
        ok(o)
    };
    // A POSIX TZ string needs no zoneinfo files: UTC+9, then UTC-5.
    assert!(
        list("UTC0").starts_with("2023-11-14 22:13:20  "),
        "{}",
        list("UTC0")
    );
    assert!(
        list("XST-9").starts_with("2023-11-15 07:13:20  "),
        "{}",
        list("XST-9")
    );
    assert!(
        list("YST5").starts_with("2023-11-14 17:13:20  "),
        "{}",
        list("YST5")
    );
}

#[test]
fn wait_does_not_count_a_message_twice_when_it_moves_to_cur() {
    let h = Hand::new();
    let first = h.put(
        "new",
        "1700000040.M1P1.h",
        format!("{ENVELOPE}Subject: moving\n\n").as_bytes(),
    );
    let waiter = spawn_wait(&h.root, &["--count", "2", "--timeout", "2"]);
    let ready = harness::wait_until(Duration::from_secs(10), || {
        fs::read_to_string(format!("/proc/{}/fdinfo/3", waiter.id()))
            .is_ok_and(|s| s.contains("inotify wd:"))
    });
    assert!(ready, "wait never watched the Maildir");
    // A mail reader marks it seen: new/ → cur/ with flags. Still one message.
    fs::rename(&first, h.root.join("cur/1700000040.M1P1.h:2,S")).unwrap();
    let o = finish(waiter, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "mailsink: timed out after 2s: 1 of 2 messages matched\n"
    );
}
