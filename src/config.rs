//! The command line: getopts options, the help text, defaults, and `Config`.
//! Parses a slice and fetches nothing; binding and creating belong to
//! `server::run`.

pub use crate::maildir::SyncMode;
use crate::proxy::Cidr;
use crate::smtp::fail::Rules;
use getopts::{Matches, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use std::{error, fmt};

const OPT_LISTEN: &str = "listen";
const OPT_MAILDIR: &str = "maildir";
const OPT_WORKERS: &str = "workers";
const OPT_QUEUE: &str = "queue";
const OPT_HOSTNAME: &str = "hostname";
const OPT_MAX_SIZE: &str = "max-size";
const OPT_MAX_RECIPIENTS: &str = "max-recipients";
const OPT_TIMEOUT: &str = "timeout";
const OPT_DOMAIN: &str = "domain";
const OPT_PER_RECIPIENT: &str = "per-recipient";
// Proxies and service (issue 12).
const OPT_PROXY_FROM: &str = "proxy-from";
const OPT_USER: &str = "user";
// TLS and AUTH (issue 9)
const OPT_AUTH_ANY: &str = "auth-any";
const OPT_AUTH_FILE: &str = "auth-file";
const OPT_AUTH_INSECURE: &str = "auth-insecure";
const OPT_TLS_CERT: &str = "tls-cert";
const OPT_TLS_KEY: &str = "tls-key";
const OPT_TLS_SELF_SIGNED: &str = "tls-self-signed";
const OPT_TLS_LISTEN: &str = "tls-listen";
const OPT_TLS_REQUIRED: &str = "tls-required";
// Test hooks (SPEC "Test hooks").
const OPT_EVENTS: &str = "events";
const OPT_EXIT_AFTER: &str = "exit-after";
const OPT_FAIL: &str = "fail";
const OPT_KEEP: &str = "keep";
const OPT_SYNC: &str = "sync";

const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
const DEFAULT_MAILDIR: &str = "./Maildir";
const DEFAULT_WORKERS: usize = 64;
const DEFAULT_MAX_SIZE: u64 = 26_214_400;
const DEFAULT_MAX_RECIPIENTS: usize = 100;
const DEFAULT_TIMEOUT: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub maildir: PathBuf,
    pub workers: usize,
    pub queue: usize,
    pub hostname: String,
    pub max_size: u64,
    pub max_recipients: usize,
    pub timeout: Duration,
    /// Lower-case; empty accepts any domain.
    pub domains: Vec<String>,
    pub per_recipient: bool,
    /// Peers that must start with a PROXY protocol header.
    pub proxy_from: Vec<Cidr>,
    /// Who the server runs as once the listeners and the Maildir are ready.
    pub user: Option<String>,
    /// TLS: the certificate source and the implicit-TLS listeners.
    pub tls: Tls,
    pub auth: Auth,
    pub hooks: Hooks,
    /// `--sync`: how stored messages are made durable.
    pub sync: SyncMode,
}

/// The test hooks: `--events`, `--exit-after`, `--fail`, `--keep`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `-` is stdout.
    pub events: Option<PathBuf>,
    pub exit_after: Option<u64>,
    /// In command-line order; the first that matches wins.
    pub fail: Rules,
    pub keep: Option<usize>,
}

/// The TLS options. `source` is `None` when TLS is off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub source: Option<crate::tls::Source>,
    /// `--tls-listen`: implicit TLS (SMTPS).
    pub listen: Vec<SocketAddr>,
    /// `--tls-required`: MAIL and AUTH only after STARTTLS on `--listen`.
    pub required: bool,
}

/// The AUTH options. `users` is `None` when AUTH is off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub users: Option<Users>,
    /// `--auth-insecure`: offer AUTH without TLS to non-loopback peers.
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// `--auth-any`: any user name and password.
    Any,
    /// `--auth-file`: `user:bcrypt-hash` lines, checked at start.
    File(PathBuf),
}

// Made once per run: the size of `Run` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Cli {
    Run(Config),
    /// `list`, `show` or `wait`: read the Maildir (see `Read`).
    Read(Read),
    Help(String),
    Version,
}

/// A bad flag or value (exit 2).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl error::Error for UsageError {}

