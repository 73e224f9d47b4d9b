//! Durable delivery into a Maildir (cr.yp.to/proto/maildir.html): unique
//! names, a tmp file written and fsynced, moved into `new/` without ever
//! replacing a file, and `new/` fsynced. Knows nothing of SMTP.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{error, fmt};

/// Files in `tmp/` untouched this long are debris of a crash.
pub const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    tmp: PathBuf,
    new: PathBuf,
}

/// Why a message could not be stored.
#[derive(Debug)]
pub enum StoreError {
    /// The file system is full (or over quota): `452 4.3.1`.
    NoSpace(io::Error),
    /// Any other failure of the file system: `451 4.3.0`.
    Io(io::Error),
    /// The writer thread has stopped (it panicked): `451 4.3.0`.
    WriterStopped,
    /// The writer was asked to commit a message it never began (a bug):
    /// `451 4.3.0`.
    UnknownUpload,
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StoreError::NoSpace(e),
            _ => StoreError::Io(e),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NoSpace(e) => write!(f, "no space to store the message: {e}"),
            StoreError::Io(e) => write!(f, "cannot store the message: {e}"),
            StoreError::WriterStopped => f.write_str("the writer thread has stopped"),
            StoreError::UnknownUpload => f.write_str("commit of a message never begun"),
        }
    }
}

impl error::Error for StoreError {
    fn source(&self) -> Option<&(dyn error::Error + 'static)> {
        match self {
            StoreError::NoSpace(e) | StoreError::Io(e) => Some(e),
            StoreError::WriterStopped | StoreError::UnknownUpload => None,
        }
    }
}

