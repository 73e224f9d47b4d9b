//! The writer thread: the one place messages are stored. Workers stream a
//! message to it in bounded chunks; it writes them to tmp files and commits
//! finished messages in rounds (see `Writer::round`): a file is durable
//! before its name appears in new/, the name is durable before the worker
//! is answered, and one sync call serves every message of a round.
//! Never touches a socket.

use crate::maildir::{self, Maildir, Names, Pending, StoreError};
use crate::message::{self, Trace};
use crate::smtp::Envelope;
use crossbeam_channel::{Receiver, Sender, bounded};
use log::{error, info};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::time::{Duration, Instant, SystemTime};

/// Chunks in flight to the writer: with `CHUNK` this bounds the memory
/// queued between the workers and the disk.
pub const QUEUE: usize = 256;
/// A worker hands over message text in pieces of about this size.
pub const CHUNK: usize = 64 * 1024;
/// How much of the message start is kept to read Subject and Message-ID.
const HEADER_SNIFF: usize = 16 * 1024;
/// Per-recipient Maildirs remembered as created (the rest are re-checked).
const MAILBOX_CACHE: usize = 4096;
/// At most this many messages share one group commit.
const BATCH: usize = 128;

/// The writer's answer for one message.
pub type Stored = Result<(), StoreError>;

/// A message's facts: its envelope, and where and when it was received.
#[derive(Debug)]
pub struct Meta {
    pub envelope: Envelope,
    pub trace: Trace,
}

enum Msg {
    /// A message small enough to go in one piece: begin, text and commit.
    Whole {
        meta: Box<Meta>,
        data: Vec<u8>,
        reply: SyncSender<Stored>,
    },
    Begin {
        job: u64,
        meta: Box<Meta>,
    },
    Chunk {
        job: u64,
        data: Vec<u8>,
    },
    Commit {
        job: u64,
        reply: SyncSender<Stored>,
    },
    Abort {
        job: u64,
    },
}

/// Counters for the shutdown log line and the benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub stored: AtomicU64,
    /// Sync calls made: fsync of a file or directory, or one syncfs.
    pub fsyncs: AtomicU64,
}

/// How workers reach the writer. Cloned per worker; when every clone is
/// dropped the writer stores what is queued and ends.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Msg>,
    root: PathBuf,
    jobs: Arc<AtomicU64>,
    /// This worker's last free-space reading: when, and how many bytes.
    free: Cell<Option<(Instant, u64)>>,
}

/// A free-space reading this far above the need is trusted for a second.
const ROOMY: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct Settings {
    pub root: PathBuf,
    pub host: String,
    pub per_recipient: bool,
}

/// Starts the writer thread on an opened Maildir.
pub fn start(
    maildir: Maildir,
    settings: Settings,
    stats: Arc<Stats>,
) -> io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = bounded(QUEUE);
    let handle = Handle {
        tx,
        root: settings.root.clone(),
        jobs: Arc::new(AtomicU64::new(0)),
        free: Cell::new(None),
    };
    let mut writer = Writer::new(maildir, settings, stats);
    let thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer.run(rx))?;
    Ok((handle, thread))
}

impl Handle {
    /// Whether the Maildir's file system has room for `bytes` more.
    /// A reading with a gigabyte to spare is reused for a second (a statfs
    /// per MAIL is measurable on small messages); a tight one never is. If
    /// space runs out in between, the write fails and the client gets
    /// `452 4.3.1` after the final dot, with nothing stored.
    pub fn has_room(&self, bytes: u64) -> bool {
        if let Some((at, free)) = self.free.get()
            && at.elapsed() < Duration::from_secs(1)
            && free >= bytes.saturating_add(ROOMY)
        {
            return true;
        }
        match maildir::free_bytes(&self.root) {
            Ok(free) => {
                self.free.set(Some((Instant::now(), free)));
                free >= bytes
            }
            Err(_) => true, // cannot tell: let the write decide
        }
    }

    /// Starts a message; text is added with `Upload::send`.
    pub fn upload(&self, trace: Trace) -> Upload<'_> {
        Upload {
            handle: self,
            job: self.jobs.fetch_add(1, Ordering::Relaxed),
            trace: Some(trace),
            finished: false,
        }
    }
}

/// A message on its way to the writer. Dropped unfinished, it is aborted
/// and its tmp file removed.
pub struct Upload<'a> {
    handle: &'a Handle,
    job: u64,
    /// Until the first chunk goes out; small messages go in one piece.
    trace: Option<Trace>,
    finished: bool,
}

