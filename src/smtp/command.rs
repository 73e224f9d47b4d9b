//! Command parsing: a pure, total function from one command line (without
//! its line end) to a `Command`, whose errors choose the reply.

use super::reply::Reply;

/// A parsed SMTP command. Addresses borrow from the line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Helo(&'a str),
    Ehlo(&'a str),
    Mail(Path<'a>, MailParams),
    Rcpt(Path<'a>),
    Data,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    /// EXPN, STARTTLS, AUTH, TURN, ETRN: recognised, not offered.
    NotImplemented,
    Bdat,
    /// `GET`, `POST`, ...: only refused when it is the first command.
    HttpVerb,
    /// `Name: value`, a header line sent as a command.
    HeaderLike,
}

/// A mailbox as sent between `<` and `>` (source route stripped); empty for `<>`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Path<'a>(pub &'a str);

#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CommandError {
    Unknown,
    /// Invalid UTF-8, a bare CR or LF, or another framing fault.
    BadLine(&'static str),
    /// Wrong or missing arguments: `501 5.5.4`.
    Syntax(&'static str),
    /// HELO/EHLO argument problems: `501` without an enhanced code.
    HeloSyntax(&'static str),
    /// A malformed address: `501` with 5.1.7 (sender) or 5.1.3 (recipient).
    BadAddress((u8, u16, u16), &'static str),
    BadSize,
    UnknownParameter(String),
}

impl CommandError {
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::unknown_command(),
            CommandError::BadLine(why) => Reply::bad_line(why),
            CommandError::Syntax(why) => Reply::syntax(why),
            CommandError::HeloSyntax(why) => Reply::helo_syntax(why),
            CommandError::BadAddress(code, why) => Reply::bad_address(*code, why),
            CommandError::BadSize => Reply::syntax("bad SIZE parameter"),
            CommandError::UnknownParameter(name) => Reply::unknown_parameter(name),
        }
    }
}

const SENDER: (u8, u16, u16) = (5, 1, 7);
const RECIPIENT: (u8, u16, u16) = (5, 1, 3);

impl<'a> Command<'a> {
    /// Parses one line; `line` excludes its line end.
    pub fn parse(line: &'a [u8]) -> Result<Command<'a>, CommandError> {
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(CommandError::BadLine("bare CR or LF in command line"));
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| CommandError::BadLine("invalid UTF-8 in command"))?;
        let (verb, rest) = match line.find(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        let arg = rest.trim_matches(' ');
        match verb.to_ascii_uppercase().as_str() {
            "HELO" => helo_name(arg).map(Command::Helo),
            "EHLO" => helo_name(arg).map(Command::Ehlo),
            "MAIL" => parse_mail(rest),
            "RCPT" => parse_rcpt(rest),
            "DATA" => no_argument(arg, "DATA", Command::Data),
            "RSET" => no_argument(arg, "RSET", Command::Rset),
            "QUIT" => no_argument(arg, "QUIT", Command::Quit),
            "NOOP" => Ok(Command::Noop),
            "HELP" => Ok(Command::Help),
            "VRFY" if arg.is_empty() => Err(CommandError::Syntax("VRFY address")),
            "VRFY" => Ok(Command::Vrfy),
            "EXPN" | "STARTTLS" | "AUTH" | "TURN" | "ETRN" => Ok(Command::NotImplemented),
            "BDAT" => Ok(Command::Bdat),
            "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" => Ok(Command::HttpVerb),
            _ if is_header_name(verb) => Ok(Command::HeaderLike),
            _ => Err(CommandError::Unknown),
        }
    }
}

fn no_argument<'a>(
    arg: &str,
    verb: &'static str,
    cmd: Command<'a>,
) -> Result<Command<'a>, CommandError> {
    if arg.is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::Syntax(match verb {
            "DATA" => "DATA takes no argument",
            "RSET" => "RSET takes no argument",
            _ => "QUIT takes no argument",
        }))
    }
}

/// `Name:` with an RFC 5322 field name, as a web browser's header lines are.
fn is_header_name(verb: &str) -> bool {
    verb.len() > 1
        && verb.ends_with(':')
        && verb[..verb.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':')
}

fn helo_name(arg: &str) -> Result<&str, CommandError> {
    if arg.is_empty() {
        return Err(CommandError::HeloSyntax("Syntax: HELO/EHLO hostname"));
    }
    if arg.chars().any(char::is_control) {
        return Err(CommandError::HeloSyntax(
            "Error: control character in hostname",
        ));
    }
    Ok(arg)
}

/// Splits `FROM:<path> params` (keyword case-insensitive, spaces tolerated
/// after the colon, as Postfix does).
fn path_and_params<'a>(rest: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start_matches(' ');
    if let Some(inner) = rest.strip_prefix('<') {
        let close = inner.find('>')?;
        Some((&inner[..close], &inner[close + 1..]))
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        Some((&rest[..end], &rest[end..]))
    }
}

/// RFC 5321 §4.1.2: a source route (`@a,@b:`) is accepted and ignored.
fn strip_source_route(path: &str) -> &str {
    match path.find(':') {
        Some(i) if path.starts_with('@') => &path[i + 1..],
        _ => path,
    }
}

fn check_address(addr: &str, code: (u8, u16, u16)) -> Result<(), CommandError> {
    if addr.chars().any(char::is_control) {
        return Err(CommandError::BadAddress(
            code,
            "control character in address",
        ));
    }
    if addr.contains(['<', '>']) || (addr.contains(' ') && !addr.starts_with('"')) {
        return Err(CommandError::BadAddress(code, "malformed address"));
    }
    match addr.rfind('@') {
        Some(at) if at > 0 && at + 1 < addr.len() => Ok(()),
        _ => Err(CommandError::BadAddress(
            code,
            "address must be local-part@domain",
        )),
    }
}

