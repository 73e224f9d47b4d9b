//! `--events FILE|-`: one JSON object per line for each stored message
//! (written by the writer thread) and each refused transaction step
//! (written by the worker), each line written whole and flushed before the
//! client gets the reply it describes. serde_json does the escaping, so a
//! line is valid JSON whatever bytes arrived: every string here is Rust
//! text already: addresses and HELO names are checked UTF-8, and the
//! Subject is decoded by `read::header` (RFC 2047; header bytes that are
//! not UTF-8 are read as Latin-1, a lossy but total conversion).

use crate::message;
use crate::smtp::Reply;
use log::warn;
use serde_json::{Value, json};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

/// Where the lines go. One lock per line keeps lines whole across threads.
pub struct Events {
    out: Mutex<Sink>,
}

enum Sink {
    /// Opened for appending: each line is one write(2).
    File(File),
    Stdout(io::Stdout),
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

/// A stored message, as the `stored` event tells it.
#[derive(Debug)]
pub struct Stored<'a> {
    pub id: &'a str,
    pub time: SystemTime,
    pub peer: IpAddr,
    pub helo: &'a str,
    pub tls: Option<&'a str>,
    pub auth: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a [String],
    /// As RFC 1870 counts it: octets on the wire.
    pub size: u64,
    /// Relative to `--maildir`: `new/<name>` or `<mailbox>/new/<name>`.
    pub files: Vec<String>,
    /// Decoded; `None` when the message has none.
    pub subject: Option<String>,
    pub message_id: Option<String>,
}

/// A refused step, as the `refused` event tells it.
#[derive(Debug)]
pub struct Refused<'a> {
    pub stage: &'a str,
    pub reply: &'a Reply,
    pub time: SystemTime,
    pub peer: IpAddr,
    /// The accepted sender, if any.
    pub from: Option<&'a str>,
    /// The recipients accepted so far.
    pub to: &'a [String],
    /// The address refused at MAIL or RCPT.
    pub address: Option<&'a str>,
}

impl Stored<'_> {
    fn to_json(&self) -> Value {
        json!({
            "event": "stored",
            "id": self.id,
            "time": message::rfc3339(self.time),
            "peer": self.peer.to_string(),
            "helo": self.helo,
            "tls": self.tls,
            "auth": self.auth,
            "from": self.from,
            "to": self.to,
            "size": self.size,
            "files": self.files,
            "subject": self.subject,
            "message_id": self.message_id,
        })
    }
}

impl Refused<'_> {
    fn to_json(&self) -> Value {
        let reply = self.reply.to_string();
        json!({
            "event": "refused",
            "stage": self.stage,
            "reply": reply.trim_end().replace("\r\n", "\n"),
            "time": message::rfc3339(self.time),
            "peer": self.peer.to_string(),
            "from": self.from,
            "to": self.to,
            "address": self.address,
        })
    }
}

impl Events {
    /// Opens `-` (stdout) or `path` for appending, creating it with mode
    /// 0600 (it holds addresses and subjects, as the Maildir does).
    pub fn open(path: &Path) -> io::Result<Events> {
        let sink = if path == Path::new("-") {
            Sink::Stdout(io::stdout())
        } else {
            Sink::File(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)?,
            )
        };
        Ok(Events {
            out: Mutex::new(sink),
        })
    }

    pub fn stored(&self, event: &Stored<'_>) {
        self.write(&event.to_json());
    }

    pub fn refused(&self, event: &Refused<'_>) {
        self.write(&event.to_json());
    }

    /// Writes one line and flushes it. A failure is logged, never fatal:
    /// the message is stored either way.
    fn write(&self, value: &Value) {
        let mut line = value.to_string();
        line.push('\n');
        // A panic elsewhere while holding the lock leaves nothing half
        // written (one write_all per line), so a poisoned lock is usable.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let written = match &mut *out {
            Sink::File(f) => f.write_all(line.as_bytes()),
            Sink::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(line.as_bytes()).and_then(|()| s.flush())
            }
        };
        if let Err(e) = written {
            warn!("cannot write an --events line: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stored_has_exactly_the_fields_spec_lists() {
        let to = vec!["b@y".to_string(), "c\u{7}@y".to_string()];
        let e = Stored {
            id: "ID1",
            time: UNIX_EPOCH + Duration::from_millis(1500),
            peer: "::1".parse().unwrap(),
            helo: "he\"lo",
            tls: None,
            auth: None,
            from: "",
            to: &to,
            size: 42,
            files: vec!["new/1.M2P3Q4Rab.h,S=99".into()],
            subject: Some("Grüße \u{fffd}\n".into()),
            message_id: None,
        };
        let line = e.to_json().to_string();
        assert_eq!(
            line,
            r#"{"auth":null,"event":"stored","files":["new/1.M2P3Q4Rab.h,S=99"],"from":"","helo":"he\"lo","id":"ID1","message_id":null,"peer":"::1","size":42,"subject":"Grüße �\n","time":"1970-01-01T00:00:01.500Z","tls":null,"to":["b@y","c\u0007@y"]}"#
        );
        assert!(!line.contains('\n'));
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["to"][1], "c\u{7}@y");
    }

    #[test]
    fn refused_has_exactly_the_fields_spec_lists() {
        let reply = Reply::new(550, (5, 1, 1), "No such user");
        let e = Refused {
            stage: "rcpt",
            reply: &reply,
            time: UNIX_EPOCH,
            peer: "127.0.0.1".parse().unwrap(),
            from: Some("a@x"),
            to: &[],
            address: Some("b@bounce.example"),
        };
        assert_eq!(
            e.to_json().to_string(),
            r#"{"address":"b@bounce.example","event":"refused","from":"a@x","peer":"127.0.0.1","reply":"550 5.1.1 No such user","stage":"rcpt","time":"1970-01-01T00:00:00.000Z","to":[]}"#
        );
    }

    #[test]
    fn lines_are_appended_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let events = Events::open(&path).unwrap();
        let reply = Reply::new(451, (4, 3, 0), "Try again");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        events.refused(&Refused {
                            stage: "data",
                            reply: &reply,
                            time: SystemTime::now(),
                            peer: "127.0.0.1".parse().unwrap(),
                            from: None,
                            to: &[],
                            address: None,
                        });
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 201);
        assert_eq!(lines[0], "old");
        for l in &lines[1..] {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["reply"], "451 4.3.0 Try again");
        }
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Events::open(&dir.path().join("no/such/dir/e.jsonl")).is_err());
    }
}
