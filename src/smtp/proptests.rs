//! Property tests of the protocol core over arbitrary bytes cut into
//! arbitrary reads: nothing panics, every reply is well-formed wire text,
//! how the input is cut changes nothing (DATA refused with input pending
//! aside, which depends on it by design), and DATA stores exactly what the
//! line-ending rules say, smuggled dots included.

use super::line::{Framing, LineEnd, read_line};
use super::path::{parse_mail, parse_rcpt};
use super::session::{Limits, Session};
use super::transcript::{Chunked, Outcome, limits, run, well_formed};
use proptest::prelude::*;
use std::io::BufReader;

const TX_CRLF: &[u8] = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n";
const TX_LF: &[u8] = b"EHLO c\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\nDATA\n";

/// Pieces SMTP-like input is made of: commands, line ends, dots, NULs,
/// long runs of one byte, and raw bytes.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let commands: Vec<&'static [u8]> = vec![
        b"EHLO c\r\n",
        b"HELO c\r\n",
        b"MAIL FROM:<a@x>\r\n",
        b"MAIL FROM:<> SIZE=10 BODY=8BITMIME\r\n",
        b"MAIL FROM:<a@x> SIZE=5000\r\n",
        b"RCPT TO:<b@y>\r\n",
        b"RCPT TO:<c@elsewhere>\r\n",
        b"RCPT TO:<postmaster>\r\n",
        b"DATA\r\n",
        b"DATA\n",
        b".\r\n",
        b"..\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
        b"BDAT 1 LAST\r\n",
        b"BDAT 5\r\n",
        b"BDAT 0 LAST\r\n",
        b"bdat 3 last\r\n",
        b"BDAT 700\r\n",
        b"BDAT x\r\n",
        b"GET / HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"VRFY a\r\n",
        b"HELP\r\n",
        b"STARTTLS\r\n",
    ];
    let bits: Vec<&'static [u8]> = vec![
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"\0",
        b"\r\n.\r\n",
        b"\n.\n",
        b"\r.\r",
        b"x",
        b"\xff",
        b" ",
        "\u{e9}".as_bytes(),
    ];
    prop_oneof![
        4 => prop::sample::select(commands).prop_map(<[u8]>::to_vec),
        4 => prop::sample::select(bits).prop_map(<[u8]>::to_vec),
        1 => (1usize..2000, prop::sample::select(vec![b'x', b'.', b'\r', b'\n'])).prop_map(|(n, b)| vec![b; n]),
        2 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn smtpish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(fragment(), 0..50).prop_map(|f| f.concat())
}

/// Read sizes, used in turn; empty: as much as the buffer holds.
fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..300, 0..6)
}

fn limits_with_domain() -> Limits {
    Limits {
        domains: vec!["y".into()],
        ..limits()
    }
}

fn talk(input: &[u8], chunks: &[usize], loopback: bool, cap: usize) -> Outcome {
    let mut s = Session::new("mx.test", limits_with_domain(), loopback);
    run(&mut s, input, chunks, cap)
}

/// What a strict session stores for `text` after DATA: up to the first
/// CRLF "." CRLF (counting the CRLF of the DATA line), lines end only at
/// CRLF, one leading dot is removed, CRLF becomes LF.
fn strict_model(text: &[u8]) -> Option<Vec<u8>> {
    let s = [b"\r\n", text].concat();
    let end = s.windows(5).position(|w| w == b"\r\n.\r\n")?;
    let mut out = Vec::new();
    let mut rest = &s[2..end + 2];
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..i];
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.push(b'\n');
        rest = &rest[i + 2..];
    }
    Some(out)
}

/// The same for a bare-LF session: lines end at LF, a CR just before it is
/// dropped, a line that is exactly "." ends the text.
fn lf_model(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"." {
            return Some(out);
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.push(b'\n');
        rest = &rest[i + 1..];
    }
    None
}

