//! Fuzzes the SMTP session and line reader: arbitrary bytes, cut into
//! reads as the first input byte says, fed through `read_line` and
//! `Session::feed` exactly as the connection loop does. It must never
//! panic, every reply must be well-formed wire text, and cutting the same
//! input into single bytes must give the same replies and messages (unless
//! DATA was refused with input pending, which depends on the cut by design).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailsink::smtp::session::COMMAND_READ_MAX;
use mailsink::smtp::{Limits, LineEnd, Session, Step, read_line};
use std::io::{self, BufReader, Read};

/// Hands out `data` in reads of the given sizes, in turn.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = size.max(1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Wire replies and stored messages of one run.
fn run(data: &[u8], sizes: &[usize], loopback: bool, cap: usize) -> (String, Vec<Vec<u8>>) {
    let limits = Limits {
        max_size: 1000,
        max_recipients: 3,
        domains: vec!["y".into()],
        mailbox_fits: None,
    };
    let mut session = Session::new("mx.test", limits, loopback);
    let pieces = Pieces {
        data,
        sizes,
        next: 0,
    };
    let mut reader = BufReader::with_capacity(64, pieces);
    let (mut replies, mut stored) = (String::new(), Vec::new());
    let (mut line, mut body) = (Vec::new(), Vec::new());
    // Every read_line call consumes at least one byte or ends the input.
    for _ in 0..=data.len() {
        let (max, skip) = if session.in_data() {
            (cap, false)
        } else {
            (COMMAND_READ_MAX, true)
        };
        let end = read_line(&mut reader, &mut line, max, session.framing(), skip).unwrap();
        if end == LineEnd::Eof {
            break;
        }
        let pending = !reader.buffer().is_empty();
        let reply = match session.feed(&line, end, pending, &mut body) {
            Step::Reply(r) | Step::StartData(r) | Step::Discard(r) => r,
            Step::Close(rs) => {
                rs.iter().for_each(|r| replies.push_str(&r.to_string()));
                break;
            }
            Step::CheckSpace(_) => session.space_checked(true),
            Step::Content => continue,
            Step::Deliver(_) => {
                assert!(body.len() <= 1000, "a message over the size limit was kept");
                stored.push(std::mem::take(&mut body));
                session.stored(Ok("ID"))
            }
        };
        if !session.in_data() {
            body.clear();
        }
        replies.push_str(&reply.to_string());
    }
    (replies, stored)
}

/// `NNN` then `-` or ` `, CRLF at the end and nowhere else, one code
/// through a multi-line reply.
fn check_replies(replies: &str) {
    let mut open: Option<&str> = None;
    for line in replies.split_inclusive("\r\n") {
        let text = line.strip_suffix("\r\n").expect("reply line without CRLF");
        assert!(!text.contains(['\r', '\n']), "bare CR or LF in {line:?}");
        let b = text.as_bytes();
        assert!(
            b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && (b'2'..=b'5').contains(&b[0]),
            "no reply code in {line:?}"
        );
        let code = &text[..3];
        assert!(open.is_none_or(|c| c == code), "code changes in {line:?}");
        open = match b[3] {
            b'-' => Some(code),
            b' ' => None,
            _ => panic!("neither ' ' nor '-' after the code in {line:?}"),
        };
    }
    assert!(open.is_none(), "a multi-line reply never ends");
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let loopback = flags & 1 == 1;
    let sizes = [
        1 + (flags >> 1 & 7) as usize,
        1,
        200,
        3 + (flags >> 4 & 3) as usize,
    ];
    let cap = [2, 7, 64, 8192][(flags >> 6) as usize];
    let (replies, stored) = run(data, &sizes, loopback, cap);
    check_replies(&replies);
    assert_eq!(replies.matches("Ok: queued as ID").count(), stored.len());
    let (one_replies, one_stored) = run(data, &[1], loopback, cap);
    if !replies.contains("554 5.5.0") {
        assert_eq!(replies, one_replies, "the cut changed the replies");
        assert_eq!(stored, one_stored, "the cut changed the stored text");
    }
});
