//! The mailsink binary: arguments → config → logging → server. The only
//! place exit codes are chosen: 0 done, 1 could not start, 2 usage error.

use env_logger::Env;
use mailsink::config::{self, Cli};
use mailsink::read::{Outcome, ReadError};
use mailsink::server;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match config::parse(&args, &system_hostname()) {
        Ok(Cli::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Cli::Version) => {
            println!("mailsink {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Cli::Read(cmd)) => read(&cmd),
        Ok(Cli::Run(cfg)) => {
            env_logger::Builder::from_env(Env::default().default_filter_or("info")).init();
            match server::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mailsink: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("mailsink: {e} (see --help)");
            ExitCode::from(2)
        }
    }
}

/// `list`, `show`, `wait`: 0 found; 1 nothing matched, timed out,
/// ambiguous ID or unreadable Maildir (one line on stderr).
fn read(cmd: &config::Read) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match mailsink::read::run(cmd, &mut out) {
        Ok(Outcome::Found) => ExitCode::SUCCESS,
        Ok(Outcome::Nothing) => ExitCode::from(1),
        // The reader went away (`| head`): what it wanted was written.
        Err(ReadError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            drop(out);
            eprintln!("mailsink: {e}");
            ExitCode::from(1)
        }
    }
}

/// The kernel's host name, without a libc call.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
