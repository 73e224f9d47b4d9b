//! The test hooks on the writer thread: the `stored` event of `--events`
//! (written and flushed before the worker is answered), `--exit-after`
//! (the stop is triggered before the N-th answer), and `--keep` (retention
//! from an index built at start: no directory listing per message). The
//! writer hands each round's new files to a `Keeper` thread, which removes
//! the oldest: an unlink costs about 0.5 ms on ext4 here, and 1 000 of them
//! a second on the writer thread cut throughput by 4-10x (measured), so
//! they are kept off it as well as off the workers. Never touches a socket.

use super::draft::Draft;
use crate::events::{Events, Stored};
use crate::maildir::Maildir;
use crossbeam_channel::{Sender, bounded};
use log::{info, warn};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Rounds' worth of new files that may wait for the keeper (back-pressure
/// beyond that: the writer waits, memory stays bounded).
const KEEPER_QUEUE: usize = 64;

/// What the writer does beyond storing; all off by default.
#[derive(Clone, Default)]
pub struct Hooks {
    pub events: Option<Arc<Events>>,
    /// `--exit-after N`: called once, before the N-th message is answered.
    pub exit_after: Option<(u64, Arc<dyn Fn() + Send + Sync>)>,
    /// `--keep N`.
    pub keep: Option<usize>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("events", &self.events.is_some())
            .field("exit_after", &self.exit_after.as_ref().map(|(n, _)| n))
            .field("keep", &self.keep)
            .finish()
    }
}

impl Hooks {
    /// For the `n`-th message stored since start, before its answer.
    /// `headers`: the decoded Subject and Message-ID.
    pub(super) fn stored(&self, root: &Path, draft: &Draft, headers: (String, String), n: u64) {
        if let Some(events) = &self.events {
            events.stored(&stored_event(root, draft, headers));
        }
        if let Some((after, stop)) = &self.exit_after
            && n == *after
        {
            info!("--exit-after {after}: {n} messages stored, stopping");
            stop();
        }
    }
}

fn stored_event<'a>(
    root: &Path,
    draft: &'a Draft,
    (subject, message_id): (String, String),
) -> Stored<'a> {
    let env = &draft.meta.envelope;
    Stored {
        id: &draft.meta.trace.id,
        time: draft.meta.trace.received,
        peer: draft.meta.trace.peer,
        helo: &env.helo,
        // `TLSv1.3 with cipher ...` in the trace: the version is the first word.
        tls: draft
            .meta
            .trace
            .tls
            .as_deref()
            .and_then(|t| t.split(' ').next()),
        auth: env.user.as_deref(),
        from: &env.from,
        to: &env.rcpts,
        size: env.size,
        files: draft
            .moved()
            .map(|(_, p)| {
                let rel = p.strip_prefix(root).unwrap_or(p);
                rel.to_string_lossy().into_owned()
            })
            .collect(),
        subject: Some(subject).filter(|s| !s.is_empty()),
        message_id: Some(message_id).filter(|s| !s.is_empty()),
    }
}

/// One message in a mailbox's index: the time in its name, then the name
/// itself (its part before any `:2,` flags, which a reader may add).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    secs: u64,
    usec: u32,
    name: String,
}

impl Entry {
    /// `<seconds>.M<usec>P...` as mailsink (and most MDAs) name files
    /// (`maildir::name_time`); a name without a leading time is not ours
    /// to remove and is skipped.
    fn parse(file_name: &str) -> Option<Entry> {
        let (secs, usec) = crate::maildir::name_time(file_name)?;
        let base = file_name.split(':').next()?;
        Some(Entry {
            secs,
            usec,
            name: base.to_string(),
        })
    }
}

/// `--keep N`: the messages of each mailbox (the Maildir, or each
/// `--per-recipient` mailbox), oldest first, so that retention costs an
/// index update and an unlink per message, not a directory listing.
pub(super) struct Retention {
    keep: usize,
    boxes: HashMap<PathBuf, BTreeSet<Entry>>,
    /// Mailboxes that received a message since the last `enforce`.
    touched: Vec<PathBuf>,
}

