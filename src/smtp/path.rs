//! The reverse and forward paths of MAIL and RCPT (RFC 5321 §4.1.2, with
//! RFC 6531's UTF-8) and their ESMTP parameters: one parser for both
//! commands. Pure and total; its errors choose the reply.
//!
//! ```text
//! Path          = "<" [ A-d-l ":" ] Mailbox ">"        source route dropped
//! A-d-l         = At-domain *( "," At-domain )         At-domain = "@" Domain
//! Mailbox       = Local-part "@" ( Domain / address-literal )
//! Local-part    = Dot-string / Quoted-string
//! Dot-string    = *( atext / "." ), not empty           empty atoms tolerated (Postfix)
//! Quoted-string = DQUOTE *( qtextSMTP / "\" %d32-126 ) DQUOTE
//! Domain        = sub-domain *( "." sub-domain )       sub-domain = Let-dig [Ldh-str]
//! address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" 1*dcontent ) "]"
//! ```
//! UTF-8 (any non-ASCII character) may stand wherever a letter may; whether
//! the client declared SMTPUTF8 is the session's business. Also as Postfix:
//! spaces after the colon, and a path without its angle brackets.

use super::command::CommandError;
use std::fmt;

/// A mailbox as sent (quotes included, source route dropped); empty for
/// the null reverse path `<>`; `Postmaster` with no domain at RCPT.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Path<'a> {
    address: &'a str,
    /// Where the local part ends (the `@`, or the end for no domain).
    local_end: usize,
}

impl<'a> Path<'a> {
    pub fn as_str(&self) -> &'a str {
        self.address
    }

    pub fn local(&self) -> &'a str {
        &self.address[..self.local_end]
    }

    /// The domain or address literal; empty for `<>` and `<Postmaster>`.
    pub fn domain(&self) -> &'a str {
        self.address.get(self.local_end + 1..).unwrap_or("")
    }
}

/// The path as it goes on the wire: `<address>`.
impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.address)
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub struct MailParams {
    /// RFC 1870 SIZE; a value too large for 64 bits is `u64::MAX` (it is
    /// over any limit all the same).
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
}

/// Which command the path belongs to: it picks the enhanced code of a bad
/// address and whether `<>` or `<Postmaster>` stand.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Role {
    Sender,
    Recipient,
}

impl Role {
    fn bad(self, why: &'static str) -> CommandError {
        let code = match self {
            Role::Sender => (5, 1, 7),
            Role::Recipient => (5, 1, 3),
        };
        CommandError::BadAddress(code, why)
    }
}

/// `FROM:<path> [params]`, the argument of MAIL.
pub(crate) fn parse_mail(rest: &str) -> Result<(Path<'_>, MailParams), CommandError> {
    let text = after_keyword(rest, "FROM:").ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
    let (path, params) = path(text, Role::Sender)?;
    Ok((path, mail_params(params)?))
}

/// `TO:<path> [params]`, the argument of RCPT (no parameter is offered for it).
pub(crate) fn parse_rcpt(rest: &str) -> Result<Path<'_>, CommandError> {
    let text = after_keyword(rest, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
    let (path, params) = path(text, Role::Recipient)?;
    if let Some(word) = params_of(params)?.first() {
        return Err(CommandError::UnknownParameter(word.0.to_string()));
    }
    Ok(path)
}

/// What follows `FROM:`/`TO:` (keyword case-insensitive), spaces skipped.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    let text = rest[keyword.len()..].trim_start_matches(' ');
    (head.eq_ignore_ascii_case(keyword) && !text.is_empty()).then_some(text)
}

/// Splits the path from the parameters that follow it.
fn path(text: &str, role: Role) -> Result<(Path<'_>, &str), CommandError> {
    let mut c = Cursor { s: text, i: 0 };
    let path = if c.eat(b'<') {
        let path = c.bracketed(role)?;
        if !c.eat(b'>') {
            return Err(c.fail(role, "missing > or malformed address"));
        }
        path
    } else {
        // Postfix accepts a bare address; it ends at the first space.
        let end = text.find(' ').unwrap_or(text.len());
        let mut bare = Cursor {
            s: &text[..end],
            i: 0,
        };
        let path = bare.mailbox(role)?;
        if bare.i != end {
            return Err(bare.fail(role, "malformed address"));
        }
        c.i = end;
        path
    };
    let rest = &text[c.i..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(role.bad("text after the address"));
    }
    Ok((path, rest))
}

