//! The protocol core: bytes in, values out. No socket, file, thread or clock
//! lives here, so every rule is tested with byte strings.
//!
//! ```text
//!            HELO/EHLO (any state: back to Idle)
//!   connect ─► Idle ──MAIL──► Mail ──RCPT*──► Mail ──DATA──► Data
//!               ▲  ◄──RSET───┘                              │
//!               └────────── final dot: Deliver / Discard ◄──┘
//!   QUIT, BDAT, HTTP, 20 errors, DATA refused with input waiting ─► Closed
//! ```

mod auth;
mod command;
mod data;
pub mod fail;
mod line;
mod path;
mod reply;
mod session;

pub use auth::Credentials;
pub use command::COMMAND_READ_MAX;
pub use line::{Framing, LineEnd, read_line};
pub use path::{BodyType, MailParams};
pub use reply::Reply;
pub use session::{AuthPolicy, Envelope, Limits, Security, Session, Step, StoreFailure, Tls};

#[cfg(test)]
mod proptests;
#[doc(hidden)]
pub mod transcript;
