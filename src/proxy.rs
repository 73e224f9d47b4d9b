//! The PROXY protocol (`--proxy-from`): what a version 1 (text) or version 2
//! (binary) header, detected by its first byte, means for the session, and
//! the CIDR ranges whose peers must send one. The `ppp` crate parses the
//! headers; this module frames them over any `BufRead` without reading past
//! the header, and decides. No socket, file, thread or clock.

use core::net::{IpAddr, SocketAddr};
use ppp::{v1, v2};
use std::io::{self, BufRead, ErrorKind, Read};
use std::{error, fmt, str::FromStr};

/// The longest version 1 header, CRLF included (the protocol's own limit).
const V1_MAX: usize = 107;
/// A version 2 header's fixed part: signature, command, family, length.
const V2_FIXED: usize = 16;
/// The longest version 2 header accepted: the addresses of any family
/// (216 bytes for UNIX) and room for TLVs, which are ignored.
const V2_MAX: usize = 1024;
/// The version 2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Who the session is talking to, according to the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `PROXY TCP4/TCP6` or a version 2 `PROXY` over IPv4/IPv6: the client
    /// the proxy is relaying.
    Client(SocketAddr),
    /// Version 2 `LOCAL` (the proxy's own health checks): the socket's peer.
    Local,
    /// `PROXY UNKNOWN`, or version 2 `PROXY` with an unspecified or UNIX
    /// family: no address to use, so the socket's peer (as the protocol says).
    Unknown,
}

/// Why no usable header arrived. Every variant closes the connection with
/// nothing sent.
#[derive(Debug)]
pub enum ProxyError {
    /// The first byte cannot start a header (e.g. a plain `EHLO`).
    Missing,
    /// The connection ended inside the header.
    Truncated,
    /// Longer than `V1_MAX`, or than `V2_MAX` for version 2.
    TooLong,
    /// Not a valid header (what `ppp` or this module found wrong).
    Malformed(String),
    /// The read failed, e.g. the `--timeout` deadline passed.
    Io(io::Error),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Missing => f.write_str("no PROXY header"),
            ProxyError::Truncated => f.write_str("connection closed inside the PROXY header"),
            ProxyError::TooLong => f.write_str("PROXY header too long"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
            ProxyError::Io(e) if e.kind() == ErrorKind::TimedOut => {
                f.write_str("no PROXY header in time")
            }
            ProxyError::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

impl error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn error::Error + 'static)> {
        match self {
            ProxyError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ProxyError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            ErrorKind::UnexpectedEof => ProxyError::Truncated,
            _ => ProxyError::Io(e),
        }
    }
}

/// Reads one header from `reader` and says what it means. Reads exactly the
/// header's bytes: whatever the client sent after it stays in the reader
/// for the session.
pub fn read_header<R: BufRead>(reader: &mut R) -> Result<Origin, ProxyError> {
    let first = match reader.fill_buf()?.first() {
        Some(b) => *b,
        None => return Err(ProxyError::Truncated),
    };
    let mut header = Vec::with_capacity(V1_MAX);
    match first {
        b'\r' => {
            header.resize(V2_FIXED, 0);
            reader.read_exact(&mut header)?;
            header.resize(v2_length(&header)?, 0);
            reader.read_exact(&mut header[V2_FIXED..])?;
        }
        b'P' => {
            let n = reader.take(V1_MAX as u64).read_until(b'\n', &mut header)?;
            if header.last() != Some(&b'\n') {
                return Err(if n == V1_MAX {
                    ProxyError::TooLong
                } else {
                    ProxyError::Truncated
                });
            }
        }
        _ => return Err(ProxyError::Missing),
    }
    interpret(&header)
}

/// The whole length of a version 2 header, from its fixed part.
fn v2_length(fixed: &[u8]) -> Result<usize, ProxyError> {
    if fixed.len() < V2_FIXED {
        return Err(ProxyError::Truncated);
    }
    if !fixed.starts_with(V2_SIGNATURE) {
        return Err(ProxyError::Malformed("bad version 2 signature".into()));
    }
    let length = V2_FIXED + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if length > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    Ok(length)
}

/// What one complete header (and nothing after it) means.
fn interpret(header: &[u8]) -> Result<Origin, ProxyError> {
    if header.starts_with(b"\r") {
        interpret_v2(header)
    } else {
        interpret_v1(header)
    }
}