impl Maildir {
    /// Opens the Maildir at `root`, creating it and tmp/, new/, cur/ (0700)
    /// where missing.
    pub fn create(root: &Path) -> io::Result<Maildir> {
        for sub in ["", "tmp", "new", "cur"] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root.join(sub))?;
        }
        Ok(Maildir {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            new: root.join("new"),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes regular files in tmp/ whose access and modification times
    /// are both older than `max_age`; returns how many.
    pub fn clean_tmp(&self, now: SystemTime, max_age: Duration) -> io::Result<usize> {
        let cutoff = now
            .checked_sub(max_age)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() && meta.atime() < cutoff && meta.mtime() < cutoff {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Creates `tmp/<name>` (O_EXCL, 0600) for writing.
    pub fn create_tmp(&self, name: &str) -> io::Result<Pending> {
        let path = self.tmp.join(name);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Pending {
            file,
            tmp: TmpGuard(Some(path)),
            name: name.to_string(),
            size: 0,
        })
    }

    /// Moves a synced tmp file into new/ as `<name>,S=<size>`, never
    /// replacing a file there. The caller fsyncs new/ afterwards. On
    /// failure the tmp file is removed.
    pub fn publish(&self, pending: Pending) -> io::Result<PathBuf> {
        let target = self.new.join(pending.published_name());
        let Pending { file, tmp, .. } = pending;
        drop(file); // SPEC order: fsynced, closed, then moved
        if let Some(path) = &tmp.0 {
            rename_no_replace(path, &target)?;
        }
        tmp.disarm(); // it lives in new/ now
        Ok(target)
    }

    /// The new/ directory, opened for a sync.
    fn open_new(&self) -> io::Result<File> {
        File::open(&self.new)
    }

    /// Makes the names created in new/ durable.
    fn sync_new(&self) -> io::Result<()> {
        self.open_new()?.sync_all()
    }
}

/// How a round's files and moves are made durable (`--sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Only mailsink's own files and new/ directories: writeback of every
    /// file is started first, then each file is fdatasync'ed and each new/
    /// fsync'ed, spread over up to `SYNC_THREADS` threads. Never waits for
    /// (or flushes) another program's data in the page cache.
    Files,
    /// One syncfs(2) per round: writes back and flushes the whole file
    /// system, other programs' dirty data included.
    FileSystem,
}

/// Threads that share one round's sync calls: the device gets this many
/// syncs at once, so one slow flush does not hold the others back.
const SYNC_THREADS: usize = 8;

/// Makes durable the given files and the names recently created in the
/// given Maildirs' new/. Returns how many sync calls it made.
pub fn sync_batch(mode: SyncMode, files: &[&Pending], dirs: &[&Maildir]) -> io::Result<u64> {
    match (mode, files, dirs) {
        (_, [], []) => Ok(0),
        (_, [file], []) => file.sync().map(|()| 1),
        (_, [], [dir]) => dir.sync_new().map(|()| 1),
        (SyncMode::FileSystem, [file, ..], _) => Ok(rustix::fs::syncfs(&file.file).map(|()| 1)?),
        (SyncMode::FileSystem, [], [dir, ..]) => {
            Ok(rustix::fs::syncfs(dir.open_new()?).map(|()| 1)?)
        }
        (SyncMode::Files, _, _) => sync_each(files, dirs),
    }
}

/// `SyncMode::Files`: start every file's writeback, so the device sees
/// them together, then wait on each file and each new/ from a few threads.
fn sync_each(files: &[&Pending], dirs: &[&Maildir]) -> io::Result<u64> {
    use rustix::fs::{Advice, fadvise};
    for file in files {
        // POSIX_FADV_DONTNEED starts writeback of the dirty pages
        // (WB_SYNC_NONE), what sync_file_range(WRITE) would do; rustix has
        // no sync_file_range and this crate has no unsafe code.
        let _ = fadvise(&file.file, 0, None, Advice::DontNeed);
    }
    let dirs = dirs
        .iter()
        .map(|d| d.open_new())
        .collect::<io::Result<Vec<File>>>()?;
    // (file, is a directory): a file needs its data and size (fdatasync);
    // a directory gets a full fsync.
    let fds: Vec<(&File, bool)> = files
        .iter()
        .map(|p| (&p.file, false))
        .chain(dirs.iter().map(|d| (d, true)))
        .collect();
    let per = fds.len().div_ceil(SYNC_THREADS);
    let sync = |part: &[(&File, bool)]| -> io::Result<()> {
        part.iter().try_for_each(|(f, dir)| match dir {
            true => f.sync_all(),
            false => Ok(rustix::fs::fdatasync(*f)?),
        })
    };
    std::thread::scope(|s| {
        let mut parts = fds.chunks(per);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts.map(|part| s.spawn(move || sync(part))).collect();
        let mut result = sync(first);
        for t in others {
            // a sync thread does not panic; if it did, the round fails
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::from(ErrorKind::Other)));
            result = result.and(r);
        }
        result
    })?;
    Ok(fds.len() as u64)
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// rename(2) with RENAME_NOREPLACE, or link + unlink where the file system
/// does not support it: either way an existing file is never replaced.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// A message file being written in tmp/. Dropped before it is published,
/// it removes itself, so nothing partial is left behind.
#[derive(Debug)]
pub struct Pending {
    file: File,
    tmp: TmpGuard,
    name: String,
    size: u64,
}

/// Removes the tmp file when dropped, unless disarmed.
#[derive(Debug)]
struct TmpGuard(Option<PathBuf>);

impl TmpGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl Pending {
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Counts bytes written to `file()` directly.
    pub fn add_size(&mut self, n: u64) {
        self.size += n;
    }