fn options() -> Options {
    let mut o = Options::new();
    o.optmulti(
        "l",
        OPT_LISTEN,
        &format!("address:port to listen on; repeatable (default {DEFAULT_LISTEN})"),
        "ADDR",
    );
    o.optopt(
        "d",
        OPT_MAILDIR,
        &format!("Maildir root; tmp/ new/ cur/ created if missing (default {DEFAULT_MAILDIR})"),
        "DIR",
    );
    o.optopt(
        "w",
        OPT_WORKERS,
        &format!("connection threads in the fixed pool (default {DEFAULT_WORKERS})"),
        "N",
    );
    o.optopt(
        "q",
        OPT_QUEUE,
        "accepted connections that may wait for a free worker (default: workers)",
        "N",
    );
    o.optopt("H", OPT_HOSTNAME, "name in the greeting, EHLO reply, Received header and file names (default: the system's host name)", "NAME");
    o.optopt(
        "s",
        OPT_MAX_SIZE,
        &format!("largest message accepted, advertised with SIZE (default {DEFAULT_MAX_SIZE})"),
        "BYTES",
    );
    o.optopt(
        "r",
        OPT_MAX_RECIPIENTS,
        &format!("recipients per message (default {DEFAULT_MAX_RECIPIENTS})"),
        "N",
    );
    o.optopt(
        "t",
        OPT_TIMEOUT,
        &format!(
            "time allowed for one command line, or between data reads (default {DEFAULT_TIMEOUT})"
        ),
        "SECS",
    );
    o.optmulti(
        "",
        OPT_DOMAIN,
        "accept recipients only in this domain; repeatable (default: any)",
        "DOMAIN",
    );
    o.optflag("", OPT_PER_RECIPIENT, "file each message in DIR/<recipient address>/ (a Maildir each) instead of the one catch-all Maildir");
    o.optmulti(
        "",
        OPT_PROXY_FROM,
        "peers in this range (such as 10.0.0.0/8) must start with a PROXY protocol header, v1 or v2; repeatable (default: none)",
        "CIDR",
    );
    o.optopt(
        "",
        OPT_USER,
        "after binding and creating the Maildir, run as this user and its group (default: not switched)",
        "NAME",
    );
    security_options(&mut o);
    hook_options(&mut o);
    o.optopt(
        "",
        OPT_SYNC,
        "how a 250 is made durable: files syncs only mailsink's own files and new/ \
         directories; filesystem makes one syncfs(2) per group commit, slightly faster \
         on an idle disk, but it waits for and flushes every other program's unwritten \
         data on that file system (default: files)",
        "MODE",
    );
    o.optflag("h", "help", "usage, then exit 0");
    o.optflag("V", "version", "version, then exit 0");
    o
}

/// Parses the arguments after the program name. `host` is the system's
/// host name, the default for `--hostname`.
pub fn parse(args: &[String], host: &str) -> Result<Cli, UsageError> {
    if let Some(command) = args.first().filter(|a| READ_COMMANDS.contains(&a.as_str())) {
        return parse_read(command, &args[1..]);
    }
    let opts = options();
    let m = opts.parse(args).map_err(|e| UsageError(e.to_string()))?;
    if m.opt_present("help") {
        return Ok(Cli::Help(help(&opts)));
    }
    if m.opt_present("version") {
        return Ok(Cli::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(UsageError(format!(
            "unexpected argument \"{}\"",
            extra.escape_debug()
        )));
    }
    let workers = number(&m, OPT_WORKERS, DEFAULT_WORKERS, 1)?;
    let listen = m.opt_strs(OPT_LISTEN);
    let (tls, auth) = security(&m)?;
    let listen = if listen.is_empty() && tls.listen.is_empty() {
        vec![DEFAULT_LISTEN.to_string()]
    } else {
        listen
    };
    Ok(Cli::Run(Config {
        listen: listen
            .iter()
            .map(|a| address(a))
            .collect::<Result<_, _>>()?,
        maildir: m
            .opt_str(OPT_MAILDIR)
            .map_or_else(|| PathBuf::from(DEFAULT_MAILDIR), PathBuf::from),
        workers,
        queue: number(&m, OPT_QUEUE, workers, 0)?,
        hostname: hostname(m.opt_str(OPT_HOSTNAME).as_deref().unwrap_or(host))?,
        max_size: number(&m, OPT_MAX_SIZE, DEFAULT_MAX_SIZE, 1)?,
        max_recipients: number(&m, OPT_MAX_RECIPIENTS, DEFAULT_MAX_RECIPIENTS, 1)?,
        timeout: Duration::from_secs(number(&m, OPT_TIMEOUT, DEFAULT_TIMEOUT, 1)?),
        domains: m
            .opt_strs(OPT_DOMAIN)
            .iter()
            .map(|d| domain(d))
            .collect::<Result<_, _>>()?,
        per_recipient: m.opt_present(OPT_PER_RECIPIENT),
        proxy_from: m
            .opt_strs(OPT_PROXY_FROM)
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|why: String| bad(OPT_PROXY_FROM, c, &why))
            })
            .collect::<Result<_, _>>()?,
        user: m.opt_str(OPT_USER).map(|u| user(&u)).transpose()?,
        tls,
        auth,
        hooks: hooks(&m)?,
        sync: sync_mode(m.opt_str(OPT_SYNC).as_deref())?,
    }))
}

