//! SPEC "Test hooks" through the real binary: `--events` lines (there as
//! soon as the reply is, exact fields, valid JSON whatever arrived),
//! `--exit-after`, every `--fail` form with exact counts under concurrency,
//! and `--keep` over new/ and cur/.

use crate::harness::{Client, Server, TIMEOUT, files_in, queued_id, run_within, wait_until};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A server with `--events <tmp>/events.jsonl` and `args`; the path too.
fn with_events(args: &[&str]) -> (Server, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut all = vec!["--events", path.to_str().unwrap()];
    all.extend_from_slice(args);
    (Server::start(&all), path, dir)
}

/// Every line of the events file, parsed (a line that is not JSON fails).
fn events(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn of_kind(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .cloned()
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

const STORED_KEYS: [&str; 13] = [
    "auth",
    "event",
    "files",
    "from",
    "helo",
    "id",
    "message_id",
    "peer",
    "size",
    "subject",
    "time",
    "tls",
    "to",
];
const REFUSED_KEYS: [&str; 8] = [
    "address", "event", "from", "peer", "reply", "stage", "time", "to",
];

#[test]
fn every_250_finds_its_line_at_once_1000_times_over_20_clients() {
    let (server, path, _dir) = with_events(&[]);
    let addr = server.addr;
    thread::scope(|s| {
        for who in 0..20 {
            let path = path.clone();
            s.spawn(move || {
                let mut c = Client::greeted(addr);
                c.cmd(&format!("EHLO c{who}.test"), "250-");
                // Each client follows the file from its start; no sleep.
                let mut file = BufReader::new(fs::File::open(&path).unwrap());
                let mut seen = BTreeSet::new();
                let mut partial = String::new();
                for i in 0..50 {
                    let text = format!("Subject: c{who} m{i}\r\n\r\nhi\r\n");
                    let reply = c.mail(&format!("c{who}@x.test"), &["b@y.test"], &text);
                    let id = queued_id(&reply).unwrap_or_else(|| panic!("{reply}"));
                    loop {
                        let mut line = String::new();
                        if file.read_line(&mut line).unwrap() == 0 {
                            break;
                        }
                        partial.push_str(&line);
                        if partial.ends_with('\n') {
                            let v: Value = serde_json::from_str(&partial).unwrap();
                            seen.insert(v["id"].as_str().unwrap().to_string());
                            partial.clear();
                        }
                    }
                    assert!(
                        seen.contains(&id),
                        "c{who} m{i}: no line for {id} after its 250"
                    );
                }
                c.cmd("QUIT", "221");
            });
        }
    });
    let all = events(&path);
    assert_eq!(all.len(), 1000);
    let ids: BTreeSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1000, "one line per message");
    assert_eq!(server.new_files().len(), 1000);
}

#[test]
fn a_stored_line_has_exactly_spec_fields() {
    let (server, path, _dir) = with_events(&["--per-recipient"]);
    let mut c = server.ehlo();
    // RFC 1870 size: the data on the wire with CRLF, without the stuffed
    // dot and the final dot.
    let text = "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus =?ISO-8859-1?B?S/Zsbg==?=\r\nMessage-ID: <m1@x.test>\r\n\r\n..dot\r\nend\r\n";
    let wire_size = text.len() - 1;
    let reply = c.mail("a@x.test", &["b@y.test", "c@Y.test"], text);
    let id = queued_id(&reply).unwrap();
    let all = events(&path);
    assert_eq!(all.len(), 1, "{all:?}");
    let e = &all[0];
    assert_eq!(keys(e), STORED_KEYS);
    assert_eq!(e["event"], "stored");
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["peer"], "127.0.0.1");
    assert_eq!(e["helo"], "client.test");
    assert_eq!((&e["tls"], &e["auth"]), (&Value::Null, &Value::Null));
    assert_eq!(e["from"], "a@x.test");
    assert_eq!(e["to"], serde_json::json!(["b@y.test", "c@Y.test"]));
    assert_eq!(e["size"], wire_size);
    assert_eq!(e["subject"], "Grüße aus Köln");
    assert_eq!(e["message_id"], "<m1@x.test>");
    let time = e["time"].as_str().unwrap();
    assert_eq!(time.len(), "2026-01-01T00:00:00.000Z".len(), "{time}");
    assert!(time.ends_with('Z') && &time[10..11] == "T", "{time}");
    let files: Vec<&str> = e["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2);
    assert!(files[0].starts_with("b@y.test/new/"), "{files:?}");
    assert!(files[1].starts_with("c@y.test/new/"), "{files:?}");
    for f in files {
        assert!(server.maildir().join(f).is_file(), "{f}");
    }
}

#[test]
fn a_message_without_subject_or_message_id_has_nulls() {
    let (server, path, _dir) = with_events(&[]);
    let mut c = server.ehlo();
    let reply = c.mail("", &["b@y.test"], "\r\nno headers\r\n");
    assert!(queued_id(&reply).is_some(), "{reply}");
    let e = &events(&path)[0];
    assert_eq!(
        (&e["subject"], &e["message_id"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(e["from"], "", "the null sender");
    let name = e["files"][0].as_str().unwrap();
    assert!(name.starts_with("new/"), "{name}");
}

/// (stage, reply, from, to, address) of each refused line.
fn refusals(path: &Path) -> Vec<(String, String, Value, Value, Value)> {
    of_kind(&events(path), "refused")
        .into_iter()
        .map(|e| {
            assert_eq!(keys(&e), REFUSED_KEYS);
            assert_eq!(e["peer"], "127.0.0.1");
            (
                e["stage"].as_str().unwrap().to_string(),
                e["reply"].as_str().unwrap().to_string(),
                e["from"].clone(),
                e["to"].clone(),
                e["address"].clone(),
            )
        })
        .collect()
}

#[test]
fn refusals_are_lines_and_syntax_and_order_errors_are_not() {
    use serde_json::json;
    let (server, path, _dir) = with_events(&["--domain", "y.test", "--max-size", "1000"]);
    let mut c = server.client();
    c.expect("220 ");
    c.cmd("BOGUS", "500 5.5.2"); // syntax: no line
    c.cmd("MAIL FROM:<a@x.test>", "503 5.5.1"); // order: no line
    c.cmd("EHLO", "501"); // syntax
    c.cmd("EHLO c", "250-");
    c.cmd("RCPT TO:<b@y.test>", "503 5.5.1");
    c.cmd("MAIL FROM:<a@x.test> FOO=1", "555 5.5.4");
    c.cmd("MAIL FROM:<a@x.test> SIZE=5000", "552 5.3.4"); // line 1
    c.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
    c.cmd("RCPT TO:<b@elsewhere.test>", "550 5.7.1"); // line 2
    c.cmd("DATA", "554 5.5.1"); // no recipients: no line
    c.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
    c.cmd("RCPT TO:<c@other.test>", "550 5.7.1"); // line 3
    c.cmd("DATA", "354");
    c.send(format!("{}\r\n.\r\n", "x".repeat(1200)));
    c.expect("552 5.3.4"); // line 4, after the final dot
    c.cmd("QUIT", "221");
    let want = vec![
        (
            "mail",
            "552 5.3.4 Error: message file too big",
            json!(null),
            json!([]),
            json!("a@x.test"),
        ),
        (
            "rcpt",
            "550 5.7.1 Error: recipient domain not accepted here",
            json!("a@x.test"),
            json!([]),
            json!("b@elsewhere.test"),
        ),
        (
            "rcpt",
            "550 5.7.1 Error: recipient domain not accepted here",
            json!("a@x.test"),
            json!(["b@y.test"]),
            json!("c@other.test"),
        ),
        (
            "data",
            "552 5.3.4 Error: message file too big",
            json!("a@x.test"),
            json!(["b@y.test"]),
            json!(null),
        ),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(s, r, f, t, a)| (s.to_string(), r.to_string(), f, t, a))
        .collect();
    assert_eq!(refusals(&path), want);
    assert!(of_kind(&events(&path), "stored").is_empty());
}

#[test]
fn the_421_of_a_full_pool_is_a_connect_line() {
    let (server, path, _dir) = with_events(&["--workers", "1", "--queue", "0"]);
    let mut first = server.ehlo(); // holds the only worker
    let mut refused = server.client();
    refused.expect("421 4.3.2");
    let got = refusals(&path);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "connect");
    assert!(got[0].1.starts_with("421 4.3.2 "), "{}", got[0].1);
    assert_eq!((&got[0].2, &got[0].4), (&Value::Null, &Value::Null));
    first.cmd("QUIT", "221");
}

#[test]
fn lines_are_valid_json_whatever_bytes_arrived() {
    let (server, path, _dir) = with_events(&["--fail", "rcpt:*@bounce.test=550"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<\"q\\\"uote\"@x.test> SMTPUTF8", "250");
    c.cmd("RCPT TO:<über€@y.test>", "250");
    c.cmd("RCPT TO:<\"a\\\\b\"@bounce.test>", "550");
    c.cmd("DATA", "354");
    let mut text = b"Subject: bad \xff\xfe bytes \x1b[31m \x00 \"q\" \\ \r\n\r\n".to_vec();
    text.extend_from_slice(b"body \xc3\x28\r\n.\r\n");
    c.send(&text);
    assert!(queued_id(&c.reply()).is_some());
    let all = events(&path); // each line parsed by serde_json
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["address"], "\"a\\\\b\"@bounce.test");
    let stored = &all[1];
    assert_eq!(stored["from"], "\"q\\\"uote\"@x.test");
    assert_eq!(stored["to"][0], "über€@y.test");
    let subject = stored["subject"].as_str().unwrap();
    assert!(subject.starts_with("bad "), "{subject:?}");
    // Bytes that are not UTF-8 are read as Latin-1 by mailparse (or
    // replaced): either way the line is valid JSON.
    assert!(
        subject.contains("ÿþ") || subject.contains('\u{fffd}'),
        "{subject:?}"
    );
    assert!(subject.contains("\u{1b}[31m \0"), "{subject:?}");
    assert!(subject.contains("\"q\" \\"), "{subject:?}");
    // Raw control bytes are escaped in the file, never written as is.
    let raw = fs::read(&path).unwrap();
    assert!(!raw.contains(&0x1b) && !raw.contains(&0) && !raw.contains(&0x7f));
    assert_eq!(raw.iter().filter(|&&b| b == b'\n').count(), 2);
}

#[test]
fn a_stored_line_names_the_tls_version_and_the_auth_user_never_the_password() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let (server, path, _dir) = with_events(&["--tls-self-signed", "--auth-any"]);
    let mut c = crate::tls::TlsClient::starttls(server.addr, &crate::tls::pinned(&server));
    c.cmd("EHLO c", "250");
    c.cmd(
        &format!("AUTH PLAIN {}", STANDARD.encode("\0alice\0pw-s3cret")),
        "235",
    );
    assert!(
        c.mail("a@x.test", "b@y.test", "hi\r\n")
            .starts_with("250 2.0.0")
    );
    let e = &events(&path)[0];
    assert_eq!(
        (e["tls"].as_str(), e["auth"].as_str()),
        (Some("TLSv1.3"), Some("alice"))
    );
    assert!(!fs::read_to_string(&path).unwrap().contains("pw-s3cret"));
    // Without AUTH, on a plain session: both null.
    let mut plain = server.ehlo();
    let r = plain.mail("a@x.test", &["b@y.test"], "hi\r\n");
    assert!(queued_id(&r).is_some(), "{r}");
    let e = &events(&path)[1];
    assert_eq!((&e["tls"], &e["auth"]), (&Value::Null, &Value::Null));
}

#[test]
fn events_to_stdout_with_a_dash() {
    let server = Server::start(&["--events", "-"]);
    let mut c = server.ehlo();
    let reply = c.mail("a@x.test", &["b@y.test"], "Subject: out\r\n\r\nx\r\n");
    let id = queued_id(&reply).unwrap();
    assert!(
        wait_until(TIMEOUT, || server.stdout().contains(&id)),
        "stdout: {:?}",
        server.stdout()
    );
    let line: Value = serde_json::from_str(server.stdout().lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["subject"].as_str()),
        (Some("stored"), Some("out"))
    );
    // The log is copied on a thread of its own: once it shows the stored
    // line, an event written there would be in it too.
    assert!(server.wait_log(&format!("stored id={id}"), TIMEOUT));
    assert!(
        !server.log().contains(&format!("\"id\":\"{id}\"")),
        "events go to stdout, not the log"
    );
}

#[test]
fn an_events_file_that_cannot_be_opened_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing/dir/events.jsonl");
    let md = dir.path().join("Maildir");
    let out = run_within(
        &[
            "--listen",
            "127.0.0.1:0",
            "-d",
            md.to_str().unwrap(),
            "--events",
            bad.to_str().unwrap(),
        ],
        &[("RUST_LOG", "off")],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--events") && err.contains("events.jsonl"),
        "{err}"
    );
}

