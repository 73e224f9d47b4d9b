//! Header decoding: the one place that turns a message's header block into
//! decoded text (folding undone, RFC 2047 encoded words decoded by
//! mailparse). The writer's log line, the `--events` JSON and the read
//! commands all use it. Pure: bytes in, strings out; never fails, because a
//! header block that is not valid MIME still yields what could be read.

use mailparse::{MailHeader, MailHeaderMap};

/// The decoded headers that the log line, the events and `list` need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `Subject`, decoded from RFC 2047; empty when absent.
    pub subject: String,
    /// `Message-ID` as written (angle brackets kept), trimmed; empty when absent.
    pub message_id: String,
    /// The `From`, `To`, `Cc` and `Date` headers, decoded; empty when absent.
    pub from: String,
    pub to: String,
    pub cc: String,
    pub date: String,
    /// The envelope sender from `Return-Path`, without angle brackets
    /// (`Some("")` for the null sender `<>`), `None` when absent.
    pub return_path: Option<String>,
    /// The envelope recipients from every `Delivered-To`, without angle
    /// brackets (older files wrote them with brackets; both are read).
    pub delivered_to: Vec<String>,
    /// What mailsink's `Received` header says about the session.
    pub received: Received,
}

/// The fields of the first `Received` header that carries an `id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    pub id: Option<String>,
    pub helo: Option<String>,
    pub peer: Option<String>,
    /// The TLS version from `(using TLSv1.3 with cipher ...)`.
    pub tls: Option<String>,
}

impl Summary {
    /// Reads the header block at the start of `raw` (the whole message or
    /// just its start: it stops at the first blank line).
    pub fn parse(raw: &[u8]) -> Summary {
        let (headers, _) = headers(raw);
        let first = |name: &str| headers.get_first_value(name).unwrap_or_default();
        Summary {
            subject: first("Subject"),
            message_id: first("Message-ID").trim().to_string(),
            from: first("From"),
            to: first("To"),
            cc: first("Cc"),
            date: first("Date").trim().to_string(),
            return_path: headers
                .get_first_value("Return-Path")
                .map(|v| unbracket(&v).to_string()),
            delivered_to: headers
                .get_all_values("Delivered-To")
                .iter()
                .map(|v| unbracket(v).to_string())
                .collect(),
            // Decoded one at a time: the first with an id is usually the first.
            received: headers
                .get_all_headers("Received")
                .into_iter()
                .map(|h| Received::parse(&h.get_value()))
                .find(|r| r.id.is_some())
                .unwrap_or_default(),
        }
    }
}

/// Subject and Message-ID only: what the writer's log line needs.
pub fn subject_and_message_id(raw: &[u8]) -> (String, String) {
    let (headers, _) = headers(raw);
    (
        headers.get_first_value("Subject").unwrap_or_default(),
        headers
            .get_first_value("Message-ID")
            .unwrap_or_default()
            .trim()
            .to_string(),
    )
}

impl Received {
    /// Parses `from HELO (PEER) [(using TLS with cipher X)] by HOST
    /// (mailsink) with PROTO id ID [for <rcpt>]; DATE`, unfolded.
    fn parse(value: &str) -> Received {
        let words: Vec<&str> = value.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .map(|w| w.trim_end_matches(';').to_string())
        };
        let peer = after("from").and_then(|_| {
            words
                .get(2)
                .filter(|w| w.starts_with('(') && w.ends_with(')'))
                .map(|w| w.trim_matches(['(', ')']).to_string())
        });
        Received {
            id: after("id").filter(|id| !id.is_empty()),
            helo: words
                .first()
                .filter(|w| **w == "from")
                .and_then(|_| words.get(1))
                .map(|w| w.to_string()),
            peer,
            tls: after("(using"),
        }
    }
}

/// The bare addresses of an address header (`A <a@x>, b@y` → `a@x`,
/// `b@y`); a value that does not parse is returned trimmed, whole.
pub fn addresses(value: &str) -> Vec<String> {
    match mailparse::addrparse(value) {
        Ok(list) => list
            .into_inner()
            .into_iter()
            .flat_map(|a| match a {
                mailparse::MailAddr::Single(s) => vec![s.addr],
                mailparse::MailAddr::Group(g) => g.addrs.into_iter().map(|s| s.addr).collect(),
            })
            .collect(),
        Err(_) if value.trim().is_empty() => Vec::new(),
        Err(_) => vec![value.trim().to_string()],
    }
}

