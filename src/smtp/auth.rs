//! SASL PLAIN (RFC 4616) and LOGIN as values: the AUTH arguments and the
//! client's base64 responses in, a challenge, credentials or a refusal out
//! (RFC 4954). No checking of passwords here: the session hands the
//! credentials to the connection, which checks them and forgets them. The
//! password is never formatted: `Credentials`' Debug leaves it out.

use super::reply::Reply;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use zeroize::Zeroizing;

/// RFC 4954 §4: an AUTH command line, and each response, may be this long
/// (12288 octets with CRLF).
pub const AUTH_LINE_MAX: usize = 12288;

/// A user name and password from a finished exchange.
#[derive(PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    password: Password,
}

impl Credentials {
    pub fn new(user: String, password: Vec<u8>) -> Credentials {
        Credentials {
            user,
            password: Password(Zeroizing::new(password)),
        }
    }

    pub fn password(&self) -> &[u8] {
        &self.password.0
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive() // never the password
    }
}

/// The password bytes, overwritten when dropped (zeroize) so they do not
/// linger in freed memory.
#[derive(PartialEq, Eq)]
struct Password(Zeroizing<Vec<u8>>);

/// Where an unfinished exchange stands: the server sent a `334` and waits
/// for the client's next line.
#[derive(Debug, PartialEq, Eq)]
pub enum Exchange {
    /// PLAIN without an initial response: waiting for it.
    Plain,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: waiting for the password of this user.
    LoginPassword(String),
}

/// The result of one step of an exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this `334` and wait in this state.
    Challenge(Reply, Exchange),
    /// Check these credentials.
    Done(Credentials),
    /// Refuse with this reply (a protocol error).
    Fail(Reply),
}

/// Starts an exchange from the AUTH arguments (`PLAIN [initial]`,
/// `LOGIN [initial]`), mechanism case-insensitive.
pub fn start(args: &str) -> Outcome {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let (Some(mechanism), initial, None) = (words.next(), words.next(), words.next()) else {
        return Outcome::Fail(Reply::syntax("AUTH mechanism [initial-response]"));
    };
    match (mechanism.to_ascii_uppercase().as_str(), initial) {
        ("PLAIN", None) => Outcome::Challenge(Reply::auth_challenge(""), Exchange::Plain),
        ("PLAIN", Some(initial)) => respond(Exchange::Plain, initial.as_bytes()),
        ("LOGIN", None) => Outcome::Challenge(
            Reply::auth_challenge(&STANDARD.encode("Username:")),
            Exchange::LoginUser,
        ),
        ("LOGIN", Some(initial)) => respond(Exchange::LoginUser, initial.as_bytes()),
        _ => Outcome::Fail(Reply::auth_unknown_mechanism()),
    }
}

/// Takes the client's response (one line without its line end) to the
/// last challenge.
pub fn respond(state: Exchange, line: &[u8]) -> Outcome {
    if line == b"*" {
        return Outcome::Fail(Reply::auth_cancelled()); // RFC 4954 §4
    }
    let Some(decoded) = decode(line) else {
        return Outcome::Fail(Reply::auth_malformed("bad base64"));
    };
    match state {
        Exchange::Plain => plain(decoded),
        Exchange::LoginUser => match String::from_utf8(decoded) {
            Ok(user) if !user.is_empty() && !user.contains('\0') => Outcome::Challenge(
                Reply::auth_challenge(&STANDARD.encode("Password:")),
                Exchange::LoginPassword(user),
            ),
            _ => Outcome::Fail(Reply::auth_malformed("bad user name")),
        },
        Exchange::LoginPassword(user) => Outcome::Done(Credentials::new(user, decoded)),
    }
}

