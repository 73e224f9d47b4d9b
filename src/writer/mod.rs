//! The writer: the one place messages are stored. Workers stream a message
//! to it in bounded chunks through an `upload::Handle` (on the worker
//! threads: `upload.rs`); one writer thread (`commit.rs`) writes each
//! message to a tmp file (a `draft::Draft`), commits finished messages in
//! rounds and answers each worker, which only then replies `250`.
//! Never touches a socket.
//!
//! The commit round (`commit::Writer::round`), pipelined so that one sync
//! call serves two batches:
//! 1. take the finished messages waiting (at most `BATCH`), written to tmp/;
//! 2. move last round's messages, durable in tmp/, into new/;
//! 3. sync this round's files and the new/ directories of step 2: by
//!    default each file and each directory (`--sync files`, from a few
//!    threads at once), or one syncfs for all (`--sync filesystem`);
//! 4. answer last round's messages: their file and name are on disk;
//! 5. this round's messages wait for the next round's step 2.
//!
//! (Test hooks: in step 4 each answer is preceded by its `--events` line
//! and, for the `--exit-after` N-th, by the stop; after the round its new
//! files go to the `--keep` thread. See `hooks.rs`.)
//!
//! So for every message: file durable → moved into new/ → new/ durable →
//! answer (SPEC's order). A failure at any step answers `451`/`452`, with
//! the message taken back out of new/.

mod commit;
mod draft;
mod hooks;
mod upload;

pub use hooks::Hooks;
pub use upload::{Handle, Upload};

use crate::maildir::{Mailboxes, Maildir, Names, StoreError, SyncMode};
use crate::message::Trace;
use crate::smtp::Envelope;
use crossbeam_channel::bounded;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::SyncSender;

/// Chunks in flight to the writer: with `CHUNK` this bounds the memory
/// queued between the workers and the disk.
pub const QUEUE: usize = 256;
/// A worker hands over message text in pieces of about this size.
pub const CHUNK: usize = 64 * 1024;
/// At most this many messages share one group commit.
const BATCH: usize = 128;

/// Names one message in flight between a worker and the writer.
type UploadId = u64;

/// Where the writer sends its verdict on one message.
type Answer = SyncSender<Result<(), StoreError>>;

/// A message's facts: its envelope, and where and when it was received.
#[derive(Debug)]
pub struct Meta {
    pub envelope: Envelope,
    pub trace: Trace,
}

/// What a worker sends the writer thread.
enum Msg {
    /// A message small enough to go in one piece: begin, text and commit.
    Whole {
        meta: Box<Meta>,
        data: Vec<u8>,
        answer: Answer,
    },
    Begin {
        id: UploadId,
        meta: Box<Meta>,
    },
    Chunk {
        id: UploadId,
        data: Vec<u8>,
    },
    Commit {
        id: UploadId,
        answer: Answer,
    },
    Abort {
        id: UploadId,
    },
}

/// Counters for the shutdown log line and the benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub stored: AtomicU64,
    /// Sync calls made: fsync or fdatasync of a file or directory, or one
    /// syncfs.
    pub fsyncs: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub root: PathBuf,
    pub host: String,
    pub per_recipient: bool,
    pub sync: SyncMode,
}

/// Starts the writer thread on an opened Maildir, with the test hooks
/// (`Hooks::default()` for none). With `--keep`, the retention index is
/// built here, before the first message (a listing of new/ and cur/).
pub fn start(
    maildir: Maildir,
    settings: Settings,
    stats: Arc<Stats>,
    hooks: Hooks,
) -> io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = bounded(QUEUE);
    let handle = Handle::new(tx, settings.root.clone());
    let index = match hooks.keep {
        Some(keep) => Some(hooks::Keeper::start(hooks::Retention::build(
            &settings.root,
            settings.per_recipient,
            keep,
        )?)?),
        None => None,
    };
    let mut writer = commit::Writer::new(filer(maildir, &settings), settings.sync, stats)
        .with_hooks(&settings.root, hooks, index);
    let thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer.run(rx))?;
    Ok((handle, thread))
}

