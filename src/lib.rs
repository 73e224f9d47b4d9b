//! mailsink: a synchronous SMTP server that stores every accepted message
//! as a file in a Maildir.
//!
//! - `config`: command line → `Config` (no I/O).
//! - `smtp`: the protocol core, bytes in and replies out (no I/O).
//! - `message`: the prepended headers and the queue id (pure).
//! - `proxy`: the PROXY protocol header and `--proxy-from` ranges (no I/O).
//! - `maildir`: durable delivery into a Maildir (no SMTP).
//! - `writer`: the one thread that stores messages, with group commit.
//! - `events`: `--events` JSON lines (stored, refused).
//! - `conn`: one connection, start to close (no file system).
//! - `tls`: the rustls server configuration (PEM files or self-signed).
//! - `users`: the `--auth-file` password file and the password check.
//! - `server`: listeners, the worker pool, signals and shutdown.
//! - `service`: socket activation and `--user`.
//! - `read`: `list`, `show` and `wait` over a Maildir; the one header decoder.
//!
//! Public are what the binary uses (`config`, `server`, `read`) and what
//! the fuzz target drives (`smtp`); the rest is private to the crate.
#![forbid(unsafe_code)]

pub mod config;
mod conn;
mod events;
mod maildir;
mod message;
mod proxy;
pub mod read;
pub mod server;
mod service;
pub mod smtp;
mod tls;
mod users;
mod writer;