fn interpret_v1(header: &[u8]) -> Result<Origin, ProxyError> {
    let parsed = match v1::Header::try_from(header) {
        Ok(h) => h,
        Err(v1::BinaryParseError::Parse(
            v1::ParseError::HeaderTooLong, // ppp: no CR within the limit
        )) => return Err(ProxyError::TooLong),
        Err(e) if ppp::PartialResult::is_incomplete(&e) => return Err(ProxyError::Truncated),
        Err(e) => return Err(ProxyError::Malformed(lowercase(&e))),
    };
    if parsed.header.len() != header.len() {
        return Err(ProxyError::Malformed("bytes after the CRLF".into()));
    }
    Ok(match parsed.addresses {
        v1::Addresses::Tcp4(a) => {
            Origin::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v1::Addresses::Tcp6(a) => {
            Origin::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        v1::Addresses::Unknown => Origin::Unknown,
    })
}

fn interpret_v2(header: &[u8]) -> Result<Origin, ProxyError> {
    let parsed = match v2::Header::try_from(header) {
        Ok(h) => h,
        Err(e) if ppp::PartialResult::is_incomplete(&e) => return Err(ProxyError::Truncated),
        Err(e) => return Err(ProxyError::Malformed(lowercase(&e))),
    };
    if parsed.header.len() != header.len() {
        return Err(ProxyError::Malformed(
            "bytes after the announced length".into(),
        ));
    }
    if parsed.command == v2::Command::Local {
        return Ok(Origin::Local); // addresses, if any, are the proxy's own
    }
    if parsed.protocol == v2::Protocol::Datagram {
        return Err(ProxyError::Malformed("a datagram source for SMTP".into()));
    }
    Ok(match parsed.addresses {
        v2::Addresses::IPv4(a) => {
            Origin::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v2::Addresses::IPv6(a) => {
            Origin::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Origin::Unknown,
    })
}

/// ppp's messages start upper-case and end with a full stop.
fn lowercase(e: &dyn fmt::Display) -> String {
    let text = e.to_string();
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An address range, `192.0.2.0/24` or `2001:db8::/32`; a bare address is
/// a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range. An IPv4 peer seen as `::ffff:a.b.c.d`
    /// matches IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| "not an IP address".to_string())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_SRC: &str = "192.0.2.7:40001";

    /// A version 2 header from raw fields, built by ppp (raw, so that
    /// malformed ones can be built too): `command` 0 LOCAL, 1 PROXY;
    /// `family` e.g. 0x11 TCP4.
    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        ppp::v2::Builder::new(0x20 | command, family)
            .write_payload(addresses)
            .and_then(ppp::v2::Builder::build)
            .unwrap()
    }

    fn v2_tcp4() -> Vec<u8> {
        // 192.0.2.7:40001 -> 198.51.100.1:25
        v2(1, 0x11, &[192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x41, 0, 25])
    }

    fn read(bytes: &[u8]) -> (Result<Origin, ProxyError>, Vec<u8>) {
        let mut r = io::BufReader::with_capacity(64, bytes);
        let origin = read_header(&mut r);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        (origin, rest)
    }

    fn client(s: &str) -> Origin {
        Origin::Client(s.parse().unwrap())
    }

    #[test]
    fn v1_tcp4_every_field_and_the_rest_kept() {
        let (o, rest) = read(b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25\r\nEHLO a\r\n");
        assert_eq!(o.unwrap(), client(V4_SRC));
        assert_eq!(rest, b"EHLO a\r\n");
    }

    #[test]
    fn v1_tcp6() {
        let (o, rest) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 25\r\nQUIT\r\n");
        assert_eq!(o.unwrap(), client("[2001:db8::7]:65535"));
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn v1_unknown_uses_the_socket_peer() {
        let (o, rest) = read(b"PROXY UNKNOWN\r\nEHLO a\r\n");
        assert_eq!(o.unwrap(), Origin::Unknown);
        assert_eq!(rest, b"EHLO a\r\n");
        let (o, _) = read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!(o.unwrap(), Origin::Unknown);
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 40001\r\n"[..], // a port short
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",     // family mismatch
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",   // port range
            b"PROXY TCP4 192.0.2.7 198.51.100.1 040001 25\r\n",  // leading zero
            b"PROXY TCP5 192.0.2.7 198.51.100.1 1 25\r\n",       // protocol
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",         // bare LF
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",      // two spaces
            b"PROXY\r\n",
            b"PROXY \xff\r\n",
            b"PING\r\n",
        ] {
            let (o, _) = read(bad);
            assert!(
                matches!(o, Err(ProxyError::Malformed(_))),
                "{}: {o:?}",
                bad.escape_ascii()
            );
        }
    }

    #[test]
    fn v1_truncated_and_oversized() {
        let (o, _) = read(b"PROXY TCP4 192.0.2.7 198.51");
        assert!(matches!(o, Err(ProxyError::Truncated)), "{o:?}");
        let (o, _) = read(b"");
        assert!(matches!(o, Err(ProxyError::Truncated)), "{o:?}");
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        let (o, rest) = read(long.as_bytes());
        assert!(matches!(o, Err(ProxyError::TooLong)), "{o:?}");
        assert!(!rest.is_empty()); // stopped at the limit, not at the end
        // Exactly at the limit is fine.
        let edge = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(edge.len(), V1_MAX);
        assert_eq!(read(edge.as_bytes()).0.unwrap(), Origin::Unknown);
    }

    #[test]
    fn not_a_header() {
        let (o, rest) = read(b"EHLO a\r\n");
        assert!(matches!(o, Err(ProxyError::Missing)), "{o:?}");
        assert_eq!(rest, b"EHLO a\r\n"); // nothing consumed
    }

    #[test]
    fn v2_tcp4_every_field_and_the_rest_kept() {
        let mut bytes = v2_tcp4();
        bytes.extend_from_slice(b"EHLO a\r\n");
        let (o, rest) = read(&bytes);
        assert_eq!(o.unwrap(), client(V4_SRC));
        assert_eq!(rest, b"EHLO a\r\n");
    }

    #[test]
    fn v2_tcp6() {
        let addresses: (SocketAddr, SocketAddr) = (
            "[2001:db8::7]:65535".parse().unwrap(),
            "[2001:db8::1]:25".parse().unwrap(),
        );
        let header = ppp::v2::Builder::with_addresses(0x21, v2::Protocol::Stream, addresses)
            .build()
            .unwrap();
        let (o, rest) = read(&header);
        assert_eq!(o.unwrap(), client("[2001:db8::7]:65535"));
        assert!(rest.is_empty());
    }

    #[test]
    fn v2_local_uses_the_socket_peer() {
        let (o, rest) = read(&[v2(0, 0x00, &[]), b"EHLO c\r\n".to_vec()].concat());
        assert_eq!(o.unwrap(), Origin::Local);
        assert_eq!(rest, b"EHLO c\r\n");
        // LOCAL with addresses: still the socket's peer.
        let mut local = v2_tcp4();
        local[12] = 0x20;
        assert_eq!(read(&local).0.unwrap(), Origin::Local);
    }

    #[test]
    fn v2_unspecified_and_unix_are_unknown() {
        assert_eq!(read(&v2(1, 0x00, &[])).0.unwrap(), Origin::Unknown);
        assert_eq!(read(&v2(1, 0x31, &[0; 216])).0.unwrap(), Origin::Unknown);
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut a = vec![192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x41, 0, 25];
        a.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]); // PP2_TYPE_NOOP
        let (o, rest) = read(&[v2(1, 0x11, &a), b"X".to_vec()].concat());
        assert_eq!(o.unwrap(), client(V4_SRC));
        assert_eq!(rest, b"X");
    }

    #[test]
    fn v2_malformed() {
        let mut bad_sig = v2_tcp4();
        bad_sig[5] = b'X';
        let mut bad_version = v2_tcp4();
        bad_version[12] = 0x11;
        let mut bad_command = v2_tcp4();
        bad_command[12] = 0x22;
        let mut bad_family = v2_tcp4();
        bad_family[13] = 0x41;
        let datagram = v2(1, 0x12, &[192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 25]);
        let short_addresses = v2(1, 0x11, &[192, 0, 2, 7]);
        for bad in [
            bad_sig,
            bad_version,
            bad_command,
            bad_family,
            datagram,
            short_addresses,
        ] {
            let (o, _) = read(&bad);
            assert!(
                matches!(o, Err(ProxyError::Malformed(_))),
                "{}: {o:?}",
                bad.escape_ascii()
            );
        }
    }

    #[test]
    fn v2_truncated_and_oversized() {
        let whole = v2_tcp4();
        for cut in [1, 5, 12, 15, 16, whole.len() - 1] {
            let (o, _) = read(&whole[..cut]);
            assert!(matches!(o, Err(ProxyError::Truncated)), "{cut}: {o:?}");
        }
        let big = v2(1, 0x11, &vec![0; V2_MAX - V2_FIXED + 1]);
        let (o, rest) = read(&big);
        assert!(matches!(o, Err(ProxyError::TooLong)), "{o:?}");
        assert_eq!(rest.len(), big.len() - V2_FIXED); // refused from the length field
        let most = v2(1, 0x11, &[&whole[16..], &vec![0; V2_MAX - 28][..]].concat());
        assert_eq!(most.len(), V2_MAX);
        assert_eq!(read(&most).0.unwrap(), client(V4_SRC));
    }

    #[test]
    fn interpret_refuses_trailing_bytes() {
        let mut h = v2_tcp4();
        h.push(b'X');
        assert!(matches!(interpret(&h), Err(ProxyError::Malformed(_))));
        let h = b"PROXY UNKNOWN\r\nX";
        assert!(matches!(interpret(h), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn errors_read_as_sentences() {
        let (o, _) = read(b"PROXY TCP5 a b 1 2\r\n");
        assert_eq!(
            o.unwrap_err().to_string(),
            "malformed PROXY header: header has an invalid protocol"
        );
        let late = ProxyError::from(io::Error::from(ErrorKind::TimedOut));
        assert_eq!(late.to_string(), "no PROXY header in time");
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.255.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let c: Cidr = "10.1.2.128/25".parse().unwrap();
        assert!(c.contains("10.1.2.200".parse().unwrap()));
        assert!(!c.contains("10.1.2.127".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "x/8",
            "1.2.3.4/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
