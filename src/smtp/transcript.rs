//! Test driver: runs a `Session` over a byte stream cut into given chunks,
//! as the connection loop does, and records the wire replies and the stored
//! messages; and a checker of wire replies. Shared by the unit tests, the
//! property tests and the fuzz target (a crate of its own, hence `pub`).

use super::line::{read_line, read_octets};
#[cfg(test)]
use super::session::Limits;
use super::session::{Session, Step};
use std::io::{self, BufRead, BufReader, Read};

/// A reader handing out `data` in reads of the given sizes, in turn (the
/// whole rest at once when `sizes` is empty).
pub struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], sizes: &[usize]) -> Chunked<'a> {
        Chunked {
            data,
            sizes: sizes.to_vec(),
            next: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = if self.sizes.is_empty() {
            self.data.len()
        } else {
            self.sizes[self.next % self.sizes.len()]
        };
        self.next += 1;
        let n = size.max(1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[cfg(test)]
pub fn limits() -> Limits {
    Limits {
        max_size: 1000,
        max_recipients: 3,
        domains: vec![],
        mailbox_fits: None,
    }
}

/// The one password the driver's credential check accepts.
pub const GOOD_PASSWORD: &[u8] = b"good";

/// Replies as wire text, and the bodies of delivered messages.
pub struct Outcome {
    pub replies: String,
    pub stored: Vec<Vec<u8>>,
    pub closed: bool,
}

pub fn run(session: &mut Session, input: &[u8], chunks: &[usize], data_cap: usize) -> Outcome {
    let mut reader = BufReader::with_capacity(64, Chunked::new(input, chunks));
    let mut out = Outcome {
        replies: String::new(),
        stored: Vec::new(),
        closed: false,
    };
    let (mut buf, mut body) = (Vec::new(), Vec::new());
    loop {
        if let Some(left) = session.octets_left() {
            // A BDAT chunk: raw octets, at most `data_cap` at a time.
            if read_octets(&mut reader, &mut buf, left.min(data_cap as u64)).unwrap() == 0 {
                return out;
            }
            let step = session.octets(&buf, &mut body);
            if !answer(session, step, &mut reader, &mut body, &mut out) {
                return out;
            }
            continue;
        }
        let (max, skip) = if session.in_data() {
            (data_cap, false)
        } else {
            (session.line_max(), true)
        };
        let end = read_line(&mut reader, &mut buf, max, session.framing(), skip).unwrap();
        if end == super::LineEnd::Eof {
            return out;
        }
        let pending = !reader.buffer().is_empty();
        let step = session.feed(&buf, end, pending, &mut body);
        if !answer(session, step, &mut reader, &mut body, &mut out) {
            return out;
        }
    }
}

/// Does what a step asks, as the connection loop does; false once closed.
fn answer(
    session: &mut Session,
    mut step: Step,
    reader: &mut BufReader<Chunked<'_>>,
    body: &mut Vec<u8>,
    out: &mut Outcome,
) -> bool {
    while let Step::Delay(_, then) = step {
        step = *then; // --fail delay: no clock here
    }
    if let Step::Authenticate(c) = step {
        let ok = c.password() == GOOD_PASSWORD;
        step = session.authenticated(c, ok);
    }
    let reply = match step {
        Step::Reply(r) | Step::StartData(r) | Step::Discard(r) => r,
        Step::StartTls(r) => {
            // What was pipelined after STARTTLS is dropped, as conn.rs
            // does; the rest of `input` stands for the TLS session.
            let n = reader.buffer().len();
            reader.consume(n);
            session.tls_started();
            r
        }
        Step::Authenticate(_) => unreachable!("answered above"),
        Step::Drop | Step::Delay(..) => {
            // Drop closes with no reply (Delay was unwrapped above).
            out.closed = true;
            return false;
        }
        Step::Close(rs) => {
            rs.iter().for_each(|r| out.replies.push_str(&r.to_string()));
            out.closed = true;
            return false;
        }
        Step::CheckSpace(_) => session.space_checked(true),
        Step::Content => return true,
        Step::Deliver(_) => {
            out.stored.push(std::mem::take(body));
            session.stored(Ok("ID"))
        }
    };
    if !session.message_open() {
        body.clear(); // what a refused or dropped message left
    }
    out.replies.push_str(&reply.to_string());
    true
}

#[cfg(test)]
impl Outcome {
    /// The session closed with the 421 for too many protocol errors last.
    pub fn ended_for_errors(&self) -> bool {
        self.closed
            && self
                .replies
                .ends_with("421 4.7.0 mx.test Error: too many errors\r\n")
    }
}

/// A strict session (host `h`) taking recipients in `ok.test` only.
#[cfg(test)]
pub fn ok_test_only() -> Session {
    let limits = Limits {
        domains: vec!["ok.test".into()],
        ..limits()
    };
    Session::new("h", limits, false)
}

/// EHLO, MAIL, RCPT and DATA: a transaction up to its message text.
#[cfg(test)]
pub const TX: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n";

/// `prefix` then `rest`, as one input.
#[cfg(test)]
pub fn with(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

#[cfg(test)]
pub fn talk(input: &[u8]) -> Outcome {
    let mut s = Session::new("mx.test", limits(), false);
    run(&mut s, input, &[], 64)
}

/// Just the reply codes (and enhanced codes) of a strict session.
#[cfg(test)]
pub fn codes(input: &[u8]) -> Vec<String> {
    last_lines(&talk(input).replies)
}

/// As `codes`, with the input arriving one byte a read (never pipelined).
#[cfg(test)]
pub fn codes_unpipelined(input: &[u8]) -> Vec<String> {
    let mut s = Session::new("mx.test", limits(), false);
    last_lines(&run(&mut s, input, &[1], 64).replies)
}

#[cfg(test)]
fn last_lines(replies: &str) -> Vec<String> {
    replies
        .split_terminator("\r\n")
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Checks wire replies: `NNN` then `-` or ` `, CRLF at the end and nowhere
/// else, one code through a multi-line reply, an enhanced code of the
/// reply's class where there is one, and none on 354.
pub fn well_formed(replies: &str) -> Result<(), String> {
    let mut open: Option<&str> = None;
    for line in replies.split_inclusive("\r\n") {
        let Some(text) = line.strip_suffix("\r\n") else {
            return Err(format!("no CRLF at the end of {line:?}"));
        };
        if text.contains(['\r', '\n']) {
            return Err(format!("bare CR or LF in {line:?}"));
        }
        let b = text.as_bytes();
        if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&b[0]) {
            return Err(format!("no reply code in {line:?}"));
        }
        let code = &text[..3];
        if open.is_some_and(|c| c != code) {
            return Err(format!(
                "code changes inside a multi-line reply at {line:?}"
            ));
        }
        open = match b[3] {
            b'-' => Some(code),
            b' ' => None,
            _ => return Err(format!("neither ' ' nor '-' after the code in {line:?}")),
        };
        let first = text[4..].split(' ').next().unwrap_or("");
        let enhanced: Vec<&str> = first.split('.').collect();
        let is_enhanced = enhanced.len() == 3
            && enhanced
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|d| d.is_ascii_digit()));
        if is_enhanced && enhanced[0].as_bytes() != &b[..1] {
            return Err(format!("enhanced code of another class in {line:?}"));
        }
        if code == "354" && is_enhanced {
            return Err(format!("enhanced code on 354: {line:?}"));
        }
    }
    match open {
        Some(_) => Err("a multi-line reply never ends".into()),
        None => Ok(()),
    }
}
