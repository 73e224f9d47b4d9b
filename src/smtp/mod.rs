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

pub mod command;
pub mod data;
pub mod line;
pub mod reply;
pub mod session;

pub use command::{BodyType, Command, CommandError, MailParams, Path};
pub use line::{Framing, LineEnd, read_line};
pub use reply::Reply;
pub use session::{Envelope, Limits, Session, Step, StoreFailure};

#[cfg(test)]
mod proptests;
#[doc(hidden)]
pub mod transcript;
