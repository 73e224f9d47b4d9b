//! `list` (and `wait`'s output): one row per message, as an aligned table
//! for a person or as JSON lines with the `stored` event's fields.

use super::ReadError;
use super::filter::Filter;
use super::header::{Summary, addresses};
use super::scan::{self, Entry};
use serde_json::{Value, json};
use std::io::{self, Write};
use std::path::Path;
use unicode_width::UnicodeWidthChar;

/// Column caps for the table; longer values are cut with `…`.
const FROM_WIDTH: usize = 30;
const TO_WIDTH: usize = 30;
const SUBJECT_WIDTH: usize = 50;
/// Threads that read header blocks, and the least work worth a thread.
const MAX_THREADS: usize = 4;
const MIN_PER_THREAD: usize = 2048;
/// Messages read before their rows are printed (JSON) or cut to cells.
const BATCH: usize = 16_384;

/// A message as `list` shows it.
#[derive(Debug, Clone)]
pub struct Row {
    pub entry: Entry,
    pub summary: Summary,
    /// The file's size: `,S=` from the name, or the bytes read.
    pub size: u64,
}

impl Row {
    /// The envelope sender, or the From header's address for a file
    /// made by hand.
    pub fn from(&self) -> String {
        match &self.summary.return_path {
            Some(rp) => rp.clone(),
            None => first_address(&self.summary.from),
        }
    }

    /// The envelope recipients, or the To header's addresses.
    pub fn to(&self) -> Vec<String> {
        if self.summary.delivered_to.is_empty() && !self.summary.to.is_empty() {
            return addresses(&self.summary.to);
        }
        self.summary.delivered_to.clone()
    }

    /// The `stored` event's fields, plus `file` (the path) and `date` (the
    /// Date header). `time` is the time in the file name; `size` the
    /// stored file's size; `auth` is not recorded in the file (null).
    pub fn json(&self, root: &Path) -> Value {
        let s = &self.summary;
        let opt = |v: &str| if v.is_empty() { Value::Null } else { json!(v) };
        json!({
            "event": "stored",
            "id": s.received.id,
            "time": rfc3339(self.entry.secs, self.entry.usec),
            "peer": s.received.peer,
            "helo": s.received.helo,
            "tls": s.received.tls,
            "auth": Value::Null,
            "from": self.from(),
            "to": self.to(),
            "size": self.size,
            "files": [self.entry.rel],
            "subject": opt(&s.subject),
            "message_id": opt(&s.message_id),
            "file": root.join(&self.entry.rel).to_string_lossy(),
            "date": opt(&s.date),
        })
    }
}

/// Calls `each` with the messages under `root` that pass `filter`,
/// oldest first, and returns how many there were. Files that vanish while
/// being read are skipped; one that cannot be read is listed with empty
/// headers (unless a filter needs them). Header blocks are read in batches,
/// each on a few threads over runs of it, so the order stays and memory is
/// one batch of rows.
pub fn each_row(
    root: &Path,
    filter: &Filter,
    mut each: impl FnMut(Row) -> io::Result<()>,
) -> Result<usize, ReadError> {
    let entries: Vec<Entry> = scan::scan(root)
        .map_err(|e| ReadError::Maildir(root.to_path_buf(), e))?
        .into_iter()
        .filter(|e| !filter.skips(e))
        .collect();
    let mut n = 0;
    for batch in entries.chunks(BATCH) {
        for row in read_batch(batch, filter) {
            each(row).map_err(ReadError::Output)?;
            n += 1;
        }
    }
    Ok(n)
}

fn read_batch(batch: &[Entry], filter: &Filter) -> Vec<Row> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let per = batch.len().div_ceil(threads).max(MIN_PER_THREAD);
    let read = |chunk: &[Entry]| {
        let mut buf = Vec::with_capacity(8192);
        chunk
            .iter()
            .filter_map(|e| row(e.clone(), &mut buf))
            .filter(|r| filter.matches(&r.entry, &r.summary))
            .collect::<Vec<Row>>()
    };
    let parts: Vec<Vec<Row>> = std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks(per)
            .map(|c| s.spawn(move || read(c)))
            .collect();
        // A reading thread does not panic (no unwrap, no indexing past
        // bounds); if one did, its rows are dropped rather than the list.
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    parts.into_iter().flatten().collect()
}

