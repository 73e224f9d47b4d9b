//! `wait`: until enough messages match, counting those already there.
//! inotify (through rustix) wakes it when a name appears in `new/` or
//! `cur/` of any mailbox, or a mailbox appears under a `--per-recipient`
//! root: no polling loop, no CPU spent while nothing arrives.

use super::ReadError;
use super::filter::Filter;
use super::list::{self, Row};
use super::scan;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
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
    let mut known: HashMap<PathBuf, Option<Row>> = HashMap::new();
    loop {
        // 1. Watch every directory first, so a file that arrives during
        //    the scan below still wakes the wait.
        watcher.watch_all(root).map_err(maildir_error)?;
        // 2. Count what is there now.
        let rows = matching(root, filter, &mut known).map_err(maildir_error)?;
        if rows.len() >= count {
            return Ok(rows);
        }
        // 3. Sleep until a name appears or time is up.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout(timeout, rows.len(), count));
        }
        watcher.sleep(left).map_err(maildir_error)?;
    }
}

/// The matching messages, oldest first. Headers are read once per file
/// whose header block was complete; others are read again next time.
fn matching(
    root: &Path,
    filter: &Filter,
    known: &mut HashMap<PathBuf, Option<Row>>,
) -> std::io::Result<Vec<Row>> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for entry in scan::scan(root)? {
        if filter.skips(&entry) {
            continue;
        }
        if let Some(seen) = known.get(&entry.path) {
            out.extend(seen.clone());
            continue;
        }
        let path = entry.path.clone();
        let Some(row) = list::row(entry, &mut buf) else {
            continue;
        };
        let complete = scan::blank_line_seen(&buf);
        let hit = filter.matches(&row.entry, &row.summary).then_some(row);
        if complete {
            known.insert(path, hit.clone());
        }
        out.extend(hit);
    }
    Ok(out)
}

struct Watcher {
    fd: OwnedFd,
    watched: HashSet<PathBuf>,
}

impl Watcher {
    fn new() -> std::io::Result<Watcher> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        Ok(Watcher {
            fd,
            watched: HashSet::new(),
        })
    }

    /// The root and each mailbox (for new mailboxes and new `new/`), and
    /// their `new/` and `cur/` (for messages). Missing ones are skipped.
    fn watch_all(&mut self, root: &Path) -> std::io::Result<()> {
        for mailbox in scan::mailboxes(root)? {
            self.watch(&mailbox)?;
            for sub in ["new", "cur"] {
                self.watch(&mailbox.join(sub))?;
            }
        }
        Ok(())
    }

    fn watch(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.watched.contains(dir) {
            return Ok(());
        }
        let flags = WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::ONLYDIR;
        match inotify::add_watch(&self.fd, dir, flags) {
            Ok(_) => {
                self.watched.insert(dir.to_path_buf());
                Ok(())
            }
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Blocks until an event or `left` has passed, then drains the events
    /// (their content does not matter: the caller scans again).
    fn sleep(&mut self, left: Duration) -> std::io::Result<()> {
        let ts = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            match reader.next() {
                Ok(_) => {}
                Err(Errno::AGAIN | Errno::INTR) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