impl Upload<'_> {
    /// Hands `data` to the writer (leaving it empty). The first chunk of a
    /// large message takes a copy of the envelope along.
    pub fn send(&mut self, envelope: &Envelope, data: &mut Vec<u8>) -> Result<(), StoreError> {
        if let Some(trace) = self.trace.take() {
            let envelope = envelope.clone();
            let meta = Box::new(Meta { envelope, trace });
            self.post(Msg::Begin {
                job: self.job,
                meta,
            })?;
        }
        let data = std::mem::replace(data, Vec::with_capacity(CHUNK));
        self.post(Msg::Chunk {
            job: self.job,
            data,
        })
    }

    /// Sends the rest and waits until the message is durably stored.
    pub fn finish(mut self, envelope: Envelope, rest: &mut Vec<u8>) -> Stored {
        // std's channel waits without crossbeam's sched_yield rounds, which
        // cost a few context switches per message here.
        let (reply, answer) = mpsc::sync_channel(1);
        match self.trace.take() {
            // Never sent a chunk: one message instead of three wakes the writer once.
            Some(trace) => {
                let meta = Box::new(Meta { envelope, trace });
                let data = std::mem::take(rest);
                self.post(Msg::Whole { meta, data, reply })?;
            }
            None => {
                self.send(&envelope, rest)?;
                self.post(Msg::Commit {
                    job: self.job,
                    reply,
                })?;
            }
        }
        self.finished = true;
        answer.recv().map_err(|_| writer_gone())?
    }

    fn post(&self, msg: Msg) -> Result<(), StoreError> {
        self.handle.tx.send(msg).map_err(|_| writer_gone())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if self.trace.is_none() && !self.finished {
            let _ = self.handle.tx.send(Msg::Abort { job: self.job });
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Io(io::Error::other("the writer thread has stopped"))
}

/// A message being written: one file per copy (one copy, or one per
/// recipient with `--per-recipient`).
struct Open {
    meta: Box<Meta>,
    copies: Vec<Copy>,
    /// Length of the first copy's prepended headers (where the text starts).
    header_len: u64,
    sniff: Vec<u8>,
    failed: Option<StoreError>,
    /// Its files in new/, once moved there.
    moved: Vec<PathBuf>,
}

/// A finished message and the worker waiting for its answer.
type Job = (Open, SyncSender<Stored>);

struct Copy {
    maildir: Arc<Maildir>,
    pending: Pending,
}

struct Writer {
    settings: Settings,
    names: Names,
    catch_all: Arc<Maildir>,
    boxes: HashMap<String, Arc<Maildir>>,
    open: HashMap<u64, Open>,
    stats: Arc<Stats>,
}

impl Writer {
    fn new(maildir: Maildir, settings: Settings, stats: Arc<Stats>) -> Writer {
        Writer {
            names: Names::new(&settings.host, std::process::id()),
            catch_all: Arc::new(maildir),
            boxes: HashMap::new(),
            settings,
            open: HashMap::new(),
            stats,
        }
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        let mut ready = Vec::new(); // finished messages, written to tmp/
        let mut synced = Vec::new(); // durable in tmp/, to be moved into new/
        loop {
            if ready.is_empty() && synced.is_empty() {
                // Ends once every Handle is dropped and the queue is empty.
                match rx.recv() {
                    Ok(msg) => self.handle(msg, &mut ready),
                    Err(_) => break,
                }
            }
            // Take what else is waiting, so that one round serves a batch.
            for _ in 0..QUEUE {
                if ready.len() >= BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg, &mut ready),
                    Err(_) => break,
                }
            }
            self.round(&mut ready, &mut synced);
        }
        self.open.clear(); // unfinished messages: their tmp files go
    }

    fn handle(&mut self, msg: Msg, ready: &mut Vec<Job>) {
        match msg {
            Msg::Whole { meta, data, reply } => ready.push((self.begin(meta, &data), reply)),
            Msg::Begin { job, meta } => {
                let open = self.begin(meta, &[]);
                self.open.insert(job, open);
            }
            Msg::Chunk { job, data } => {
                if let Some(open) = self.open.get_mut(&job) {
                    open.append(&data);
                }
            }
            Msg::Commit { job, reply } => match self.open.remove(&job) {
                Some(open) => ready.push((open, reply)),
                None => {
                    let _ = reply.send(Err(StoreError::Io(io::Error::other("unknown message"))));
                }
            },
            Msg::Abort { job } => {
                self.open.remove(&job);
            }
        }
    }

    /// Opens a message's tmp file, written with its headers and `text`.
    fn begin(&mut self, meta: Box<Meta>, text: &[u8]) -> Open {
        let mut open = Open {
            meta,
            copies: Vec::new(),
            header_len: 0,
            sniff: Vec::new(),
            failed: None,
            moved: Vec::new(),
        };
        // The first copy receives the text; with --per-recipient the others
        // are made from it at commit, so a message holds one open file.
        let rcpts = &open.meta.envelope.rcpts;
        let first = if self.settings.per_recipient {
            &rcpts[..1]
        } else {
            &rcpts[..]
        };
        match self.open_copy(&open.meta, first, text) {
            Ok(copy) => {
                open.header_len = copy.pending.size() - text.len() as u64;
                open.copies.push(copy);
                open.sniff_text(text);
            }
            Err(e) => open.failed = Some(e.into()),
        }
        open
    }

    /// Creates a tmp file in the right Maildir holding its prepended headers
    /// and `text`, in one write.
    fn open_copy(&mut self, meta: &Meta, rcpts: &[String], text: &[u8]) -> io::Result<Copy> {
        let maildir = if self.settings.per_recipient {
            self.mailbox(&rcpts[0])?
        } else {
            Arc::clone(&self.catch_all)
        };
        let mut pending = maildir.open(&self.names.next(SystemTime::now()))?;
        let mut head = message::prepended(&meta.envelope, rcpts, &meta.trace);
        head.extend_from_slice(text);
        pending.write(&head)?;
        Ok(Copy { maildir, pending })
    }

    /// The recipient's own Maildir, created on first use.
    fn mailbox(&mut self, rcpt: &str) -> io::Result<Arc<Maildir>> {
        let name = maildir::mailbox_dir(rcpt);
        if let Some(md) = self.boxes.get(&name) {
            return Ok(Arc::clone(md));
        }
        let md = Arc::new(Maildir::create(&self.settings.root.join(&name))?);
        if self.boxes.len() >= MAILBOX_CACHE {
            self.boxes.clear(); // bounded memory however many recipients come
        }
        self.boxes.insert(name, Arc::clone(&md));
        Ok(md)
    }

    /// One round of the pipelined group commit. Each message takes two
    /// rounds: in the first its file is made durable in tmp/; in the next it
    /// is moved into new/ and the move made durable, and only then answered.
    /// One sync call per round serves both the new files of this round and
    /// the moves of the last, so a busy writer pays one flush per round.
    fn round(&mut self, ready: &mut Vec<Job>, synced: &mut Vec<Job>) {
        for (open, _) in ready.iter_mut() {
            if open.failed.is_none()
                && let Err(e) = self.add_copies(open)
            {
                open.failed = Some(e.into());
            }
        }
        // 1. Last round's files are durable: move them into new/.
        for (open, _) in synced.iter_mut() {
            open.publish();
        }
        // 2. One sync: this round's files, and the new/ directories moved into.
        let files: Vec<&Pending> = ready
            .iter()
            .filter(|(open, _)| open.failed.is_none())
            .flat_map(|(open, _)| open.copies.iter().map(|c| &c.pending))
            .collect();
        let mut dirs: Vec<&Maildir> = Vec::new();
        for (open, _) in synced.iter().filter(|(open, _)| open.failed.is_none()) {
            for copy in &open.copies {
                if !dirs.iter().any(|d| std::ptr::eq(*d, &*copy.maildir)) {
                    dirs.push(&copy.maildir);
                }
            }
        }
        let synced_ok = if files.is_empty() && dirs.is_empty() {
            Ok(())
        } else {
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            maildir::sync_batch(&files, &dirs)
        };
        drop((files, dirs));
        if let Err(e) = &synced_ok {
            for (open, _) in ready.iter_mut().chain(synced.iter_mut()) {
                open.fail_with(e);
            }
        }
        // 3. Answer the moved messages: now a 250 may be said.
        for (open, reply) in synced.drain(..) {
            self.answer(open, reply);
        }
        // 4. This round's durable files are moved in the next round.
        for (open, reply) in ready.drain(..) {
            if open.failed.is_some() {
                self.answer(open, reply);
            } else {
                synced.push((open, reply));
            }
        }
    }

    fn answer(&self, mut open: Open, reply: SyncSender<Stored>) {
        let result = match open.failed.take() {
            Some(e) => {
                open.unpublish(); // never a 451 with the file kept
                error!("store failed id={}: {e}", open.meta.trace.id);
                Err(e)
            }
            None => {
                self.stats.stored.fetch_add(1, Ordering::Relaxed);
                log_stored(&open);
                Ok(())
            }
        };
        let _ = reply.send(result);
    }

    /// `--per-recipient`: every recipient after the first gets its own file,
    /// its own headers, and the text copied from the first file.
    fn add_copies(&mut self, open: &mut Open) -> io::Result<()> {
        if !self.settings.per_recipient || open.meta.envelope.rcpts.len() < 2 {
            return Ok(());
        }
        let rcpts = open.meta.envelope.rcpts.clone();
        for rcpt in &rcpts[1..] {
            let mut copy = self.open_copy(&open.meta, std::slice::from_ref(rcpt), &[])?;
            let source = open.copies[0].pending.file()?;
            source.seek(SeekFrom::Start(open.header_len))?;
            let copied = io::copy(source, copy.pending.file()?)?;
            copy.pending.add_size(copied);
            open.copies.push(copy);
        }
        Ok(())
    }
}

