//! The protocol core: bytes in, values out. No socket, file, thread or clock
//! lives here, so every rule is tested with byte strings.
//!
//! ```text
//!   connect ─► Idle ──MAIL──► [CheckSpace] ──room──► Mail ──RCPT*──► Mail
//!               ▲ ▲                │ no room: 452                     │
//!               │ └────────────────┘              ┌───────DATA────────┤
//!               │                                 ▼                   │ BDAT n
//!               │                               Data                  ▼
//!               │                                 │ final dot  ┌──► Chunk (n raw octets)
//!               │                                 │     BDAT n │      │ not LAST
//!               │                                 │            └── Chunked ◄┘
//!               │                                 │                   │ LAST
//!               └──── Deliver, or Discard (552) ◄─┴───────────────────┘
//!
//!   Idle ──AUTH──► Auth (334 challenges; each line an answer) ──► Idle
//!   Idle ──STARTTLS──► [StartTls] ──handshake──► Idle, HELO and AUTH forgotten
//!   HELO/EHLO, RSET: back to Idle from any state between commands.
//!   A refused BDAT (503): Skip its n octets, then the state it came from.
//!   QUIT, HTTP, header-like, bad BDAT size, 20 errors, DATA refused
//!   with input waiting ─► Closed
//! ```
//! `[CheckSpace]` and `[StartTls]` are `Step`s, not states: the session
//! waits in `Mail` for the edge to answer whether the Maildir has room for
//! `--max-size`, and in `Idle` for the edge to do the TLS handshake.
//!
//! `session/` holds the machine: `mod.rs` the states and the dispatch,
//! then one file per concern (transaction, message, security, hooks).

mod auth;
mod chunk;
mod command;
mod data;
pub mod fail;
mod line;
mod path;
mod reply;
mod session;

pub use auth::Credentials;
pub use command::COMMAND_READ_MAX;
pub use line::{Framing, LineEnd, read_line, read_octets};
pub use path::{BodyType, MailParams};
pub use reply::Reply;
pub use session::{AuthPolicy, Envelope, Limits, Security, Session, Step, StoreFailure, Tls};

#[cfg(test)]
mod proptests;
#[doc(hidden)]
pub mod transcript;