// ---- --exit-after ----

/// Sends a command; false once the server says it is shutting down (or
/// has closed).
fn go(c: &mut Client, line: &str, want: &str) -> bool {
    c.send(format!("{line}\r\n"));
    let r = c.try_reply().unwrap_or_default();
    if r.is_empty() || r.starts_with("421 4.3.2") {
        return false;
    }
    assert!(r.starts_with(want), "{line}: {r}");
    true
}

fn exits_0(server: &mut Server) {
    let status = server
        .wait_exit(TIMEOUT * 2)
        .expect("mailsink did not exit");
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

#[test]
fn exit_after_3_with_five_clients_racing() {
    let (mut server, path, _dir) = with_events(&["--exit-after", "3"]);
    let addr = server.addr;
    let acked = AtomicUsize::new(0);
    let start = Barrier::new(5);
    thread::scope(|s| {
        for who in 0..5 {
            let (acked, start) = (&acked, &start);
            s.spawn(move || {
                let mut c = Client::greeted(addr);
                c.cmd(&format!("EHLO c{who}"), "250-");
                start.wait();
                for i in 0..10 {
                    if !(go(&mut c, "MAIL FROM:<a@x.test>", "250")
                        && go(&mut c, "RCPT TO:<b@y.test>", "250")
                        && go(&mut c, "DATA", "354"))
                    {
                        return;
                    }
                    // In DATA: this message finishes whatever happens.
                    c.send(format!("Subject: c{who} m{i}\r\n\r\nx\r\n.\r\n"));
                    let r = c.reply();
                    assert!(queued_id(&r).is_some(), "{r}");
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                panic!("c{who}: never stopped");
            });
        }
    });
    exits_0(&mut server);
    let acked = acked.load(Ordering::SeqCst);
    // At least 3; more only from sessions already in DATA (at most one per client).
    assert!((3..=3 + 4).contains(&acked), "{acked} acknowledged");
    assert_eq!(
        server.new_files().len(),
        acked,
        "every acknowledged message stored"
    );
    assert_eq!(of_kind(&events(&path), "stored").len(), acked);
    assert!(
        server
            .log()
            .contains("--exit-after 3: 3 messages stored, stopping")
    );
}

#[test]
fn after_the_nth_no_new_connection_is_acknowledged() {
    let mut server = Server::start(&["--exit-after", "3"]);
    for i in 0..3 {
        let mut c = server.ehlo();
        let r = c.mail(
            "a@x.test",
            &["b@y.test"],
            &format!("Subject: {i}\r\n\r\nx\r\n"),
        );
        assert!(queued_id(&r).is_some(), "{r}");
    }
    // The 3rd 250 was sent after the stop began: a new connection is
    // refused, or gets 421 at once; never a transaction.
    match std::net::TcpStream::connect_timeout(&server.addr, TIMEOUT) {
        // Refused, or reset when the listener closes under a pending connect.
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
        Ok(s) => {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut r = String::new();
            let _ = BufReader::new(s).read_line(&mut r);
            assert!(r.is_empty() || r.starts_with("421 4.3.2"), "{r:?}");
        }
    }
    exits_0(&mut server);
    assert_eq!(server.new_files().len(), 3);
}

#[test]
fn exit_after_lets_a_session_in_data_finish_and_stops_idle_ones() {
    let mut server = Server::start(&["--exit-after", "1"]);
    let mut in_data = server.ehlo();
    in_data.open_data();
    in_data.send("Subject: in flight\r\n\r\nfirst half\r\n");
    let mut idle = server.ehlo();
    let mut first = server.ehlo();
    let r = first.mail("a@x.test", &["b@y.test"], "Subject: one\r\n\r\nx\r\n");
    assert!(queued_id(&r).is_some(), "{r}");
    // The stop has begun: the idle session is told so, at once.
    idle.expect("421 4.3.2");
    // The session in DATA finishes its message and gets its 250.
    in_data.send("second half\r\n.\r\n");
    assert!(queued_id(&in_data.reply()).is_some());
    exits_0(&mut server);
    let mut subjects = crate::harness::first_lines(server.maildir());
    subjects.sort();
    assert_eq!(subjects, ["Subject: in flight", "Subject: one"]);
}

// ---- --fail ----

/// Sends `n` messages from `clients` parallel sessions; returns the final
/// replies' codes (as "250", "451", ...), counted.
fn parallel_messages(server: &Server, clients: usize, n: usize) -> BTreeMap<String, usize> {
    let counts = std::sync::Mutex::new(BTreeMap::new());
    let addr = server.addr;
    thread::scope(|s| {
        for who in 0..clients {
            let counts = &counts;
            s.spawn(move || {
                let mut c = Client::greeted(addr);
                c.cmd("EHLO c", "250-");
                for i in 0..n / clients {
                    let r = c.transact(&format!("Subject: c{who} m{i}\r\n\r\nx\r\n"));
                    *counts
                        .lock()
                        .unwrap()
                        .entry(r[..3].to_string())
                        .or_insert(0) += 1;
                }
                c.cmd("QUIT", "221");
            });
        }
    });
    counts.into_inner().unwrap()
}

#[test]
fn data_every_3_refuses_exactly_100_of_300_from_30_clients() {
    let (server, path, _dir) = with_events(&["--fail", "data:every 3=451 4.3.0 Try again later"]);
    let counts = parallel_messages(&server, 30, 300);
    let want: BTreeMap<String, usize> = [("250".into(), 200), ("451".into(), 100)].into();
    assert_eq!(counts, want);
    assert_eq!(
        server.new_files().len(),
        200,
        "a refused data stores nothing"
    );
    assert!(files_in(&server.maildir().join("tmp")).is_empty());
    let refused = refusals(&path);
    assert_eq!(refused.len(), 100);
    assert!(
        refused
            .iter()
            .all(|r| r.0 == "data" && r.1 == "451 4.3.0 Try again later")
    );
    // The harness copies stderr on a thread of its own: wait for the lines.
    let fired = || server.log().matches("--fail \"data:every 3=451").count();
    wait_until(TIMEOUT, || fired() >= 100);
    assert_eq!(fired(), 100, "every injection is logged at info");
}

#[test]
fn rcpt_every_4_refuses_exactly_a_quarter_across_connections() {
    let server = Server::start(&["--fail", "rcpt:every 4=452 4.2.2 Mailbox full"]);
    let addr = server.addr;
    let refused = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..20 {
            let refused = &refused;
            s.spawn(move || {
                let mut c = Client::greeted(addr);
                c.cmd("EHLO c", "250-");
                c.cmd("MAIL FROM:<a@x.test>", "250");
                for r in 0..10 {
                    c.send(format!("RCPT TO:<r{r}@y.test>\r\n"));
                    let reply = c.reply();
                    if reply == "452 4.2.2 Mailbox full\r\n" {
                        refused.fetch_add(1, Ordering::SeqCst);
                    } else {
                        assert!(reply.starts_with("250 2.1.5"), "{reply}");
                    }
                }
                c.cmd("QUIT", "221");
            });
        }
    });
    assert_eq!(refused.load(Ordering::SeqCst), 50);
}

