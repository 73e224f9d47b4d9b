//! The writer thread: the one place messages are stored. Workers stream a
//! message to it in bounded chunks; it writes them to tmp files and, for
//! every batch of finished messages, fsyncs the files, moves them into new/,
//! fsyncs each new/ once (group commit), and only then answers the workers.
//! Never touches a socket.

use crate::maildir::{self, Maildir, Names, Pending, StoreError};
use crate::message::{self, Trace};
use crate::smtp::Envelope;
use crossbeam_channel::{Receiver, Sender, bounded};
use log::{error, info};
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Chunks in flight to the writer: with `CHUNK` this bounds the memory
/// queued between the workers and the disk.
pub const QUEUE: usize = 256;
/// A worker hands over message text in pieces of about this size.
pub const CHUNK: usize = 64 * 1024;
/// How much of the message start is kept to read Subject and Message-ID.
const HEADER_SNIFF: usize = 16 * 1024;
/// At most this many messages share one group commit.
const BATCH: usize = 128;

/// The writer's answer for one message.
pub type Stored = Result<(), StoreError>;

/// A message's facts, known when DATA starts.
#[derive(Debug)]
pub struct Meta {
    pub envelope: Envelope,
    pub trace: Trace,
}

enum Msg {
    Begin { job: u64, meta: Box<Meta> },
    Chunk { job: u64, data: Vec<u8> },
    Commit { job: u64, reply: Sender<Stored> },
    Abort { job: u64 },
}

/// Counters for the shutdown log line and the benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub stored: AtomicU64,
    pub fsyncs: AtomicU64,
}

/// How workers reach the writer. Cloned per worker; when every clone is
/// dropped the writer stores what is queued and ends.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Msg>,
    root: PathBuf,
    jobs: Arc<AtomicU64>,
}

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
    };
    let mut writer = Writer {
        names: Names::new(&settings.host, std::process::id()),
        catch_all: Arc::new(maildir),
        boxes: HashMap::new(),
        settings,
        open: HashMap::new(),
        stats,
    };
    let thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer.run(rx))?;
    Ok((handle, thread))
}

impl Handle {
    /// Whether the Maildir's file system has room for `bytes` more.
    pub fn has_room(&self, bytes: u64) -> bool {
        maildir::free_bytes(&self.root).map_or(true, |free| free >= bytes)
    }

    /// Starts a message; text is added with `Upload::send`.
    pub fn upload(&self, meta: Meta) -> Upload<'_> {
        Upload {
            handle: self,
            job: self.jobs.fetch_add(1, Ordering::Relaxed),
            meta: Some(Box::new(meta)),
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
    meta: Option<Box<Meta>>,
    finished: bool,
}

impl Upload<'_> {
    /// Hands `data` to the writer (leaving it empty).
    pub fn send(&mut self, data: &mut Vec<u8>) -> Result<(), StoreError> {
        if let Some(meta) = self.meta.take() {
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
    pub fn finish(mut self, rest: &mut Vec<u8>) -> Stored {
        self.send(rest)?;
        let (reply, answer) = bounded(1);
        self.post(Msg::Commit {
            job: self.job,
            reply,
        })?;
        self.finished = true;
        answer.recv().map_err(|_| writer_gone())?
    }

    fn post(&self, msg: Msg) -> Result<(), StoreError> {
        self.handle.tx.send(msg).map_err(|_| writer_gone())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if self.meta.is_none() && !self.finished {
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
}

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
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut ready = Vec::new();
        // Ends once every Handle is dropped and the queue is empty.
        while let Ok(msg) = rx.recv() {
            self.handle(msg, &mut ready);
            // Take what else is waiting, so that one commit serves a batch.
            for _ in 0..QUEUE {
                if ready.len() >= BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg, &mut ready),
                    Err(_) => break,
                }
            }
            if !ready.is_empty() {
                self.commit(&mut ready);
            }
        }
        self.open.clear(); // unfinished messages: their tmp files go
    }

