//! CHUNKING (RFC 3030): the `BDAT` argument, and the message text of a
//! transaction's chunks: counted raw octets, no dot-unstuffing and no
//! line-ending mode, CRLF → LF as DATA stores it (a CRLF split between two
//! chunks or two reads included), and the size cap, past which the octets
//! are counted but not kept. Pure: the connection loop reads the octets.

use super::command::CommandError;

/// `BDAT` SP chunk-size [ SP "LAST" ]: the size (1 to 20 digits; past 64
/// bits it saturates, which is over any limit) and whether it is the last.
pub(super) fn parse_bdat(arg: &str) -> Result<(u64, bool), CommandError> {
    let (size, last) = match arg.split_once(' ') {
        None => (arg, false),
        Some((size, marker)) if marker.eq_ignore_ascii_case("LAST") => (size, true),
        Some(_) => return Err(CommandError::BadChunkSize),
    };
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::BadChunkSize);
    }
    Ok((size.parse().unwrap_or(u64::MAX), last))
}

/// The message text of one BDAT transaction so far.
#[derive(Debug)]
pub(super) struct Chunks {
    /// Octets announced by the BDAT commands so far (RFC 1870 counting:
    /// every octet, CRLF pairs included).
    size: u64,
    max: u64,
    /// The last octet fed was a CR, not yet written: an LF may follow.
    cr: bool,
}

impl Chunks {
    pub(super) fn new(max: u64) -> Chunks {
        Chunks {
            size: 0,
            max,
            cr: false,
        }
    }

    /// A BDAT command announced `n` more octets.
    pub(super) fn announce(&mut self, n: u64) {
        self.size = self.size.saturating_add(n);
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    pub(super) fn too_big(&self) -> bool {
        self.size > self.max
    }

    /// Takes octets of a chunk; what is stored goes to `out` (CRLF → LF),
    /// unless the message is over the cap.
    pub(super) fn feed(&mut self, octets: &[u8], out: &mut Vec<u8>) {
        if self.too_big() {
            return;
        }
        // Runs up to and including each CR are copied whole, not octet by
        // octet: a CR is held back until the next octet shows whether it
        // starts a CRLF.
        for run in octets.split_inclusive(|&b| b == b'\r') {
            if std::mem::take(&mut self.cr) && run.first() != Some(&b'\n') {
                out.push(b'\r'); // a bare CR is content
            }
            match run.split_last() {
                Some((b'\r', text)) => {
                    out.extend_from_slice(text);
                    self.cr = true;
                }
                _ => out.extend_from_slice(run),
            }
        }
    }

    /// The end of the last chunk: a CR held back is content after all.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.cr) && !self.too_big() {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdat_argument() {
        assert_eq!(parse_bdat("10"), Ok((10, false)));
        assert_eq!(parse_bdat("0 LAST"), Ok((0, true)));
        assert_eq!(parse_bdat("7 last"), Ok((7, true)));
        assert_eq!(parse_bdat("00000000000000000001"), Ok((1, false)));
        assert_eq!(parse_bdat("99999999999999999999"), Ok((u64::MAX, false)));
        for bad in [
            "",
            "LAST",
            "x",
            "-1",
            "1x",
            "+5",
            "1 2",
            "1 LAST x",
            "1  LAST",
            "1 FIRST",
            "123456789012345678901",
        ] {
            assert_eq!(parse_bdat(bad), Err(CommandError::BadChunkSize), "{bad:?}");
        }
    }

    /// Feeds `pieces` as consecutive chunk octets, then finishes.
    fn stored(pieces: &[&[u8]], max: u64) -> (Vec<u8>, bool) {
        let mut chunks = Chunks::new(max);
        let mut out = Vec::new();
        for p in pieces {
            chunks.announce(p.len() as u64);
            chunks.feed(p, &mut out);
        }
        chunks.finish(&mut out);
        (out, chunks.too_big())
    }

    #[test]
    fn octets_are_raw_but_crlf_becomes_lf() {
        // No dot-unstuffing and no end-of-data rule: "." lines are content.
        let (out, big) = stored(&[b"a\r\n..b\r\n.\r\nQUIT\r\n"], 100);
        assert_eq!(out, b"a\n..b\n.\nQUIT\n");
        assert!(!big);
        // Bare CR and bare LF stay as sent; a CR at the very end too.
        assert_eq!(stored(&[b"a\rb\nc\r"], 100).0, b"a\rb\nc\r");
    }

    #[test]
    fn a_crlf_split_between_chunks_is_one_line_end() {
        assert_eq!(stored(&[b"a\r", b"\nb"], 100).0, b"a\nb");
        assert_eq!(stored(&[b"a\r", b"", b"\nb"], 100).0, b"a\nb");
        assert_eq!(stored(&[b"a\r", b"\rb"], 100).0, b"a\r\rb");
        assert_eq!(stored(&[b"a\r", b"\r", b"\n"], 100).0, b"a\r\n");
    }

    #[test]
    fn every_split_stores_the_same() {
        let input = b"\r\ra\r\n\r\r\nb\rc\n\r";
        let whole = b"\r\ra\n\r\nb\rc\n\r";
        assert_eq!(stored(&[input], 100).0, whole);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let pieces = [&input[..i], &input[i..j], &input[j..]];
                assert_eq!(stored(&pieces, 100).0, whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn over_the_cap_is_counted_not_kept() {
        let (out, big) = stored(&[b"0123456789", b"x"], 10);
        assert!(big);
        assert_eq!(out, b"0123456789"); // the chunk within the cap was passed on
        let (_, big) = stored(&[b"0123456789"], 10);
        assert!(!big); // exactly the limit is allowed
    }

    #[test]
    fn announced_sizes_saturate() {
        let mut chunks = Chunks::new(u64::MAX - 1);
        chunks.announce(u64::MAX);
        chunks.announce(5);
        assert!(chunks.too_big());
    }
}