#[test]
fn rcpt_glob_bounces_only_matching_addresses_in_any_case() {
    let (server, path, _dir) =
        with_events(&["--fail", "rcpt:*@bounce.example=550 5.1.1 No such user"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250");
    c.cmd("RCPT TO:<ok@y.test>", "250 2.1.5");
    assert_eq!(
        c.cmd("RCPT TO:<Gone@Bounce.EXAMPLE>", "550"),
        "550 5.1.1 No such user\r\n"
    );
    c.cmd("RCPT TO:<x@bounce.example.org>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send("Subject: s\r\n\r\nx\r\n.\r\n");
    assert!(queued_id(&c.reply()).is_some());
    let r = refusals(&path);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].4, "Gone@Bounce.EXAMPLE");
    assert_eq!(r[0].3, serde_json::json!(["ok@y.test"]));
    let stored = of_kind(&events(&path), "stored");
    assert_eq!(
        stored[0]["to"],
        serde_json::json!(["ok@y.test", "x@bounce.example.org"])
    );
}

#[test]
fn connect_nth_1_refuses_only_the_first_connection_and_closes_it() {
    let (server, path, _dir) = with_events(&["--fail", "connect:nth 1=421 4.3.2 Busy"]);
    let mut first = server.client();
    assert_eq!(first.reply(), "421 4.3.2 Busy\r\n");
    assert_eq!(first.read_to_end(), "", "a 421 closes");
    for _ in 0..3 {
        let mut c = server.client();
        c.expect("220 mx.test ESMTP");
        c.cmd("QUIT", "221");
    }
    let r = refusals(&path);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].0.as_str(), r[0].1.as_str()),
        ("connect", "421 4.3.2 Busy")
    );
}

