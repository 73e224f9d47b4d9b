//! The DATA phase: end-of-data detection (strict CRLF or bare-LF framing),
//! dot-unstuffing, CRLF → LF, and the size cap (RFC 1870 counting), after
//! which the rest of the message is read and discarded.

use super::line::{Framing, LineEnd};

/// What one piece of DATA input meant.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fed {
    /// Content: appended to the output (unless over the cap).
    More,
    /// The final dot.
    End,
}

#[derive(Debug)]
pub(super) struct Body {
    /// Octets counted as RFC 1870 counts them.
    pub(super) size: u64,
    max: u64,
    at_line_start: bool,
    pub(super) bare_lf: bool,
}

impl Body {
    pub(super) fn new(max: u64) -> Body {
        Body {
            size: 0,
            max,
            at_line_start: true,
            bare_lf: false,
        }
    }

    pub(super) fn too_big(&self) -> bool {
        self.size > self.max
    }

    /// Feeds one framed piece; stored bytes (LF line ends) go to `out`.
    pub(super) fn feed(
        &mut self,
        piece: &[u8],
        end: LineEnd,
        framing: Framing,
        out: &mut Vec<u8>,
    ) -> Fed {
        let term = end.terminator_len(piece);
        let text = &piece[..piece.len() - term];
        let line_start = self.at_line_start;
        self.at_line_start = term > 0;
        if line_start && term > 0 && text == b"." {
            return Fed::End; // RFC 5321 §4.1.1.4: CRLF "." CRLF
        }
        // RFC 5321 §4.5.2: strip one leading "." from a line.
        let text = if line_start && text.first() == Some(&b'.') {
            &text[1..]
        } else {
            text
        };
        self.size += (text.len() + term) as u64;
        if framing == Framing::Strict && !self.bare_lf && text.contains(&b'\n') {
            self.bare_lf = true;
        }
        if !self.too_big() {
            out.extend_from_slice(text);
            if term > 0 {
                out.push(b'\n');
            }
        }
        Fed::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::line::read_line;
    use std::io::BufReader;

    /// Feeds `input` through the framer and the body; returns what was stored
    /// and whether the final dot was seen.
    fn run(input: &[u8], framing: Framing, max: u64) -> (Vec<u8>, bool, Body) {
        let mut r = BufReader::with_capacity(4, input);
        let mut body = Body::new(max);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        loop {
            let end = read_line(&mut r, &mut buf, 8, framing, false).unwrap();
            if end == LineEnd::Eof {
                return (out, false, body);
            }
            if body.feed(&buf, end, framing, &mut out) == Fed::End {
                return (out, true, body);
            }
        }
    }

    #[test]
    fn unstuffs_and_converts_line_ends() {
        let (out, end, body) = run(b"a\r\n..b\r\n.c\r\n.\r\n", Framing::Strict, 100);
        assert!(end);
        assert_eq!(out, b"a\n.b\nc\n");
        assert_eq!(body.size, 3 + 4 + 3); // stuffed dots not counted
    }

    #[test]
    fn strict_framing_never_ends_at_bare_lf_dots() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"x\n.\nMAIL\r\n", b"x\n.\nMAIL\n"),
            (b"x\n.\r\nQUIT\r\n", b"x\n.\nQUIT\n"),
            (b"x\r.\r\ny\r\n", b"x\r.\ny\n"),
            // a line that starts with "." after CRLF loses that one dot (§4.5.2)
            (b"x\r\n.\nz\r\n", b"x\n\nz\n"),
            (b"x\r\n\0.\r\n", b"x\n\0.\n"),
        ];
        for (input, stored) in cases {
            let mut input = input.to_vec();
            input.extend_from_slice(b".\r\n");
            let (out, end, _) = run(&input, Framing::Strict, 1000);
            assert!(end);
            assert_eq!(out, stored, "{}", input.escape_ascii());
        }
    }

    #[test]
    fn lf_framing_ends_at_a_dot_line() {
        let (out, end, _) = run(b"hello\n..x\n.\n", Framing::Lf, 100);
        assert!(end);
        assert_eq!(out, b"hello\n.x\n");
    }

    #[test]
    fn long_lines_are_split_but_not_changed() {
        let (out, end, body) = run(b"0123456789abcdef.xyz\r\n.\r\n", Framing::Strict, 100);
        assert!(end);
        assert_eq!(out, b"0123456789abcdef.xyz\n");
        assert_eq!(body.size, 22);
    }

    #[test]
    fn over_the_cap_is_counted_but_not_kept() {
        let (out, end, body) = run(b"aaaa\r\nbbbb\r\ncccc\r\n.\r\n", Framing::Strict, 10);
        assert!(end);
        assert!(body.too_big());
        assert_eq!(out, b"aaaa\n"); // stops growing once over the cap
        assert_eq!(body.size, 18);
    }

    #[test]
    fn bare_lf_in_strict_data_is_noticed() {
        let (_, _, body) = run(b"a\nb\r\n.\r\n", Framing::Strict, 100);
        assert!(body.bare_lf);
        let (_, _, body) = run(b"ab\r\n.\r\n", Framing::Strict, 100);
        assert!(!body.bare_lf);
    }
}
