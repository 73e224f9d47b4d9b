//! The writer thread: takes the workers' messages off the channel, writes
//! them through drafts, commits them in rounds (the order is in `round`
//! and in the module doc of `writer`), and answers each worker. The only
//! thread that writes, syncs or moves a message file. Never touches a
//! socket.

use super::draft::{Draft, Filer};
use super::hooks::{Hooks, Keeper};
use super::{Answer, BATCH, Msg, QUEUE, Stats, UploadId};
use crate::maildir::{self, Maildir, Pending, StoreError, SyncMode};
use crossbeam_channel::Receiver;
use log::{error, info};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A message whose text is all written, and the worker waiting for it.
pub(super) struct Finished {
    draft: Draft,
    answer: Answer,
}

pub(super) struct Writer {
    filer: Filer,
    sync: SyncMode,
    /// Debug builds only: answer before new/ is durable, so that
    /// scripts/syncorder can show that its checker catches a broken order.
    broken_order: bool,
    /// Messages still arriving in chunks, by upload.
    drafts: HashMap<UploadId, Draft>,
    stats: Arc<Stats>,
    hooks: Hooks,
    /// `--keep`: the index, built at start.
    retention: Option<Keeper>,
    /// The `--maildir` root (event file names are relative to it).
    root: std::path::PathBuf,
}

impl Writer {
    pub(super) fn new(filer: Filer, sync: SyncMode, stats: Arc<Stats>) -> Writer {
        Writer {
            filer,
            sync,
            broken_order: cfg!(debug_assertions)
                && std::env::var_os("MAILSINK_DEBUG_BREAK_SYNC_ORDER").is_some(),
            drafts: HashMap::new(),
            stats,
            hooks: Hooks::default(),
            retention: None,
            root: std::path::PathBuf::new(),
        }
    }

    /// With the test hooks: events, exit-after, and retention from `index`.
    pub(super) fn with_hooks(
        mut self,
        root: &std::path::Path,
        hooks: Hooks,
        index: Option<Keeper>,
    ) -> Writer {
        self.root = root.to_path_buf();
        self.hooks = hooks;
        self.retention = index;
        self
    }