#[test]
fn an_injected_421_at_rcpt_closes_the_connection() {
    let server = Server::start(&["--fail", "rcpt:*=421 4.7.0 Go away"]);
    let mut c = server.ehlo();
    c.cmd("MAIL FROM:<a@x.test>", "250");
    c.send("RCPT TO:<b@y.test>\r\nNOOP\r\n");
    assert_eq!(c.reply(), "421 4.7.0 Go away\r\n");
    assert_eq!(c.read_to_end(), "", "closed, the NOOP unanswered");
}

#[test]
fn data_drop_closes_with_no_reply_and_stores_nothing() {
    let (server, path, _dir) = with_events(&["--fail", "data:*=drop"]);
    let mut c = server.ehlo();
    c.open_data();
    c.send("Subject: s\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.try_reply().unwrap_or_default(), "", "no reply, closed");
    let tmp = server.maildir().join("tmp");
    assert!(wait_until(TIMEOUT, || files_in(&tmp).is_empty()));
    assert!(server.new_files().is_empty());
    assert!(events(&path).is_empty(), "a drop is no event");
    assert!(server.wait_log("--fail \"data:*=drop\" fired at data #1", TIMEOUT));
}

#[test]
fn a_delay_holds_only_that_session() {
    let server = Server::start(&["--fail", "rcpt:slow@*=delay 2"]);
    let mut slow = server.ehlo();
    slow.cmd("MAIL FROM:<a@x.test>", "250");
    let began = Instant::now();
    slow.send("RCPT TO:<slow@y.test>\r\n");
    // Another session is served in full meanwhile.
    let mut other = server.ehlo();
    let r = other.mail("a@x.test", &["fast@y.test"], "Subject: f\r\n\r\nx\r\n");
    assert!(queued_id(&r).is_some(), "{r}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "the other session waited"
    );
    // Then the delayed one goes on as normal.
    slow.expect("250 2.1.5");
    assert!(began.elapsed() >= Duration::from_secs(2));
    slow.cmd("DATA", "354");
    slow.send("Subject: s\r\n\r\nx\r\n.\r\n");
    assert!(queued_id(&slow.reply()).is_some());
}

#[test]
fn helo_and_mail_rules_fill_in_codes_and_count_across_connections() {
    let (server, path, _dir) = with_events(&[
        "--fail",
        "helo:*.bad=550",
        "--fail",
        "mail:nth 3=451 Busy",
        "--fail",
        "mail:*=delay 0",
    ]);
    let mut c = server.client();
    c.expect("220 ");
    assert_eq!(c.cmd("EHLO host.BAD", "550"), "550 5.0.0 Rejected\r\n");
    c.cmd("MAIL FROM:<a@x.test>", "503"); // the refused EHLO did not count
    c.cmd("HELO good.test", "250 mx.test");
    for n in 1..=4 {
        let mut c = server.ehlo();
        let r = c.cmd("MAIL FROM:<a@x.test>", "");
        if n == 3 {
            assert_eq!(r, "451 4.0.0 Busy\r\n", "the 3rd MAIL since start");
        } else {
            assert_eq!(r, "250 2.1.0 Ok\r\n", "MAIL #{n}");
        }
    }
    let r = refusals(&path);
    let got: Vec<(&str, &str)> = r.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        got,
        [("helo", "550 5.0.0 Rejected"), ("mail", "451 4.0.0 Busy")]
    );
    assert!(server.wait_log("--fail \"helo:*.bad=550\" fired at helo #1", TIMEOUT));
}

