//! Command parsing: a pure, total function from one framed command line to
//! a `Command`, whose errors choose the reply. The checks made before the
//! verb is looked at (length, bare CR/LF, UTF-8) live here too; HTTP and
//! header-like lines are recognised as commands of their own.

use super::auth::AUTH_LINE_MAX;
use super::chunk;
use super::line::LineEnd;
use super::path::{self, MailParams, Path};
use super::reply::Reply;

/// RFC 5321 §4.5.3.1.4: 512 octets with CRLF.
const COMMAND_MAX: usize = 512;
/// MAIL lines may grow by SIZE (RFC 1870: 26), BODY (14) and SMTPUTF8 (10).
const MAIL_COMMAND_MAX: usize = COMMAND_MAX + 26 + 14 + 10;
/// How much of a command line the framer reads before skipping the rest.
pub const COMMAND_READ_MAX: usize = 1024;

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
    /// EXPN, TURN, ETRN: recognised, not offered.
    NotImplemented,
    /// `STARTTLS` and its (unwanted) argument.
    StartTls(&'a str),
    /// `AUTH` and its arguments: mechanism [initial-response].
    Auth(&'a str),
    /// `BDAT n [LAST]`: `n` raw octets follow.
    Bdat {
        size: u64,
        last: bool,
    },
    /// `GET`, `POST`, ...: only refused when it is the first command.
    HttpVerb,
    /// `Name: value`, a header line sent as a command.
    HeaderLike,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CommandError {
    Unknown,
    /// Longer than `COMMAND_MAX` (`MAIL_COMMAND_MAX` for MAIL).
    TooLong,
    /// Invalid UTF-8, a bare CR or LF, or another framing fault.
    BadLine(&'static str),
    /// Wrong or missing arguments: `501 5.5.4`.
    Syntax(&'static str),
    /// HELO/EHLO argument problems: `501` without an enhanced code.
    HeloSyntax(&'static str),
    /// A malformed address: `501` with 5.1.7 (sender) or 5.1.3 (recipient).
    BadAddress((u8, u16, u16), &'static str),
    BadSize,
    /// A BDAT argument that is no chunk size: the octets after it cannot
    /// be delimited, so the session closes.
    BadChunkSize,
    UnknownParameter(String),
}

impl CommandError {
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::unknown_command(),
            CommandError::TooLong => Reply::line_too_long(),
            CommandError::BadLine(why) => Reply::bad_line(why),
            CommandError::Syntax(why) => Reply::syntax(why),
            CommandError::HeloSyntax(why) => Reply::helo_syntax(why),
            CommandError::BadAddress(code, why) => Reply::bad_address(*code, why),
            CommandError::BadSize => Reply::syntax("bad SIZE parameter"),
            CommandError::BadChunkSize => Reply::syntax("BDAT chunk-size [LAST]"),
            CommandError::UnknownParameter(name) => Reply::unknown_parameter(name),
        }
    }
}

impl<'a> Command<'a> {
    /// Checks and parses one framed command line, its line end included.
    pub fn read(piece: &'a [u8], end: LineEnd) -> Result<Command<'a>, CommandError> {
        let text = &piece[..piece.len() - end.terminator_len(piece)];
        if (end == LineEnd::TooLong || piece.len() > COMMAND_MAX) && is_bdat(text) {
            // No valid size is that long, and the octets after it cannot be
            // delimited: a malformed size (SPEC CHUNKING), not just too long.
            return Err(CommandError::BadChunkSize);
        }
        if end == LineEnd::TooLong {
            return Err(CommandError::TooLong);
        }
        if piece.len() > COMMAND_MAX
            && !(piece.len() <= MAIL_COMMAND_MAX && is_mail(text))
            && !(piece.len() <= AUTH_LINE_MAX && is_auth(text))
        {
            return Err(CommandError::TooLong);
        }
        Command::parse(text)
    }

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
            "MAIL" => path::parse_mail(rest).map(|(from, params)| Command::Mail(from, params)),
            "RCPT" => path::parse_rcpt(rest).map(Command::Rcpt),
            "DATA" => no_argument(arg, "DATA", Command::Data),
            "RSET" => no_argument(arg, "RSET", Command::Rset),
            "QUIT" => no_argument(arg, "QUIT", Command::Quit),
            "NOOP" => Ok(Command::Noop),
            "HELP" => Ok(Command::Help),
            "VRFY" if arg.is_empty() => Err(CommandError::Syntax("VRFY address")),
            "VRFY" => Ok(Command::Vrfy),
            "STARTTLS" => Ok(Command::StartTls(arg)),
            "AUTH" => Ok(Command::Auth(arg)),
            "EXPN" | "TURN" | "ETRN" => Ok(Command::NotImplemented),
            "BDAT" => chunk::parse_bdat(arg).map(|(size, last)| Command::Bdat { size, last }),
            "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" => Ok(Command::HttpVerb),
            // Postfix's `^[^ ]+:`: the first colon comes before any space.
            _ if verb.find(':').is_some_and(|i| i > 0) => Ok(Command::HeaderLike),
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

/// RFC 4954 §4: an AUTH line may be 12288 octets.
pub(super) fn is_auth(text: &[u8]) -> bool {
    text.len() >= 5 && text[..5].eq_ignore_ascii_case(b"AUTH ")
}

fn is_bdat(text: &[u8]) -> bool {
    text.len() >= 5 && text[..5].eq_ignore_ascii_case(b"BDAT ")
}

fn is_mail(text: &[u8]) -> bool {
    text.len() >= 5 && text[..5].eq_ignore_ascii_case(b"MAIL ")
}

/// `DATA`, with or without (bad) arguments; not `DATAX`.
pub(crate) fn is_data(piece: &[u8], end: LineEnd) -> bool {
    let text = &piece[..piece.len() - end.terminator_len(piece)];
    text.len() >= 4
        && text[..4].eq_ignore_ascii_case(b"DATA")
        && text.get(4).is_none_or(|&b| b == b' ')
}

#[cfg(test)]
mod tests {
    use super::path::BodyType;
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
    fn mail_and_rcpt_hand_over_path_and_params() {
        let Ok(Command::Mail(from, params)) =
            parse("mail from:<Joe.Q@Example.COM> size=1234 BODY=8bitmime SMTPUTF8")
        else {
            panic!("not parsed")
        };
        assert_eq!(from.as_str(), "Joe.Q@Example.COM");
        assert_eq!(params.size, Some(1234));
        assert_eq!(params.body, BodyType::EightBitMime);
        assert!(params.smtputf8);
        let Ok(Command::Rcpt(to)) = parse("RCPT TO:<@a,@b:u@c>") else {
            panic!("not parsed")
        };
        assert_eq!(to.as_str(), "u@c");
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
        // SPEC: a line whose first colon comes before any space.
        assert_eq!(parse("content-type:text/plain"), Ok(Command::HeaderLike));
        assert_eq!(parse("X:"), Ok(Command::HeaderLike));
        assert_eq!(parse(":x").unwrap_err(), CommandError::Unknown);
        assert_eq!(parse("FOO bar:baz").unwrap_err(), CommandError::Unknown);
        assert_eq!(parse("POST / HTTP/1.1"), Ok(Command::HttpVerb));
        assert_eq!(
            parse("BDAT 10 LAST"),
            Ok(Command::Bdat {
                size: 10,
                last: true
            })
        );
        assert_eq!(
            parse("bdat 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
        assert_eq!(parse("BDAT ten").unwrap_err().reply().code, 501);
        assert_eq!(parse("STARTTLS"), Ok(Command::StartTls("")));
        assert_eq!(parse("starttls x"), Ok(Command::StartTls("x")));
        assert_eq!(
            parse("AUTH PLAIN AGFAAGI="),
            Ok(Command::Auth("PLAIN AGFAAGI="))
        );
        assert_eq!(parse("EXPN x"), Ok(Command::NotImplemented));
    }

    #[test]
    fn an_overlong_bdat_line_is_a_malformed_size() {
        let mut line = b"BDAT 5".to_vec();
        line.resize(600, b' ');
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            Command::read(&line, LineEnd::CrLf),
            Err(CommandError::BadChunkSize)
        );
        // Cut by the framer (a line past COMMAND_READ_MAX).
        assert_eq!(
            Command::read(&line[..500], LineEnd::TooLong),
            Err(CommandError::BadChunkSize)
        );
        assert_eq!(
            Command::read(&[b'x'; 600], LineEnd::TooLong),
            Err(CommandError::TooLong)
        );
    }

    #[test]
    fn auth_lines_may_be_12288_octets() {
        let line = |n: usize, verb: &str| {
            let mut l = format!("{verb} PLAIN ").into_bytes();
            l.resize(n - 2, b'A');
            l.extend_from_slice(b"\r\n");
            l
        };
        let ok = line(AUTH_LINE_MAX, "AUTH");
        assert!(matches!(
            Command::read(&ok, LineEnd::CrLf),
            Ok(Command::Auth(_))
        ));
        let long = line(AUTH_LINE_MAX + 1, "AUTH");
        assert_eq!(
            Command::read(&long, LineEnd::CrLf),
            Err(CommandError::TooLong)
        );
        let noop = line(COMMAND_MAX + 1, "NOOP");
        assert_eq!(
            Command::read(&noop, LineEnd::CrLf),
            Err(CommandError::TooLong)
        );
    }
}