fn hook_options(o: &mut Options) {
    o.optopt(
        "",
        OPT_EVENTS,
        "one JSON line per stored or refused message, flushed before the reply; - is stdout (default: none)",
        "FILE",
    );
    o.optopt(
        "",
        OPT_EXIT_AFTER,
        "stop as at SIGTERM once N messages are stored (default: never)",
        "N",
    );
    o.optmulti(
        "",
        OPT_FAIL,
        "deterministic failure injection, STAGE:WHICH=ACTION; repeatable (default: none)",
        "RULE",
    );
    o.optopt(
        "",
        OPT_KEEP,
        "keep at most the N newest messages of new/ and cur/ (default: all)",
        "N",
    );
}

fn hooks(m: &Matches) -> Result<Hooks, UsageError> {
    let optional = |name: &str| -> Result<Option<u64>, UsageError> {
        match m.opt_present(name) {
            true => number(m, name, 0, 1).map(Some),
            false => Ok(None),
        }
    };
    Ok(Hooks {
        events: m.opt_str(OPT_EVENTS).map(PathBuf::from),
        exit_after: optional(OPT_EXIT_AFTER)?,
        fail: Rules::parse(&m.opt_strs(OPT_FAIL)).map_err(|e| UsageError(e.to_string()))?,
        keep: optional(OPT_KEEP)?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    })
}

fn security_options(o: &mut Options) {
    o.optflag(
        "",
        OPT_AUTH_ANY,
        "offer AUTH and accept any user name and password",
    );
    o.optopt(
        "",
        OPT_AUTH_FILE,
        "offer AUTH and require it: users and bcrypt hashes as `htpasswd -B` writes them",
        "FILE",
    );
    o.optflag(
        "",
        OPT_AUTH_INSECURE,
        "offer AUTH without TLS to peers that are not loopback",
    );
    o.optopt(
        "",
        OPT_TLS_CERT,
        "PEM certificate chain for STARTTLS and --tls-listen",
        "FILE",
    );
    o.optopt(
        "",
        OPT_TLS_KEY,
        "PEM private key (PKCS#8, PKCS#1 or SEC1)",
        "FILE",
    );
    o.optflag(
        "",
        OPT_TLS_SELF_SIGNED,
        "make a certificate for --hostname at start, in memory; its fingerprint is logged",
    );
    o.optmulti(
        "",
        OPT_TLS_LISTEN,
        "implicit TLS (SMTPS, RFC 8314); repeatable",
        "ADDR",
    );
    o.optflag(
        "",
        OPT_TLS_REQUIRED,
        "MAIL and AUTH only after STARTTLS on --listen addresses",
    );
}