/// Base64 (RFC 4954: `=` alone is an empty response).
fn decode(line: &[u8]) -> Option<Vec<u8>> {
    if line == b"=" {
        return Some(Vec::new());
    }
    STANDARD.decode(line).ok()
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`, authcid and passwd not
/// empty, UTF-8. An authorization identity other than the user is not
/// supported (a sink has no one to act for): refused as malformed.
fn plain(message: Vec<u8>) -> Outcome {
    let message = Zeroizing::new(message); // zeroed on every path out
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authz), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Outcome::Fail(Reply::auth_malformed("malformed PLAIN message"));
    };
    let Ok(user) = std::str::from_utf8(user) else {
        return Outcome::Fail(Reply::auth_malformed("user name is not UTF-8"));
    };
    if user.is_empty() || password.is_empty() || password.contains(&0) {
        return Outcome::Fail(Reply::auth_malformed("malformed PLAIN message"));
    }
    if !authz.is_empty() && authz != user.as_bytes() {
        return Outcome::Fail(Reply::auth_malformed(
            "authorization identity differs from the user",
        ));
    }
    Outcome::Done(Credentials::new(user.to_string(), password.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(o: &Outcome) -> String {
        match o {
            Outcome::Challenge(r, _) | Outcome::Fail(r) => r.to_string(),
            Outcome::Done(c) => format!("done {}", c.user),
        }
    }

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn plain_with_initial_response() {
        let o = start(&format!("PLAIN {}", b64(b"\0alice\0s3cret")));
        assert_eq!(
            o,
            Outcome::Done(Credentials::new("alice".into(), b"s3cret".to_vec()))
        );
        let o = start(&format!("plain {}", b64(b"alice\0alice\0pw")));
        assert_eq!(code(&o), "done alice", "authzid equal to the user");
    }

    #[test]
    fn plain_without_initial_response_gets_an_empty_challenge() {
        let o = start("PLAIN");
        assert_eq!(
            o,
            Outcome::Challenge(Reply::plain(334, ""), Exchange::Plain)
        );
        assert_eq!(Reply::plain(334, "").to_string(), "334 \r\n");
        let o = respond(Exchange::Plain, b64(b"\0bob\0pw").as_bytes());
        assert_eq!(code(&o), "done bob");
    }

    #[test]
    fn login_asks_user_then_password() {
        let o = start("LOGIN");
        assert_eq!(code(&o), "334 VXNlcm5hbWU6\r\n");
        let o = respond(Exchange::LoginUser, b64(b"carol").as_bytes());
        assert_eq!(code(&o), "334 UGFzc3dvcmQ6\r\n");
        let Outcome::Challenge(_, state) = o else {
            panic!()
        };
        let o = respond(state, b64(b"pw").as_bytes());
        assert_eq!(
            o,
            Outcome::Done(Credentials::new("carol".into(), b"pw".to_vec()))
        );
        // LOGIN with the user name as initial response (Outlook does this).
        let o = start(&format!("LOGIN {}", b64(b"dave")));
        assert_eq!(code(&o), "334 UGFzc3dvcmQ6\r\n");
    }

    #[test]
    fn refusals_and_their_codes() {
        assert!(code(&start("CRAM-MD5")).starts_with("504 5.5.4 "));
        assert!(code(&start("")).starts_with("501 5.5.4 "));
        assert!(code(&start("PLAIN a b")).starts_with("501 5.5.4 "));
        assert!(code(&start("PLAIN !!!")).starts_with("501 5.5.2 "));
        assert!(code(&start("PLAIN =")).starts_with("501 5.5.2 "), "empty");
        for bad in [
            &b"no-nul"[..],
            b"\0user",
            b"\0\0pw",
            b"\0u\0",
            b"x\0u\0pw",
            b"\0\xff\0pw",
        ] {
            assert!(
                code(&start(&format!("PLAIN {}", b64(bad)))).starts_with("501 5.5.2 "),
                "{bad:?}"
            );
        }
        assert!(code(&respond(Exchange::LoginUser, b"=")).starts_with("501 5.5.2 "));
        for state in [
            Exchange::Plain,
            Exchange::LoginUser,
            Exchange::LoginPassword("u".into()),
        ] {
            assert!(code(&respond(state, b"*")).starts_with("501 5.0.0 "));
        }
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let o = start(&format!("PLAIN {}", b64(b"\0alice\0hunter2")));
        let text = format!("{o:?}");
        assert!(
            text.contains("alice") && !text.contains("hunter2"),
            "{text}"
        );
        let Outcome::Done(c) = o else { panic!() };
        assert_eq!(c.password(), b"hunter2");
    }
}