/// A cursor over the argument; every method either consumes what its
/// production matched or fails with the reason, leaving `i` at the fault.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.s.as_bytes().get(self.i) == Some(&b);
        self.i += usize::from(hit);
        hit
    }

    /// Consumes characters while `ok` holds; returns how many bytes.
    fn take_while(&mut self, ok: impl Fn(char) -> bool) -> usize {
        let start = self.i;
        while let Some(ch) = self.peek().filter(|&ch| ok(ch)) {
            self.i += ch.len_utf8();
        }
        self.i - start
    }

    /// The error for a fault at the cursor; a control character there is
    /// named as such (SPEC: control characters in an address are `501`).
    fn fail(&self, role: Role, why: &'static str) -> CommandError {
        if self.peek().is_some_and(char::is_control) {
            role.bad("control character in address")
        } else {
            role.bad(why)
        }
    }

    /// Inside `<` `>`: the null path, a source route, then the mailbox.
    fn bracketed(&mut self, role: Role) -> Result<Path<'a>, CommandError> {
        if self.peek() == Some('>') {
            return match role {
                Role::Sender => Ok(Path {
                    address: "",
                    local_end: 0,
                }),
                Role::Recipient => Err(role.bad("empty recipient address")),
            };
        }
        if self.peek() == Some('@') {
            self.source_route(role)?;
        }
        self.mailbox(role)
    }

    /// RFC 5321 §4.1.2 A-d-l ":": accepted and dropped.
    fn source_route(&mut self, role: Role) -> Result<(), CommandError> {
        loop {
            if !self.eat(b'@') || !self.domain() {
                return Err(self.fail(role, "malformed source route"));
            }
            if self.eat(b':') {
                return Ok(());
            }
            if !self.eat(b',') {
                return Err(self.fail(role, "malformed source route"));
            }
        }
    }

    fn mailbox(&mut self, role: Role) -> Result<Path<'a>, CommandError> {
        let start = self.i;
        let local_ok = if self.peek() == Some('"') {
            self.quoted_string()
        } else {
            self.take_while(|ch| ch == '.' || is_atext(ch)) > 0
        };
        if !local_ok {
            return Err(self.fail(role, "malformed local part"));
        }
        let local_end = self.i;
        if !self.eat(b'@') {
            // RFC 5321 §4.5.1: <Postmaster> with no domain, any case.
            let local = &self.s[start..local_end];
            if role == Role::Recipient && local.eq_ignore_ascii_case("postmaster") {
                return Ok(Path {
                    address: local,
                    local_end: local.len(),
                });
            }
            return Err(self.fail(role, "address must be local-part@domain"));
        }
        let domain_ok = if self.peek() == Some('[') {
            self.address_literal()
        } else {
            self.domain()
        };
        if !domain_ok {
            return Err(self.fail(role, "malformed domain"));
        }
        Ok(Path {
            address: &self.s[start..self.i],
            local_end: local_end - start,
        })
    }

    /// DQUOTE *( qtextSMTP / quoted-pairSMTP ) DQUOTE.
    fn quoted_string(&mut self) -> bool {
        self.i += 1; // the opening quote
        while let Some(ch) = self.peek() {
            match ch {
                '"' => {
                    self.i += 1;
                    return true;
                }
                '\\' => {
                    self.i += 1;
                    match self.peek() {
                        Some(q) if q == ' ' || q.is_ascii_graphic() || !q.is_ascii() => {
                            self.i += q.len_utf8()
                        }
                        _ => return false,
                    }
                }
                ch if ch == ' ' || ch.is_ascii_graphic() || !ch.is_ascii() => {
                    if ch.is_control() {
                        return false;
                    }
                    self.i += ch.len_utf8()
                }
                _ => return false,
            }
        }
        false
    }

    /// sub-domain *( "." sub-domain ), each Let-dig [Ldh-str].
    fn domain(&mut self) -> bool {
        loop {
            let start = self.i;
            if self.take_while(|ch| ch == '-' || is_let_dig(ch)) == 0 {
                return false;
            }
            let label = &self.s[start..self.i];
            if label.starts_with('-') || label.ends_with('-') {
                self.i = start;
                return false;
            }
            if !self.eat(b'.') {
                return true;
            }
        }
    }

    /// "[" ( IPv4 / "IPv6:" IPv6 / Standardized-tag ":" 1*dcontent ) "]".
    fn address_literal(&mut self) -> bool {
        let Some(len) = self.s[self.i..].find(']') else {
            return false;
        };
        let inner = &self.s[self.i + 1..self.i + len];
        let ok = match inner.split_once(':') {
            None => is_ipv4(inner),
            Some((tag, v6)) if tag.eq_ignore_ascii_case("IPv6") => {
                v6.parse::<core::net::Ipv6Addr>().is_ok()
            }
            Some((tag, text)) => {
                is_ldh_str(tag)
                    && !text.is_empty()
                    && text.bytes().all(|b| matches!(b, 33..=90 | 94..=126))
            }
        };
        if ok {
            self.i += len + 1;
        }
        ok
    }
}

