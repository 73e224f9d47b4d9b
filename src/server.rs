//! Startup, the accept loops, the fixed worker pool and shutdown.
//! `TcpListener` per address → bounded crossbeam queue (full: `421 4.3.2`
//! at once) → `--workers` threads, one session each → the writer thread.

use crate::config::Config;
use crate::conn::{self, Secure, Shared, StageCounters};
use crate::events::Events;
use crate::maildir::{self, Maildir};
use crate::service::{self, UserError};
use crate::smtp::{Limits, Reply};
use crate::tls::{self, TlsError};
use crate::users::{Users, UsersError};
use crate::writer::{self, Settings, Stats};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use log::{error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};
use std::{error, fmt};

/// Connections the kernel holds before accept() takes them.
const BACKLOG: i32 = 1024;

/// An accepted connection, and whether it came to a `--tls-listen` port.
type Accepted = (TcpStream, bool);

/// Why the server could not start (exit 1).
#[derive(Debug)]
pub enum StartError {
    Maildir(PathBuf, io::Error),
    Bind(SocketAddr, io::Error),
    Setup(&'static str, io::Error),
    Events(PathBuf, io::Error),
    /// `--user` (issue 12).
    User(UserError),
    /// A socket passed by systemd (fd number) that is not a TCP listener.
    Inherited(usize, io::Error),
    Tls(TlsError),
    Users(UsersError),
}

impl From<UserError> for StartError {
    fn from(e: UserError) -> Self {
        StartError::User(e)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Maildir(p, e) => write!(f, "cannot use Maildir {}: {e}", p.display()),
            StartError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            StartError::Setup(what, e) => write!(f, "cannot {what}: {e}"),
            StartError::User(e) => e.fmt(f),
            StartError::Inherited(fd, e) => write!(f, "cannot use inherited socket fd {fd}: {e}"),
            StartError::Tls(e) => write!(f, "{e}"),
            StartError::Events(p, e) => write!(f, "cannot open --events {}: {e}", p.display()),
            StartError::Users(e) => write!(f, "{e}"),
        }
    }
}

impl error::Error for StartError {
    fn source(&self) -> Option<&(dyn error::Error + 'static)> {
        match self {
            StartError::Maildir(_, e)
            | StartError::Bind(_, e)
            | StartError::Setup(_, e)
            | StartError::Inherited(_, e)
            | StartError::Events(_, e) => Some(e),
            StartError::User(e) => Some(e),
            StartError::Tls(e) => e.source(),
            StartError::Users(e) => e.source(),
        }
    }
}

/// Runs until SIGINT or SIGTERM, then stops cleanly: listeners close,
/// sessions in DATA finish, the others get `421 4.3.2`, the writer stores
/// everything queued. The steps are numbered; their order is the contract.
pub fn run(cfg: Config) -> Result<(), StartError> {
    // 1. --user is looked up first: an unknown name creates nothing.
    let account = cfg.user.as_deref().map(service::lookup).transpose()?;
    // 2. The Maildir exists (created if missing; what start created is
    //    handed to --user) and stale tmp/ files are gone.
    let created = service::missing_dirs(&cfg.maildir);
    let maildir = open_maildir(&cfg)?;
    if let Some(account) = &account {
        service::hand_over(&created, account)?;
    }
    //    The certificate and the password file are read (errors name the
    //    file), before --user may lose the right to read them.
    let secure = secure(&cfg)?;
    // 3. The listeners: inherited from systemd, else bound from --listen;
    //    then --tls-listen. Each is logged with its real address.
    let mut listeners: Vec<(TcpListener, bool)> = listen(&cfg.listen)?
        .into_iter()
        .map(|l| (l, false))
        .collect();
    listeners.extend(bind(&cfg.tls.listen, true)?.into_iter().map(|l| (l, true)));
    // 4. --user: group, no supplementary groups, user, while this is the
    //    only thread, so that every thread started below inherits them.
    if let Some(account) = &account {
        service::switch(account, &cfg.maildir)?;
        info!(
            "running as user {} (uid {}, gid {})",
            account.name, account.uid, account.gid
        );
    }
    // 5. SIGINT and SIGTERM are caught from here on (no thread: a self-pipe).
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| StartError::Setup("handle signals", e))?;
    // 6. The writer thread, the one place messages are stored (with the
    //    test hooks: --events opened, --exit-after able to stop the server).
    let shared = Arc::new(shared(&cfg, secure)?);
    let stats = Arc::new(Stats::default());
    let (writer, writer_thread) = start_writer(&cfg, maildir, &stats, &shared)?;
    // 7. The worker pool, fed by a bounded queue of accepted connections.
    let (queue, waiting) = bounded::<Accepted>(cfg.queue);
    let workers = (0..cfg.workers)
        .map(|i| spawn_worker(i, waiting.clone(), writer.clone(), Arc::clone(&shared)))
        .collect::<Result<Vec<_>, _>>()?;
    drop((writer, waiting)); // the workers hold the only handles now
    // 8. One accept loop per listener.
    let (acceptors, wake) = spawn_acceptors(listeners, &queue, &shared)?;
    drop(queue); // the accept loops hold the only senders now
    // 9. Serve until a signal.
    let signal = signals.forever().next().unwrap_or(SIGTERM);
    shared.shutdown.store(true, Ordering::SeqCst); // before the log line that says so
    info!("received signal {signal}, shutting down");
    // 10. The accept loops stop, which closes the queue.
    for addr in wake {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1)); // unblocks accept()
    }
    join(acceptors);
    // 11. The workers drain: sessions in DATA finish, idle ones get 421 within a poll.
    join(workers);
    // 12. The writer ends after the last queued message is stored.
    let _ = writer_thread.join();
    info!(
        "shutdown: stored {} messages, {} fsyncs",
        stats.stored.load(Ordering::Relaxed),
        stats.fsyncs.load(Ordering::Relaxed)
    );
    Ok(())
}

