//! SMTP replies as values. Only `Display` writes wire text; every reply the
//! server can send is built by a named constructor here.

use std::fmt;

/// One SMTP reply: a code, an optional enhanced status code (RFC 2034/3463)
/// and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<(u8, u16, u16)>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, HELO/EHLO, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn greeting(host: &str) -> Reply {
        Reply::plain(220, format!("{host} ESMTP mailsink"))
    }

    pub fn helo(host: &str) -> Reply {
        Reply::plain(250, host)
    }

    pub fn ehlo(host: &str, max_size: u64) -> Reply {
        Reply {
            code: 250,
            enhanced: None,
            lines: vec![
                host.to_string(),
                format!("SIZE {max_size}"),
                "PIPELINING".into(),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
                "CHUNKING".into(),
                "HELP".into(),
            ],
        }
    }

    pub fn helo_syntax(why: &str) -> Reply {
        Reply::plain(501, why)
    }

    pub fn sender_ok() -> Reply {
        Reply::new(250, (2, 1, 0), "Ok")
    }

    pub fn recipient_ok() -> Reply {
        Reply::new(250, (2, 1, 5), "Ok")
    }

    pub fn ok() -> Reply {
        Reply::new(250, (2, 0, 0), "Ok")
    }

    pub fn start_data() -> Reply {
        Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
    }

    pub fn queued(id: &str) -> Reply {
        Reply::new(250, (2, 0, 0), format!("Ok: queued as {id}"))
    }

    pub fn cannot_verify() -> Reply {
        Reply::new(
            252,
            (2, 0, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }

    pub fn help() -> Reply {
        Reply::new(
            214,
            (2, 0, 0),
            "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
        )
    }

    pub fn bye() -> Reply {
        Reply::new(221, (2, 0, 0), "Bye")
    }

    pub fn http_refused() -> Reply {
        Reply::new(
            221,
            (2, 7, 0),
            "Error: this is an SMTP server, not a web server",
        )
    }

    pub fn bad_sequence(why: &str) -> Reply {
        Reply::new(503, (5, 5, 1), format!("Error: {why}"))
    }

    pub fn unknown_command() -> Reply {
        Reply::new(500, (5, 5, 2), "Error: command not recognized")
    }

    pub fn line_too_long() -> Reply {
        Reply::new(500, (5, 5, 2), "Error: line too long")
    }

    pub fn bad_line(why: &str) -> Reply {
        Reply::new(500, (5, 5, 2), format!("Error: {why}"))
    }

    pub fn syntax(why: &str) -> Reply {
        Reply::new(501, (5, 5, 4), format!("Syntax: {why}"))
    }

    pub fn bad_address(enhanced: (u8, u16, u16), why: &str) -> Reply {
        Reply::new(501, enhanced, format!("Error: {why}"))
    }

    pub fn unknown_parameter(name: &str) -> Reply {
        Reply::new(
            555,
            (5, 5, 4),
            format!("Error: unsupported parameter {}", name.escape_debug()),
        )
    }

    pub fn not_implemented() -> Reply {
        Reply::new(502, (5, 5, 1), "Error: command not implemented")
    }

    /// RFC 3030: a chunk that is not the last.
    pub fn chunk_received(octets: u64) -> Reply {
        Reply::new(250, (2, 0, 0), format!("{octets} octets received"))
    }

    pub fn too_big() -> Reply {
        Reply::new(552, (5, 3, 4), "Error: message file too big")
    }

    pub fn too_many_recipients() -> Reply {
        Reply::new(452, (4, 5, 3), "Error: too many recipients")
    }

    pub fn mailbox_name_too_long() -> Reply {
        Reply::new(553, (5, 1, 3), "Error: address too long for a mailbox name")
    }

    pub fn relay_denied() -> Reply {
        Reply::new(550, (5, 7, 1), "Error: recipient domain not accepted here")
    }

    pub fn needs_smtputf8(code: u16) -> Reply {
        Reply::new(
            code,
            (5, 6, 7),
            "Error: non-ASCII address requires the SMTPUTF8 parameter",
        )
    }

    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, (5, 5, 1), "Error: no valid recipients")
    }

    pub fn pipelined_data_refused() -> Reply {
        Reply::new(
            554,
            (5, 5, 0),
            "Error: DATA refused with input pending, closing",
        )
    }

    pub fn too_many_errors(host: &str) -> Reply {
        Reply::new(421, (4, 7, 0), format!("{host} Error: too many errors"))
    }

    pub fn timeout(host: &str) -> Reply {
        Reply::new(421, (4, 4, 2), format!("{host} Error: timeout exceeded"))
    }

    pub fn shutting_down(host: &str) -> Reply {
        Reply::new(
            421,
            (4, 3, 2),
            format!("{host} Service shutting down, closing transmission channel"),
        )
    }

    pub fn busy(host: &str) -> Reply {
        Reply::new(
            421,
            (4, 3, 2),
            format!("{host} Too many connections, try again later"),
        )
    }

    pub fn no_space() -> Reply {
        Reply::new(452, (4, 3, 1), "Error: insufficient system storage")
    }

    pub fn store_failed() -> Reply {
        Reply::new(451, (4, 3, 0), "Error: local error in processing")
    }
}

/// AUTH and STARTTLS (RFC 4954, RFC 3207).
impl Reply {
    /// A SASL challenge: `334` and base64 text, no enhanced code.
    pub fn auth_challenge(base64: &str) -> Reply {
        Reply::plain(334, base64)
    }

    pub fn auth_ok() -> Reply {
        Reply::new(235, (2, 7, 0), "Authentication successful")
    }

    pub fn auth_invalid() -> Reply {
        Reply::new(535, (5, 7, 8), "Authentication credentials invalid")
    }

    pub fn auth_unknown_mechanism() -> Reply {
        Reply::new(504, (5, 5, 4), "Unrecognized authentication type")
    }

    pub fn auth_malformed(why: &str) -> Reply {
        Reply::new(501, (5, 5, 2), format!("Error: {why}"))
    }

    pub fn auth_cancelled() -> Reply {
        Reply::new(501, (5, 0, 0), "Authentication cancelled")
    }

    pub fn auth_required() -> Reply {
        Reply::new(530, (5, 7, 0), "Authentication required")
    }

    pub fn encryption_required() -> Reply {
        Reply::new(538, (5, 7, 11), "Encryption required")
    }

    pub fn tls_first() -> Reply {
        Reply::new(530, (5, 7, 0), "Must issue a STARTTLS command first")
    }

    pub fn tls_ready() -> Reply {
        Reply::new(220, (2, 0, 0), "Ready to start TLS")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, text) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            write!(f, "{}{sep}", self.code)?;
            if let Some((c, s, d)) = self.enhanced {
                write!(f, "{c}.{s}.{d} ")?;
            }
            write!(f, "{text}\r\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_has_enhanced_code() {
        assert_eq!(Reply::ok().to_string(), "250 2.0.0 Ok\r\n");
    }

    #[test]
    fn multi_line_marks_every_line_but_last_with_dash() {
        let text = Reply::ehlo("h", 10).to_string();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines[0], "250-h");
        assert_eq!(lines[1], "250-SIZE 10");
        assert_eq!(lines.last(), Some(&"250 HELP"));
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l.starts_with("250-"))
        );
    }

    #[test]
    fn greeting_and_354_have_no_enhanced_code() {
        assert_eq!(Reply::greeting("h").to_string(), "220 h ESMTP mailsink\r\n");
        assert!(Reply::start_data().to_string().starts_with("354 End"));
    }
}