impl Retention {
    /// Indexes new/ and cur/ of `root` and, with `per_recipient`, of every
    /// mailbox under it.
    pub(super) fn build(root: &Path, per_recipient: bool, keep: usize) -> io::Result<Retention> {
        let started = std::time::Instant::now();
        let mut r = Retention {
            keep,
            boxes: HashMap::new(),
            touched: Vec::new(),
        };
        r.index(root)?;
        if per_recipient {
            for entry in fs::read_dir(root)? {
                let path = entry?.path();
                if path.join("new").is_dir() {
                    r.index(&path)?;
                }
            }
        }
        r.touched = r.boxes.keys().cloned().collect(); // over the limit already?
        let n: usize = r.boxes.values().map(BTreeSet::len).sum();
        info!(
            "--keep {keep}: {n} messages indexed in {} ms",
            started.elapsed().as_millis()
        );
        Ok(r)
    }

    fn index(&mut self, mailbox: &Path) -> io::Result<()> {
        let set = self.boxes.entry(mailbox.to_path_buf()).or_default();
        for sub in ["new", "cur"] {
            let dir = match fs::read_dir(mailbox.join(sub)) {
                Ok(dir) => dir,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in dir {
                if let Some(e) = Entry::parse(&entry?.file_name().to_string_lossy()) {
                    set.insert(e);
                }
            }
        }
        Ok(())
    }

    /// A message just moved into the new/ of the Maildir at `root` as `path`.
    pub(super) fn add(&mut self, root: &Path, path: &Path) {
        let Some(entry) = path
            .file_name()
            .and_then(|n| Entry::parse(&n.to_string_lossy()))
        else {
            return;
        };
        if !self.touched.iter().any(|t| t == root) {
            self.touched.push(root.to_path_buf());
        }
        self.boxes
            .entry(root.to_path_buf())
            .or_default()
            .insert(entry);
    }

    /// Removes the oldest messages of each touched mailbox until at most
    /// `keep` remain; returns how many files were removed.
    pub(super) fn enforce(&mut self) -> usize {
        let mut removed = 0;
        for mailbox in std::mem::take(&mut self.touched) {
            let Some(set) = self.boxes.get_mut(&mailbox) else {
                continue;
            };
            let mut cur: Option<HashMap<String, PathBuf>> = None; // listed on the first miss
            while set.len() > self.keep {
                let Some(oldest) = set.pop_first() else { break };
                match remove(&mailbox, &oldest.name, &mut cur) {
                    Ok(true) => removed += 1,
                    Ok(false) => {} // already gone (a reader deleted it)
                    Err(e) => warn!("--keep: cannot remove {}: {e}", oldest.name.escape_debug()),
                }
            }
        }
        removed
    }
}

/// The `--keep` thread: owns the index, takes each round's new files from
/// the writer, and removes the oldest. Dropped, it finishes what is queued.
pub(super) struct Keeper {
    tx: Option<Sender<Vec<(PathBuf, PathBuf)>>>,
    thread: Option<JoinHandle<()>>,
    /// This round's new files (Maildir root, path in new/).
    batch: Vec<(PathBuf, PathBuf)>,
}

impl Keeper {
    pub(super) fn start(mut retention: Retention) -> io::Result<Keeper> {
        let (tx, rx) = bounded::<Vec<(PathBuf, PathBuf)>>(KEEPER_QUEUE);
        let thread = std::thread::Builder::new()
            .name("keep".into())
            .spawn(move || {
                retention.enforce(); // a Maildir over the limit at start
                for batch in rx.iter() {
                    for (root, path) in &batch {
                        retention.add(root, path);
                    }
                    retention.enforce();
                }
            })?;
        Ok(Keeper {
            tx: Some(tx),
            thread: Some(thread),
            batch: Vec::new(),
        })
    }

    /// A stored message's file, in `maildir`'s new/.
    pub(super) fn add(&mut self, maildir: &Maildir, path: &Path) {
        self.batch
            .push((maildir.root().to_path_buf(), path.to_path_buf()));
    }

    /// After a round: hands its files to the keeper thread.
    pub(super) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Some(tx) = &self.tx
            && tx.send(batch).is_err()
        {
            warn!("--keep: the retention thread has stopped");
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.flush();
        drop(self.tx.take()); // the thread drains the queue and ends
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("--keep: the retention thread panicked");
        }
    }
}

