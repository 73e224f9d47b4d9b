//! What lands in the Maildir: content, prepended headers, names, sizes.

use crate::harness::{Client, Server, TIMEOUT, files_in, split_stored, stored_bodies};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[test]
fn message_round_trips_with_prepended_headers() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 mx.test ESMTP mailsink");
    c.cmd("EHLO client.test", "250-mx.test");
    let reply = c.mail(
        "a@x.test",
        &["b@y.test"],
        "Subject: hi\r\n\r\n..dotted\r\nline\r\n",
    );
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    let (head, body) = split_stored(&files[0]);
    assert!(head.starts_with("Return-Path: <a@x.test>\nDelivered-To: b@y.test\nReceived: from client.test (127.0.0.1)\n\tby mx.test (mailsink) with ESMTP id "), "{head}");
    assert!(head.contains("\n\tfor <b@y.test>;\n"), "{head}");
    assert_eq!(body, b"Subject: hi\n\n.dotted\nline\n");
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(files[0].to_str().unwrap().ends_with(&format!(",S={size}")));
    assert!(crate::harness::files_in(&server.maildir().join("tmp")).is_empty());
}

/// The prepended headers' lines, each folded header on one line.
fn header_lines(head: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in head.lines() {
        match (line.strip_prefix('\t'), out.last_mut()) {
            (Some(rest), Some(last)) => {
                last.push(' ');
                last.push_str(rest);
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// Checks one stored file: size in the name, mode 0600, LF line ends.
fn check_file(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let size = name.rsplit_once(",S=").expect("no ,S= in the name").1;
    assert_eq!(size.parse::<u64>().unwrap(), meta.len(), "{name}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    assert!(meta.is_file());
}

#[test]
fn headers_come_in_order_one_delivered_to_per_recipient() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let reply = c.mail(
        "Sender@X.test",
        &["one@y.test", "Two@Z.test", "three@y.test"],
        "Subject: s\r\n\r\nb\r\n",
    );
    let id = reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .expect(&reply)
        .trim()
        .to_string();
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    let (head, body) = split_stored(&files[0]);
    let lines = header_lines(&head);
    assert_eq!(lines.len(), 5, "{head}");
    assert_eq!(lines[0], "Return-Path: <Sender@X.test>");
    assert_eq!(lines[1], "Delivered-To: one@y.test");
    assert_eq!(lines[2], "Delivered-To: Two@Z.test");
    assert_eq!(lines[3], "Delivered-To: three@y.test");
    let prefix = format!(
        "Received: from client.test (127.0.0.1) by mx.test (mailsink) with ESMTP id {id}; "
    );
    assert!(lines[4].starts_with(&prefix), "{}", lines[4]);
    assert!(
        !head.contains("for <"),
        "`for` with several recipients: {head}"
    );
    assert!(head.lines().all(|l| l.len() < 998));
    assert_eq!(body, b"Subject: s\n\nb\n");
    check_file(&files[0]);
}

#[test]
fn received_date_is_rfc5322_and_current() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.mail("a@x.test", &["b@y.test"], "x\r\n");
    let (head, _) = split_stored(&server.new_files()[0]);
    let date = head.trim_end().rsplit("\n\t").next().unwrap();
    // e.g. "Sun, 29 Nov 2026 11:41:54 +0000"
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 6, "{date}");
    assert!(
        ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(&parts[0]),
        "{date}"
    );
    assert_eq!(parts[1].len(), 2, "{date}");
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    assert!(months.contains(&parts[2]), "{date}");
    let year: u64 = parts[3].parse().unwrap();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(year.abs_diff(1970 + secs / 31_556_952) <= 1, "{date}");
    let hms: Vec<u64> = parts[4].split(':').map(|p| p.parse().unwrap()).collect();
    let now = secs % 86_400;
    let then = hms[0] * 3600 + hms[1] * 60 + hms[2];
    assert!((now + 86_400 - then) % 86_400 < 120, "{date} is not now");
    assert_eq!(parts[5], "+0000");
}

#[test]
fn null_sender_and_one_recipient_get_for() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.mail("", &["only@y.test"], "x\r\n");
    let (head, _) = split_stored(&server.new_files()[0]);
    let lines = header_lines(&head);
    assert_eq!(lines[0], "Return-Path: <>");
    assert_eq!(lines[1], "Delivered-To: only@y.test");
    assert!(lines[2].contains(" for <only@y.test>; "), "{}", lines[2]);
    assert_eq!(lines.len(), 3);
}

#[test]
fn protocol_is_smtp_esmtp_or_utf8smtp() {
    let server = Server::start(&[]);
    let mut c = Client::greeted(server.addr);
    c.cmd("HELO h.test", "250 mx.test");
    c.mail("a@x.test", &["smtp@y.test"], "x\r\n");
    c.cmd("EHLO e.test", "250-");
    c.mail("a@x.test", &["esmtp@y.test"], "x\r\n");
    c.cmd("MAIL FROM:<a@x.test> SMTPUTF8", "250 2.1.0");
    c.cmd("RCPT TO:<utf8@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("x\r\n.\r\n");
    c.expect("250 2.0.0 ");
    // SMTPUTF8 after HELO is still plain SMTP (it is an ESMTP parameter).
    c.cmd("HELO h2.test", "250 mx.test");
    c.cmd("MAIL FROM:<a@x.test> SMTPUTF8", "250 2.1.0");
    c.cmd("RCPT TO:<helo-utf8@y.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("x\r\n.\r\n");
    c.expect("250 2.0.0 ");
    let mut seen = Vec::new();
    for f in server.new_files() {
        let lines = header_lines(&split_stored(&f).0);
        let rcpt = lines[1].trim_start_matches("Delivered-To: ").to_string();
        let with = lines[2]
            .split(" with ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let from = lines[2].split(' ').nth(2).unwrap().to_string();
        seen.push((rcpt, from, with));
    }
    seen.sort();
    let want = [
        ("esmtp@y.test", "e.test", "ESMTP"),
        ("helo-utf8@y.test", "h2.test", "SMTP"),
        ("smtp@y.test", "h.test", "SMTP"),
        ("utf8@y.test", "e.test", "UTF8SMTP"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn every_file_has_exact_size_mode_0600_and_tmp_stays_empty() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    for i in 0..5 {
        let text = format!("Subject: {i}\r\n\r\n{}\r\n", "é".repeat(i * 333));
        c.mail("a@x.test", &["b@y.test"], &text);
    }
    let files = server.new_files();
    assert_eq!(files.len(), 5);
    for f in &files {
        check_file(f);
    }
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
    assert!(files_in(&server.maildir().join("cur")).is_empty());
}

#[test]
fn file_names_follow_the_maildir_format() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for _ in 0..3 {
        c.mail("a@x.test", &["b@y.test"], "x\r\n");
    }
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut seqs = Vec::new();
    for f in server.new_files() {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        // <secs>.M<usec>P<pid>Q<seq>R<hex>.<host>,S=<n>
        let (unique, rest) = name.split_once('.').unwrap();
        let secs: u64 = unique.parse().expect(&name);
        assert!(before <= secs && secs <= after, "{name}");
        let (middle, host_size) = rest.split_once('.').expect(&name);
        let usec: u64 = middle[1..middle.find('P').unwrap()].parse().expect(&name);
        assert!(middle.starts_with('M') && usec < 1_000_000, "{name}");
        let pid = &middle[middle.find('P').unwrap() + 1..middle.find('Q').expect(&name)];
        assert_eq!(pid, server.pid().to_string(), "{name}");
        let seq = &middle[middle.find('Q').unwrap() + 1..middle.find('R').expect(&name)];
        seqs.push(seq.parse::<u64>().expect(&name));
        let hex = &middle[middle.find('R').unwrap() + 1..];
        assert!(
            !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        let size = std::fs::metadata(&f).unwrap().len();
        assert_eq!(host_size, format!("mx.test,S={size}"), "{name}");
    }
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 3, "sequence numbers repeat");
}

#[test]
fn host_name_is_escaped_in_file_names() {
    let server = Server::start(&["--hostname", "a/b:c,d"]);
    let mut c = server.client();
    c.expect("220 a/b:c,d ESMTP mailsink");
    c.cmd("EHLO client.test", "250-a/b:c,d");
    c.mail("a@x.test", &["b@y.test"], "x\r\n");
    let files = server.new_files();
    assert_eq!(
        files.len(),
        1,
        "a `/` in the host name must not make a subdirectory"
    );
    let name = files[0].file_name().unwrap().to_str().unwrap();
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(
        name.ends_with(&format!(".a\\057b\\072c\\054d,S={size}")),
        "{name}"
    );
    assert_eq!(name.matches(",S=").count(), 1, "{name}");
    let (head, _) = split_stored(&files[0]);
    assert!(head.contains("by a/b:c,d (mailsink)"), "{head}");
}

#[test]
fn per_recipient_files_a_copy_in_each_recipients_maildir() {
    let server = Server::start(&["--per-recipient"]);
    let mut c = server.ehlo();
    let rcpts = [
        "Alice@Example.COM",
        "bob@example.com",
        "alice@example.com",
        "carol@Other.Test",
    ];
    let reply = c.mail(
        "s@x.test",
        &rcpts,
        "Subject: fan out\r\n\r\n..same text\r\n",
    );
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let root = server.maildir();
    assert!(
        server.new_files().is_empty(),
        "a copy went to the catch-all"
    );
    for (rcpt, dir) in [
        ("Alice@Example.COM", "Alice@example.com"),
        ("bob@example.com", "bob@example.com"),
        ("alice@example.com", "alice@example.com"),
        ("carol@Other.Test", "carol@other.test"),
    ] {
        let md = root.join(dir);
        for sub in ["tmp", "new", "cur"] {
            assert!(md.join(sub).is_dir(), "{dir}/{sub} missing");
        }
        let files = files_in(&md.join("new"));
        assert_eq!(files.len(), 1, "{dir}");
        check_file(&files[0]);
        let (head, body) = split_stored(&files[0]);
        let lines = header_lines(&head);
        assert_eq!(lines[0], "Return-Path: <s@x.test>");
        assert_eq!(lines[1], format!("Delivered-To: {rcpt}"));
        assert!(
            lines[2].contains(&format!(" for <{rcpt}>; ")),
            "{}",
            lines[2]
        );
        assert_eq!(lines.len(), 3, "{head}");
        assert_eq!(body, b"Subject: fan out\n\n.same text\n");
        assert!(files_in(&md.join("tmp")).is_empty());
    }
    // The catch-all's own three directories and the four mailboxes, nothing else.
    assert_eq!(files_in(root).len(), 3 + 4, "{:?}", files_in(root));
}

#[test]
fn per_recipient_addresses_cannot_leave_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let server = Server::start_in(&root, &["--per-recipient"]);
    let mut c = server.ehlo();
    let rcpts = [
        "../../escape@x.test",
        ".hidden@x.test",
        "a/b@x.test",
        "x@[x:../../y]", // a general address literal may hold "/" and ".."
    ];
    // SPEC Paths: empty domain labels are refused before any directory is named.
    c.cmd("MAIL FROM:<s@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<x@../../y>", "501 5.1.3 ");
    c.cmd("RSET", "250 2.0.0");
    for r in rcpts {
        c.cmd("MAIL FROM:<s@x.test>", "250 2.1.0");
        let reply = c.cmd(&format!("RCPT TO:<{r}>"), "");
        assert!(reply.starts_with("250 2.1.5 "), "{r}: {reply}");
        c.cmd("DATA", "354");
        c.send(format!("To: {r}\r\n.\r\n"));
        c.expect("250 2.0.0 ");
    }
    // Nothing outside the root, and every mailbox a direct child of it.
    assert_eq!(files_in(dir.path()), std::slice::from_ref(&root));
    for entry in files_in(&root) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_string();
        assert!(!name.starts_with('.') && !name.contains('/'), "{name}");
        if !["tmp", "new", "cur"].contains(&name.as_str()) {
            assert!(entry.join("new").is_dir(), "{name} is not a Maildir");
        }
    }
    let mut bodies: Vec<Vec<u8>> = files_in(&root)
        .iter()
        .flat_map(|d| stored_bodies(d))
        .collect();
    bodies.sort();
    let mut want: Vec<Vec<u8>> = rcpts
        .iter()
        .map(|r| format!("To: {r}\n").into_bytes())
        .collect();
    want.sort();
    assert_eq!(bodies, want, "each copy in a mailbox of its own");
    assert_eq!(files_in(&root).len(), 3 + rcpts.len());
}

#[test]
fn per_recipient_refuses_an_address_too_long_for_a_directory_name() {
    let server = Server::start(&["--per-recipient"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<s@x.test>", "250 2.1.0");
    // 64 slashes escape to 192 bytes; with the domain the name passes 255.
    let long = format!("{}@{}.test", "/".repeat(64), "d".repeat(60));
    c.cmd(&format!("RCPT TO:<{long}>"), "553 5.1.3 ");
    c.cmd("RCPT TO:<ok@x.test>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("Subject: t\r\n\r\nhi\r\n.\r\n");
    c.expect("250 2.0.0 ");
    assert_eq!(files_in(&server.maildir().join("ok@x.test/new")).len(), 1);
    // Without --per-recipient the same address is fine.
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<s@x.test>", "250 2.1.0");
    c.cmd(&format!("RCPT TO:<{long}>"), "250 2.1.5");
}

#[test]
fn stale_tmp_files_are_removed_at_start_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let tmp = root.join("tmp");
    for name in ["old", "fresh", "old-mtime-only", "old-atime-only"] {
        std::fs::write(tmp.join(name), name).unwrap();
    }
    std::fs::create_dir(tmp.join("old-dir")).unwrap();
    std::fs::write(root.join("new").join("old-new"), "keep").unwrap();
    std::fs::write(root.join("cur").join("old-cur"), "keep").unwrap();
    let touch = |flags: &[&str], path: &Path| {
        let status = std::process::Command::new("touch")
            .args(flags)
            .args(["-d", "3 days ago"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    };
    touch(&[], &tmp.join("old"));
    touch(&["-m"], &tmp.join("old-mtime-only"));
    touch(&["-a"], &tmp.join("old-atime-only"));
    touch(&[], &tmp.join("old-dir"));
    touch(&[], &root.join("new").join("old-new"));
    touch(&[], &root.join("cur").join("old-cur"));
    // Just inside the limit (35 hours) stays too.
    std::fs::write(tmp.join("35h"), "x").unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "35 hours ago"])
        .arg(tmp.join("35h"))
        .status()
        .unwrap();
    assert!(status.success());

    let server = Server::start_in(&root, &[]);
    let names = |d: &Path| -> Vec<String> {
        files_in(d)
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&tmp),
        [
            "35h",
            "fresh",
            "old-atime-only",
            "old-dir",
            "old-mtime-only"
        ]
    );
    assert_eq!(names(&root.join("new")), ["old-new"]);
    assert_eq!(names(&root.join("cur")), ["old-cur"]);
    assert!(server.log().contains("removed 1 stale"), "{}", server.log());
}

#[test]
fn long_helo_and_address_keep_header_lines_under_998() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.expect("220 ");
    let helo = format!("h{}.test", "e".repeat(490));
    c.cmd(&format!("EHLO {helo}"), "250-");
    let from = format!("{}@x.test", "f".repeat(480));
    let rcpt = format!("{}@y.test", "r".repeat(480));
    let reply = c.mail(&from, &[&rcpt], "x\r\n");
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    let (head, body) = split_stored(&server.new_files()[0]);
    assert!(head.lines().all(|l| l.len() < 998), "{head}");
    let lines = header_lines(&head);
    assert!(lines[2].starts_with(&format!("Received: from {helo} (127.0.0.1) by mx.test")));
    assert!(lines[2].contains(&format!(" for <{rcpt}>; ")));
    assert_eq!(body, b"x\n");
}

#[test]
fn each_stored_message_is_logged_once() {
    let server = Server::start(&[]);
    let mut c = server.ehlo();
    let reply = c.mail(
        "log@x.test",
        &["r1@y.test", "r2@y.test"],
        "Subject: logged subject\r\nMessage-ID: <m1@x.test>\r\n\r\nbody\r\n",
    );
    let id = reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .expect(&reply)
        .trim()
        .to_string();
    let file = server.new_files()[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(server.wait_log(&file, TIMEOUT), "{}", server.log());
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&id) && l.contains("stored"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    for needle in [
        "log@x.test",
        "r1@y.test",
        "r2@y.test",
        "logged subject",
        "<m1@x.test>",
        &file,
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    assert!(line.contains(" size="), "{line}");
}