/// The TLS and AUTH options, checked for combinations that cannot work.
fn security(m: &Matches) -> Result<(Tls, Auth), UsageError> {
    use crate::tls::Source;
    let (cert, key) = (m.opt_str(OPT_TLS_CERT), m.opt_str(OPT_TLS_KEY));
    let self_signed = m.opt_present(OPT_TLS_SELF_SIGNED);
    let source = match (cert, key, self_signed) {
        (Some(_), Some(_), true) => {
            return Err(UsageError(format!(
                "--{OPT_TLS_SELF_SIGNED} and --{OPT_TLS_CERT} exclude each other"
            )));
        }
        (Some(cert), Some(key), false) => Some(Source::Files {
            cert: cert.into(),
            key: key.into(),
        }),
        (Some(_), None, _) => {
            return Err(UsageError(format!(
                "--{OPT_TLS_CERT} needs --{OPT_TLS_KEY}"
            )));
        }
        (None, Some(_), _) => {
            return Err(UsageError(format!(
                "--{OPT_TLS_KEY} needs --{OPT_TLS_CERT}"
            )));
        }
        (None, None, true) => Some(Source::SelfSigned),
        (None, None, false) => None,
    };
    let listen: Vec<SocketAddr> = m
        .opt_strs(OPT_TLS_LISTEN)
        .iter()
        .map(|a| {
            address(a).map_err(|_| {
                bad(
                    OPT_TLS_LISTEN,
                    a,
                    "expected IP:PORT, such as 127.0.0.1:4650",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let required = m.opt_present(OPT_TLS_REQUIRED);
    if source.is_none() && (!listen.is_empty() || required) {
        let flag = if required {
            OPT_TLS_REQUIRED
        } else {
            OPT_TLS_LISTEN
        };
        return Err(UsageError(format!(
            "--{flag} needs a certificate: --{OPT_TLS_CERT} and --{OPT_TLS_KEY}, or --{OPT_TLS_SELF_SIGNED}"
        )));
    }
    let users = match (m.opt_present(OPT_AUTH_ANY), m.opt_str(OPT_AUTH_FILE)) {
        (true, Some(_)) => {
            return Err(UsageError(format!(
                "--{OPT_AUTH_ANY} and --{OPT_AUTH_FILE} exclude each other"
            )));
        }
        (true, None) => Some(Users::Any),
        (false, Some(file)) => Some(Users::File(file.into())),
        (false, None) => None,
    };
    let insecure = m.opt_present(OPT_AUTH_INSECURE);
    if insecure && users.is_none() {
        return Err(UsageError(format!(
            "--{OPT_AUTH_INSECURE} needs --{OPT_AUTH_ANY} or --{OPT_AUTH_FILE}"
        )));
    }
    Ok((
        Tls {
            source,
            listen,
            required,
        },
        Auth { users, insecure },
    ))
}

fn help(opts: &Options) -> String {
    let brief = "Usage: mailsink [OPTIONS]\n       mailsink list|show|wait [OPTIONS]   (read the Maildir; see list --help)\n\n\
        A synchronous SMTP server that stores every accepted message as a file\n\
        in a Maildir. Logs go to stderr; RUST_LOG sets the level (default info).";
    format!(
        "{}\nSIGINT or SIGTERM stop it after in-flight messages are stored.\n",
        opts.usage(brief)
    )
}

fn number<T>(m: &Matches, name: &str, default: T, min: T) -> Result<T, UsageError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let value = m.opt_get_default::<T>(name, default).map_err(|_| {
        bad(
            name,
            &m.opt_str(name).unwrap_or_default(),
            "not a whole number",
        )
    })?;
    if value < min {
        return Err(bad(
            name,
            &value.to_string(),
            &format!("must be at least {min}"),
        ));
    }
    Ok(value)
}

fn sync_mode(text: Option<&str>) -> Result<SyncMode, UsageError> {
    match text {
        None | Some("files") => Ok(SyncMode::Files),
        Some("filesystem") => Ok(SyncMode::FileSystem),
        Some(other) => Err(bad(OPT_SYNC, other, "must be files or filesystem")),
    }
}

fn address(text: &str) -> Result<SocketAddr, UsageError> {
    text.parse().map_err(|_| {
        bad(
            OPT_LISTEN,
            text,
            "expected IP:PORT, such as 127.0.0.1:2525 or [::1]:2525",
        )
    })
}

fn hostname(text: &str) -> Result<String, UsageError> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            OPT_HOSTNAME,
            text,
            "must be one word without spaces or control characters",
        ));
    }
    Ok(text.to_string())
}

fn domain(text: &str) -> Result<String, UsageError> {
    let d = text.trim().trim_end_matches('.');
    if d.is_empty() || d.contains(['@', '/', ' ']) || d.chars().any(char::is_control) {
        return Err(bad(
            OPT_DOMAIN,
            text,
            "expected a domain such as example.com",
        ));
    }
    Ok(d.to_lowercase())
}

fn user(text: &str) -> Result<String, UsageError> {
    if text.is_empty() || text.contains([':', '\n']) {
        return Err(bad(OPT_USER, text, "expected a user name"));
    }
    Ok(text.to_string())
}

fn bad(flag: &str, value: &str, why: &str) -> UsageError {
    UsageError(format!(
        "invalid --{flag} value \"{}\": {why}",
        value.escape_debug()
    ))
}

// ---- Reading the mail (issue 11): `list`, `show`, `wait` ------------------

const READ_COMMANDS: [&str; 3] = ["list", "show", "wait"];
const OPT_JSON: &str = "json";
const OPT_TO: &str = "to";
const OPT_FROM: &str = "from";
const OPT_SUBJECT: &str = "subject";
const OPT_SINCE: &str = "since";
const OPT_COUNT: &str = "count";
const OPT_PART: &str = "part";
const SHOW_VIEWS: [&str; 5] = ["raw", "text", "html", "links", "json"];
const DEFAULT_WAIT_COUNT: usize = 1;
const DEFAULT_WAIT_TIMEOUT: u64 = 30;

