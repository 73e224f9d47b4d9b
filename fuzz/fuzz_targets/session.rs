//! Fuzzes the SMTP session and line reader: arbitrary bytes, cut into
//! reads as the first input byte says, fed through `read_line` and
//! `Session::feed` exactly as the connection loop does. It must never
//! panic, every reply must be well-formed wire text, and cutting the same
//! input into single bytes must give the same replies and messages (unless
//! DATA was refused with input pending, which depends on the cut by design).
//! BDAT chunks go through the same driver: their octets are read raw
//! however the reads fall, so the same holds for them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailsink::smtp::transcript::{self, Outcome, well_formed};
use mailsink::smtp::{Limits, Session};

/// Wire replies and stored messages of one run.
fn run(data: &[u8], sizes: &[usize], loopback: bool, cap: usize) -> Outcome {
    let limits = Limits {
        max_size: 1000,
        max_recipients: 3,
        domains: vec!["y".into()],
        mailbox_fits: None,
    };
    let mut session = Session::new("mx.test", limits, loopback);
    transcript::run(&mut session, data, sizes, cap)
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
    let Outcome {
        replies, stored, ..
    } = run(data, &sizes, loopback, cap);
    if let Err(why) = well_formed(&replies) {
        panic!("{why}");
    }
    assert!(
        stored.iter().all(|m| m.len() <= 1000),
        "a message over the size limit was kept"
    );
    assert_eq!(replies.matches("Ok: queued as ID").count(), stored.len());
    let Outcome {
        replies: one_replies,
        stored: one_stored,
        ..
    } = run(data, &[1], loopback, cap);
    if !replies.contains("554 5.5.0") {
        assert_eq!(replies, one_replies, "the cut changed the replies");
        assert_eq!(stored, one_stored, "the cut changed the stored text");
    }
});