fn parse_mail(rest: &str) -> Result<Command<'_>, CommandError> {
    let (path, params) =
        path_and_params(rest, "FROM:").ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
    let path = strip_source_route(path);
    if !path.is_empty() {
        check_address(path, SENDER)?;
    }
    let params = parse_params(params)?;
    Ok(Command::Mail(Path(path), params))
}

fn parse_rcpt(rest: &str) -> Result<Command<'_>, CommandError> {
    let (path, params) =
        path_and_params(rest, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
    let path = strip_source_route(path);
    if let Some(word) = params.split(' ').find(|w| !w.is_empty()) {
        return Err(CommandError::UnknownParameter(word.to_string()));
    }
    if !path.eq_ignore_ascii_case("postmaster") {
        check_address(path, RECIPIENT)?;
    }
    Ok(Command::Rcpt(Path(path)))
}

fn parse_params(text: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v))
                if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) =>
            {
                params.size = Some(v.parse().map_err(|_| CommandError::BadSize)?);
            }
            ("SIZE", _) => return Err(CommandError::BadSize),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => params.body = BodyType::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                params.body = BodyType::EightBitMime
            }
            ("BODY", _) => return Err(CommandError::Syntax("BODY=7BIT or BODY=8BITMIME")),
            ("SMTPUTF8", None) => params.smtputf8 = true,
            _ => return Err(CommandError::UnknownParameter(word.to_string())),
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command<'_>, CommandError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse("noop"), Ok(Command::Noop));
        assert_eq!(
            parse("eHlO client.example"),
            Ok(Command::Ehlo("client.example"))
        );
        assert_eq!(parse("Quit"), Ok(Command::Quit));
    }

    #[test]
    fn mail_keeps_local_part_case_and_reads_params() {
        let Ok(Command::Mail(Path(p), params)) =
            parse("mail from:<Joe.Q@Example.COM> size=1234 BODY=8bitmime SMTPUTF8")
        else {
            panic!("not parsed")
        };
        assert_eq!(p, "Joe.Q@Example.COM");
        assert_eq!(params.size, Some(1234));
        assert_eq!(params.body, BodyType::EightBitMime);
        assert!(params.smtputf8);
    }

    #[test]
    fn null_sender_and_source_route() {
        assert!(matches!(
            parse("MAIL FROM:<>"),
            Ok(Command::Mail(Path(""), _))
        ));
        assert!(matches!(
            parse("RCPT TO:<@a,@b:u@c>"),
            Ok(Command::Rcpt(Path("u@c")))
        ));
        assert!(matches!(
            parse("MAIL FROM: <a@b>"),
            Ok(Command::Mail(Path("a@b"), _))
        ));
    }

    #[test]
    fn postmaster_without_domain_is_an_address() {
        assert!(matches!(
            parse("RCPT TO:<PostMaster>"),
            Ok(Command::Rcpt(Path("PostMaster")))
        ));
        assert!(matches!(
            parse("RCPT TO:<bob>"),
            Err(CommandError::BadAddress(RECIPIENT, _))
        ));
    }

    #[test]
    fn parameter_errors_pick_their_reply() {
        assert_eq!(
            parse("MAIL FROM:<a@b> SIZE=x").unwrap_err().reply().code,
            501
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> SIZE=").unwrap_err().reply().code,
            501
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> SIZE=123456789012345678901").unwrap_err(),
            CommandError::BadSize
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> FOO=1").unwrap_err().reply().code,
            555
        );
        assert_eq!(
            parse("MAIL FROM:<a@b> BODY=9BIT").unwrap_err().reply().code,
            501
        );
        assert_eq!(
            parse("RCPT TO:<a@b> NOTIFY=NEVER")
                .unwrap_err()
                .reply()
                .code,
            555
        );
    }

    #[test]
    fn arguments_where_none_belong() {
        for cmd in ["DATA x", "RSET x", "QUIT now"] {
            let r = parse(cmd).unwrap_err().reply();
            assert_eq!((r.code, r.enhanced), (501, Some((5, 5, 4))), "{cmd}");
        }
    }

    #[test]
    fn helo_needs_a_clean_name() {
        assert_eq!(
            parse("HELO").unwrap_err().reply().to_string(),
            "501 Syntax: HELO/EHLO hostname\r\n"
        );
        assert!(parse("EHLO a\x1bb").is_err());
    }

    #[test]
    fn control_characters_in_addresses_are_refused() {
        let r = parse("MAIL FROM:<a\x01@b>").unwrap_err().reply();
        assert_eq!(r.code, 501);
        assert!(parse("RCPT TO:<a@b\x7f>").is_err());
    }

    #[test]
    fn bad_lines_and_unknown_verbs() {
        assert_eq!(parse("FOO").unwrap_err().reply().code, 500);
        assert_eq!(parse("NOOP\nQUIT").unwrap_err().reply().code, 500);
        assert_eq!(Command::parse(b"NOOP \xff").unwrap_err().reply().code, 500);
        assert_eq!(parse("Host: example.com"), Ok(Command::HeaderLike));
        assert_eq!(parse("POST / HTTP/1.1"), Ok(Command::HttpVerb));
        assert_eq!(parse("BDAT 10 LAST"), Ok(Command::Bdat));
        assert_eq!(parse("STARTTLS"), Ok(Command::NotImplemented));
    }
}