/// Every piece `read_line` frames from `input`, and what is left at EOF.
fn frame(
    input: &[u8],
    sizes: &[usize],
    capacity: usize,
    max: usize,
    framing: Framing,
    skip: bool,
) -> (Vec<(Vec<u8>, LineEnd)>, Vec<u8>) {
    let mut reader = BufReader::with_capacity(capacity, Chunked::new(input, sizes));
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    // Each call consumes at least one byte, so this ends.
    for _ in 0..=input.len() {
        match read_line(&mut reader, &mut buf, max, framing, skip).unwrap() {
            LineEnd::Eof => return (out, buf),
            end => out.push((buf.clone(), end)),
        }
    }
    panic!("read_line made no progress");
}

fn framing() -> impl Strategy<Value = Framing> {
    prop::sample::select(vec![Framing::Strict, Framing::Lf, Framing::Unknown])
}

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"\r\n.xy\0".to_vec()), 0..300)
}

/// Path-like text: the characters the path grammar turns on, letters,
/// UTF-8 and whole fragments such as address literals.
fn path_text() -> impl Strategy<Value = String> {
    let bits = vec![
        "a",
        "B",
        "7",
        ".",
        "\"",
        "\\",
        "@",
        "[",
        "]",
        ":",
        ",",
        "<",
        ">",
        " ",
        "-",
        "_",
        "ö",
        "\u{1}",
        "IPv6:",
        "::1",
        "192.0.2.1",
        "!",
        "=",
        "postmaster",
    ];
    prop::collection::vec(prop::sample::select(bits), 0..16).prop_map(|b| b.concat())
}