/// A read command: which Maildir, which messages, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub maildir: PathBuf,
    pub filters: Filters,
    pub command: ReadCommand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadCommand {
    List {
        json: bool,
    },
    Show {
        id: String,
        view: View,
    },
    Wait {
        count: usize,
        timeout: Duration,
        json: bool,
    },
}

/// What `show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Decoded headers, the text body and the attachment list.
    Summary,
    Raw,
    Json,
    Text,
    Html,
    Links,
    /// Attachment N (from 1), decoded.
    Part(usize),
}

/// `--to`, `--from`, `--subject`, `--since`: shared by the three commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub to: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub since: Option<Since>,
}

/// `--since`: a duration back from now (resolved when reading, since this
/// module reads no clock) or a fixed time in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(i64),
}

fn read_options(command: &str) -> Options {
    let mut o = Options::new();
    o.optopt(
        "d",
        OPT_MAILDIR,
        &format!("Maildir root, or a --per-recipient root (default {DEFAULT_MAILDIR})"),
        "DIR",
    );
    match command {
        "show" => {
            o.optflag("", "raw", "the stored file, byte for byte");
            o.optflag(
                "",
                "text",
                "the text body only (from the HTML part when there is no text part)",
            );
            o.optflag("", "html", "the HTML part only");
            o.optflag(
                "",
                "links",
                "each http(s) URL of the text and HTML parts, once, in order",
            );
            o.optflag(
                "",
                OPT_JSON,
                "headers, bodies and attachments as one JSON object",
            );
            o.optopt("", OPT_PART, "attachment N's decoded bytes", "N");
        }
        "wait" => {
            o.optopt("n", OPT_COUNT, &format!("messages that must match, those already there included (default {DEFAULT_WAIT_COUNT})"), "N");
            o.optopt(
                "t",
                OPT_TIMEOUT,
                &format!("give up after SECS (default {DEFAULT_WAIT_TIMEOUT})"),
                "SECS",
            );
            o.optflag("", OPT_JSON, "one JSON object a line, as list --json");
        }
        _ => {
            o.optflag(
                "",
                OPT_JSON,
                "one JSON object a line: the stored event's fields plus file and date",
            );
        }
    }
    o.optopt(
        "",
        OPT_TO,
        "envelope recipient (Delivered-To); case-insensitive, * and ? globs",
        "ADDR",
    );
    o.optopt(
        "",
        OPT_FROM,
        "envelope sender (Return-Path); case-insensitive, * and ? globs",
        "ADDR",
    );
    o.optopt(
        "",
        OPT_SUBJECT,
        "substring of the decoded Subject, case-insensitive",
        "TEXT",
    );
    o.optopt(
        "",
        OPT_SINCE,
        "received within DURATION (90s, 10m, 2h, 3d) or since an RFC 3339 TIME",
        "WHEN",
    );
    o.optflag("h", "help", "usage, then exit 0");
    o
}

fn parse_read(command: &str, args: &[String]) -> Result<Cli, UsageError> {
    let opts = read_options(command);
    let m = opts
        .parse(args)
        .map_err(|e| UsageError(format!("{command}: {e}")))?;
    if m.opt_present("help") {
        return Ok(Cli::Help(read_help(command, &opts)));
    }
    let free = |max: usize| match m.free.get(max) {
        Some(extra) => Err(UsageError(format!(
            "{command}: unexpected argument \"{}\"",
            extra.escape_debug()
        ))),
        None => Ok(()),
    };
    let command = match command {
        "show" => {
            free(1)?;
            let id = m.free.first().cloned().ok_or_else(|| {
                UsageError("show: missing ID (a queue id, file name, unique prefix or path)".into())
            })?;
            ReadCommand::Show {
                id,
                view: view(&m)?,
            }
        }
        "wait" => {
            free(0)?;
            ReadCommand::Wait {
                count: number(&m, OPT_COUNT, DEFAULT_WAIT_COUNT, 1)?,
                timeout: Duration::from_secs(number(&m, OPT_TIMEOUT, DEFAULT_WAIT_TIMEOUT, 0)?),
                json: m.opt_present(OPT_JSON),
            }
        }
        _ => {
            free(0)?;
            ReadCommand::List {
                json: m.opt_present(OPT_JSON),
            }
        }
    };
    Ok(Cli::Read(Read {
        maildir: m
            .opt_str(OPT_MAILDIR)
            .map_or_else(|| PathBuf::from(DEFAULT_MAILDIR), PathBuf::from),
        filters: Filters {
            to: m.opt_str(OPT_TO),
            from: m.opt_str(OPT_FROM),
            subject: m.opt_str(OPT_SUBJECT),
            since: m.opt_str(OPT_SINCE).map(|s| since(&s)).transpose()?,
        },
        command,
    }))
}

