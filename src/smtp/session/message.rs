//! The message: DATA and its text, BDAT and its raw chunks, and the end of
//! a message (store, or discard when too big or a `--fail` rule says so).

use super::hooks::Fired;
use super::{BareLf, Envelope, Session, State, Step, StoreFailure};
use crate::smtp::chunk::Chunks;
use crate::smtp::data::Body;
use crate::smtp::fail::{Refusal, Stage};
use crate::smtp::reply::Reply;

impl Session {
    /// Feeds raw octets of the current BDAT chunk, at most `octets_left`
    /// (any more are ignored: the caller reads no further). Message text
    /// goes to `out`.
    pub fn octets(&mut self, octets: &[u8], out: &mut Vec<u8>) -> Step {
        let n = octets.len() as u64;
        match &mut self.state {
            State::Chunk { chunks, left, .. } => {
                let take = octets
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                chunks.feed(&octets[..take], out);
                *left = left.saturating_sub(n);
                if *left > 0 {
                    return Step::Content;
                }
            }
            State::Skip { left, .. } => {
                *left = left.saturating_sub(n);
                if *left > 0 {
                    return Step::Content;
                }
            }
            _ => return Step::Content, // no chunk is open: nothing to take
        }
        self.end_of_octets(out)
    }

    /// The last octet of a chunk is in: the chunk's reply, or the refused
    /// chunk's (then back to the state it came from).
    fn end_of_octets(&mut self, out: &mut Vec<u8>) -> Step {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Chunk {
                envelope,
                chunks,
                size,
                last,
                ..
            } => self.end_of_chunk(envelope, chunks, size, last, out),
            State::Skip { reply, then, .. } => {
                self.state = *then;
                self.error(reply)
            }
            other => {
                self.state = other;
                Step::Content
            }
        }
    }

    /// The answer to `Step::Deliver`: the queue id, or why storing failed.
    pub fn stored(&mut self, result: Result<&str, StoreFailure>) -> Reply {
        let delivering = self.delivering.take();
        let reply = match result {
            Ok(id) => return Reply::queued(id),
            Err(StoreFailure::NoSpace) => Reply::no_space(),
            Err(StoreFailure::Other) => Reply::store_failed(),
        };
        if let Some((from, to)) = delivering {
            self.refusal = Some(Refusal {
                stage: Stage::Data,
                reply: reply.clone(),
                from: Some(from),
                to,
                address: None,
            });
        }
        reply
    }

    pub(super) fn on_data(&mut self, pending: bool) -> Step {
        let refusal = match std::mem::replace(&mut self.state, State::Idle) {
            State::Mail(env) if !env.rcpts.is_empty() => {
                self.state = State::Data(env, Body::new(self.limits.max_size));
                return Step::StartData(Reply::start_data());
            }
            State::Mail(env) => {
                let reply = if env.refused > 0 {
                    Reply::no_valid_recipients()
                } else {
                    Reply::bad_sequence("need RCPT command")
                };
                self.state = State::Mail(env);
                reply
            }
            State::Chunked(env, chunks) => {
                self.state = State::Chunked(env, chunks);
                Reply::bad_sequence("DATA after BDAT")
            }
            other => {
                self.state = other;
                if self.helo.is_none() {
                    Reply::bad_sequence("send HELO/EHLO first")
                } else {
                    Reply::bad_sequence("need MAIL command")
                }
            }
        };
        if pending {
            // The waiting bytes would be message text read as commands.
            return self.close(Reply::pipelined_data_refused());
        }
        self.error(refusal)
    }

    /// RFC 3030 BDAT: the first chunk opens the message, each one is read
    /// raw; a refused chunk is read and dropped before its reply.
    pub(super) fn on_bdat(&mut self, size: u64, last: bool, out: &mut Vec<u8>) -> Step {
        let (envelope, mut chunks) = match std::mem::replace(&mut self.state, State::Closed) {
            State::Mail(env) if !env.rcpts.is_empty() => (env, Chunks::new(self.limits.max_size)),
            State::Chunked(env, chunks) => (env, chunks),
            other => {
                let reply = match &other {
                    State::Mail(_) => Reply::bad_sequence("need RCPT command"),
                    _ if self.helo.is_none() => Reply::bad_sequence("send HELO/EHLO first"),
                    _ => Reply::bad_sequence("need MAIL command"),
                };
                if size == 0 {
                    self.state = other;
                    return self.error(reply);
                }
                self.state = State::Skip {
                    left: size,
                    reply,
                    then: Box::new(other),
                };
                return Step::Content;
            }
        };
        chunks.announce(size);
        if size == 0 {
            return self.end_of_chunk(envelope, chunks, size, last, out);
        }
        self.state = State::Chunk {
            envelope,
            chunks,
            left: size,
            size,
            last,
        };
        Step::Content
    }

    fn end_of_chunk(
        &mut self,
        envelope: Envelope,
        mut chunks: Chunks,
        size: u64,
        last: bool,
        out: &mut Vec<u8>,
    ) -> Step {
        if !last {
            self.state = State::Chunked(envelope, chunks);
            return Step::Reply(Reply::chunk_received(size));
        }
        chunks.finish(out);
        self.state = State::Idle;
        self.end_of_message(envelope, chunks.size(), chunks.too_big())
    }

    pub(super) fn end_of_data(&mut self, env: Envelope, body: Body) -> Step {
        self.state = State::Idle;
        if body.bare_lf && self.bare_lf == BareLf::None {
            self.bare_lf = BareLf::Seen;
        }
        self.end_of_message(env, body.size, body.too_big())
    }

    /// The final dot or the LAST chunk: store, unless too big or a
    /// `--fail` rule says otherwise.
    fn end_of_message(&mut self, mut env: Envelope, size: u64, too_big: bool) -> Step {
        if too_big {
            let reply = Reply::too_big();
            self.report(Stage::Data, &reply, Some(&env), None);
            return Step::Discard(reply);
        }
        env.size = size;
        let delay = match self.inject(Stage::Data, None, Some(&env), None) {
            Fired::No => None,
            Fired::Delay(d) => Some(d),
            Fired::Instead(Step::Reply(r)) => return Step::Discard(r), // nothing stored
            Fired::Instead(step) => return step,
        };
        if self.hooks.report {
            self.delivering = Some((env.from.clone(), env.rcpts.clone()));
        }
        Step::Deliver(env).after(delay)
    }
}