fn start_writer(
    cfg: &Config,
    maildir: Maildir,
    stats: &Arc<Stats>,
    shared: &Arc<Shared>,
) -> Result<(writer::Handle, JoinHandle<()>), StartError> {
    let settings = Settings {
        root: cfg.maildir.clone(),
        host: cfg.hostname.clone(),
        per_recipient: cfg.per_recipient,
        sync: cfg.sync,
    };
    let hooks = writer::Hooks {
        events: shared.events.clone(),
        exit_after: cfg.hooks.exit_after.map(|n| (n, stopper(shared))),
        keep: cfg.hooks.keep,
    };
    writer::start(maildir, settings, Arc::clone(stats), hooks)
        .map_err(|e| StartError::Setup("start the writer", e))
}

/// What every connection shares, with the test hooks: the --events file
/// (opened here: a start error if it cannot be), the --fail rules and
/// their counters.
fn shared(cfg: &Config, secure: Secure) -> Result<Shared, StartError> {
    let mut shared = Shared::new(cfg.hostname.clone(), limits(cfg), cfg.timeout);
    shared.proxy_from = cfg.proxy_from.clone();
    shared.secure = secure;
    if let Some(path) = &cfg.hooks.events {
        let events = Events::open(path).map_err(|e| StartError::Events(path.clone(), e))?;
        shared.events = Some(Arc::new(events));
        shared.hooks.report = true;
    }
    if !cfg.hooks.fail.is_empty() {
        let counters: Arc<dyn crate::smtp::fail::Counter> = Arc::new(StageCounters::default());
        shared.hooks.fail = Some((Arc::new(cfg.hooks.fail.clone()), counters));
    }
    Ok(shared)
}

/// `--exit-after`: stop exactly as SIGTERM does. The flag is set first, so
/// no connection that starts after the N-th answer gets a transaction;
/// the signal then wakes the wait for a signal.
fn stopper(shared: &Arc<Shared>) -> Arc<dyn Fn() + Send + Sync> {
    let shared = Arc::clone(shared);
    Arc::new(move || {
        shared.shutdown.store(true, Ordering::SeqCst);
        if let Err(e) = signal_hook::low_level::raise(SIGTERM) {
            error!("--exit-after: cannot raise SIGTERM: {e}");
        }
    })
}

/// TLS and AUTH: the rustls configuration (a self-signed certificate's
/// fingerprint logged) and the password file, read once at start.
fn secure(cfg: &Config) -> Result<Secure, StartError> {
    let tls = match &cfg.tls.source {
        None => None,
        Some(source) => {
            let loaded = tls::load(source, &cfg.hostname).map_err(StartError::Tls)?;
            if let Some(fp) = &loaded.fingerprint {
                info!(
                    "self-signed certificate for {}, SHA-256 fingerprint {fp}",
                    tls::self_signed_names(&cfg.hostname).join(", ")
                );
            }
            Some(loaded.config)
        }
    };
    let users = match &cfg.auth.users {
        None => None,
        Some(source) => Some(Users::load(source).map_err(StartError::Users)?),
    };
    Ok(Secure {
        tls,
        tls_required: cfg.tls.required,
        users,
        auth_insecure: cfg.auth.insecure,
    })
}

fn limits(cfg: &Config) -> Limits {
    Limits {
        max_size: cfg.max_size,
        max_recipients: cfg.max_recipients,
        domains: cfg.domains.clone(),
        mailbox_fits: cfg
            .per_recipient
            .then_some(maildir::fits_mailbox_name as fn(&str) -> bool),
    }
}

/// Starts one accept loop per listener; returns them with the addresses
/// that wake each one at shutdown.
fn spawn_acceptors(
    listeners: Vec<(TcpListener, bool)>,
    queue: &Sender<Accepted>,
    shared: &Arc<Shared>,
) -> Result<(Vec<JoinHandle<()>>, Vec<SocketAddr>), StartError> {
    let mut acceptors = Vec::new();
    let mut wake = Vec::new();
    for (listener, tls) in listeners {
        let bound = listener
            .local_addr()
            .map_err(|e| StartError::Setup("read the bound address", e))?;
        wake.push(wake_address(bound));
        acceptors.push(spawn_acceptor(
            listener,
            tls,
            queue.clone(),
            Arc::clone(shared),
        )?);
    }
    Ok((acceptors, wake))
}

