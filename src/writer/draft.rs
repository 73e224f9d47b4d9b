//! A message being stored: its tmp file (one per recipient with
//! `--per-recipient`), what is kept for the log line, and the moves into
//! new/ (`publish`) or their undoing (`unpublish`). Used only on the writer
//! thread; the order of syncs and moves is `commit.rs`'s business.

use super::Meta;
use crate::maildir::{Mailboxes, Maildir, Names, Pending, StoreError};
use crate::message;
use std::io::{self, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// How much of the message start is kept to read Subject and Message-ID.
const HEADER_SNIFF: usize = 16 * 1024;

/// Where drafts get their files: unique names, and the catch-all Maildir
/// or, with `--per-recipient`, each recipient's own.
pub(super) struct Filer {
    names: Names,
    catch_all: Arc<Maildir>,
    /// `Some` with `--per-recipient`.
    mailboxes: Option<Mailboxes>,
}

impl Filer {
    pub(super) fn new(names: Names, catch_all: Maildir, mailboxes: Option<Mailboxes>) -> Filer {
        Filer {
            names,
            catch_all: Arc::new(catch_all),
            mailboxes,
        }
    }

    /// Creates a tmp file in the right Maildir holding its prepended
    /// headers and `text`, in one write.
    fn create(&mut self, meta: &Meta, rcpts: &[String], text: &[u8]) -> io::Result<DraftFile> {
        let maildir = match &mut self.mailboxes {
            Some(boxes) => boxes.get(&rcpts[0])?,
            None => Arc::clone(&self.catch_all),
        };
        let mut pending = maildir.create_tmp(&self.names.next(SystemTime::now()))?;
        let mut head = message::prepended(&meta.envelope, rcpts, &meta.trace);
        head.extend_from_slice(text);
        pending.write(&head)?;
        Ok(DraftFile { maildir, pending })
    }
}

/// A message being written: one file per copy (one copy, or one per
/// recipient with `--per-recipient`).
pub(super) struct Draft {
    pub(super) meta: Box<Meta>,
    files: Vec<DraftFile>,
    /// Length of the first file's prepended headers (where the text starts).
    header_len: u64,
    /// Size of the first file, as stored.
    size: u64,
    /// The start of the text, for Subject and Message-ID.
    pub(super) sniff: Vec<u8>,
    pub(super) failed: Option<StoreError>,
    /// Its files in new/, once moved there, with their Maildirs.
    moved: Vec<(Arc<Maildir>, PathBuf)>,
}

/// One file of a draft, in tmp/ of its Maildir.
struct DraftFile {
    maildir: Arc<Maildir>,
    pending: Pending,
}

impl Draft {
    /// Opens a message's tmp file, written with its headers and `text`.
    /// The first file receives the text; with --per-recipient the others
    /// are made from it before the commit, so a message holds one open file
    /// while it arrives.
    pub(super) fn begin(filer: &mut Filer, meta: Box<Meta>, text: &[u8]) -> Draft {
        let mut draft = Draft {
            meta,
            files: Vec::new(),
            header_len: 0,
            size: 0,
            sniff: Vec::new(),
            failed: None,
            moved: Vec::new(),
        };
        let rcpts = &draft.meta.envelope.rcpts;
        let first = if filer.mailboxes.is_some() {
            &rcpts[..1]
        } else {
            &rcpts[..]
        };
        match filer.create(&draft.meta, first, text) {
            Ok(file) => {
                draft.header_len = file.pending.size() - text.len() as u64;
                draft.size = file.pending.size();
                draft.files.push(file);
                draft.sniff_text(text);
            }
            Err(e) => draft.failed = Some(e.into()),
        }
        draft
    }

    pub(super) fn append(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.sniff_text(data);
        if let Some(file) = self.files.first_mut() {
            match file.pending.write(data) {
                Ok(()) => self.size = file.pending.size(),
                Err(e) => self.failed = Some(e.into()),
            }
        }
    }

    /// `--per-recipient`: every recipient after the first gets its own
    /// file, its own headers, and the text copied from the first file.
    pub(super) fn add_copies(&mut self, filer: &mut Filer) {
        if self.failed.is_some() || filer.mailboxes.is_none() {
            return;
        }
        if let Err(e) = self.try_add_copies(filer) {
            self.failed = Some(e.into());
        }
    }

    fn try_add_copies(&mut self, filer: &mut Filer) -> io::Result<()> {
        let Draft {
            meta,
            files,
            header_len,
            ..
        } = self;
        for rcpt in meta.envelope.rcpts.iter().skip(1) {
            let mut copy = filer.create(meta, std::slice::from_ref(rcpt), &[])?;
            let source = files[0].pending.file();
            source.seek(SeekFrom::Start(*header_len))?;
            let copied = io::copy(source, copy.pending.file())?;
            copy.pending.add_size(copied);
            files.push(copy);
        }
        Ok(())
    }

    /// The files still in tmp/, to be made durable before `publish`.
    pub(super) fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.files.iter().map(|f| &f.pending)
    }

    /// The Maildirs whose new/ received this draft's files.
    pub(super) fn moved_into(&self) -> impl Iterator<Item = &Arc<Maildir>> {
        self.moved.iter().map(|(md, _)| md)
    }

    /// Its file names in new/, once moved there.
    pub(super) fn moved_names(&self) -> impl Iterator<Item = &std::ffi::OsStr> {
        self.moved.iter().filter_map(|(_, p)| p.file_name())
    }

    /// Its files in new/ with their Maildirs, once moved there.
    pub(super) fn moved(&self) -> impl Iterator<Item = (&Maildir, &PathBuf)> {
        self.moved.iter().map(|(md, p)| (&**md, p))
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Moves every file into its new/ (after the file is durable).
    pub(super) fn publish(&mut self) {
        if self.failed.is_some() {
            return;
        }
        for file in self.files.drain(..) {
            match file.maildir.publish(file.pending) {
                Ok(path) => self.moved.push((file.maildir, path)),
                Err(e) => {
                    self.failed = Some(e.into());
                    return; // the files not yet moved are removed on drop
                }
            }
        }
    }

    /// Takes back what reached new/ of a message that failed.
    pub(super) fn unpublish(&mut self) {
        for (_, path) in self.moved.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    pub(super) fn fail_with(&mut self, e: &io::Error) {
        if self.failed.is_none() {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()).into());
        }
    }

    fn sniff_text(&mut self, data: &[u8]) {
        if self.sniff.len() < HEADER_SNIFF {
            let take = data.len().min(HEADER_SNIFF - self.sniff.len());
            self.sniff.extend_from_slice(&data[..take]);
        }
    }
}