#[cfg(test)]
mod tests {
    use crate::smtp::line::LineEnd;
    use crate::smtp::session::*;
    use crate::smtp::transcript::{TX, codes_unpipelined, limits, ok_test_only, run, talk, with};

    const TX_MAIL: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n";

    /// The replies after EHLO, MAIL and RCPT, and what was stored.
    fn bdat(rest: &[u8]) -> (String, Vec<Vec<u8>>, bool) {
        let out = talk(&with(TX_MAIL, rest));
        let replies = out.replies.split_once("250 2.1.5 Ok\r\n").unwrap().1;
        (replies.to_string(), out.stored, out.closed)
    }

    #[test]
    fn message_over_max_size_is_refused_after_the_dot() {
        let big = vec![b'x'; 1100];
        let mut input = with(TX, &big);
        input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        let out = talk(&input);
        assert!(out.stored.is_empty());
        assert!(out.replies.contains("552 5.3.4"));
        assert!(out.replies.ends_with("250 2.0.0 Ok\r\n"));
    }

    #[test]
    fn data_with_every_recipient_refused() {
        let mut s = ok_test_only();
        let out = run(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<a@bad.test>\r\nDATA\r\n",
            &[],
            64,
        );
        assert!(
            out.replies
                .ends_with("554 5.5.1 Error: no valid recipients\r\n")
        );
    }

