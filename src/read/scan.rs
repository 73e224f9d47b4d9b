//! Finding the messages of a Maildir: `new/` and `cur/` of the root, and of
//! every mailbox under a `--per-recipient` root, ordered by the time in
//! their names. Reads directories and files; never writes, moves or creates.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The most of a message start read for its headers (a header block
/// longer than this is read up to here).
const HEAD_LIMIT: usize = 256 * 1024;
const HEAD_CHUNK: usize = 4096;

/// One message file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    /// The path relative to the root, such as `new/<name>` or
    /// `b@y.test/cur/<name>:2,S`.
    pub rel: String,
    /// The file name.
    pub name: String,
    /// Seconds and microseconds from the file name (`<secs>.M<usec>...`).
    pub secs: i64,
    pub usec: u32,
    /// `,S=<size>` from the name, when there.
    pub size: Option<u64>,
}

/// A directory that holds Maildirs: the root and, for a `--per-recipient`
/// root, each sub-directory that has `new/` or `cur/`.
pub fn mailboxes(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut boxes = vec![root.to_path_buf()];
    boxes.extend(
        subdirs(root)?
            .into_iter()
            .filter(|p| p.join("new").is_dir() || p.join("cur").is_dir()),
    );
    Ok(boxes)
}

/// The root's sub-directories that may be (or become) mailboxes: all but
/// Maildir's own `new`, `cur`, `tmp` and dot folders (Maildir++). Fails
/// when the root is not a readable directory.
pub fn subdirs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let meta = fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "new" | "cur" | "tmp") || name.starts_with('.') {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Every message file under `root`, oldest first. A directory that is
/// missing is skipped (a mailbox with only `new/`); the root itself must
/// be readable.
pub fn scan(root: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for mailbox in mailboxes(root)? {
        for sub in ["new", "cur"] {
            let dir = mailbox.join(sub);
            let Ok(list) = fs::read_dir(&dir) else {
                continue;
            };
            for item in list.flatten() {
                let name = item.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || item.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                out.push(entry(root, item.path(), name));
            }
        }
    }
    out.sort_by(by_time);
    Ok(out)
}

/// Oldest first: the time in the names, then the names.
pub fn by_time(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    (a.secs, a.usec, &a.name).cmp(&(b.secs, b.usec, &b.name))
}

/// The entry for the file at `path` (named `name`) under `root`.
pub fn entry(root: &Path, path: PathBuf, name: String) -> Entry {
    let rel = path
        .strip_prefix(root)
        .unwrap_or(&path)
        .to_string_lossy()
        .into_owned();
    let (secs, usec) = name_time(&name);
    let size = name
        .split(',')
        .find_map(|f| f.strip_prefix("S="))
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok());
    Entry {
        path,
        rel,
        name,
        secs,
        usec,
        size,
    }
}

/// The time in the name (`maildir::name_time`); names without a leading
/// time sort first, at 0.
fn name_time(name: &str) -> (i64, u32) {
    crate::maildir::name_time(name)
        .map(|(secs, usec)| (i64::try_from(secs).unwrap_or(i64::MAX), usec))
        .unwrap_or((0, 0))
}

/// The start of a message up to and including its blank line (or the
/// whole file when shorter), and whether the blank line was seen.
/// `Ok(None)`: the file vanished before or while it was read.
pub fn read_head(path: &Path, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut scanned: usize = 0;
    loop {
        let start = buf.len();
        buf.resize(start + HEAD_CHUNK, 0);
        let n = match file.read(&mut buf[start..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        buf.truncate(start + n);
        if let Some(end) = blank_line(buf, scanned.saturating_sub(2)) {
            buf.truncate(end);
            return Ok(Some(true));
        }
        scanned = buf.len();
        if n == 0 || buf.len() >= HEAD_LIMIT {
            return Ok(Some(false));
        }
    }
}

/// Whether a head read by `read_head` ended at its blank line.
pub fn blank_line_seen(head: &[u8]) -> bool {
    head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n") || head == b"\n" || head == b"\r\n"
}

/// The index just past the first blank line (`\n\n` or `\n\r\n`, or
/// an empty first line), looking from `from` on.
fn blank_line(data: &[u8], from: usize) -> Option<usize> {
    if from == 0 && data.first() == Some(&b'\n') {
        return Some(1);
    }
    if from == 0 && data.starts_with(b"\r\n") {
        return Some(2);
    }
    let mut i = from;
    while let Some(p) = memchr(b'\n', &data[i..]) {
        let at = i + p;
        match data.get(at + 1..) {
            Some([b'\n', ..]) => return Some(at + 2),
            Some([b'\r', b'\n', ..]) => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

fn memchr(b: u8, data: &[u8]) -> Option<usize> {
    data.iter().position(|&x| x == b)
}

/// The whole file. `Ok(None)`: it vanished.
pub fn read_all(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_from_names() {
        assert_eq!(
            name_time("1733420000.M123456P9Q1R00.host,S=12"),
            (1733420000, 123456)
        );
        assert_eq!(name_time("1733420000.12345_1.host:2,S"), (1733420000, 0));
        assert_eq!(name_time("junk"), (0, 0));
        let e = entry(
            Path::new("/m"),
            "/m/new/9.M5P1.h,S=42:2,S".into(),
            "9.M5P1.h,S=42:2,S".into(),
        );
        assert_eq!(
            (e.secs, e.usec, e.size, e.rel.as_str()),
            (9, 5, Some(42), "new/9.M5P1.h,S=42:2,S")
        );
    }

    #[test]
    fn head_stops_at_the_blank_line() {
        assert_eq!(blank_line(b"A: b\n\nbody", 0), Some(6));
        assert_eq!(blank_line(b"A: b\r\n\r\nbody", 0), Some(8));
        assert_eq!(blank_line(b"\nbody", 0), Some(1));
        assert_eq!(blank_line(b"A: b\nC: d\n", 0), None);
        assert_eq!(blank_line(b"A: b\nC: d\n", 4), None);
        assert_eq!(blank_line(b"A: b\n\n", 4), Some(6));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        let mut long = b"Subject: x\n".repeat(1000);
        long.extend_from_slice(b"\nbody body");
        fs::write(&p, &long).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_head(&p, &mut buf).unwrap(), Some(true));
        assert_eq!(buf.len(), long.len() - 9);
        assert!(buf.ends_with(b"x\n\n"));
        assert_eq!(read_head(&dir.path().join("gone"), &mut buf).unwrap(), None);
    }

    #[test]
    fn scans_root_and_per_recipient_mailboxes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "new",
            "cur",
            "tmp",
            "b@y/new",
            "b@y/cur",
            ".Trash/new",
            "notabox",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("new/30.M1P1.h"), "").unwrap();
        fs::write(root.join("cur/10.M1P1.h:2,S"), "").unwrap();
        fs::write(root.join("b@y/new/20.M1P1.h"), "").unwrap();
        fs::write(root.join("tmp/5.M1P1.h"), "").unwrap();
        fs::write(root.join(".Trash/new/1.M1P1.h"), "").unwrap();
        let rels: Vec<String> = scan(root).unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(
            rels,
            ["cur/10.M1P1.h:2,S", "b@y/new/20.M1P1.h", "new/30.M1P1.h"]
        );
        assert!(scan(&root.join("missing")).is_err());
    }
}