    /// The file's name in new/ once published.
    fn published_name(&self) -> String {
        format!("{},S={}", self.name, self.size)
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Data and metadata on disk (fsync).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// Unique Maildir file names: `<secs>.M<usec>P<pid>Q<seq>R<random>.<host>`.
#[derive(Debug)]
pub struct Names {
    host: String,
    pid: u32,
    seq: u64,
    random: RandomState,
}

impl Names {
    pub fn new(host: &str, pid: u32) -> Names {
        Names {
            host: escape_host(host),
            pid,
            seq: 0,
            random: RandomState::new(),
        }
    }

    pub fn next(&mut self, now: SystemTime) -> String {
        self.seq += 1;
        let t = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        // RandomState is seeded from the OS per process: the R part differs
        // between processes even with equal time, pid and sequence.
        let mut h = self.random.build_hasher();
        h.write_u64(self.seq);
        h.write_u128(t.as_nanos());
        format!(
            "{}.M{}P{}Q{}R{:016x}.{}",
            t.as_secs(),
            t.subsec_micros(),
            self.pid,
            self.seq,
            h.finish(),
            self.host
        )
    }
}

/// The time in a file name as `Names` (and most MDAs) write it:
/// `1733420000.M123456P...` gives (1733420000, 123456), a name without `M`
/// microseconds (`1733420000.12345_1.host`) gives (1733420000, 0). Flags
/// after `:` are ignored. `None`: the name does not start with a time.
pub fn name_time(name: &str) -> Option<(u64, u32)> {
    let base = name.split(':').next()?;
    let (secs, rest) = base.split_once('.')?;
    let usec = rest
        .strip_prefix('M')
        .map(|r| r.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    Some((secs.parse().ok()?, usec))
}

/// Maildir: `/` and `:` in the host name are written `\057` and `\072`;
/// `,` too, since it starts the `,S=` field.
fn escape_host(host: &str) -> String {
    host.replace('/', "\\057")
        .replace(':', "\\072")
        .replace(',', "\\054")
}

/// One path component for a recipient's Maildir under `--per-recipient`:
/// domain lower-cased, local part as sent, `%` and `/` percent-escaped and a
/// leading `.` written `%2E`, so no address reaches outside the root.
fn mailbox_dir(addr: &str) -> String {
    let (local, domain) = match addr.rsplit_once('@') {
        Some((l, d)) => (l, Some(d.to_lowercase())),
        None => (addr, None),
    };
    let mut out = String::with_capacity(addr.len() + 8);
    for (i, c) in local.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    if let Some(d) = domain {
        out.push('@');
        out.push_str(&d.replace('%', "%25").replace('/', "%2F"));
    }
    out
}

/// Per-recipient Maildirs remembered as created (the rest are re-checked).
const MAILBOX_CACHE: usize = 4096;

/// `--per-recipient`: each recipient's Maildir under one root, created on
/// first use and remembered (a bounded cache) so that a message costs no
/// mkdir calls.
#[derive(Debug)]
pub struct Mailboxes {
    root: PathBuf,
    known: HashMap<String, Arc<Maildir>>,
}

impl Mailboxes {
    pub fn new(root: &Path) -> Mailboxes {
        Mailboxes {
            root: root.to_path_buf(),
            known: HashMap::new(),
        }
    }

    /// The recipient's own Maildir (`mailbox_dir` under the root).
    pub fn get(&mut self, rcpt: &str) -> io::Result<Arc<Maildir>> {
        let name = mailbox_dir(rcpt);
        if let Some(md) = self.known.get(&name) {
            return Ok(Arc::clone(md));
        }
        let md = Arc::new(Maildir::create(&self.root.join(&name))?);
        if self.known.len() >= MAILBOX_CACHE {
            self.known.clear(); // bounded memory however many recipients come
        }
        self.known.insert(name, Arc::clone(&md));
        Ok(md)
    }
}

/// Whether `addr` makes a mailbox directory name the file system takes
/// (NAME_MAX, 255 bytes on Linux file systems).
pub fn fits_mailbox_name(addr: &str) -> bool {
    mailbox_dir(addr).len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    #[test]
    fn create_makes_the_three_directories() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::create(&dir.path().join("a/b")).unwrap();
        for sub in ["tmp", "new", "cur"] {
            assert!(md.root().join(sub).is_dir());
        }
        let mode = fs::metadata(md.root().join("new")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn deliver_moves_a_whole_file_into_new() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::create(dir.path()).unwrap();
        let mut p = md.create_tmp("1.M2P3Q4Rab.host").unwrap();
        p.write(b"hello\n").unwrap();
        p.sync().unwrap();
        let path = md.publish(p).unwrap();
        md.sync_new().unwrap();
        assert_eq!(read(&path), b"hello\n");
        assert!(path.to_str().unwrap().ends_with("1.M2P3Q4Rab.host,S=6"));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_unpublished_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::create(dir.path()).unwrap();
        let mut p = md.create_tmp("x").unwrap();
        p.write(b"partial").unwrap();
        drop(p);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("new")).unwrap().count(), 0);
    }

    #[test]
    fn publish_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::create(dir.path()).unwrap();
        fs::write(dir.path().join("new/same,S=3"), b"old").unwrap();
        let mut p = md.create_tmp("same").unwrap();
        assert!(md.create_tmp("same").is_err(), "tmp name must be exclusive");
        p.write(b"new").unwrap();
        assert!(md.publish(p).is_err());
        assert_eq!(read(&dir.path().join("new/same,S=3")), b"old");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn names_are_unique_and_escape_the_host() {
        let mut names = Names::new("a/b:c,d", 42);
        let now = SystemTime::now();
        let (x, y) = (names.next(now), names.next(now));
        assert_ne!(x, y);
        assert!(x.ends_with(".a\\057b\\072c\\054d"), "{x}");
        assert!(x.contains("P42Q1R"), "{x}");
        let mut other = Names::new("h", 42);
        assert_ne!(
            other.next(now).split('R').nth(1),
            names.next(now).split('R').nth(1)
        );
    }

    #[test]
    fn name_time_reads_back_what_names_write() {
        let t = UNIX_EPOCH + Duration::new(1_733_420_000, 123_456_789);
        let name = Names::new("h", 1).next(t);
        assert_eq!(name_time(&name), Some((1_733_420_000, 123_456)));
        assert_eq!(
            name_time(&format!("{name},S=9:2,S")),
            Some((1_733_420_000, 123_456))
        );
        assert_eq!(
            name_time("1733420000.12345_1.h:2,S"),
            Some((1_733_420_000, 0))
        );
        assert_eq!(name_time("notes.txt"), None);
        assert_eq!(name_time("12345"), None);
    }

    #[test]
    fn clean_tmp_removes_only_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::create(dir.path()).unwrap();
        fs::write(dir.path().join("tmp/fresh"), b"x").unwrap();
        fs::create_dir(dir.path().join("tmp/subdir")).unwrap();
        let later = SystemTime::now() + TMP_MAX_AGE + Duration::from_secs(60);
        assert_eq!(md.clean_tmp(SystemTime::now(), TMP_MAX_AGE).unwrap(), 0);
        assert_eq!(md.clean_tmp(later, TMP_MAX_AGE).unwrap(), 1);
        assert!(dir.path().join("tmp/subdir").is_dir());
    }

