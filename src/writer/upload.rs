//! The workers' side of the writer: `Handle` and `Upload`, the only part
//! `conn.rs` sees, and the free-space check. Runs on the worker threads;
//! everything here only sends on the writer's channel and waits for its
//! answer. Never touches a message file.

use super::{CHUNK, Meta, Msg, UploadId};
use crate::maildir::{self, StoreError};
use crate::message::Trace;
use crate::smtp::Envelope;
use crossbeam_channel::Sender;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A free-space reading this far above the need is trusted for a second.
const ROOMY: u64 = 1 << 30;

/// How workers reach the writer. Cloned per worker; when every clone is
/// dropped the writer stores what is queued and ends.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Msg>,
    root: PathBuf,
    next_upload: Arc<AtomicU64>,
    /// This worker's last free-space reading: when, and how many bytes.
    free: Cell<Option<(Instant, u64)>>,
}

impl Handle {
    pub(super) fn new(tx: Sender<Msg>, root: PathBuf) -> Handle {
        Handle {
            tx,
            root,
            next_upload: Arc::new(AtomicU64::new(0)),
            free: Cell::new(None),
        }
    }

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
            id: self.next_upload.fetch_add(1, Ordering::Relaxed),
            trace: Some(trace),
            finished: false,
        }
    }
}

/// A message on its way to the writer. Dropped unfinished, it is aborted
/// and its tmp file removed.
pub struct Upload<'a> {
    handle: &'a Handle,
    id: UploadId,
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
            self.post(Msg::Begin { id: self.id, meta })?;
        }
        let data = std::mem::replace(data, Vec::with_capacity(CHUNK));
        self.post(Msg::Chunk { id: self.id, data })
    }

    /// Sends the rest and waits until the message is durably stored.
    pub fn finish(mut self, envelope: Envelope, rest: &mut Vec<u8>) -> Result<(), StoreError> {
        // std's channel waits without crossbeam's sched_yield rounds, which
        // cost a few context switches per message here.
        let (answer, outcome) = mpsc::sync_channel(1);
        match self.trace.take() {
            // Never sent a chunk: one message instead of three wakes the writer once.
            Some(trace) => {
                let meta = Box::new(Meta { envelope, trace });
                let data = std::mem::take(rest);
                self.post(Msg::Whole { meta, data, answer })?;
            }
            None => {
                // The last chunk: taken, not replaced by a fresh buffer (the
                // connection starts the next message with a new one).
                let data = std::mem::take(rest);
                self.post(Msg::Chunk { id: self.id, data })?;
                self.post(Msg::Commit {
                    id: self.id,
                    answer,
                })?;
            }
        }
        self.finished = true;
        outcome.recv().map_err(|_| StoreError::WriterStopped)?
    }

    fn post(&self, msg: Msg) -> Result<(), StoreError> {
        self.handle
            .tx
            .send(msg)
            .map_err(|_| StoreError::WriterStopped)
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if self.trace.is_none() && !self.finished {
            let _ = self.handle.tx.send(Msg::Abort { id: self.id });
        }
    }
}