    /// Runs until every `Handle` is dropped and the queue is empty.
    pub(super) fn run(&mut self, rx: Receiver<Msg>) {
        let mut written = Vec::new(); // finished, written to tmp/
        let mut durable = Vec::new(); // durable in tmp/, to be moved into new/
        loop {
            if written.is_empty() && durable.is_empty() {
                match rx.recv() {
                    Ok(msg) => self.take(msg, &mut written),
                    Err(_) => break,
                }
            }
            // 1. Take what else is waiting, so that one round serves a batch.
            for _ in 0..QUEUE {
                if written.len() >= BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut written),
                    Err(_) => break,
                }
            }
            self.round(&mut written, &mut durable);
            // 6. --keep: this round's files to the retention thread.
            if let Some(k) = &mut self.retention {
                k.flush();
            }
        }
        self.drafts.clear(); // unfinished messages: their tmp files go
    }

    fn take(&mut self, msg: Msg, written: &mut Vec<Finished>) {
        match msg {
            Msg::Whole { meta, data, answer } => {
                let draft = Draft::begin(&mut self.filer, meta, &data);
                written.push(Finished { draft, answer });
            }
            Msg::Begin { id, meta } => {
                let draft = Draft::begin(&mut self.filer, meta, &[]);
                self.drafts.insert(id, draft);
            }
            Msg::Chunk { id, data } => {
                if let Some(draft) = self.drafts.get_mut(&id) {
                    draft.append(&data);
                }
            }
            Msg::Commit { id, answer } => match self.drafts.remove(&id) {
                Some(draft) => written.push(Finished { draft, answer }),
                None => {
                    let _ = answer.send(Err(StoreError::UnknownUpload));
                }
            },
            Msg::Abort { id } => {
                self.drafts.remove(&id);
            }
        }
    }

    /// One round of the pipelined group commit. Each message takes two
    /// rounds: in the first its file is made durable in tmp/; in the next it
    /// is moved into new/ and the move made durable, and only then answered.
    /// One sync step per round serves both the new files of this round and
    /// the moves of the last, so a busy writer waits on the disk once per
    /// round.
    fn round(&mut self, written: &mut Vec<Finished>, durable: &mut Vec<Finished>) {
        for f in written.iter_mut() {
            f.draft.add_copies(&mut self.filer);
        }
        // 2. Last round's files are durable: move them into new/.
        for f in durable.iter_mut() {
            f.draft.publish();
        }
        // 3. One sync step: this round's files, and the new/ directories
        //    moved into (maildir::sync_batch, by --sync mode).
        let files: Vec<&Pending> = written
            .iter()
            .filter(|f| f.draft.failed.is_none())
            .flat_map(|f| f.draft.pending())
            .collect();
        let mut dirs: Vec<Arc<Maildir>> = Vec::new();
        for f in durable.iter().filter(|f| f.draft.failed.is_none()) {
            for md in f.draft.moved_into() {
                if !dirs.iter().any(|d| Arc::ptr_eq(d, md)) {
                    dirs.push(Arc::clone(md));
                }
            }
        }
        if self.broken_order {
            for f in durable.drain(..) {
                self.answer(f); // wrong on purpose: before new/ is synced
            }
        }
        let dir_refs: Vec<&Maildir> = dirs.iter().map(|d| &**d).collect();
        let synced = maildir::sync_batch(self.sync, &files, &dir_refs);
        if let Ok(calls) = &synced {
            self.stats.fsyncs.fetch_add(*calls, Ordering::Relaxed);
        }
        drop((files, dir_refs));
        if let Err(e) = &synced {
            for f in written.iter_mut().chain(durable.iter_mut()) {
                f.draft.fail_with(e);
            }
        }
        // 4. Answer the moved messages: now a 250 may be said.
        for f in durable.drain(..) {
            self.answer(f);
        }
        // 5. This round's durable files are moved in the next round.
        for f in written.drain(..) {
            if f.draft.failed.is_some() {
                self.answer(f);
            } else {
                durable.push(f);
            }
        }
    }

    fn answer(&mut self, Finished { mut draft, answer }: Finished) {
        let result = match draft.failed.take() {
            Some(e) => {
                draft.unpublish(); // never a 451 with the file kept
                error!("store failed id={}: {e}", draft.meta.trace.id);
                Err(e)
            }
            None => {
                let n = self.stats.stored.fetch_add(1, Ordering::Relaxed) + 1;
                // Decoded once, for the log line and the event.
                let headers = crate::read::header::subject_and_message_id(&draft.sniff);
                log_stored(&draft, &headers);
                // The event line is on disk and a stop under way before the 250.
                self.hooks.stored(&self.root, &draft, headers, n);
                if let Some(r) = &mut self.retention {
                    draft.moved().for_each(|(md, path)| r.add(md, path));
                }
                Ok(())
            }
        };
        let _ = answer.send(result);
    }
}

/// The one info line per stored message. Everything from the network is
/// escaped, so no CR, LF, NUL or terminal escape reaches the log.
/// `headers`: Subject and Message-ID through the one header decoder
/// (read::header: RFC 2047, and what could be read of a broken block).
fn log_stored(draft: &Draft, (subject, message_id): &(String, String)) {
    let env = &draft.meta.envelope;
    let files: Vec<_> = draft.moved_names().collect();
    let files = files.join(std::ffi::OsStr::new(","));
    // The AUTH user, when there was one (issue 9).
    let auth = env
        .user
        .as_deref()
        .map(|u| format!(" auth={}", u.escape_debug()))
        .unwrap_or_default();
    info!(
        "stored id={} from=<{}> to=<{}>{auth} size={} subject={:?} message-id={:?} file={}",
        draft.meta.trace.id,
        env.from.escape_debug(),
        env.rcpts.join(">,<").escape_debug(),
        draft.size(),
        subject,
        message_id,
        files.to_string_lossy().escape_debug(),
    );
}