/// RFC 5322 atext, and any non-ASCII character (RFC 6531).
fn is_atext(ch: char) -> bool {
    ch.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(ch)
        || !ch.is_ascii() && !ch.is_control()
}

/// A letter or digit, or a non-ASCII character of a U-label (RFC 6531).
fn is_let_dig(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || !ch.is_ascii() && !ch.is_control()
}

fn is_ldh_str(tag: &str) -> bool {
    !tag.is_empty()
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && tag.as_bytes()[0].is_ascii_alphanumeric()
        && !tag.ends_with('-')
}

/// Snum "." Snum "." Snum "." Snum, each 1 to 3 digits up to 255.
fn is_ipv4(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            (1..=3).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// The parameters after a path: `keyword[=value]` words split at spaces,
/// each checked against RFC 5321 §4.1.2's syntax and given at most once.
fn params_of(text: &str) -> Result<Vec<(&str, Option<&str>)>, CommandError> {
    let mut words: Vec<(&str, Option<&str>)> = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if !is_keyword(key) || value.is_some_and(|v| !is_value(v)) {
            return Err(CommandError::Syntax("malformed parameter"));
        }
        if words.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            return Err(CommandError::Syntax("parameter given twice"));
        }
        words.push((key, value));
    }
    Ok(words)
}

/// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
fn is_keyword(key: &str) -> bool {
    key.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// esmtp-value = 1*(%d33-60 / %d62-126), and UTF-8 (RFC 6531).
fn is_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|ch| matches!(ch as u32, 33..=60 | 62..=126) || !ch.is_ascii() && !ch.is_control())
}

