//! SPEC "Running as a service": socket activation with a hand-made
//! inherited listener at fd 3, and `--user` (as root).

use crate::harness::{BIN, Client, Server, TIMEOUT, run_within, wait_until};
use rustix::io::{FdFlags, fcntl_setfd};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// mailsink started the way systemd does it: the listening socket at fd 3,
/// LISTEN_FDS=1, and LISTEN_PID the pid of mailsink itself (or, with
/// `pid_matches` false, of another process). `sh` moves the socket to fd 3
/// and `exec`s mailsink, which keeps the shell's pid: no unsafe `pre_exec`.
struct Activated {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Activated {
    fn start(listener: &TcpListener, pid_matches: bool, root: &Path, args: &[&str]) -> Activated {
        // The socket must survive exec: clear close-on-exec on our copy.
        fcntl_setfd(listener, FdFlags::empty()).unwrap();
        let fd = listener.as_raw_fd();
        let pid = if pid_matches { "$$" } else { "1" };
        // (`exec 3<&3 3<&-` would close it when the listener is fd 3 already.)
        let dup = if fd == 3 {
            String::new()
        } else {
            format!("exec 3<&{fd} {fd}<&-; ")
        };
        let script = format!("{dup}LISTEN_PID={pid} LISTEN_FDS=1 exec \"$0\" \"$@\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(BIN)
            .args(["--hostname", "mx.test", "--maildir"])
            .arg(root)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        fcntl_setfd(listener, FdFlags::CLOEXEC).unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Activated { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The addresses it logs as listening on, once it has logged `n`.
    fn listening(&self, n: usize) -> Vec<SocketAddr> {
        let found = || -> Vec<SocketAddr> {
            self.log()
                .lines()
                .filter_map(|l| l.split("listening on ").nth(1))
                .filter_map(|a| a.trim().parse().ok())
                .collect()
        };
        assert!(
            wait_until(Duration::from_secs(10), || found().len() >= n),
            "{}",
            self.log()
        );
        found()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deliver(addr: SocketAddr) -> String {
    let mut c = Client::greeted(addr);
    c.cmd("EHLO client.test", "250");
    c.mail("a@x.test", &["b@y.test"], "Subject: s\r\n\r\nhi\r\n")
}

#[test]
fn an_inherited_listener_replaces_listen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // --listen is given too: the inherited socket wins.
    let server = Activated::start(&listener, true, &root, &["--listen", "127.0.0.1:0"]);
    assert_eq!(server.listening(1), vec![addr]);
    assert!(server.log().contains("using 1 sockets passed by systemd"));
    drop(listener); // only mailsink's copy is left: it must be the one accepting
    let reply = deliver(addr);
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(crate::harness::files_in(&root.join("new")).len(), 1);
    assert_eq!(server.log().matches("listening on").count(), 1);
}

#[test]
fn a_listen_pid_of_another_process_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let inherited = listener.local_addr().unwrap();
    let server = Activated::start(
        &listener,
        false,
        &dir.path().join("Maildir"),
        &["--listen", "127.0.0.1:0"],
    );
    let addrs = server.listening(1);
    assert_eq!(addrs.len(), 1);
    assert_ne!(addrs[0], inherited);
    assert!(deliver(addrs[0]).starts_with("250 "));
    assert!(!server.log().contains("passed by systemd"));
}

#[test]
fn an_inherited_fd_that_is_no_tcp_listener_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec 3</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("--maildir")
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use inherited socket fd 3"), "{err}");
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// uid and gid of "nobody", which every Debian has.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("nobody:")).unwrap();
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn status_field(status: &str, field: &str) -> Vec<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn user_switches_every_thread_and_owns_what_it_stores() {
    if !is_root() {
        eprintln!("skipped: --user needs root (run the tests as root)");
        return;
    }
    let (uid, gid) = nobody();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("spool/Maildir"); // two levels start creates
    let server = Server::start_in(&root, &["--user", "nobody", "--workers", "4"]);
    assert!(server.wait_log("running as user nobody", TIMEOUT));
    assert!(deliver(server.addr).starts_with("250 "));

    // 1. The process and every thread: real, effective, saved and fs ids.
    let pid = server.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_field(&status, "Uid:"), vec![uid.to_string(); 4]);
    assert_eq!(status_field(&status, "Gid:"), vec![gid.to_string(); 4]);
    assert!(status_field(&status, "Groups:").is_empty(), "{status}");
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    assert!(
        tasks.len() >= 6,
        "main, writer, 4 workers, accept: {tasks:?}"
    );
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        assert_eq!(
            status_field(&status, "Uid:"),
            vec![uid.to_string(); 4],
            "{task:?}"
        );
        assert_eq!(
            status_field(&status, "Gid:"),
            vec![gid.to_string(); 4],
            "{task:?}"
        );
        assert!(status_field(&status, "Groups:").is_empty(), "{task:?}");
    }
    // 2. What start created, and the stored message, belong to the user.
    for path in [
        dir.path().join("spool"),
        root.clone(),
        root.join("tmp"),
        root.join("new"),
        root.join("cur"),
    ] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{path:?}");
    }
    let files = server.new_files();
    assert_eq!(files.len(), 1);
    let meta = std::fs::metadata(&files[0]).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    // The temporary directory itself was not created by start: still root's.
    assert_eq!(std::fs::metadata(dir.path()).unwrap().uid(), 0);
}

/// Runs the server as `user` on `root`, to a start error (or 30 s).
fn start_as(user: &str, root: &std::path::Path) -> std::process::Output {
    let maildir = root.to_str().unwrap();
    let args = [
        "--user",
        user,
        "--maildir",
        maildir,
        "--listen",
        "127.0.0.1:0",
    ];
    run_within(&args, &[], Duration::from_secs(30))
}

#[test]
fn unknown_user_is_a_start_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let out = start_as("no-such-user-x", &root);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "mailsink: unknown --user \"no-such-user-x\"");
    assert!(!root.exists(), "nothing is created for an unknown user");
}

#[test]
fn a_maildir_the_user_cannot_write_is_a_start_error() {
    if !is_root() {
        eprintln!("skipped: --user needs root (run the tests as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap(); // 0700, root's: nobody cannot enter
    let root = dir.path().join("Maildir");
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let out = start_as("nobody", &root);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--user \"nobody\" cannot write to"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("mailsink: ")).count(),
        1,
        "{err}"
    );
}