    fn handle(&mut self, msg: Msg, ready: &mut Vec<(Open, Sender<Stored>)>) {
        match msg {
            Msg::Begin { job, meta } => {
                let open = self.begin(meta);
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

    fn begin(&mut self, meta: Box<Meta>) -> Open {
        let mut open = Open {
            meta,
            copies: Vec::new(),
            header_len: 0,
            sniff: Vec::new(),
            failed: None,
        };
        // The first copy receives the text; with --per-recipient the others
        // are made from it at commit, so a message holds one open file.
        let first = if self.settings.per_recipient {
            open.meta.envelope.rcpts[..1].to_vec()
        } else {
            open.meta.envelope.rcpts.clone()
        };
        match self.open_copy(&open.meta, &first) {
            Ok(copy) => {
                open.header_len = copy.pending.size();
                open.copies.push(copy);
            }
            Err(e) => open.failed = Some(e.into()),
        }
        open
    }

    /// Creates a tmp file in the right Maildir with its prepended headers.
    fn open_copy(&mut self, meta: &Meta, rcpts: &[String]) -> io::Result<Copy> {
        let maildir = if self.settings.per_recipient {
            self.mailbox(&rcpts[0])?
        } else {
            Arc::clone(&self.catch_all)
        };
        let mut pending = maildir.open(&self.names.next(SystemTime::now()))?;
        pending.write(&message::prepended(&meta.envelope, rcpts, &meta.trace))?;
        Ok(Copy { maildir, pending })
    }

    /// The recipient's own Maildir, created on first use.
    fn mailbox(&mut self, rcpt: &str) -> io::Result<Arc<Maildir>> {
        let name = maildir::mailbox_dir(rcpt);
        if let Some(md) = self.boxes.get(&name) {
            return Ok(Arc::clone(md));
        }
        let md = Arc::new(Maildir::create(&self.settings.root.join(&name))?);
        self.boxes.insert(name, Arc::clone(&md));
        Ok(md)
    }

    /// Group commit: fsync every file, move each into new/, fsync each new/
    /// once, then answer. A reply never precedes both fsyncs.
    fn commit(&mut self, ready: &mut Vec<(Open, Sender<Stored>)>) {
        for (open, _) in ready.iter_mut() {
            if open.failed.is_none()
                && let Err(e) = self.add_copies(open)
            {
                open.failed = Some(e.into());
            }
        }
        self.sync_files(ready); // 1. every file's bytes are on disk
        let mut published: Vec<(usize, PathBuf)> = Vec::new();
        let mut dirs: Vec<Arc<Maildir>> = Vec::new();
        for (i, (open, _)) in ready.iter_mut().enumerate() {
            if open.failed.is_some() {
                continue;
            }
            for copy in &mut open.copies {
                match copy.maildir.publish(&mut copy.pending) {
                    Ok(path) => {
                        published.push((i, path));
                        if !dirs.iter().any(|d| Arc::ptr_eq(d, &copy.maildir)) {
                            dirs.push(Arc::clone(&copy.maildir));
                        }
                    }
                    Err(e) => open.failed = Some(e.into()),
                }
            }
        }
        let dir_failure = dirs.iter().find_map(|d| {
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            d.sync_new().err()
        });
        for (i, path) in &published {
            let open = &mut ready[*i].0;
            if open.failed.is_none()
                && let Some(e) = &dir_failure
            {
                open.failed = Some(io::Error::new(e.kind(), e.to_string()).into());
            }
            if open.failed.is_some() {
                let _ = std::fs::remove_file(path); // never a 451 with the file kept
            }
        }
        for (open, reply) in ready.drain(..) {
            let result = match open.failed {
                Some(e) => {
                    error!("store failed id={}: {e}", open.meta.trace.id);
                    Err(e)
                }
                None => {
                    self.stats.stored.fetch_add(1, Ordering::Relaxed);
                    log_stored(&open, &published_names(&open));
                    Ok(())
                }
            };
            let _ = reply.send(result);
        }
    }

    /// Fsyncs the files of every message not yet failed.
    fn sync_files(&self, ready: &mut [(Open, Sender<Stored>)]) {
        let files: Vec<(usize, &Pending)> = ready
            .iter()
            .enumerate()
            .filter(|(_, (open, _))| open.failed.is_none())
            .flat_map(|(i, (open, _))| open.copies.iter().map(move |c| (i, &c.pending)))
            .collect();
        self.stats
            .fsyncs
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        let failures = sync_each(&files);
        for (i, e) in failures {
            ready[i].0.failed = Some(e.into());
        }
    }

    /// `--per-recipient`: every recipient after the first gets its own file,
    /// its own headers, and the text copied from the first file.
    fn add_copies(&mut self, open: &mut Open) -> io::Result<()> {
        let rcpts = open.meta.envelope.rcpts.clone();
        if !self.settings.per_recipient || rcpts.len() < 2 {
            return Ok(());
        }
        for rcpt in &rcpts[1..] {
            let mut copy = self.open_copy(&open.meta, std::slice::from_ref(rcpt))?;
            let source = open.copies[0].pending.file();
            source.seek(SeekFrom::Start(open.header_len))?;
            let copied = io::copy(&mut Read::by_ref(source), copy.pending.file())?;
            copy.pending.add_size(copied);
            open.copies.push(copy);
        }
        Ok(())
    }
}

impl Open {
    fn append(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.sniff.len() < HEADER_SNIFF {
            let take = data.len().min(HEADER_SNIFF - self.sniff.len());
            self.sniff.extend_from_slice(&data[..take]);
        }
        if let Some(copy) = self.copies.first_mut()
            && let Err(e) = copy.pending.write(data)
        {
            self.failed = Some(e.into());
        }
    }
}

/// Fsyncs each file; the failures, by message index.
fn sync_each(files: &[(usize, &Pending)]) -> Vec<(usize, io::Error)> {
    files
        .iter()
        .filter_map(|(i, p)| p.sync().err().map(|e| (*i, e)))
        .collect()
}

fn published_names(open: &Open) -> Vec<String> {
    open.copies
        .iter()
        .map(|c| c.pending.published_name())
        .collect()
}

/// The one info line per stored message. Everything from the network is
/// escaped, so no CR, LF, NUL or terminal escape reaches the log.
fn log_stored(open: &Open, files: &[String]) {
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
    info!(
        "stored id={} from=<{}> to=<{}> size={size} subject={:?} message-id={:?} file={}",
        open.meta.trace.id,
        env.from.escape_debug(),
        env.rcpts.join(">,<").escape_debug(),
        subject,
        message_id,
        files.join(",").escape_debug(),
    );
}
