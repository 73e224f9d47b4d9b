//! Drives the real binary: `Server::start` runs mailsink on 127.0.0.1:0
//! with a temporary Maildir and reads the bound address from its log;
//! `Client` speaks SMTP over a real socket with a read timeout, so a hang
//! fails a test instead of stalling it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailsink");
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    child: Child,
    pub addrs: Vec<SocketAddr>,
    pub addr: SocketAddr,
    root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    /// What it wrote to stdout (`--events -`), line by line.
    out: Arc<Mutex<String>>,
    /// The threads copying stdout and stderr: joined once the process has
    /// exited, so that after `wait_exit` the log and stdout are whole.
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts mailsink with a fresh temporary Maildir.
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Maildir");
        let mut server = Server::start_in(&root, args);
        server._dir = Some(dir);
        server
    }

    /// Starts mailsink on the Maildir at `root` (kept after the server).
    pub fn start_in(root: &Path, args: &[&str]) -> Server {
        Server::try_start(root, args).unwrap_or_else(|log| panic!("mailsink did not start:\n{log}"))
    }

    /// Starts it; `Err(log)` if it exits or never logs a listening line.
    pub fn try_start(root: &Path, args: &[&str]) -> Result<Server, String> {
        let level = std::env::var("MAILSINK_TEST_LOG").unwrap_or_else(|_| "debug".into());
        Server::try_start_logged(root, args, &level)
    }

    /// As `try_start`, with `RUST_LOG` set to `level`.
    pub fn try_start_logged(root: &Path, args: &[&str], level: &str) -> Result<Server, String> {
        let mut cmd = Command::new(BIN);
        if !args.iter().any(|a| *a == "-l" || *a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.iter().any(|a| *a == "-H" || *a == "--hostname") {
            cmd.args(["--hostname", "mx.test"]);
        }
        cmd.arg("--maildir").arg(root).args(args);
        cmd.env("RUST_LOG", level);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mailsink");
        let out = Arc::new(Mutex::new(String::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect_lines(child.stdout.take().unwrap(), Arc::clone(&out)),
            collect_lines(child.stderr.take().unwrap(), Arc::clone(&log)),
        ];
        let listens = args
            .iter()
            .filter(|a| **a == "-l" || **a == "--listen")
            .count()
            .max(1)
            + args.iter().filter(|a| **a == "--tls-listen").count();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = log.lock().unwrap().clone();
            let addrs: Vec<SocketAddr> = text
                .lines()
                .filter_map(|l| l.split("listening on ").nth(1))
                .filter_map(|a| a.split_whitespace().next()?.parse().ok()) // "ADDR [(TLS)]"
                .collect();
            if addrs.len() >= listens {
                return Ok(Server {
                    child,
                    addr: addrs[0],
                    addrs,
                    root: root.to_path_buf(),
                    _dir: None,
                    log,
                    out,
                    readers,
                });
            }
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                // The readers end at EOF: after them, the log is whole.
                for reader in readers {
                    let _ = reader.join();
                }
                return Err(log.lock().unwrap().clone());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects, reads the greeting and says `EHLO client.test`.
    pub fn ehlo(&self) -> Client {
        let mut c = Client::greeted(self.addr);
        c.cmd("EHLO client.test", "250-");
        c
    }

    pub fn maildir(&self) -> &Path {
        &self.root
    }

    /// The files in `<maildir>/new`, sorted by name.
    pub fn new_files(&self) -> Vec<PathBuf> {
        files_in(&self.root.join("new"))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// What it has written to stdout so far (whole lines).
    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        wait_until(within, || self.log().contains(needle))
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The readers end at EOF: after them, the log is whole.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends each line read from `from` to `into`, in a thread.
fn collect_lines(from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Polls `cond` until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary to completion (for command-line tests), with a minute
/// to do it.
pub fn run(args: &[&str]) -> Output {
    run_within(args, &[], Duration::from_secs(60))
}

/// A stored file split at the end of the prepended headers: the prepended
/// block (Return-Path, Delivered-To, Received) and the message as sent.
pub fn split_stored(path: &Path) -> (String, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let received = text.find("Received: ").expect("Received header");
    let end = received + text[received..].find(" +0000\n").expect("date") + " +0000\n".len();
    (text[..end].to_string(), bytes[end..].to_vec())
}

pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Connects and reads the greeting.
    pub fn greeted(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        c.expect("220 ");
        c
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).unwrap();
    }

    /// Like `send`, but a write error is returned, not a panic.
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_ref())
    }

    /// Reads one whole reply (every line of a multi-line one); "" at EOF.
    pub fn reply(&mut self) -> String {
        self.try_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// Like `reply`, but a read error (reset, timeout) is returned, not a panic.
    pub fn try_reply(&mut self) -> std::io::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if let Err(e) = self.reader.read_line(&mut line) {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{e} (so far: {all:?})"),
                ));
            }
            if line.is_empty() {
                return Ok(all);
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(all);
            }
        }
    }

    /// Reads a reply and checks its start.
    pub fn expect(&mut self, prefix: &str) -> String {
        let reply = self.reply();
        assert!(
            reply.starts_with(prefix),
            "expected {prefix:?}, got {reply:?}"
        );
        reply
    }

    /// Sends one command line (CRLF added) and checks the reply's start.
    pub fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(format!("{line}\r\n"));
        self.expect(prefix)
    }

    /// A whole transaction after EHLO; returns the final reply.
    pub fn mail(&mut self, from: &str, rcpts: &[&str], text: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
        for r in rcpts {
            self.cmd(&format!("RCPT TO:<{r}>"), "250 2.1.5");
        }
        self.cmd("DATA", "354");
        self.send(text);
        self.send(".\r\n");
        self.reply()
    }

    /// After EHLO: `MAIL FROM:<a@x.test>`, `RCPT TO:<b@y.test>` and `DATA`,
    /// each checked, up to the `354`.
    pub fn open_data(&mut self) {
        self.cmd("MAIL FROM:<a@x.test>", "250 2.1.0");
        self.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
        self.cmd("DATA", "354");
    }

    /// One transaction from `a@x.test` to `b@y.test` that may be refused:
    /// the reply to MAIL if it is not a 250, else the final reply.
    pub fn transact(&mut self, text: &str) -> String {
        self.send("MAIL FROM:<a@x.test>\r\n");
        let r = self.reply();
        if !r.starts_with("250") {
            return r;
        }
        self.cmd("RCPT TO:<b@y.test>", "250 2.1.5");
        self.cmd("DATA", "354");
        self.send(text);
        self.send(".\r\n");
        self.reply()
    }

    /// Reads until the server closes.
    pub fn read_to_end(&mut self) -> String {
        let mut s = Vec::new();
        let _ = self.reader.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    }
}