#[test]
fn a_rule_that_does_not_parse_is_a_usage_error_naming_it() {
    for rule in [
        "rcpt:*=250 2.0.0 Ok",
        "quit:*=550",
        "data:every x=drop",
        "rcpt:*@x",
    ] {
        let out = run_within(
            &["--fail", rule],
            &[("RUST_LOG", "off")],
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(2), "{rule}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("invalid --fail value \"{rule}\"")),
            "{err}"
        );
    }
}

// ---- --keep ----

fn count(dir: &Path) -> usize {
    files_in(dir).len()
}

/// The subjects of the messages in new/ and cur/ (first line of each).
fn kept_subjects(root: &Path) -> BTreeSet<String> {
    ["new", "cur"]
        .iter()
        .flat_map(|d| files_in(&root.join(d)))
        .map(|p| {
            let text = fs::read_to_string(p).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap()
                .to_string()
        })
        .collect()
}

fn send_numbered(server: &Server, range: std::ops::Range<usize>) {
    let mut c = server.ehlo();
    for i in range {
        let r = c.mail(
            "a@x.test",
            &["b@y.test"],
            &format!("Subject: m{i:02}\r\n\r\nx\r\n"),
        );
        assert!(queued_id(&r).is_some(), "{r}");
    }
    c.cmd("QUIT", "221");
}

