//! Reading the mail: `list`, `show` and `wait` over a Maildir, and the one
//! header decoder (`header`) that the writer's log line and `--events` use.
//! Nothing here changes, moves or creates a file.
//!
//! - `header`: decoded headers (RFC 2047), pure.
//! - `scan`: the message files of a Maildir or a `--per-recipient` root,
//!   oldest first; reading a header block.
//! - `filter`: `--to`, `--from`, `--subject`, `--since`.
//! - `list`: rows as a table or JSON lines (also `wait`'s output).
//! - `show`: one message decoded; `html`: HTML as text, and links.
//! - `wait`: inotify until enough messages match.

pub mod filter;
pub mod header;
pub mod html;
pub mod list;
pub mod scan;
pub mod show;
pub mod wait;

use crate::config::{Read, ReadCommand};
use filter::Filter;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{error, fmt};

/// What a read command found (the exit status is main's choice).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Something matched and was printed.
    Found,
    /// Nothing matched (nothing printed, or no link found).
    Nothing,
}

/// Why a read command failed; each is one line on stderr.
#[derive(Debug)]
pub enum ReadError {
    /// The Maildir cannot be read.
    Maildir(PathBuf, io::Error),
    /// A message file cannot be read.
    File(PathBuf, io::Error),
    NotFound(String),
    /// An ID prefix that names more than one message: the candidates.
    Ambiguous(String, Vec<String>),
    /// `wait` gave up: (timeout, matched, wanted).
    Timeout(Duration, usize, usize),
    /// `--part N` of a message with fewer attachments.
    NoPart(usize, usize),
    NoHtml,
    /// Writing to stdout failed (a closed pipe is `BrokenPipe`).
    Output(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Maildir(p, e) => write!(f, "cannot read Maildir {}: {e}", p.display()),
            ReadError::File(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ReadError::NotFound(id) => write!(f, "no message matches \"{}\"", id.escape_debug()),
            ReadError::Ambiguous(id, c) => write!(
                f,
                "\"{}\" matches {} messages:\n  {}",
                id.escape_debug(),
                c.len(),
                c.join("\n  ")
            ),
            ReadError::Timeout(t, got, want) => write!(
                f,
                "timed out after {}s: {got} of {want} messages matched",
                t.as_secs()
            ),
            ReadError::NoPart(n, have) => {
                write!(f, "no attachment {n}: the message has {have}")
            }
            ReadError::NoHtml => f.write_str("the message has no HTML part"),
            ReadError::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl error::Error for ReadError {
    fn source(&self) -> Option<&(dyn error::Error + 'static)> {
        match self {
            ReadError::Maildir(_, e) | ReadError::File(_, e) | ReadError::Output(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Output(e)
    }
}

/// Runs a read command, writing to `out`.
pub fn run(cmd: &Read, out: &mut impl Write) -> Result<Outcome, ReadError> {
    let filter = Filter::new(&cmd.filters, now());
    let root = &cmd.maildir;
    let found = match &cmd.command {
        ReadCommand::List { json: true } => {
            list::each_row(root, &filter, |r| writeln!(out, "{}", r.json(root)))? > 0
        }
        ReadCommand::List { json: false } => {
            let mut table = list::Table::new();
            let n = list::each_row(root, &filter, |r| {
                table.push(&r);
                Ok(())
            })?;
            table.print(out)?;
            n > 0
        }
        ReadCommand::Show { id, view } => {
            let path = show::find(root, id, &filter)?;
            show::print(out, root, &path, *view)?
        }
        ReadCommand::Wait {
            count,
            timeout,
            json,
        } => {
            let rows = wait::wait(root, &filter, *count, *timeout)?;
            list::print(out, &rows, root, *json)?;
            true
        }
    };
    out.flush()?;
    Ok(if found {
        Outcome::Found
    } else {
        Outcome::Nothing
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