impl Open {
    /// Moves every copy into its new/ (after its file is durable).
    fn publish(&mut self) {
        if self.failed.is_some() {
            return;
        }
        for copy in &mut self.copies {
            match copy.maildir.publish(&mut copy.pending) {
                Ok(path) => self.moved.push(path),
                Err(e) => {
                    self.failed = Some(e.into());
                    return;
                }
            }
        }
    }

    /// Takes back what reached new/ of a message that failed.
    fn unpublish(&mut self) {
        for path in self.moved.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn fail_with(&mut self, e: &io::Error) {
        if self.failed.is_none() {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()).into());
        }
    }

    /// Keeps the start of the text, for Subject and Message-ID.
    fn sniff_text(&mut self, data: &[u8]) {
        if self.sniff.len() < HEADER_SNIFF {
            let take = data.len().min(HEADER_SNIFF - self.sniff.len());
            self.sniff.extend_from_slice(&data[..take]);
        }
    }

    fn append(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.sniff_text(data);
        if let Some(copy) = self.copies.first_mut()
            && let Err(e) = copy.pending.write(data)
        {
            self.failed = Some(e.into());
        }
    }
}

/// The one info line per stored message. Everything from the network is
/// escaped, so no CR, LF, NUL or terminal escape reaches the log.
fn log_stored(open: &Open) {
    let (subject, message_id) = match mailparse::parse_headers(&open.sniff) {
        Ok((headers, _)) => {
            use mailparse::MailHeaderMap;
            (
                headers.get_first_value("Subject").unwrap_or_default(),
                headers.get_first_value("Message-ID").unwrap_or_default(),
            )
        }
        Err(_) => (String::new(), String::new()),
    };
    let env = &open.meta.envelope;
    let size = open.copies.first().map_or(0, |c| c.pending.size());
    let files: Vec<_> = open.moved.iter().filter_map(|p| p.file_name()).collect();
    let files = files.join(std::ffi::OsStr::new(","));
    info!(
        "stored id={} from=<{}> to=<{}> size={size} subject={:?} message-id={:?} file={}",
        open.meta.trace.id,
        env.from.escape_debug(),
        env.rcpts.join(">,<").escape_debug(),
        subject,
        message_id,
        files.to_string_lossy().escape_debug(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::MailParams;
    use std::fs;
    use std::path::Path;

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            from: "a@x".into(),
            rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
            params: MailParams::default(),
            helo: "client".into(),
            protocol: "ESMTP",
            refused: 0,
        }
    }

    fn trace() -> Trace {
        Trace {
            id: "ID".into(),
            peer: "127.0.0.1".parse().unwrap(),
            host: "mx.test".into(),
            received: SystemTime::now(),
        }
    }

    fn settings(root: &Path, per_recipient: bool) -> Settings {
        Settings {
            root: root.to_path_buf(),
            host: "mx.test".into(),
            per_recipient,
        }
    }

    fn run_writer(
        root: &Path,
        per_recipient: bool,
    ) -> (Handle, std::thread::JoinHandle<()>, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let settings = settings(root, per_recipient);
        let (handle, thread) =
            super::start(Maildir::create(root).unwrap(), settings, Arc::clone(&stats)).unwrap();
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
        assert!(text.starts_with("Return-Path: <a@x>\nDelivered-To: <b@y>\nReceived: "));
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

    #[test]
    fn messages_ready_together_share_one_sync_per_round() {
        // Ten finished messages already queued when the writer looks: round
        // one syncs their ten files with one call, round two their ten names.
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let md = Maildir::create(dir.path()).unwrap();
        let mut writer = Writer::new(md, settings(dir.path(), false), Arc::clone(&stats));
        let (tx, rx) = bounded(QUEUE);
        let answers: Vec<_> = (0..10)
            .map(|i| {
                let (reply, answer) = mpsc::sync_channel(1);
                let meta = Box::new(Meta {
                    envelope: envelope(&["b@y"]),
                    trace: trace(),
                });
                let data = format!("message {i}\n").into_bytes();
                tx.send(Msg::Whole { meta, data, reply }).unwrap();
                answer
            })
            .collect();
        drop(tx);
        writer.run(rx);
        for answer in answers {
            assert!(matches!(answer.recv(), Ok(Ok(()))));
        }
        assert_eq!(files(&dir.path().join("new")).len(), 10);
        assert_eq!(stats.fsyncs.load(Ordering::Relaxed), 2);
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
                "Delivered-To: <{}>\n",
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
