//! Line framing over any `BufRead`: every read is capped, so a peer that
//! never ends a line costs bounded memory. The session's `Framing` decides
//! what ends a line (SPEC "Line endings").

use std::io::{self, BufRead, Read};

/// How the session frames lines; fixed by the first complete line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Not decided yet (a loopback peer before its first line).
    Unknown,
    /// Lines end only at CRLF.
    Strict,
    /// A bare LF ends a line; a CR just before it is dropped.
    Lf,
}

/// How a framed piece of input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// At CRLF (in either framing).
    CrLf,
    /// At a bare LF (only in `Lf` or `Unknown` framing).
    Lf,
    /// The cap was reached before a line end: a partial line.
    Cut,
    /// A line longer than the cap; its rest was read and thrown away.
    TooLong,
    /// The peer closed the connection (any partial line is in the buffer).
    Eof,
}

impl LineEnd {
    /// Length of the terminator at the end of `line`.
    pub fn terminator_len(self, line: &[u8]) -> usize {
        match self {
            LineEnd::CrLf => 2,
            LineEnd::Lf if line.ends_with(b"\r\n") => 2,
            LineEnd::Lf => 1,
            _ => 0,
        }
    }
}

/// Reads one line into `buf` (cleared first), at most `max` bytes (one more
/// when a CRLF straddles the cap). With `skip_long`, a line that does not end
/// within `max` is consumed to its end in bounded memory and reported as
/// `TooLong`; without it, the partial line is returned as `Cut`.
pub fn read_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    framing: Framing,
    skip_long: bool,
) -> io::Result<LineEnd> {
    buf.clear();
    loop {
        let room = max.saturating_sub(buf.len());
        let n = Read::take(&mut *reader, room as u64).read_until(b'\n', buf)?;
        if n == 0 && room > 0 {
            return Ok(LineEnd::Eof);
        }
        if buf.ends_with(b"\r\n") {
            return Ok(LineEnd::CrLf);
        }
        if buf.ends_with(b"\n") && framing != Framing::Strict {
            return Ok(LineEnd::Lf);
        }
        if buf.len() < max {
            continue; // a bare LF inside a strict line: content, keep reading
        }
        // The cap is reached. A CR at the cap may be the first half of CRLF.
        if buf.ends_with(b"\r") && reader.fill_buf()?.first() == Some(&b'\n') {
            reader.consume(1);
            buf.push(b'\n');
            return Ok(LineEnd::CrLf);
        }
        if !skip_long {
            return Ok(LineEnd::Cut);
        }
        return skip_rest(reader, buf.last() == Some(&b'\r'), framing);
    }
}

/// Reads up to `max` raw octets into `buf` (cleared first): what the
/// reader holds, or one read's worth. `Ok(0)` only at end of input (or for
/// `max` 0). For BDAT chunks, which know no line ends.
pub fn read_octets<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>, max: u64) -> io::Result<usize> {
    buf.clear();
    let available = reader.fill_buf()?;
    let n = available
        .len()
        .min(usize::try_from(max).unwrap_or(usize::MAX));
    buf.extend_from_slice(&available[..n]);
    reader.consume(n);
    Ok(n)
}

/// Discards input up to and including the end of the current line.
fn skip_rest<R: BufRead>(
    reader: &mut R,
    mut after_cr: bool,
    framing: Framing,
) -> io::Result<LineEnd> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(LineEnd::Eof);
        }
        let mut used = chunk.len();
        let mut done = false;
        for (i, &b) in chunk.iter().enumerate() {
            let ends = b == b'\n' && (after_cr || framing != Framing::Strict);
            if ends {
                used = i + 1;
                done = true;
                break;
            }
            after_cr = b == b'\r';
        }
        reader.consume(used);
        if done {
            return Ok(LineEnd::TooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn lines(input: &[u8], max: usize, framing: Framing, skip: bool) -> Vec<(Vec<u8>, LineEnd)> {
        let mut r = BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            let end = read_line(&mut r, &mut buf, max, framing, skip).unwrap();
            if end == LineEnd::Eof {
                return out;
            }
            out.push((buf.clone(), end));
        }
    }

    #[test]
    fn strict_lines_end_only_at_crlf() {
        let got = lines(b"a\nb\r\nc\rd\r\n", 100, Framing::Strict, true);
        assert_eq!(got[0], (b"a\nb\r\n".to_vec(), LineEnd::CrLf));
        assert_eq!(got[1], (b"c\rd\r\n".to_vec(), LineEnd::CrLf));
    }

    #[test]
    fn lf_framing_ends_at_bare_lf() {
        let got = lines(b"a\nb\r\n", 100, Framing::Lf, true);
        assert_eq!(got[0], (b"a\n".to_vec(), LineEnd::Lf));
        assert_eq!(got[1], (b"b\r\n".to_vec(), LineEnd::CrLf));
    }

    #[test]
    fn long_line_is_skipped_to_its_end() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let got = lines(&input, 512, Framing::Strict, true);
        assert_eq!(got[0].1, LineEnd::TooLong);
        assert_eq!(got[0].0.len(), 512);
        assert_eq!(got[1], (b"NOOP\r\n".to_vec(), LineEnd::CrLf));
    }

    #[test]
    fn cut_keeps_partial_lines_and_joins_a_straddling_crlf() {
        let got = lines(b"abcd\r\nef", 5, Framing::Strict, false);
        assert_eq!(got[0], (b"abcd\r\n".to_vec(), LineEnd::CrLf));
        let got = lines(b"abcdefg\r\n", 5, Framing::Strict, false);
        assert_eq!(got[0], (b"abcde".to_vec(), LineEnd::Cut));
        assert_eq!(got[1], (b"fg\r\n".to_vec(), LineEnd::CrLf));
    }

    #[test]
    fn a_bare_cr_never_ends_a_line() {
        let got = lines(b"a\rb\n", 100, Framing::Lf, true);
        assert_eq!(got, vec![(b"a\rb\n".to_vec(), LineEnd::Lf)]);
    }

    #[test]
    fn skipping_in_strict_mode_passes_bare_lf() {
        let mut input = vec![b'x'; 20];
        input.extend_from_slice(b"\nyy\r\nok\r\n");
        let got = lines(&input, 10, Framing::Strict, true);
        assert_eq!(got[0].1, LineEnd::TooLong);
        assert_eq!(got[1], (b"ok\r\n".to_vec(), LineEnd::CrLf));
    }
}
