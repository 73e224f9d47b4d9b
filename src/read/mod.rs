//! Reading the mail: `list`, `show` and `wait` over a Maildir, and the one
//! header decoder (`header`) that the writer's log line and `--events` use.
//! Nothing here changes, moves or creates a file.

pub mod header;