fn open_maildir(cfg: &Config) -> Result<Maildir, StartError> {
    let maildir =
        Maildir::create(&cfg.maildir).map_err(|e| StartError::Maildir(cfg.maildir.clone(), e))?;
    match maildir.clean_tmp(SystemTime::now(), maildir::TMP_MAX_AGE) {
        Ok(0) => {}
        Ok(n) => info!(
            "removed {n} stale files from {}",
            cfg.maildir.join("tmp").display()
        ),
        Err(e) => warn!("cannot clean {}: {e}", cfg.maildir.join("tmp").display()),
    }
    info!("maildir {}", cfg.maildir.display());
    Ok(maildir)
}

/// Socket activation: listeners passed by systemd replace --listen.
fn listen(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, StartError> {
    let inherited = service::inherited().map_err(|(fd, e)| StartError::Inherited(fd, e))?;
    if inherited.is_empty() {
        return bind(addrs, false);
    }
    info!(
        "using {} sockets passed by systemd (LISTEN_FDS)",
        inherited.len()
    );
    for listener in &inherited {
        let bound = listener
            .local_addr()
            .map_err(|e| StartError::Setup("read an inherited address", e))?;
        info!("listening on {bound}");
    }
    Ok(inherited)
}

/// `tls`: implicit-TLS (`--tls-listen`) listeners, logged with `(TLS)`.
fn bind(addrs: &[SocketAddr], tls: bool) -> Result<Vec<TcpListener>, StartError> {
    let mut listeners = Vec::new();
    for addr in addrs {
        let listener = TcpListener::bind(addr).map_err(|e| StartError::Bind(*addr, e))?;
        // std listens with a backlog of 128; a burst of connections should
        // wait in the kernel, not time out in SYN retries.
        rustix::net::listen(&listener, BACKLOG).map_err(|e| StartError::Bind(*addr, e.into()))?;
        let bound = listener
            .local_addr()
            .map_err(|e| StartError::Bind(*addr, e))?;
        info!("listening on {bound}{}", if tls { " (TLS)" } else { "" });
        listeners.push(listener);
    }
    Ok(listeners)
}

fn spawn_worker(
    i: usize,
    waiting: Receiver<Accepted>,
    writer: writer::Handle,
    shared: Arc<Shared>,
) -> Result<JoinHandle<()>, StartError> {
    thread::Builder::new()
        .name(format!("worker-{i}"))
        .spawn(move || {
            // Ends when the accept loops are gone and the queue is drained.
            for (stream, tls) in waiting.iter() {
                // A bug in one session must not shrink the pool.
                let served = panic::catch_unwind(AssertUnwindSafe(|| {
                    conn::serve(stream, tls, &shared, &writer)
                }));
                if served.is_err() {
                    error!("a session panicked; the worker goes on");
                }
            }
        })
        .map_err(|e| StartError::Setup("start a worker thread", e))
}

fn spawn_acceptor(
    listener: TcpListener,
    tls: bool,
    queue: Sender<Accepted>,
    shared: Arc<Shared>,
) -> Result<JoinHandle<()>, StartError> {
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(&listener, tls, &queue, &shared))
        .map_err(|e| StartError::Setup("start an accept thread", e))
}

/// Accepts until shutdown. Never blocks on a full pool: the connection
/// that finds the queue full gets `421 4.3.2` and is closed.
/// On a TLS port the refused connection is just closed: a plain-text
/// reply would be garbage to a client starting a handshake.
fn accept_loop(listener: &TcpListener, tls: bool, queue: &Sender<Accepted>, shared: &Shared) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                if shared.stopping() {
                    return;
                }
                warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50)); // e.g. out of file descriptors
                continue;
            }
        };
        if shared.stopping() {
            if !tls {
                refuse(stream, &Reply::shutting_down(&shared.host));
            }
            return;
        }
        match queue.try_send((stream, tls)) {
            Ok(()) => {}
            Err(TrySendError::Full((stream, tls))) => {
                let reply = Reply::busy(&shared.host);
                if let Ok(peer) = stream.peer_addr() {
                    warn!("{peer}: every worker busy and the queue full, refused");
                    shared.report_busy(peer.ip().to_canonical(), &reply);
                }
                if !tls {
                    refuse(stream, &reply);
                }
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Writes one reply to a connection that will not be served, and closes it.
fn refuse(mut stream: TcpStream, reply: &Reply) {
    let _ = stream.set_nonblocking(true); // a fresh socket's buffer has room
    let _ = write!(stream, "{reply}");
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Where to connect to wake an accept loop bound to `addr`.
fn wake_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn join(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            warn!("a thread panicked");
        }
    }
}