fn filer(maildir: Maildir, settings: &Settings) -> draft::Filer {
    let names = Names::new(&settings.host, std::process::id());
    let mailboxes = settings
        .per_recipient
        .then(|| Mailboxes::new(&settings.root));
    draft::Filer::new(names, maildir, mailboxes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;
    use std::time::SystemTime;

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            from: "a@x".into(),
            ..crate::message::tests::env("client", rcpts)
        }
    }

    fn trace() -> Trace {
        Trace {
            id: "ID".into(),
            received: SystemTime::now(),
            ..crate::message::tests::trace()
        }
    }

    fn settings(root: &Path, per_recipient: bool) -> Settings {
        Settings {
            root: root.to_path_buf(),
            host: "mx.test".into(),
            per_recipient,
            sync: SyncMode::Files,
        }
    }

    fn run_writer(
        root: &Path,
        per_recipient: bool,
    ) -> (Handle, std::thread::JoinHandle<()>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let settings = settings(root, per_recipient);
        let (handle, thread) = super::start(
            Maildir::create(root).unwrap(),
            settings,
            Arc::clone(&stats),
            Hooks::default(),
        )
        .unwrap();
        (handle, thread, stats)
    }

    fn files(dir: &Path) -> Vec<Vec<u8>> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names.iter().map(|p| fs::read(p).unwrap()).collect()
    }

    #[test]
    fn a_message_in_chunks_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, thread, stats) = run_writer(dir.path(), false);
        let mut upload = handle.upload(trace());
        let env = envelope(&["b@y"]);
        upload.send(&env, &mut b"Subject: s\n\n".to_vec()).unwrap();
        upload.finish(env, &mut b"body\n".to_vec()).unwrap();
        drop(handle);
        thread.join().unwrap();
        let stored = files(&dir.path().join("new"));
        assert_eq!(stored.len(), 1);
        let text = String::from_utf8(stored[0].clone()).unwrap();
        assert!(text.starts_with("Return-Path: <a@x>\nDelivered-To: b@y\nReceived: "));
        assert!(text.ends_with("+0000\nSubject: s\n\nbody\n"));
        assert!(files(&dir.path().join("tmp")).is_empty());
        assert_eq!(stats.stored.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_unfinished_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, thread, _) = run_writer(dir.path(), false);
        let mut upload = handle.upload(trace());
        upload
            .send(&envelope(&["b@y"]), &mut vec![b'x'; 1000])
            .unwrap();
        drop(upload);
        drop(handle);
        thread.join().unwrap();
        assert!(files(&dir.path().join("new")).is_empty());
        assert!(files(&dir.path().join("tmp")).is_empty());
    }

    #[test]
    fn concurrent_messages_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, thread, stats) = run_writer(dir.path(), false);
        std::thread::scope(|s| {
            for i in 0..16 {
                let handle = handle.clone();
                s.spawn(move || {
                    for j in 0..4 {
                        let text = format!("message {i} {j}\n");
                        handle
                            .upload(trace())
                            .finish(envelope(&["b@y"]), &mut text.into_bytes())
                            .unwrap();
                    }
                });
            }
        });
        drop(handle);
        thread.join().unwrap();
        let stored = files(&dir.path().join("new"));
        assert_eq!(stored.len(), 64);
        for i in 0..16 {
            for j in 0..4 {
                let end = format!("+0000\nmessage {i} {j}\n");
                assert!(stored.iter().any(|f| f.ends_with(end.as_bytes())), "{end}");
            }
        }
        assert_eq!(stats.stored.load(Ordering::Relaxed), 64);
    }

    /// Ten finished messages already queued when the writer looks, stored
    /// with `mode`; returns the sync calls made.
    fn store_ten_at_once(mode: SyncMode) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let md = Maildir::create(dir.path()).unwrap();
        let filer = filer(md, &settings(dir.path(), false));
        let mut writer = commit::Writer::new(filer, mode, Arc::clone(&stats));
        let (tx, rx) = bounded(QUEUE);
        let answers: Vec<_> = (0..10)
            .map(|i| {
                let (answer, outcome) = mpsc::sync_channel(1);
                let meta = Box::new(Meta {
                    envelope: envelope(&["b@y"]),
                    trace: trace(),
                });
                let data = format!("message {i}\n").into_bytes();
                tx.send(Msg::Whole { meta, data, answer }).unwrap();
                outcome
            })
            .collect();
        drop(tx);
        writer.run(rx);
        for outcome in answers {
            assert!(matches!(outcome.recv(), Ok(Ok(()))));
        }
        assert_eq!(files(&dir.path().join("new")).len(), 10);
        assert!(files(&dir.path().join("tmp")).is_empty());
        stats.fsyncs.load(Ordering::Relaxed)
    }

    #[test]
    fn a_round_syncs_each_file_and_new_once() {
        // Round one: the ten files; round two: new/ once for the ten moves.
        assert_eq!(store_ten_at_once(SyncMode::Files), 10 + 1);
    }

    #[test]
    fn with_syncfs_a_round_makes_one_call() {
        // Round one syncs the ten files with one call, round two their names.
        assert_eq!(store_ten_at_once(SyncMode::FileSystem), 2);
    }

    #[test]
    fn per_recipient_copies_get_their_own_headers() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, thread, _) = run_writer(dir.path(), true);
        let mut text = vec![b'y'; CHUNK + 10];
        handle
            .upload(trace())
            .finish(envelope(&["b@Y.test", "c@y.test"]), &mut text)
            .unwrap();
        drop(handle);
        thread.join().unwrap();
        for rcpt in ["b@y.test", "c@y.test"] {
            let stored = files(&dir.path().join(rcpt).join("new"));
            assert_eq!(stored.len(), 1, "{rcpt}");
            let text = String::from_utf8(stored[0].clone()).unwrap();
            let want = format!(
                "Delivered-To: {}\n",
                if rcpt.starts_with('b') {
                    "b@Y.test"
                } else {
                    rcpt
                }
            );
            assert!(text.contains(&want), "{text:.200}");
            assert!(text.ends_with(&format!("+0000\n{}", "y".repeat(CHUNK + 10))));
        }
        assert!(files(&dir.path().join("new")).is_empty());
    }
}
