//! One integration test binary driving the real executable over real
//! sockets, reading the real Maildir.

mod harness;

mod auth;
mod chunking;
mod cli;
mod commands;
mod data;
mod faults;
mod hooks;
mod hostile;
mod lifecycle;
mod limits;
mod paths;
mod proxy;
mod read;
mod service;
mod storage;
mod tls;
