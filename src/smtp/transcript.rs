//! Test driver: runs a `Session` over a byte stream cut into given chunks,
//! exactly as the connection loop does, and records the wire replies and the
//! stored messages.

use super::line::read_line;
use super::session::{COMMAND_READ_MAX, Limits, Session, Step};
use std::io::{self, BufReader, Read};

pub struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
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

pub fn limits() -> Limits {
    Limits {
        max_size: 1000,
        max_recipients: 3,
        domains: vec![],
        mailbox_fits: None,
    }
}

/// Replies as wire text, and the bodies of delivered messages.
pub struct Outcome {
    pub replies: String,
    pub stored: Vec<Vec<u8>>,
    pub closed: bool,
}

pub fn run(session: &mut Session, input: &[u8], chunks: &[usize], data_cap: usize) -> Outcome {
    let mut reader = BufReader::with_capacity(
        64,
        Chunked {
            data: input,
            sizes: chunks.to_vec(),
            next: 0,
        },
    );
    let mut out = Outcome {
        replies: String::new(),
        stored: Vec::new(),
        closed: false,
    };
    let (mut buf, mut body) = (Vec::new(), Vec::new());
    loop {
        let (max, skip) = if session.in_data() {
            (data_cap, false)
        } else {
            (COMMAND_READ_MAX, true)
        };
        let end = read_line(&mut reader, &mut buf, max, session.framing(), skip).unwrap();
        if end == super::LineEnd::Eof {
            return out;
        }
        let pending = !reader.buffer().is_empty();
        let reply = match session.feed(&buf, end, pending, &mut body) {
            Step::Reply(r) | Step::StartData(r) | Step::Discard(r) => r,
            Step::Close(rs) => {
                rs.iter().for_each(|r| out.replies.push_str(&r.to_string()));
                out.closed = true;
                return out;
            }
            Step::CheckSpace(_) => session.space_checked(true),
            Step::Content => continue,
            Step::Deliver(_) => {
                out.stored.push(std::mem::take(&mut body));
                session.stored(Ok("ID"))
            }
        };
        if reply.code == 552 || reply.code == 250 {
            body.clear();
        }
        out.replies.push_str(&reply.to_string());
    }
}

pub fn talk(input: &[u8]) -> Outcome {
    let mut s = Session::new("mx.test", limits(), false);
    run(&mut s, input, &[], 64)
}

/// Just the reply codes (and enhanced codes) of a strict session.
pub fn codes(input: &[u8]) -> Vec<String> {
    last_lines(&talk(input).replies)
}

/// As `codes`, with the input arriving one byte a read (never pipelined).
pub fn codes_unpipelined(input: &[u8]) -> Vec<String> {
    let mut s = Session::new("mx.test", limits(), false);
    last_lines(&run(&mut s, input, &[1], 64).replies)
}

fn last_lines(replies: &str) -> Vec<String> {
    replies
        .split_terminator("\r\n")
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}