/// Addresses built from RFC 5321 §4.1.2's productions: every one is valid.
fn valid_address() -> impl Strategy<Value = String> {
    let atom = "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~\\-ö]{0,5}";
    let dot_string = prop::collection::vec(atom, 1..4)
        .prop_map(|a| a.join("."))
        .prop_filter("not empty", |s| !s.is_empty());
    let quoted = "([ !#-\\[\\]-~ö]|\\\\[ -~]){0,8}".prop_map(|q| format!("\"{q}\""));
    let label = "[a-z0-9ü]([a-z0-9ü-]{0,4}[a-z0-9ü])?";
    let domain = prop::collection::vec(label, 1..4).prop_map(|l| l.join("."));
    let literal = prop_oneof![
        (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
            .prop_map(|(a, b, c, d)| format!("[{a}.{b}.{c}.{d}]")),
        any::<[u16; 8]>().prop_map(|g| { format!("[IPv6:{}]", core::net::Ipv6Addr::from(g)) }),
    ];
    (
        prop_oneof![dot_string, quoted],
        prop_oneof![3 => domain, 1 => literal],
    )
        .prop_map(|(local, domain)| format!("{local}@{domain}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_accepted_path_rerendered_parses_the_same(text in path_text(), params in "( SIZE=[0-9]{1,3}| BODY=8BITMIME| SMTPUTF8){0,3}") {
        let mail = format!("FROM:<{text}>{params}");
        if let Ok((path, p)) = parse_mail(&mail) {
            let again = format!("FROM:{path}{params}");
            let (path2, p2) = parse_mail(&again).expect("re-rendered path refused");
            prop_assert_eq!((path.as_str(), path.local(), path.domain(), p), (path2.as_str(), path2.local(), path2.domain(), p2));
        }
        let rcpt = format!("TO:<{text}>");
        if let Ok(path) = parse_rcpt(&rcpt) {
            let again = format!("TO:{path}");
            let path2 = parse_rcpt(&again).expect("re-rendered path refused");
            prop_assert_eq!((path.as_str(), path.local(), path.domain()), (path2.as_str(), path2.local(), path2.domain()));
        }
    }

    #[test]
    fn every_address_the_grammar_makes_is_accepted_as_sent(addr in valid_address(), route in prop::option::of("@[a-z]{1,3}(,@[a-z]{1,3}\\.[a-z]{1,2}){0,2}:")) {
        let route = route.unwrap_or_default();
        let mail = format!("FROM:<{route}{addr}>");
        let (path, _) = parse_mail(&mail).map_err(|e| TestCaseError::fail(format!("{addr}: {e:?}")))?;
        prop_assert_eq!(path.as_str(), addr.as_str());
        let rcpt = format!("TO:<{route}{addr}>");
        let path = parse_rcpt(&rcpt).map_err(|e| TestCaseError::fail(format!("{addr}: {e:?}")))?;
        prop_assert_eq!(path.as_str(), addr.as_str());
    }

    #[test]
    fn no_input_panics_the_session(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in chunks(),
        loopback: bool,
        cap in 2usize..9000,
    ) {
        let out = talk(&input, &sizes, loopback, cap);
        prop_assert_eq!(well_formed(&out.replies), Ok(()));
    }

    #[test]
    fn smtp_like_input_gets_well_formed_replies(
        input in smtpish(),
        sizes in chunks(),
        loopback: bool,
        cap in 2usize..9000,
    ) {
        let out = talk(&input, &sizes, loopback, cap);
        prop_assert_eq!(well_formed(&out.replies), Ok(()), "{}", out.replies);
        prop_assert_eq!(out.replies.matches("Ok: queued as ID").count(), out.stored.len());
        prop_assert!(out.stored.iter().all(|m| m.len() <= 1000), "a message over --max-size was kept");
    }

    #[test]
    fn how_the_input_is_cut_changes_nothing(
        input in smtpish(),
        a in chunks(),
        b in chunks(),
        loopback: bool,
        cap in 2usize..9000,
    ) {
        let x = talk(&input, &a, loopback, cap);
        let y = talk(&input, &b, loopback, cap);
        // DATA refused with input pending depends on the cut, by design.
        let refused = "554 5.5.0";
        if !x.replies.contains(refused) && !y.replies.contains(refused) {
            prop_assert_eq!(&x.replies, &y.replies);
            prop_assert_eq!(&x.stored, &y.stored);
            prop_assert_eq!(x.closed, y.closed);
        }
        // One byte a read: nothing is ever pending.
        let one = talk(&input, &[1], loopback, cap);
        prop_assert!(!one.replies.contains(refused));
    }

    #[test]
    fn strict_data_stores_what_the_crlf_rules_say(
        text in prop::collection::vec(prop::sample::select(b"\r\n.\0x".to_vec()), 0..400),
        sizes in chunks(),
        cap in 2usize..40,
        loopback: bool,
    ) {
        // The first line fixes the mode: strict, even for a loopback peer.
        let text = [&text[..], b"\r\n.\r\n"].concat();
        let out = talk(&[TX_CRLF, &text].concat(), &sizes, loopback, cap);
        let want = strict_model(&text).unwrap();
        prop_assert!(!out.stored.is_empty(), "{}", out.replies);
        prop_assert_eq!(out.stored[0].escape_ascii().to_string(), want.escape_ascii().to_string());
    }

    #[test]
    fn lf_data_stores_what_the_lf_rules_say(
        text in prop::collection::vec(prop::sample::select(b"\r\n.\0x".to_vec()), 0..400),
        sizes in chunks(),
        cap in 2usize..40,
    ) {
        let text = [&text[..], b"\n.\n"].concat();
        let out = talk(&[TX_LF, &text].concat(), &sizes, true, cap);
        let want = lf_model(&text).unwrap();
        prop_assert!(!out.stored.is_empty(), "{}", out.replies);
        prop_assert_eq!(out.stored[0].escape_ascii().to_string(), want.escape_ascii().to_string());
    }

    #[test]
    fn a_non_loopback_peer_never_gets_bare_lf_framing(
        text in prop::collection::vec(prop::sample::select(b"\r\n.\0x".to_vec()), 0..400),
        sizes in chunks(),
    ) {
        // LF-ended commands are not commands from a remote peer: nothing
        // can be stored, whatever follows.
        let input = [TX_LF, &text, b"\n.\n"].concat();
        let out = talk(&input, &sizes, false, 8192);
        prop_assert!(out.stored.is_empty());
        prop_assert!(!out.replies.contains("354"));
    }

    #[test]
    fn line_reader_loses_nothing_and_ignores_the_cut(
        input in line_bytes(),
        a in chunks(),
        b in chunks(),
        capacity in 1usize..64,
        max in 1usize..40,
        framing in framing(),
    ) {
        let (pieces, rest) = frame(&input, &a, capacity, max, framing, false);
        let joined: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.clone()).chain(rest.clone()).collect();
        prop_assert_eq!(&joined, &input);
        for (piece, end) in &pieces {
            prop_assert!(piece.len() <= max + 1);
            let (body, term) = piece.split_at(piece.len() - end.terminator_len(piece));
            match end {
                LineEnd::CrLf => prop_assert_eq!(term, b"\r\n"),
                LineEnd::Lf => {
                    prop_assert_ne!(framing, Framing::Strict);
                    prop_assert_eq!(term, b"\n");
                }
                LineEnd::Cut => prop_assert_eq!(piece.len(), max),
                other => prop_assert!(false, "{:?} without skipping", other),
            }
            // No line end inside a piece.
            prop_assert!(!body.windows(2).any(|w| w == b"\r\n"));
            if framing != Framing::Strict {
                prop_assert!(!body.contains(&b'\n'));
            }
        }
        prop_assert_eq!(frame(&input, &b, 64 - capacity + 1, max, framing, false), (pieces, rest));
    }

    #[test]
    fn skipping_long_lines_ignores_the_cut(
        input in line_bytes(),
        a in chunks(),
        b in chunks(),
        max in 1usize..40,
        framing in framing(),
    ) {
        let x = frame(&input, &a, 7, max, framing, true);
        prop_assert!(x.0.iter().all(|(p, end)| p.len() <= max + 1 && *end != LineEnd::Cut));
        prop_assert_eq!(frame(&input, &b, 61, max, framing, true), x);
    }
}

/// What a BDAT transaction stores: every octet, CRLF → LF.
fn chunk_model(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(b"\r\n") {
            i += 1; // the LF is pushed next
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn bdat_stores_every_octet_whatever_the_chunks_and_the_cut(
        text in prop::collection::vec(prop::sample::select(b"\r\n.\0xB".to_vec()), 0..900),
        cuts in prop::collection::vec(0usize..900, 0..5),
        sizes in chunks(),
        cap in 1usize..9000,
        loopback: bool,
    ) {
        // The text in chunks at the given cut points, pipelined in one stream.
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len()).collect();
        cuts.sort_unstable();
        cuts.push(text.len());
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n".to_vec();
        let mut from = 0;
        for (i, &to) in cuts.iter().enumerate() {
            let last = if i + 1 == cuts.len() { " LAST" } else { "" };
            input.extend_from_slice(format!("BDAT {}{last}\r\n", to - from).as_bytes());
            input.extend_from_slice(&text[from..to]);
            from = to;
        }
        input.extend_from_slice(b"QUIT\r\n");
        let out = talk(&input, &sizes, loopback, cap);
        prop_assert_eq!(well_formed(&out.replies), Ok(()));
        prop_assert_eq!(out.replies.matches(" octets received").count(), cuts.len() - 1);
        prop_assert!(out.replies.ends_with("221 2.0.0 Bye\r\n"), "{}", out.replies);
        prop_assert_eq!(out.stored.len(), 1);
        prop_assert_eq!(out.stored[0].escape_ascii().to_string(), chunk_model(&text).escape_ascii().to_string());
        // One byte a read gives the same.
        let one = talk(&input, &[1], loopback, 1);
        prop_assert_eq!((&one.replies, &one.stored), (&out.replies, &out.stored));
    }
}

#[test]
fn the_models_agree_with_the_spec_examples() {
    assert_eq!(chunk_model(b"a\r\nb\r\r\n\n.\r"), b"a\nb\r\n\n.\r");
    assert_eq!(strict_model(b"a\n.\nb\r\n.\r\n").unwrap(), b"a\n.\nb\n");
    assert_eq!(strict_model(b".\r\n").unwrap(), b"");
    assert_eq!(strict_model(b"..x\r\n.\r\n").unwrap(), b".x\n");
    assert_eq!(lf_model(b"a\r\n..b\n.\r\n").unwrap(), b"a\n.b\n");
    assert!(well_formed("250-a\r\n250 b\r\n").is_ok());
    assert!(well_formed("250-a\r\n251 b\r\n").is_err());
    assert!(well_formed("250 a\n").is_err());
    assert!(well_formed("354 2.0.0 x\r\n").is_err());
}