    #[test]
    fn data_refused_with_input_waiting_closes() {
        let out = talk(b"EHLO c\r\nMAIL FROM:<a@x>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
        assert!(out.closed);
        assert!(
            out.replies
                .ends_with("554 5.5.0 Error: DATA refused with input pending, closing\r\n")
        );
        assert!(out.stored.is_empty());
    }

    #[test]
    fn only_a_refused_data_command_closes_on_waiting_input() {
        let out = talk(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA now\r\ntext\r\n");
        assert!(
            out.closed
                && out
                    .replies
                    .ends_with("554 5.5.0 Error: DATA refused with input pending, closing\r\n")
        );
        let out = talk(b"EHLO c\r\nDATAX\r\nNOOP\r\n");
        assert!(!out.closed);
        assert!(
            out.replies
                .ends_with("500 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n")
        );
    }

    #[test]
    fn bdat_reads_exactly_n_raw_octets_then_the_next_command() {
        // SPEC CHUNKING: exactly n octets, taken raw, then the next command.
        let (replies, stored, _) = bdat(b"BDAT 5 LAST\r\nhelloNOOP\r\n");
        assert_eq!(replies, "250 2.0.0 Ok: queued as ID\r\n250 2.0.0 Ok\r\n");
        assert_eq!(stored, [b"hello".to_vec()]);
    }

    #[test]
    fn chunks_before_last_get_their_octet_count() {
        let (replies, stored, _) = bdat(b"BDAT 3\r\nabcBDAT 0\r\nBDAT 2\r\ndeBDAT 0 LAST\r\n");
        assert_eq!(
            replies,
            "250 2.0.0 3 octets received\r\n250 2.0.0 0 octets received\r\n250 2.0.0 2 octets received\r\n250 2.0.0 Ok: queued as ID\r\n"
        );
        assert_eq!(stored, [b"abcde".to_vec()]);
    }

    #[test]
    fn bdat_zero_last_alone_stores_an_empty_message() {
        let (replies, stored, _) = bdat(b"BDAT 0 LAST\r\n");
        assert_eq!(replies, "250 2.0.0 Ok: queued as ID\r\n");
        assert_eq!(stored, [Vec::<u8>::new()]);
    }

    #[test]
    fn chunk_text_is_stored_as_data_would_store_it() {
        // CRLF becomes LF (also across chunks); no dot-unstuffing, no end
        // of data: a "." line, a bare LF and command text are content.
        let text = b"Subject: t\r\n\r\n..a\r\n.\r\nQUIT\r\nb\nc\rd\r";
        let (a, b) = text.split_at(13);
        let mut input = format!("BDAT {}\r\n", a.len()).into_bytes();
        input.extend_from_slice(a);
        input.extend_from_slice(format!("BDAT {} LAST\r\n", b.len()).as_bytes());
        input.extend_from_slice(b);
        let (_, stored, closed) = bdat(&input);
        assert!(!closed);
        assert_eq!(
            stored[0].escape_ascii().to_string(),
            b"Subject: t\n\n..a\n.\nQUIT\nb\nc\rd\r"
                .escape_ascii()
                .to_string()
        );
        // The same message through DATA is stored the same.
        let via_data = talk(&with(TX, b"Subject: t\r\n\r\nx\r\n.\r\n")).stored;
        let via_bdat = bdat(b"BDAT 17 LAST\r\nSubject: t\r\n\r\nx\r\n").1;
        assert_eq!(via_data, via_bdat);
    }

    #[test]
    fn the_line_ending_mode_does_not_apply_inside_a_chunk() {
        let mut s = Session::new("h", limits(), true);
        let out = run(
            &mut s,
            b"HELO me\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nBDAT 7 LAST\na\nb\r\n.\nNOOP\n",
            &[],
            64,
        );
        assert_eq!(out.stored, [b"a\nb\n.\n".to_vec()]);
        assert!(out.replies.ends_with("queued as ID\r\n250 2.0.0 Ok\r\n"));
    }

    #[test]
    fn refused_chunks_are_read_and_dropped_never_commands() {
        // No transaction: 503, and "QUIT\r\n" inside the chunk is not a QUIT.
        let out = talk(b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n");
        assert!(!out.closed);
        assert!(
            out.replies
                .ends_with("503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n")
        );
        let out = talk(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
        assert_eq!(
            out.replies,
            "503 5.5.1 Error: send HELO/EHLO first\r\n250 2.0.0 Ok\r\n"
        );
        // A transaction without an accepted recipient: 503, state kept.
        let mut s = ok_test_only();
        let out = run(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<a@bad.test>\r\nBDAT 4 LAST\r\nRSETRCPT TO:<a@ok.test>\r\nBDAT 2 LAST\r\nhi",
            &[],
            64,
        );
        assert!(out.replies.contains("550 5.7.1 Error: recipient domain not accepted here\r\n503 5.5.1 Error: need RCPT command\r\n250 2.1.5"), "{}", out.replies);
        assert_eq!(out.stored, [b"hi".to_vec()]);
    }

    #[test]
    fn data_after_bdat_is_out_of_sequence_and_keeps_the_chunks() {
        let got = codes_unpipelined(&with(
            TX_MAIL,
            b"BDAT 2\r\nabDATA\r\nRCPT TO:<c@y>\r\nMAIL FROM:<a@x>\r\nBDAT 1 LAST\r\nc",
        ));
        assert_eq!(
            &got[3..],
            [
                "250 2.0.0",
                "503 5.5.1",
                "503 5.5.1",
                "503 5.5.1",
                "250 2.0.0"
            ]
        );
        let mut s = Session::new("h", limits(), false);
        let out = run(
            &mut s,
            &with(TX_MAIL, b"BDAT 2\r\nabDATA\r\nBDAT 1 LAST\r\nc"),
            &[1],
            64,
        );
        assert_eq!(out.stored, [b"abc".to_vec()]);
    }

    #[test]
    fn rset_and_ehlo_drop_the_chunks_so_far() {
        for reset in [&b"RSET\r\n"[..], b"EHLO c\r\n"] {
            let input = [
                TX_MAIL,
                b"BDAT 3\r\nabc",
                reset,
                b"BDAT 1 LAST\r\nx", // no transaction any more: refused
                &TX_MAIL[8..],
                b"BDAT 2 LAST\r\nde",
            ]
            .concat();
            let out = talk(&input);
            assert_eq!(out.stored, [b"de".to_vec()], "{}", out.replies);
            assert!(out.replies.contains("503 5.5.1 Error: need MAIL command"));
        }
    }

    #[test]
    fn a_malformed_chunk_size_is_501_and_closes() {
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 5 FIRST",
            "BDAT 123456789012345678901",
        ] {
            let (replies, stored, closed) = bdat(format!("{bad}\r\nhelloNOOP\r\n").as_bytes());
            assert!(closed, "{bad}");
            assert_eq!(
                replies, "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n",
                "{bad}"
            );
            assert!(stored.is_empty());
        }
    }

    #[test]
    fn over_max_size_is_read_and_dropped_with_552_at_last() {
        let mut input = b"BDAT 600\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 600]);
        input.extend_from_slice(b"BDAT 600 LAST\r\n");
        input.extend_from_slice(&[b'y'; 600]);
        input.extend_from_slice(b"NOOP\r\n");
        let (replies, stored, closed) = bdat(&input);
        assert_eq!(
            replies,
            "250 2.0.0 600 octets received\r\n552 5.3.4 Error: message file too big\r\n250 2.0.0 Ok\r\n"
        );
        assert!(stored.is_empty() && !closed);
        // Exactly --max-size is stored.
        let mut input = b"BDAT 1000 LAST\r\n".to_vec();
        input.extend_from_slice(&[b'z'; 1000]);
        assert_eq!(bdat(&input).1[0].len(), 1000);
    }

    #[test]
    fn every_way_of_cutting_a_bdat_session_gives_the_same_result() {
        let input = with(
            TX_MAIL,
            b"BDAT 4\r\na\r\nbBDAT 3\r\n\r\n.BDAT 0\r\nBDAT 3 LAST\r\n\r\n\rNOOP\r\nMAIL FROM:<c@d>\r\nRCPT TO:<e@f>\r\nBDAT 1 LAST\r\nzQUIT\r\n",
        );
        let mut s = Session::new("h", limits(), false);
        let whole = run(&mut s, &input, &[], 7);
        assert_eq!(whole.stored, [b"a\nb\n.\n\r".to_vec(), b"z".to_vec()]);
        for cut in 1..input.len() {
            let mut s = Session::new("h", limits(), false);
            let got = run(&mut s, &input, &[cut, input.len()], 7);
            assert_eq!(got.replies, whole.replies, "cut at {cut}");
            assert_eq!(got.stored, whole.stored, "cut at {cut}");
        }
    }

    #[test]
    fn the_session_asks_for_the_octets_it_still_needs() {
        let mut s = Session::new("h", limits(), false);
        let mut out = Vec::new();
        for line in [
            &b"EHLO c\r\n"[..],
            b"MAIL FROM:<a@x>\r\n",
            b"RCPT TO:<b@y>\r\n",
        ] {
            s.feed(line, LineEnd::CrLf, false, &mut out);
        }
        assert_eq!(s.octets_left(), None);
        assert!(!s.message_open());
        assert_eq!(
            s.feed(b"BDAT 5\r\n", LineEnd::CrLf, true, &mut out),
            Step::Content
        );
        assert_eq!((s.octets_left(), s.message_open()), (Some(5), true));
        assert_eq!(s.octets(b"abc", &mut out), Step::Content);
        assert_eq!(s.octets_left(), Some(2));
        assert_eq!(
            s.octets(b"de", &mut out),
            Step::Reply(Reply::chunk_received(5))
        );
        assert_eq!((s.octets_left(), s.message_open()), (None, true));
        assert_eq!(out, b"abcde");
        assert!(matches!(
            s.feed(b"BDAT 0 LAST\r\n", LineEnd::CrLf, false, &mut out),
            Step::Deliver(_)
        ));
        assert!(!s.message_open());
    }

    #[test]
    fn refused_chunks_count_as_errors() {
        let out = talk(&b"BDAT 1\r\nx".repeat(25));
        assert_eq!(out.replies.matches("503 5.5.1").count(), 20);
        assert!(out.ended_for_errors());
    }

    #[test]
    fn loopback_lf_session_ends_data_with_a_dot_line() {
        let mut s = Session::new("h", limits(), true);
        let out = run(
            &mut s,
            b"HELO me\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\nhi\r\n..dot\n.\nQUIT\n",
            &[],
            64,
        );
        assert_eq!(out.stored, vec![b"hi\n.dot\n".to_vec()]);
        assert!(out.replies.ends_with("221 2.0.0 Bye\r\n"));
    }

    #[test]
    fn smuggled_end_of_data_is_content() {
        let smuggles: [&[u8]; 12] = [
            b"\n.\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r",
            b"\r.\r\n",
            b"\n.\r",
            b"\r.\n",
            b"\r\n.\r",
            b"\r\n.\r\r\n",
            b"\r\n\0.\r\n",
            b"\r\n.\0\r\n",
            b"\n\n.\r\n",
        ];
        for smuggle in smuggles {
            let input = [
                TX,
                b"x",
                smuggle,
                b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nforged\r\n.\r\n",
            ]
            .concat();
            let out = talk(&input);
            assert_eq!(out.stored.len(), 1, "{}", smuggle.escape_ascii());
            let text = String::from_utf8_lossy(&out.stored[0]).into_owned();
            assert!(
                text.contains("MAIL FROM:<evil@x>") && text.contains("forged"),
                "{}",
                smuggle.escape_ascii()
            );
        }
    }

    #[test]
    fn chunking_does_not_change_replies_or_content() {
        let input = [TX, b"Subject: t\r\n\r\n..a\r\nb\n.\r\r\n.\r\nRSET\r\nMAIL FROM:<>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n"].concat();
        let mut s = Session::new("h", limits(), false);
        let whole = run(&mut s, &input, &[], 7);
        for chunks in [&[1][..], &[2, 3], &[5, 1, 9], &[64], &[1000]] {
            let mut s = Session::new("h", limits(), false);
            let got = run(&mut s, &input, chunks, 7);
            assert_eq!(got.replies, whole.replies, "{chunks:?}");
            assert_eq!(got.stored, whole.stored, "{chunks:?}");
        }
        assert_eq!(whole.stored.len(), 2);
    }

    #[test]
    fn store_results_pick_the_reply() {
        let mut s = Session::new("h", limits(), false);
        assert_eq!(
            s.stored(Ok("Q1")).to_string(),
            "250 2.0.0 Ok: queued as Q1\r\n"
        );
        assert_eq!(s.stored(Err(StoreFailure::NoSpace)).code, 452);
        assert_eq!(
            s.stored(Err(StoreFailure::Other)).to_string(),
            "451 4.3.0 Error: local error in processing\r\n"
        );
    }
}