/// At most one of `--raw`, `--text`, `--html`, `--links`, `--json`, `--part`.
fn view(m: &Matches) -> Result<View, UsageError> {
    let mut chosen: Vec<&str> = SHOW_VIEWS
        .into_iter()
        .filter(|v| m.opt_present(v))
        .collect();
    if m.opt_present(OPT_PART) {
        chosen.push(OPT_PART);
    }
    if chosen.len() > 1 {
        return Err(UsageError(format!(
            "show: --{} and --{} cannot be combined",
            chosen[0], chosen[1]
        )));
    }
    Ok(match chosen.first().copied() {
        None => View::Summary,
        Some("raw") => View::Raw,
        Some("text") => View::Text,
        Some("html") => View::Html,
        Some("links") => View::Links,
        Some("json") => View::Json,
        Some(_) => View::Part(number(m, OPT_PART, 1, 1)?),
    })
}

/// `90s`, `10m`, `2h`, `3d`, or an RFC 3339 time such as `2026-12-05T20:00:00Z`.
fn since(text: &str) -> Result<Since, UsageError> {
    let why = "expected a duration such as 90s, 10m, 2h, 3d, or an RFC 3339 time";
    if let Some(unit) = text.chars().last().filter(|c| "smhd".contains(*c)) {
        let digits = &text[..text.len() - 1];
        let n: u64 = digits.parse().map_err(|_| bad(OPT_SINCE, text, why))?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        let secs = n
            .checked_mul(scale)
            .ok_or_else(|| bad(OPT_SINCE, text, "too far back"))?;
        return Ok(Since::Ago(Duration::from_secs(secs)));
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| Since::At(t.as_second()))
        .map_err(|_| bad(OPT_SINCE, text, why))
}

