//! The command line: getopts options, the help text, defaults, and `Config`.
//! Parses a slice and fetches nothing; binding and creating belong to
//! `server::run`.

use crate::proxy::Cidr;
use getopts::{Matches, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use std::{error, fmt};

pub const OPT_LISTEN: &str = "listen";
pub const OPT_MAILDIR: &str = "maildir";
pub const OPT_WORKERS: &str = "workers";
pub const OPT_QUEUE: &str = "queue";
pub const OPT_HOSTNAME: &str = "hostname";
pub const OPT_MAX_SIZE: &str = "max-size";
pub const OPT_MAX_RECIPIENTS: &str = "max-recipients";
pub const OPT_TIMEOUT: &str = "timeout";
pub const OPT_DOMAIN: &str = "domain";
pub const OPT_PER_RECIPIENT: &str = "per-recipient";
// Proxies and service (issue 12).
pub const OPT_PROXY_FROM: &str = "proxy-from";
pub const OPT_USER: &str = "user";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";
pub const DEFAULT_MAILDIR: &str = "./Maildir";
pub const DEFAULT_WORKERS: usize = 64;
pub const DEFAULT_MAX_SIZE: u64 = 26_214_400;
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;
pub const DEFAULT_TIMEOUT: u64 = 300;

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
}

#[derive(Debug, PartialEq, Eq)]
pub enum Cli {
    Run(Config),
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
    o.optopt("H", OPT_HOSTNAME, "name used in the greeting, EHLO reply and Received header (default: the system's host name)", "NAME");
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
        "peers in this range (such as 10.0.0.0/8) must start with a PROXY protocol header, v1 or v2; repeatable",
        "CIDR",
    );
    o.optopt(
        "",
        OPT_USER,
        "after binding and creating the Maildir, run as this user and its group",
        "NAME",
    );
    o.optflag("h", "help", "usage, then exit 0");
    o.optflag("V", "version", "version, then exit 0");
    o
}

/// Parses the arguments after the program name. `host` is the system's
/// host name, the default for `--hostname`.
pub fn parse(args: &[String], host: &str) -> Result<Cli, UsageError> {
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
    let listen = if listen.is_empty() {
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
    }))
}

fn help(opts: &Options) -> String {
    let brief = "Usage: mailsink [OPTIONS]\n\n\
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, UsageError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args, "sys.host")? {
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
        assert!(run(&["stray"]).unwrap_err().0.contains("stray"));
    }

    #[test]
    fn help_and_version() {
        let help = parse(&["--help".to_string()], "h").unwrap();
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
            "--version",
        ] {
            assert!(text.contains(flag), "{flag}");
        }
        assert_eq!(parse(&["-V".to_string()], "h").unwrap(), Cli::Version);
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