/// `<a@x>` → `a@x`; `a@x` stays; `<>` → ``.
fn unbracket(value: &str) -> &str {
    let v = value.trim();
    v.strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(v)
}

/// The headers at the start of `raw` and where the body starts. Unlike
/// `mailparse::parse_headers` it never fails: a line it cannot read (a
/// continuation with no header before it, a lone CR) is skipped, and a
/// line with no colon ends the header block.
pub fn headers(raw: &[u8]) -> (Vec<MailHeader<'_>>, usize) {
    let mut out = Vec::new();
    let mut ix = 0;
    while ix < raw.len() {
        match raw[ix..] {
            [b'\n', ..] => return (out, ix + 1),
            [b'\r', b'\n', ..] => return (out, ix + 2),
            _ => {}
        }
        // A line with no colon that is not a continuation is not a
        // header: the body starts there (as mail readers take it).
        let line = &raw[ix..raw[ix..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| ix + p)];
        if !line.contains(&b':') && !line.starts_with(b" ") && !line.starts_with(b"\t") {
            return (out, ix);
        }
        match mailparse::parse_header(&raw[ix..]) {
            Ok((header, used)) if used > 0 => {
                out.push(header);
                ix += used;
            }
            _ => {
                // Skip the unreadable line.
                ix = raw[ix..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(raw.len(), |p| ix + p + 1);
            }
        }
    }
    (out, raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &[u8] = b"Return-Path: <a@x.test>\n\
        Delivered-To: b@y.test\n\
        Delivered-To: <c@y.test>\n\
        Received: from client.test (127.0.0.1)\n\
        \tby mx.test (mailsink) with ESMTP id 6932A1B2C0DE000001\n\
        \tfor <b@y.test>;\n\
        \tSat, 05 Dec 2026 20:00:00 +0000\n\
        Subject: =?UTF-8?B?SGVsbG8g4pyT?= and\n =?ISO-8859-1?Q?caf=E9?=\n\
        Message-ID:  <m1@x.test> \n\
        From: =?utf-8?q?J=C3=BCrgen?= <j@x.test>\n\
        \n\
        Subject: not a header\n";

    #[test]
    fn decodes_what_the_log_and_events_need() {
        let s = Summary::parse(STORED);
        assert_eq!(s.subject, "Hello ✓ and café");
        assert_eq!(s.message_id, "<m1@x.test>");
        assert_eq!(s.from, "Jürgen <j@x.test>");
        assert_eq!(s.return_path.as_deref(), Some("a@x.test"));
        assert_eq!(s.delivered_to, ["b@y.test", "c@y.test"]);
        assert_eq!(s.received.id.as_deref(), Some("6932A1B2C0DE000001"));
        assert_eq!(s.received.helo.as_deref(), Some("client.test"));
        assert_eq!(s.received.peer.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.received.tls, None);
        assert_eq!(
            subject_and_message_id(STORED),
            (s.subject.clone(), s.message_id.clone())
        );
    }

    #[test]
    fn tls_null_sender_and_missing_headers() {
        let s = Summary::parse(
            b"Return-Path: <>\nReceived: from h (::1) (using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256) by m (mailsink) with ESMTPS id Q1; date\n\nbody",
        );
        assert_eq!(s.return_path.as_deref(), Some(""));
        assert_eq!(s.received.tls.as_deref(), Some("TLSv1.3"));
        assert_eq!(s.received.peer.as_deref(), Some("::1"));
        assert_eq!(s.received.id.as_deref(), Some("Q1"));
        assert_eq!((s.subject.as_str(), s.message_id.as_str()), ("", ""));
        assert_eq!(Summary::parse(b""), Summary::default());
    }

    #[test]
    fn broken_headers_yield_what_could_be_read() {
        // A leading continuation line and a lone CR make
        // mailparse::parse_headers fail; the rest is still read.
        let raw = b" stray continuation\nSubject: kept\nX: a\rb\nMessage-ID: <k@x>\n\nbody";
        let (h, body) = headers(raw);
        assert!(h.len() >= 2);
        assert_eq!(&raw[body..], b"body");
        let (subject, id) = subject_and_message_id(raw);
        assert_eq!((subject.as_str(), id.as_str()), ("kept", "<k@x>"));
        // CRLF header blocks too.
        let (h, body) = headers(b"Subject: a\r\n\r\nb");
        assert_eq!((h.len(), body), (1, 14));
        let (h, body) = headers(b"Subject: a\nno colon here\nX: y\n\n");
        assert_eq!((h.len(), body), (1, 11));
    }
}