/// Removes `name` from new/, or from cur/ where a reader may have moved it
/// (and added flags to its name). Never looks in tmp/.
fn remove(
    mailbox: &Path,
    name: &str,
    cur: &mut Option<HashMap<String, PathBuf>>,
) -> io::Result<bool> {
    match fs::remove_file(mailbox.join("new").join(name)) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if cur.is_none() {
        let mut map = HashMap::new();
        if let Ok(dir) = fs::read_dir(mailbox.join("cur")) {
            for entry in dir.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let base = file.split(':').next().unwrap_or(&file).to_string();
                map.insert(base, entry.path());
            }
        }
        *cur = Some(map);
    }
    let Some(path) = cur.as_mut().and_then(|m| m.remove(name)) else {
        return Ok(false);
    };
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_their_time() {
        let a = Entry::parse("1700000000.M5P1Q2Rab.h,S=10").unwrap();
        let b = Entry::parse("1700000000.M40P1Q1Rab.h,S=10:2,S").unwrap();
        let c = Entry::parse("1700000001.12345_1.other.host").unwrap();
        assert_eq!((a.secs, a.usec), (1_700_000_000, 5));
        assert_eq!(b.name, "1700000000.M40P1Q1Rab.h,S=10");
        assert_eq!((c.secs, c.usec), (1_700_000_001, 0));
        assert!(a < b && b < c);
        assert_eq!(Entry::parse("notes.txt"), None);
        assert_eq!(Entry::parse(".hidden"), None);
    }

    fn touch(dir: &Path, name: &str) {
        fs::write(dir.join(name), name).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn oldest_go_first_from_new_and_cur_never_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::create(dir.path()).unwrap();
        let (new, cur, tmp) = (
            dir.path().join("new"),
            dir.path().join("cur"),
            dir.path().join("tmp"),
        );
        touch(&new, "100.M1P1Q1Rx.h,S=1");
        touch(&cur, "101.M1P1Q2Rx.h,S=1:2,S");
        touch(&tmp, "50.M1P1Q0Rx.h,S=1");
        touch(&new, "README");
        let mut r = Retention::build(dir.path(), false, 2).unwrap();
        assert_eq!(r.enforce(), 0);
        touch(&new, "102.M1P1Q3Rx.h,S=1");
        r.add(md.root(), &new.join("102.M1P1Q3Rx.h,S=1"));
        // 103 is moved to cur/ by a reader before retention runs.
        touch(&cur, "103.M1P1Q4Rx.h,S=1:2,");
        r.add(md.root(), &new.join("103.M1P1Q4Rx.h,S=1"));
        // 100 (new/) and 101 (moved to cur/ with flags) are the oldest.
        assert_eq!(r.enforce(), 2);
        assert_eq!(names(&new), ["102.M1P1Q3Rx.h,S=1", "README"]);
        assert_eq!(names(&cur), ["103.M1P1Q4Rx.h,S=1:2,"]);
        assert_eq!(names(&tmp), ["50.M1P1Q0Rx.h,S=1"]);
    }

    #[test]
    fn a_start_over_the_limit_is_trimmed_at_the_first_round() {
        let dir = tempfile::tempdir().unwrap();
        Maildir::create(dir.path()).unwrap();
        for i in 0..5 {
            touch(
                &dir.path().join("new"),
                &format!("{}.M0P1Q{i}Rx.h,S=1", 200 + i),
            );
        }
        let mut r = Retention::build(dir.path(), false, 3).unwrap();
        assert_eq!(r.enforce(), 2);
        assert_eq!(
            names(&dir.path().join("new")),
            [
                "202.M0P1Q2Rx.h,S=1",
                "203.M0P1Q3Rx.h,S=1",
                "204.M0P1Q4Rx.h,S=1"
            ]
        );
    }

    #[test]
    fn per_recipient_mailboxes_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        Maildir::create(dir.path()).unwrap();
        Maildir::create(&dir.path().join("a@x")).unwrap();
        let b = Maildir::create(&dir.path().join("b@x")).unwrap();
        for i in 0..3 {
            touch(
                &dir.path().join("a@x/new"),
                &format!("{}.M0P1Q{i}Rx.h,S=1", 300 + i),
            );
        }
        touch(&dir.path().join("b@x/new"), "250.M0P1Q9Rx.h,S=1");
        let mut r = Retention::build(dir.path(), true, 2).unwrap();
        assert_eq!(r.enforce(), 1);
        touch(&dir.path().join("b@x/new"), "400.M0P1Q10Rx.h,S=1");
        r.add(b.root(), &dir.path().join("b@x/new/400.M0P1Q10Rx.h,S=1"));
        assert_eq!(r.enforce(), 0);
        assert_eq!(names(&dir.path().join("b@x/new")).len(), 2);
        assert_eq!(names(&dir.path().join("a@x/new")).len(), 2);
    }
}