    #[test]
    fn mailbox_dirs_stay_inside_the_root() {
        assert_eq!(mailbox_dir("Bob@Example.COM"), "Bob@example.com");
        assert_eq!(mailbox_dir("a/b@x"), "a%2Fb@x");
        assert_eq!(mailbox_dir("\"../../x\"@x"), "\"..%2F..%2Fx\"@x");
        assert_eq!(mailbox_dir(".hidden@x"), "%2Ehidden@x");
        assert_eq!(mailbox_dir("..@x"), "%2E.@x");
        assert_eq!(mailbox_dir("postmaster"), "postmaster");
        assert_ne!(mailbox_dir("a%2Fb@x"), mailbox_dir("a/b@x"));
    }

    #[test]
    fn mailboxes_are_created_once_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut boxes = Mailboxes::new(dir.path());
        let a = boxes.get("Bob@Example.COM").unwrap();
        assert_eq!(a.root(), dir.path().join("Bob@example.com"));
        assert!(dir.path().join("Bob@example.com/new").is_dir());
        let b = boxes.get("Bob@example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn store_errors_sort_no_space() {
        let full = io::Error::from(ErrorKind::StorageFull);
        assert!(matches!(StoreError::from(full), StoreError::NoSpace(_)));
        assert!(matches!(
            StoreError::from(io::Error::other("x")),
            StoreError::Io(_)
        ));
    }
}