#[test]
fn keep_5_after_8_messages_some_moved_to_cur_by_a_reader() {
    let server = Server::start(&["--keep", "5"]);
    let root = server.maildir().to_path_buf();
    let stray = root.join("tmp").join("1.M1P1Q1Rx.other,S=1");
    fs::write(&stray, "a delivery in progress").unwrap();
    send_numbered(&server, 0..4);
    // A reader moves the first three to cur/, with flags.
    for f in &server.new_files()[..3] {
        let name = f.file_name().unwrap().to_str().unwrap();
        fs::rename(f, root.join("cur").join(format!("{name}:2,S"))).unwrap();
    }
    send_numbered(&server, 4..8);
    let total = || count(&root.join("new")) + count(&root.join("cur"));
    assert!(wait_until(TIMEOUT, || total() == 5), "{} kept", total());
    let want: BTreeSet<String> = (3..8).map(|i| format!("m{i:02}")).collect();
    assert_eq!(kept_subjects(&root), want, "the newest five");
    assert!(stray.exists(), "tmp/ is never touched");
}

#[test]
fn keep_counts_what_was_there_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    {
        let server = Server::start_in(&root, &[]);
        send_numbered(&server, 0..6);
    }
    let server = Server::start_in(&root, &["--keep", "3"]);
    send_numbered(&server, 6..7);
    assert!(wait_until(TIMEOUT, || count(&root.join("new")) == 3));
    let want: BTreeSet<String> = ["m04", "m05", "m06"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(kept_subjects(&root), want);
}

#[test]
fn keep_is_per_mailbox_with_per_recipient() {
    let server = Server::start(&["--keep", "2", "--per-recipient"]);
    let mut c = server.ehlo();
    for i in 0..4 {
        let r = c.mail(
            "a@x.test",
            &["a@y.test"],
            &format!("Subject: a{i}\r\n\r\nx\r\n"),
        );
        assert!(queued_id(&r).is_some());
    }
    let r = c.mail(
        "a@x.test",
        &["b@y.test", "a@y.test"],
        "Subject: both\r\n\r\nx\r\n",
    );
    assert!(queued_id(&r).is_some());
    let a = server.maildir().join("a@y.test");
    let b = server.maildir().join("b@y.test");
    assert!(wait_until(TIMEOUT, || count(&a.join("new")) == 2));
    let want: BTreeSet<String> = ["a3", "both"].iter().map(|s| s.to_string()).collect();
    assert_eq!(kept_subjects(&a), want);
    assert_eq!(count(&b.join("new")), 1, "b's mailbox has room for both");
}