fn mail_params(text: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    for (key, value) in params_of(text)? {
        match (key.to_ascii_uppercase().as_str(), value) {
            // RFC 1870: 1*20DIGIT; a value past 64 bits is simply too big.
            ("SIZE", Some(v)) if v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
                params.size = Some(v.parse().unwrap_or(u64::MAX));
            }
            ("SIZE", _) => return Err(CommandError::BadSize),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => params.body = BodyType::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                params.body = BodyType::EightBitMime
            }
            ("BODY", _) => return Err(CommandError::Syntax("BODY=7BIT or BODY=8BITMIME")),
            ("SMTPUTF8", None) => params.smtputf8 = true,
            ("SMTPUTF8", Some(_)) => return Err(CommandError::Syntax("SMTPUTF8 takes no value")),
            _ => {
                let word = value.map_or(key.to_string(), |v| format!("{key}={v}"));
                return Err(CommandError::UnknownParameter(word));
            }
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENDER: (u8, u16, u16) = (5, 1, 7);
    const RECIPIENT: (u8, u16, u16) = (5, 1, 3);

    type Refusal = (u16, Option<(u8, u16, u16)>);

    /// The address MAIL takes from `FROM:...`, or the reply's code pair.
    fn mail(arg: &str) -> Result<String, Refusal> {
        parse_mail(arg)
            .map(|(p, _)| p.as_str().to_string())
            .map_err(|e| (e.reply().code, e.reply().enhanced))
    }

    fn rcpt(arg: &str) -> Result<String, Refusal> {
        parse_rcpt(arg)
            .map(|p| p.as_str().to_string())
            .map_err(|e| (e.reply().code, e.reply().enhanced))
    }

    fn params(text: &str) -> Result<MailParams, String> {
        parse_mail(&format!("FROM:<a@b>{text}"))
            .map(|(_, p)| p)
            .map_err(|e| e.reply().to_string())
    }

    /// Each address is accepted, both at MAIL and at RCPT, as sent.
    fn accepted(addresses: &[&str]) {
        for a in addresses {
            assert_eq!(mail(&format!("FROM:<{a}>")).as_deref(), Ok(*a), "MAIL {a}");
            assert_eq!(rcpt(&format!("TO:<{a}>")).as_deref(), Ok(*a), "RCPT {a}");
        }
    }

    /// Each path is refused with 501 5.1.7 at MAIL and 501 5.1.3 at RCPT.
    fn refused(paths: &[&str]) {
        for p in paths {
            assert_eq!(
                mail(&format!("FROM:{p}")),
                Err((501, Some(SENDER))),
                "MAIL {p}"
            );
            assert_eq!(
                rcpt(&format!("TO:{p}")),
                Err((501, Some(RECIPIENT))),
                "RCPT {p}"
            );
        }
    }

    #[test]
    fn dot_string_local_parts() {
        accepted(&[
            "a@b",
            "Joe.Q.Public@example.com",
            "!#$%&'*+-/=?^_`{|}~@x",
            // Empty atoms, as Postfix tolerates (SPEC).
            "a..b@x",
            ".a@x",
            "a.@x",
        ]);
        let long = format!("{}@x.test", "l".repeat(200)); // over 64 octets
        accepted(&[&long]);
        refused(&[
            "<a@b@x>",  // two unquoted @
            "<a b@x>",  // space outside quotes
            "<a(b)@x>", // not atext
            "<a,b@x>", "<a\"b@x>", "<@x>", // empty local part
            "<a>",  // no domain
        ]);
    }

    #[test]
    fn quoted_string_local_parts() {
        accepted(&[
            r#""a>d"@example.com"#,
            r#""a>b c"@x"#,
            r#""a@b"@x"#,
            r#""a\"b"@x"#,
            r#""a\\b"@x"#,
            r#"""@x"#, // an empty quoted string
            r#""<>:;,[]"@x"#,
        ]);
        refused(&[
            r#"<"a@x>"#,       // unterminated
            r#"<"a\"@x>"#,     // the quote is escaped: unterminated
            r#"<"a"b@x>"#,     // text after the closing quote
            "<\"a\\\x01\"@x>", // quoted pair of a control character
            "<\"a\tb\"@x>",    // qtextSMTP has no tab
        ]);
    }

    #[test]
    fn domains() {
        accepted(&[
            "a@x",
            "a@x.y.z",
            "a@x-y.z",
            "a@1x.2",
            "a@xn--bcher-kva.example",
        ]);
        refused(&[
            "<a@x..y>", // empty label
            "<a@.x>", "<a@x.>", "<a@>", "<a@-x>", // Let-dig first and last
            "<a@x->", "<a@x_y>",
        ]);
    }

    #[test]
    fn address_literals() {
        accepted(&[
            "a@[192.0.2.1]",
            "a@[0.0.0.0]",
            "a@[255.255.255.255]",
            "a@[IPv6:2001:db8::1]",
            "a@[ipv6:::1]",
            "a@[IPv6:::ffff:192.0.2.1]",
            "a@[x-tag:any!content]", // General-address-literal
        ]);
        refused(&[
            "<a@[192.0.2.256]>",
            "<a@[192.0.2]>",
            "<a@[192.0.2.1.5]>",
            "<a@[1234.0.0.1]>",
            "<a@[IPv6:2001:db8::g]>",
            "<a@[IPv6:192.0.2.1]>",
            "<a@[192.0.2.1>",
            "<a@[]>",
            "<a@[-x:y]>",
            "<a@[x:]>",
            "<a@[x:a[b]>",
        ]);
    }

    #[test]
    fn source_routes_are_dropped() {
        assert_eq!(mail("FROM:<@a:u@c>").as_deref(), Ok("u@c"));
        assert_eq!(rcpt("TO:<@a,@b.c,@d:u@c>").as_deref(), Ok("u@c"));
        refused(&[
            "<@a u@c>",
            "<@:u@c>",
            "<@a,:u@c>",
            "<@a,b:u@c>",
            "<@a..b:u@c>",
        ]);
    }

    #[test]
    fn null_path_and_postmaster() {
        assert_eq!(mail("FROM:<>").as_deref(), Ok(""));
        assert_eq!(rcpt("TO:<>"), Err((501, Some(RECIPIENT))));
        assert_eq!(rcpt("TO:<PostMaster>").as_deref(), Ok("PostMaster"));
        assert_eq!(rcpt("TO:<postmaster@x>").as_deref(), Ok("postmaster@x"));
        assert_eq!(mail("FROM:<postmaster>"), Err((501, Some(SENDER))));
        assert_eq!(rcpt("TO:<bob>"), Err((501, Some(RECIPIENT))));
    }

    #[test]
    fn brackets_spaces_and_what_follows() {
        // Postfix's tolerance: spaces after the colon, no angle brackets.
        assert_eq!(mail("FROM: <a@b>").as_deref(), Ok("a@b"));
        assert_eq!(mail("from:a@b").as_deref(), Ok("a@b"));
        assert_eq!(rcpt("To:a@b").as_deref(), Ok("a@b"));
        refused(&["<a@b", "<a@b>x", "<a@b>>", "<<a@b>", "a@b@c"]);
        assert_eq!(mail("FROM:"), Err((501, Some((5, 5, 4)))));
        assert_eq!(mail("TO:<a@b>"), Err((501, Some((5, 5, 4)))));
        assert_eq!(rcpt("FROM:<a@b>"), Err((501, Some((5, 5, 4)))));
    }

    #[test]
    fn control_characters_are_named() {
        let e = parse_mail("FROM:<a\x01@b>")
            .unwrap_err()
            .reply()
            .to_string();
        assert_eq!(e, "501 5.1.7 Error: control character in address\r\n");
        assert_eq!(rcpt("TO:<a@b\x7f>"), Err((501, Some(RECIPIENT))));
        assert_eq!(rcpt("TO:<\"a\x1b\"@b>"), Err((501, Some(RECIPIENT))));
    }

    #[test]
    fn utf8_stands_where_letters_do() {
        accepted(&["jö@x", "\"jö b\"@x", "a@bücher.example", "用户@例子.广告"]);
        refused(&["<a\u{85}@x>"]); // a C1 control character
    }

    #[test]
    fn path_parts() {
        let (p, _) = parse_mail(r#"FROM:<"a@b"@[IPv6:::1]>"#).unwrap();
        assert_eq!((p.local(), p.domain()), (r#""a@b""#, "[IPv6:::1]"));
        assert_eq!(p.to_string(), r#"<"a@b"@[IPv6:::1]>"#);
        let p = parse_rcpt("TO:<Postmaster>").unwrap();
        assert_eq!((p.local(), p.domain()), ("Postmaster", ""));
    }

    #[test]
    fn esmtp_parameters() {
        let p = params(" size=10 Body=8BITMIME smtputf8").unwrap();
        assert_eq!(
            (p.size, p.body, p.smtputf8),
            (Some(10), BodyType::EightBitMime, true)
        );
        assert_eq!(params("  SIZE=1   BODY=7bit ").unwrap().size, Some(1)); // extra spaces
        assert_eq!(params("").unwrap(), MailParams::default());
        // RFC 1870: up to 20 digits; past 64 bits is "too big", not a syntax error.
        assert_eq!(
            params(" SIZE=99999999999999999999").unwrap().size,
            Some(u64::MAX)
        );
        assert_eq!(params(" SIZE=00000000000000000001").unwrap().size, Some(1));
        for bad in [
            " SIZE=123456789012345678901", // 21 digits
            " SIZE=",
            " SIZE",
            " SIZE=-1",
            " SIZE=1x",
            " SIZE=1 SIZE=2", // each at most once
            " size=1 SIZE=1",
            " SMTPUTF8 smtputf8",
            " BODY=9BIT",
            " BODY",
            " SMTPUTF8=yes",
            " =x",    // no keyword
            " -X=1",  // keyword starts with a letter or digit
            " X=a=b", // "=" is no esmtp-value character
            " X=",    // empty value
            " X_Y=1", // "_" is no keyword character
        ] {
            let reply = params(bad).unwrap_err();
            assert!(reply.starts_with("501 5.5.4 "), "{bad}: {reply}");
        }
        assert!(params(" FOO=1").unwrap_err().starts_with("555 5.5.4 "));
        assert!(params(" X-UNKNOWN").unwrap_err().starts_with("555 5.5.4 "));
        assert!(parse_rcpt("TO:<a@b> NOTIFY=NEVER").is_err_and(|e| e.reply().code == 555));
        assert!(parse_rcpt("TO:<a@b> X=1 X=2").is_err_and(|e| e.reply().code == 501));
    }
}
