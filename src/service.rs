//! Running as a service: listeners inherited through socket activation
//! (`LISTEN_FDS`/`LISTEN_PID`), and `--user` (the account read from
//! /etc/passwd, what start created handed to it, then the switch of group,
//! supplementary groups and user while the process has one thread).
//! Called by `server::run` only, in its numbered order.

use listenfd::ListenFd;
use rustix::fs::{Access, access};
use rustix::process::{Gid, Uid, getegid, geteuid, getgid, getgroups, getuid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::{env, fs, io, process};

/// The file of accounts; `--user` names one of its entries.
const PASSWD: &str = "/etc/passwd";

/// A `--user` account: name, uid and primary gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Why `--user` could not be honoured (a start error, exit 1).
#[derive(Debug)]
pub enum UserError {
    Unknown(String),
    Read(io::Error),
    Switch(String, io::Error),
    HandOver(PathBuf, io::Error),
    NotWritable(String, PathBuf, io::Error),
    Threads(usize),
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserError::Unknown(name) => write!(f, "unknown --user \"{}\"", name.escape_debug()),
            UserError::Read(e) => write!(f, "cannot read {PASSWD} for --user: {e}"),
            UserError::Switch(name, e) => write!(f, "cannot switch to --user \"{name}\": {e}"),
            UserError::HandOver(p, e) => {
                write!(f, "cannot hand {} to --user: {e}", p.display())
            }
            UserError::NotWritable(name, p, e) => {
                write!(f, "--user \"{name}\" cannot write to {}: {e}", p.display())
            }
            UserError::Threads(n) => write!(
                f,
                "cannot switch --user with {n} threads running (only the calling thread would change)"
            ),
        }
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UserError::Read(e)
            | UserError::Switch(_, e)
            | UserError::HandOver(_, e)
            | UserError::NotWritable(_, _, e) => Some(e),
            UserError::Unknown(_) | UserError::Threads(_) => None,
        }
    }
}

/// Looks `name` up in /etc/passwd.
pub fn lookup(name: &str) -> Result<Account, UserError> {
    let text = fs::read_to_string(PASSWD).map_err(UserError::Read)?;
    find_account(&text, name).ok_or_else(|| UserError::Unknown(name.to_string()))
}

/// The entry for `name` in passwd(5) text: `name:password:uid:gid:...`.
fn find_account(passwd: &str, name: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some(Account {
            name: name.to_string(),
            uid: fields.next()?.parse().ok()?,
            gid: fields.next()?.parse().ok()?,
        })
    })
}

/// What creating the Maildir at `root` will create: its missing ancestors,
/// itself and its missing `tmp`, `new`, `cur`, outermost first.
pub fn missing_dirs(root: &Path) -> Vec<PathBuf> {
    let mut missing: Vec<PathBuf> = root
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| !p.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    for sub in ["tmp", "new", "cur"] {
        let dir = root.join(sub);
        if !dir.exists() && !missing.contains(&dir) {
            missing.push(dir);
        }
    }
    missing
}

/// Hands the directories start created to the account.
pub fn hand_over(dirs: &[PathBuf], account: &Account) -> Result<(), UserError> {
    for dir in dirs {
        std::os::unix::fs::chown(dir, Some(account.uid), Some(account.gid))
            .map_err(|e| UserError::HandOver(dir.clone(), e))?;
    }
    Ok(())
}

/// Switches group, supplementary groups and user, in that order (after
/// the user switch the others are no longer allowed), and checks that the
/// Maildir is writable as that user. Linux's raw calls change only the
/// calling thread, so this runs while the process has exactly one thread:
/// every thread started later inherits the new identity.
pub fn switch(account: &Account, maildir: &Path) -> Result<(), UserError> {
    // No /proc, no proof that this is the only thread: refuse.
    let threads = fs::read_dir("/proc/self/task")
        .map_err(|e| UserError::Switch(account.name.clone(), e))?
        .count();
    if threads != 1 {
        return Err(UserError::Threads(threads));
    }
    let failed = |e: rustix::io::Errno| UserError::Switch(account.name.clone(), e.into());
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    set_thread_groups(&[]).map_err(failed)?; // 1. no supplementary groups
    set_thread_res_gid(gid, gid, gid).map_err(failed)?; // 2. the primary group
    set_thread_res_uid(uid, uid, uid).map_err(failed)?; // 3. the user, saved uid too
    let groups = getgroups().map_err(failed)?;
    let switched = (getuid(), geteuid(), getgid(), getegid()) == (uid, uid, gid, gid)
        && groups.iter().all(|g| *g == gid);
    if !switched {
        return Err(UserError::Switch(
            account.name.clone(),
            io::Error::other("the ids did not change"),
        ));
    }
    // 4. A Maildir the user cannot write would fail every message: say so now.
    let tmp = maildir.join("tmp");
    access(&tmp, Access::WRITE_OK | Access::EXEC_OK)
        .map_err(|e| UserError::NotWritable(account.name.clone(), tmp, e.into()))
}

/// The listening sockets passed by systemd (or `systemd-socket-activate`),
/// when `LISTEN_PID` names this process; empty otherwise.
pub fn inherited() -> Result<Vec<TcpListener>, (usize, io::Error)> {
    // listenfd also takes sockets when LISTEN_PID is unset (systemfd's
    // habit); SPEC wants them only when it names this process.
    let ours = env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(process::id());
    if !ours {
        return Ok(Vec::new());
    }
    // Reads and unsets LISTEN_PID/LISTEN_FDS (no thread exists yet).
    let mut fds = ListenFd::from_env();
    (0..fds.len())
        .map(|i| match fds.take_tcp_listener(i) {
            Ok(Some(listener)) => Ok(listener),
            Ok(None) => Err((i + 3, io::Error::other("already taken"))),
            Err(e) => Err((i + 3, e)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken:x:12\n\
        mailsink:x:999:998::/nonexistent:/usr/sbin/nologin\n";

    #[test]
    fn finds_an_account() {
        assert_eq!(
            find_account(PASSWD_TEXT, "mailsink"),
            Some(Account {
                name: "mailsink".into(),
                uid: 999,
                gid: 998
            })
        );
        assert_eq!(find_account(PASSWD_TEXT, "daemon").unwrap().uid, 1);
        assert_eq!(find_account(PASSWD_TEXT, "nobody"), None);
        assert_eq!(find_account(PASSWD_TEXT, "broken"), None);
        assert_eq!(find_account(PASSWD_TEXT, "mail"), None); // no prefix match
    }

    #[test]
    fn missing_dirs_lists_what_create_makes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/Maildir");
        assert_eq!(
            missing_dirs(&root),
            [
                "a",
                "a/b",
                "a/b/Maildir",
                "a/b/Maildir/tmp",
                "a/b/Maildir/new",
                "a/b/Maildir/cur"
            ]
            .map(|p| dir.path().join(p))
        );
        fs::create_dir_all(root.join("new")).unwrap();
        assert_eq!(missing_dirs(&root), [root.join("tmp"), root.join("cur")]);
    }

    #[test]
    fn errors_name_the_user() {
        assert_eq!(
            UserError::Unknown("nosuch".into()).to_string(),
            "unknown --user \"nosuch\""
        );
        let e = UserError::Switch("mail".into(), io::Error::from_raw_os_error(1));
        assert!(
            e.to_string()
                .starts_with("cannot switch to --user \"mail\": ")
        );
    }
}
