//! The `--auth-file` password file (`user:hash` lines, bcrypt hashes as
//! `htpasswd -B` writes them) and the password check. Read once at start;
//! a malformed line is a start error naming the file and line.

use crate::config::Users as Source;
use crate::smtp::Credentials;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::{error, fmt, fs, io};

/// Who may authenticate.
#[derive(Debug)]
pub enum Users {
    /// `--auth-any`: every user name and password.
    Any,
    /// `--auth-file`: user name → bcrypt hash.
    File(HashMap<String, String>),
}

#[derive(Debug)]
pub enum UsersError {
    Read(PathBuf, io::Error),
    Malformed {
        file: PathBuf,
        line: usize,
        why: &'static str,
    },
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::Read(p, e) => write!(f, "cannot read password file {}: {e}", p.display()),
            UsersError::Malformed { file, line, why } => write!(
                f,
                "malformed password file {} line {line}: {why}",
                file.display()
            ),
        }
    }
}

impl error::Error for UsersError {
    fn source(&self) -> Option<&(dyn error::Error + 'static)> {
        match self {
            UsersError::Read(_, e) => Some(e),
            UsersError::Malformed { .. } => None,
        }
    }
}

impl Users {
    pub fn load(source: &Source) -> Result<Users, UsersError> {
        match source {
            Source::Any => Ok(Users::Any),
            Source::File(path) => {
                let text =
                    fs::read_to_string(path).map_err(|e| UsersError::Read(path.clone(), e))?;
                parse(&text, path).map(Users::File)
            }
        }
    }

    /// Whether these credentials may log in. bcrypt is CPU work only
    /// (about a millisecond at htpasswd's cost 5).
    pub fn check(&self, c: &Credentials) -> bool {
        match self {
            Users::Any => true,
            Users::File(users) => match users.get(&c.user) {
                Some(hash) => bcrypt::verify(c.password(), hash).unwrap_or(false),
                None => {
                    // An unknown user costs a bcrypt check too (against some
                    // user's hash, so at the file's cost), so that the time
                    // of a refusal does not tell which user names exist.
                    if let Some(hash) = users.values().next() {
                        let _ = bcrypt::verify(c.password(), hash);
                    }
                    false
                }
            },
        }
    }

    /// MAIL needs AUTH first (only with a password file).
    pub fn required(&self) -> bool {
        matches!(self, Users::File(_))
    }
}

/// `user:hash` per line; blank lines and `#` comments are skipped. Only
/// bcrypt (`$2y$`, `$2b$`, `$2a$`) is accepted: other htpasswd formats
/// (MD5, SHA-1, crypt) are refused at start rather than never matching.
fn parse(text: &str, file: &Path) -> Result<HashMap<String, String>, UsersError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why| UsersError::Malformed {
            file: file.to_path_buf(),
            line: i + 1,
            why,
        };
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| bad("expected user:hash"))?;
        if user.is_empty() {
            return Err(bad("empty user name"));
        }
        if !is_bcrypt(hash) {
            return Err(bad("not a bcrypt hash (make it with htpasswd -B)"));
        }
        if users.insert(user.to_string(), hash.to_string()).is_some() {
            return Err(bad("user listed twice"));
        }
    }
    Ok(users)
}

/// `$2y$NN$` and 53 characters of bcrypt's base64.
fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    b.len() == 60
        && ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p))
        && b[4..6].iter().all(u8::is_ascii_digit)
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB -C 5 alice s3cret`
    const ALICE: &str = "alice:$2y$05$f49uliBGt5lyhgCBkI5u9eyGGPHIPIpWi6gDAx0xW/Q0X2dil6.LC";

    fn creds(user: &str, pw: &str) -> Credentials {
        Credentials::new(user.into(), pw.as_bytes().to_vec())
    }

    #[test]
    fn htpasswd_bcrypt_lines_check() {
        let users = Users::File(parse(&format!("# users\n\n{ALICE}\r\n"), Path::new("f")).unwrap());
        assert!(users.required());
        assert!(users.check(&creds("alice", "s3cret")));
        assert!(!users.check(&creds("alice", "wrong")));
        assert!(!users.check(&creds("bob", "s3cret")));
        assert!(Users::Any.check(&creds("anyone", "anything")) && !Users::Any.required());
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = |t: &str| parse(t, Path::new("/etc/pw")).unwrap_err().to_string();
        assert_eq!(
            e(&format!("{ALICE}\nbob\n")),
            "malformed password file /etc/pw line 2: expected user:hash"
        );
        assert!(e("bob:{SHA}abc=\n").contains("line 1: not a bcrypt hash"));
        assert!(e("bob:$apr1$x$y\n").contains("not a bcrypt"));
        assert!(e(&format!("{ALICE}\n{ALICE}\n")).contains("line 2: user listed twice"));
        assert!(
            e(":$2y$05$Wb5wNRmY0iLZjbXz4VsNEO6ZYwZcsFJeD4TMi43PA7gmCa0S2PHGa")
                .contains("empty user")
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Users::load(&Source::File("/nonexistent/pw".into())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read password file /nonexistent/pw")
        );
    }
}
