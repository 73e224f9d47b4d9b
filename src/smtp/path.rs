//! The reverse and forward paths of MAIL and RCPT (RFC 5321 §4.1.2) and
//! their ESMTP parameters: one parser for both commands. Pure and total;
//! its errors choose the reply.

use super::command::CommandError;

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

/// The enhanced codes of a malformed sender and recipient address.
pub(crate) const SENDER: (u8, u16, u16) = (5, 1, 7);
pub(crate) const RECIPIENT: (u8, u16, u16) = (5, 1, 3);

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

/// `FROM:<path> [params]`, the argument of MAIL.
pub(crate) fn parse_mail(rest: &str) -> Result<(Path<'_>, MailParams), CommandError> {
    let (path, params) =
        path_and_params(rest, "FROM:").ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
    let path = strip_source_route(path);
    if !path.is_empty() {
        check_address(path, SENDER)?;
    }
    let params = parse_params(params)?;
    Ok((Path(path), params))
}

/// `TO:<path>`, the argument of RCPT (no parameter is offered for it).
pub(crate) fn parse_rcpt(rest: &str) -> Result<Path<'_>, CommandError> {
    let (path, params) =
        path_and_params(rest, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
    let path = strip_source_route(path);
    if let Some(word) = params.split(' ').find(|w| !w.is_empty()) {
        return Err(CommandError::UnknownParameter(word.to_string()));
    }
    if !path.eq_ignore_ascii_case("postmaster") {
        check_address(path, RECIPIENT)?;
    }
    Ok(Path(path))
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
