//! `wait`: until enough messages match, counting those already there.
//! inotify (through rustix) wakes it when a name appears in or leaves
//! `new/` or `cur/` of any mailbox, or a mailbox appears under a
//! `--per-recipient` root: no polling loop, no CPU spent while nothing
//! arrives. After the first scan only the names the events carry are read,
//! so a wake costs the same in a Maildir of ten messages or of 100 000.

use super::ReadError;
use super::filter::Filter;
use super::list::{self, Row};
use super::scan;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Waits until `count` messages under `root` pass `filter`, or `timeout`.
pub fn wait(
    root: &Path,
    filter: &Filter,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Row>, ReadError> {
    let deadline = Instant::now() + timeout;
    let maildir_error = |e: std::io::Error| ReadError::Maildir(root.to_path_buf(), e);
    let mut watcher = Watcher::new().map_err(maildir_error)?;
    let mut seen = Seen::default();
    let mut changes = Changes::Rescan;
    loop {
        match changes {
            Changes::Rescan => {
                // 1. Watch every directory first, so a file that arrives
                //    during the scan below still wakes the wait.
                watcher.watch_all(root).map_err(maildir_error)?;
                // 2. Read what is there now.
                seen.rescan(root, filter).map_err(maildir_error)?;
            }
            Changes::Paths(paths) => {
                for (path, present) in paths {
                    seen.update(root, filter, path, present);
                }
            }
        }
        seen.retry_partial(root, filter);
        let matched = seen.matched();
        if matched >= count {
            return Ok(seen.rows());
        }
        // 3. Sleep until a name changes or time is up.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout(timeout, matched, count));
        }
        changes = watcher.sleep(left).map_err(maildir_error)?;
    }
}

/// The messages read so far: each file's row if it matches. Files whose
/// header block was not complete yet (being written by hand) are read
/// again at each wake.
#[derive(Default)]
struct Seen {
    files: HashMap<PathBuf, Option<Row>>,
    partial: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl Seen {
    fn rescan(&mut self, root: &Path, filter: &Filter) -> std::io::Result<()> {
        let entries = scan::scan(root)?;
        let now: HashSet<&PathBuf> = entries.iter().map(|e| &e.path).collect();
        self.files.retain(|p, _| now.contains(p));
        self.partial.retain(|p| now.contains(p));
        for entry in entries {
            if !self.files.contains_key(&entry.path) {
                let path = entry.path.clone();
                self.update(root, filter, path, true);
            }
        }
        Ok(())
    }

    /// Reads (or forgets) the file at `path` after an event.
    fn update(&mut self, root: &Path, filter: &Filter, path: PathBuf, present: bool) {
        self.files.remove(&path);
        self.partial.remove(&path);
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return;
        };
        if !present || name.starts_with('.') {
            return;
        }
        let entry = scan::entry(root, path.clone(), name);
        if filter.skips(&entry) {
            self.files.insert(path, None);
            return;
        }
        // `None`: it vanished (or is a directory); nothing to count.
        let Some(row) = list::row(entry, &mut self.buf) else {
            return;
        };
        if !scan::blank_line_seen(&self.buf) {
            self.partial.insert(path.clone());
        }
        let hit = filter.matches(&row.entry, &row.summary).then_some(row);
        self.files.insert(path, hit);
    }

    fn retry_partial(&mut self, root: &Path, filter: &Filter) {
        let again: Vec<PathBuf> = self.partial.iter().cloned().collect();
        for path in again {
            self.update(root, filter, path, true);
        }
    }

    fn matched(&self) -> usize {
        self.files.values().filter(|r| r.is_some()).count()
    }

    /// The matching rows, oldest first.
    fn rows(self) -> Vec<Row> {
        let mut rows: Vec<Row> = self.files.into_values().flatten().collect();
        rows.sort_by(|a, b| scan::by_time(&a.entry, &b.entry));
        rows
    }
}

/// What woke the wait.
enum Changes {
    /// Directories appeared or went, or events were lost: scan again.
    Rescan,
    /// Message names that appeared (`true`) or left (`false`).
    Paths(Vec<(PathBuf, bool)>),
}

struct Watcher {
    fd: OwnedFd,
    /// Watch descriptor → (directory, holds messages: `new/` or `cur/`).
    dirs: HashMap<i32, (PathBuf, bool)>,
    watched: HashSet<PathBuf>,
}

impl Watcher {
    fn new() -> std::io::Result<Watcher> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        Ok(Watcher {
            fd,
            dirs: HashMap::new(),
            watched: HashSet::new(),
        })
    }

    /// The root and each of its sub-directories (for new mailboxes and a
    /// new `new/`, even in a directory that is not a mailbox yet), and
    /// their `new/` and `cur/` (for messages). Missing ones are skipped.
    fn watch_all(&mut self, root: &Path) -> std::io::Result<()> {
        let mut containers = vec![root.to_path_buf()];
        containers.extend(scan::subdirs(root)?);
        for dir in containers {
            self.watch(&dir, false)?;
            for sub in ["new", "cur"] {
                self.watch(&dir.join(sub), true)?;
            }
        }
        Ok(())
    }

    fn watch(&mut self, dir: &Path, messages: bool) -> std::io::Result<()> {
        if self.watched.contains(dir) {
            return Ok(());
        }
        let flags = WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE
            | WatchFlags::ONLYDIR;
        match inotify::add_watch(&self.fd, dir, flags) {
            Ok(wd) => {
                self.watched.insert(dir.to_path_buf());
                self.dirs.insert(wd, (dir.to_path_buf(), messages));
                Ok(())
            }
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Blocks until an event or `left` has passed, then reads every queued
    /// event into the changes they stand for.
    fn sleep(&mut self, left: Duration) -> std::io::Result<Changes> {
        let ts = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let mut paths = Vec::new();
        let mut rescan = false;
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN | Errno::INTR) => break,
                Err(e) => return Err(e.into()),
            };
            let flags = event.events();
            let dir = self.dirs.get(&event.wd());
            match (dir, event.file_name()) {
                (Some((dir, true)), Some(name))
                    if !flags.intersects(ReadFlags::ISDIR | ReadFlags::QUEUE_OVERFLOW) =>
                {
                    let present = !flags.intersects(ReadFlags::MOVED_FROM | ReadFlags::DELETE);
                    paths.push((dir.join(OsStr::from_bytes(name.to_bytes())), present));
                }
                // A mailbox or its new/ or cur/ came or went, a watch was
                // dropped, or the queue overflowed.
                _ => rescan = true,
            }
        }
        if rescan {
            // Watches on directories that went are gone; add them afresh.
            self.watched.clear();
            self.dirs.clear();
            return Ok(Changes::Rescan);
        }
        Ok(Changes::Paths(paths))
    }
}