fn read_help(command: &str, opts: &Options) -> String {
    let (usage, what) = match command {
        "show" => (
            "show [OPTIONS] ID",
            "Prints one message, decoded. ID is a queue id, a file name or its unique\nprefix, or a path.",
        ),
        "wait" => (
            "wait [OPTIONS]",
            "Waits until N messages match, those already there included, and prints\nthem as list does.",
        ),
        _ => (
            "list [OPTIONS]",
            "Prints one line per message, oldest first: date (local time), from, to,\nsubject, size, file name.",
        ),
    };
    let failure = match command {
        "show" => {
            "no message matched, the ID matched several,\nthe part asked for is missing, or the Maildir cannot be read"
        }
        "wait" => "timed out, or the Maildir cannot be read",
        _ => "nothing matched, or the Maildir cannot be read",
    };
    let brief = format!("Usage: mailsink {usage}\n\n{what} Never changes a file.");
    format!(
        "{}\nExit status: 0 found; 1 {failure};\n2 usage error.\n",
        opts.usage(&brief)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` as the command line, with `host` as the system name.
    pub(super) fn cli(args: &[&str], host: &str) -> Result<Cli, UsageError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args, host)
    }

    fn run(args: &[&str]) -> Result<Config, UsageError> {
        match cli(args, "sys.host")? {
            Cli::Run(c) => Ok(c),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(c.maildir, PathBuf::from("./Maildir"));
        assert_eq!((c.workers, c.queue), (64, 64));
        assert_eq!(c.hostname, "sys.host");
        assert_eq!((c.max_size, c.max_recipients), (26_214_400, 100));
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert!(c.domains.is_empty() && !c.per_recipient);
        assert_eq!(c.sync, SyncMode::Files);
        assert_eq!(c.hooks, Hooks::default());
    }

    #[test]
    fn test_hooks() {
        let c = run(&[
            "--events",
            "-",
            "--exit-after",
            "3",
            "--fail",
            "rcpt:*@b.example=550",
            "--fail",
            "data:nth 1=drop",
            "--keep",
            "5",
        ])
        .unwrap();
        assert_eq!(c.hooks.events, Some(PathBuf::from("-")));
        assert_eq!((c.hooks.exit_after, c.hooks.keep), (Some(3), Some(5)));
        let rules = Rules::parse(&["rcpt:*@b.example=550", "data:nth 1=drop"]).unwrap();
        assert_eq!(c.hooks.fail, rules);
    }

    #[test]
    fn every_option() {
        let c = run(&[
            "-l",
            "127.0.0.1:0",
            "--listen",
            "[::1]:25",
            "-d",
            "/m",
            "-w",
            "4",
            "-q",
            "0",
            "-H",
            "mx.test",
            "-s",
            "1000",
            "-r",
            "5",
            "-t",
            "9",
            "--domain",
            "Example.COM",
            "--domain",
            "b.test",
            "--per-recipient",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(
            (c.workers, c.queue, c.max_size, c.max_recipients),
            (4, 0, 1000, 5)
        );
        assert_eq!(c.hostname, "mx.test");
        assert_eq!(c.timeout, Duration::from_secs(9));
        assert_eq!(c.domains, ["example.com", "b.test"]);
        assert!(c.per_recipient);
        assert_eq!(run(&["-w", "8"]).unwrap().queue, 8, "queue follows workers");
    }

    #[test]
    fn sync_mode_is_files_or_filesystem() {
        assert_eq!(run(&["--sync", "files"]).unwrap().sync, SyncMode::Files);
        let c = run(&["--sync", "filesystem"]).unwrap();
        assert_eq!(c.sync, SyncMode::FileSystem);
        assert_eq!(
            run(&["--sync", "fs"]).unwrap_err().0,
            "invalid --sync value \"fs\": must be files or filesystem"
        );
    }

    #[test]
    fn bad_values_name_the_flag_and_value() {
        assert_eq!(
            run(&["--workers", "0"]).unwrap_err().0,
            "invalid --workers value \"0\": must be at least 1"
        );
        assert_eq!(
            run(&["-w", "many"]).unwrap_err().0,
            "invalid --workers value \"many\": not a whole number"
        );
        assert!(
            run(&["--listen", "nowhere"])
                .unwrap_err()
                .0
                .starts_with("invalid --listen value \"nowhere\"")
        );
        assert!(
            run(&["--max-size", "-5"])
                .unwrap_err()
                .0
                .contains("--max-size")
        );
        assert!(
            run(&["--hostname", "a b"])
                .unwrap_err()
                .0
                .contains("--hostname")
        );
        assert!(
            run(&["--domain", "a@b"])
                .unwrap_err()
                .0
                .contains("--domain")
        );
        assert!(run(&["--bogus"]).unwrap_err().0.contains("bogus"));
        assert_eq!(
            run(&["--keep", "0"]).unwrap_err().0,
            "invalid --keep value \"0\": must be at least 1"
        );
        assert_eq!(
            run(&["--exit-after", "x"]).unwrap_err().0,
            "invalid --exit-after value \"x\": not a whole number"
        );
        assert_eq!(
            run(&["--fail", "rcpt:*=250"]).unwrap_err().0,
            "invalid --fail value \"rcpt:*=250\": the reply code must be 4xx or 5xx"
        );
        assert!(run(&["stray"]).unwrap_err().0.contains("stray"));
    }

    #[test]
    fn tls_and_auth_options() {
        use crate::tls::Source;
        let c = run(&[]).unwrap();
        assert_eq!(
            (c.tls.clone(), c.auth.clone()),
            (Tls::default(), Auth::default())
        );
        let c = run(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-required",
        ])
        .unwrap();
        assert_eq!(
            c.tls.source,
            Some(Source::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert!(c.tls.required);
        let c = run(&[
            "--tls-self-signed",
            "--tls-listen",
            "127.0.0.1:0",
            "--auth-file",
            "u",
        ])
        .unwrap();
        assert_eq!(c.tls.source, Some(Source::SelfSigned));
        assert!(
            c.listen.is_empty(),
            "no default plain listener beside --tls-listen"
        );
        assert_eq!(c.tls.listen, ["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(c.auth.users, Some(Users::File("u".into())));
        let c = run(&["--auth-any", "--auth-insecure", "-l", "[::1]:0"]).unwrap();
        assert_eq!((c.auth.users, c.auth.insecure), (Some(Users::Any), true));
    }

    #[test]
    fn tls_and_auth_usage_errors() {
        let e = |args: &[&str]| run(args).unwrap_err().0;
        assert_eq!(e(&["--tls-cert", "c"]), "--tls-cert needs --tls-key");
        assert_eq!(e(&["--tls-key", "k"]), "--tls-key needs --tls-cert");
        assert!(
            e(&["--tls-listen", "127.0.0.1:0"]).starts_with("--tls-listen needs a certificate")
        );
        assert!(e(&["--tls-required"]).starts_with("--tls-required needs a certificate"));
        assert!(e(&["--tls-self-signed", "--tls-cert", "c", "--tls-key", "k"]).contains("exclude"));
        assert!(e(&["--auth-any", "--auth-file", "f"]).contains("exclude"));
        assert!(e(&["--auth-insecure"]).contains("--auth-insecure needs"));
        assert!(
            e(&["--tls-self-signed", "--tls-listen", "x"])
                .starts_with("invalid --tls-listen value \"x\"")
        );
    }

    #[test]
    fn help_and_version() {
        let help = cli(&["--help"], "h").unwrap();
        let Cli::Help(text) = help else { panic!() };
        for flag in [
            "--listen",
            "--maildir",
            "--workers",
            "--queue",
            "--hostname",
            "--max-size",
            "--max-recipients",
            "--timeout",
            "--domain",
            "--per-recipient",
            "--auth-any",
            "--auth-file",
            "--auth-insecure",
            "--tls-cert",
            "--tls-key",
            "--tls-self-signed",
            "--tls-listen",
            "--tls-required",
            "--proxy-from",
            "--user",
            "--events",
            "--exit-after",
            "--fail",
            "--keep",
            "--version",
        ] {
            assert!(text.contains(flag), "{flag}");
        }
        assert_eq!(cli(&["-V"], "h").unwrap(), Cli::Version);
    }

    #[test]
    fn proxy_from_and_user() {
        let c = run(&[
            "--proxy-from",
            "10.0.0.0/8",
            "--proxy-from",
            "::1",
            "--user",
            "mail",
        ])
        .unwrap();
        assert_eq!(c.proxy_from.len(), 2);
        assert_eq!(c.proxy_from[1].to_string(), "::1/128");
        assert_eq!(c.user.as_deref(), Some("mail"));
        let d = run(&[]).unwrap();
        assert!(d.proxy_from.is_empty() && d.user.is_none());
        assert_eq!(
            run(&["--proxy-from", "10.0.0.0/40"]).unwrap_err().0,
            "invalid --proxy-from value \"10.0.0.0/40\": prefix length must be 0 to 32"
        );
        assert!(
            run(&["--proxy-from", "ten"])
                .unwrap_err()
                .0
                .contains("not an IP address")
        );
        assert!(run(&["--user", ""]).unwrap_err().0.contains("--user"));
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;

    fn read(args: &[&str]) -> Result<Read, UsageError> {
        match super::tests::cli(args, "h")? {
            Cli::Read(r) => Ok(r),
            other => panic!("not a read: {other:?}"),
        }
    }

    #[test]
    fn subcommands_and_filters() {
        let r = read(&["list", "-d", "/m", "--json", "--to", "*@x", "--since", "2h"]).unwrap();
        assert_eq!(r.maildir, PathBuf::from("/m"));
        assert_eq!(r.command, ReadCommand::List { json: true });
        assert_eq!(r.filters.to.as_deref(), Some("*@x"));
        assert_eq!(r.filters.since, Some(Since::Ago(Duration::from_secs(7200))));
        let r = read(&[
            "show",
            "--part",
            "2",
            "ABC",
            "--since",
            "2026-12-05T20:00:00Z",
        ])
        .unwrap();
        assert_eq!(
            r.command,
            ReadCommand::Show {
                id: "ABC".into(),
                view: View::Part(2)
            }
        );
        assert_eq!(r.filters.since, Some(Since::At(1_796_500_800)));
        assert_eq!(r.maildir, PathBuf::from(DEFAULT_MAILDIR));
        let r = read(&["wait", "--count", "3", "--timeout", "5", "--subject", "Hi"]).unwrap();
        assert_eq!(
            r.command,
            ReadCommand::Wait {
                count: 3,
                timeout: Duration::from_secs(5),
                json: false
            }
        );
        let r = read(&["wait"]).unwrap();
        assert_eq!(
            r.command,
            ReadCommand::Wait {
                count: 1,
                timeout: Duration::from_secs(30),
                json: false
            }
        );
    }

    #[test]
    fn read_usage_errors() {
        assert!(read(&["show"]).unwrap_err().0.contains("missing ID"));
        assert!(
            read(&["show", "--raw", "--json", "x"])
                .unwrap_err()
                .0
                .contains("cannot be combined")
        );
        assert!(
            read(&["show", "--part", "0", "x"])
                .unwrap_err()
                .0
                .contains("--part")
        );
        assert!(read(&["list", "stray"]).unwrap_err().0.contains("stray"));
        assert!(
            read(&["list", "--since", "yesterday"])
                .unwrap_err()
                .0
                .contains("--since")
        );
        assert!(
            read(&["wait", "--count", "0"])
                .unwrap_err()
                .0
                .contains("--count")
        );
        assert!(
            read(&["list", "--listen", "x"])
                .unwrap_err()
                .0
                .contains("listen")
        );
        let Cli::Help(h) = super::tests::cli(&["show", "--help"], "h").unwrap() else {
            panic!()
        };
        assert!(h.contains("--links") && h.contains("--part") && h.contains("--since"));
    }
}