/// Runs the binary with extra environment variables, killing it if it has
/// not exited within `within` (a server that should have refused to start
/// but did not fails the test instead of hanging it).
pub fn run_within(args: &[&str], envs: &[(&str, &str)], within: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailsink");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mailsink {args:?} still running after {within:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Dot-stuffs message text (RFC 5321 §4.5.2) for sending after DATA.
pub fn stuffed(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut line_start = true;
    for &b in text {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// The message text of each file in `dir/new`, prepended headers removed.
pub fn stored_bodies(dir: &Path) -> Vec<Vec<u8>> {
    files_in(&dir.join("new"))
        .iter()
        .map(|p| split_stored(p).1)
        .collect()
}

/// The first line of each message text in `dir/new` (the tests put a
/// distinct `Subject:` there), in file-name order.
pub fn first_lines(dir: &Path) -> Vec<String> {
    stored_bodies(dir)
        .iter()
        .map(|b| {
            let text = String::from_utf8_lossy(b);
            text.lines().next().unwrap_or("").to_string()
        })
        .collect()
}

// ---- helpers for the hostile-input, limits and fault tests ----

/// The queue id in `250 2.0.0 Ok: queued as <id>`.
pub fn queued_id(reply: &str) -> Option<String> {
    let id = reply.strip_prefix("250 2.0.0 Ok: queued as ")?.trim_end();
    (!id.is_empty()).then(|| id.to_string())
}

/// The file in `<maildir>/new` whose Received header names queue id `id`.
pub fn file_with_id(maildir: &Path, id: &str) -> Option<PathBuf> {
    let (a, b) = (format!(" id {id}\n"), format!(" id {id};"));
    files_in(&maildir.join("new")).into_iter().find(|p| {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let head = text.split("\n\n").next().unwrap_or("");
        head.contains(&a) || head.contains(&b)
    })
}

/// Panics unless the file's length equals the `,S=` in its name.
pub fn assert_whole(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let tag: u64 = name
        .rsplit_once(",S=")
        .and_then(|(_, s)| s.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no ,S= in {name}"));
    let len = std::fs::metadata(path).unwrap().len();
    assert_eq!(len, tag, "{name}: length {len} differs from its ,S=");
}

/// A small seeded PRNG (xorshift64*), so a failing chunking can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}