/// Reads one message's headers. `None`: the file vanished.
pub fn row(entry: Entry, buf: &mut Vec<u8>) -> Option<Row> {
    let summary = match scan::read_head(&entry.path, buf) {
        Ok(None) => return None,
        Ok(Some(_)) => Summary::parse(buf),
        Err(_) => Summary::default(),
    };
    let size = match entry.size {
        Some(s) => s,
        None => std::fs::metadata(&entry.path).map_or(buf.len() as u64, |m| m.len()),
    };
    Some(Row {
        entry,
        summary,
        size,
    })
}

/// Writes rows as JSON lines or as the table (`wait`'s output).
pub fn print(out: &mut impl Write, rows: &[Row], root: &Path, json: bool) -> io::Result<()> {
    let mut table = Table::new();
    for r in rows {
        if json {
            writeln!(out, "{}", r.json(root))?;
        } else {
            table.push(r);
        }
    }
    table.print(out)
}

/// `list`'s table: the cells of every row (smaller than the rows), printed
/// once the column widths are known.
pub struct Table {
    zone: jiff::tz::TimeZone,
    cells: Vec<[String; 6]>,
}

impl Table {
    pub fn new() -> Table {
        Table {
            zone: jiff::tz::TimeZone::system(),
            cells: Vec::new(),
        }
    }

    pub fn push(&mut self, r: &Row) {
        // Cut to the caps now: the same text prints, and less is kept.
        self.cells.push([
            local_time(r.entry.secs, &self.zone),
            cut(&one_line(&r.from()), FROM_WIDTH),
            cut(&one_line(&r.to().join(",")), TO_WIDTH),
            cut(&one_line(&r.summary.subject), SUBJECT_WIDTH),
            r.size.to_string(),
            one_line(&r.entry.rel),
        ]);
    }

    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let caps = [
            usize::MAX,
            FROM_WIDTH,
            TO_WIDTH,
            SUBJECT_WIDTH,
            usize::MAX,
            usize::MAX,
        ];
        let mut widths = [0; 6];
        for row in &self.cells {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(cell).min(caps[i]));
            }
        }
        for row in &self.cells {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let cell = cut(cell, widths[i]);
                let pad = " ".repeat(widths[i] - width(&cell));
                match i {
                    4 => line.push_str(&format!("{pad}{cell}  ")), // size, right-aligned
                    5 => line.push_str(&cell),
                    _ => line.push_str(&format!("{cell}{pad}  ")),
                }
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

/// `2026-12-05 21:14:03` in the local time zone (TZ, else /etc/localtime).
fn local_time(secs: i64, zone: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => {
            let d = zone.to_datetime(t);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                d.year(),
                d.month(),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            )
        }
        Err(_) => "-".to_string(),
    }
}

/// The time in the file name as the event's `time` is written
/// (`2026-12-05T20:14:03.250Z`, UTC, milliseconds).
pub fn rfc3339(secs: i64, usec: u32) -> String {
    let since =
        std::time::Duration::new(u64::try_from(secs).unwrap_or(0), usec.min(999_999) * 1000);
    crate::message::rfc3339(std::time::UNIX_EPOCH + since)
}

/// Control characters (tabs, line ends, terminal escapes) become spaces
/// or U+FFFD, so one value stays on one line and cannot drive a terminal.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// Cuts `s` to `max` columns, the last one `…`, when it is wider.
fn cut(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

fn first_address(value: &str) -> String {
    addresses(value).into_iter().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_by_display_width() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut("日本語テキスト", 5), "日本…");
        assert_eq!(one_line("a\tb\n\u{1b}[31m"), "a b \u{FFFD}[31m");
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        let zone = jiff::tz::TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(local_time(86_399, &zone), "1970-01-02 01:59:59");
        assert_eq!(rfc3339(1, 500_000), "1970-01-01T00:00:01.500Z");
    }
}
