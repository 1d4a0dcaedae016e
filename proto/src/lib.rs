//! `ledgerd-proto`: what the daemon and its clients share, and nothing else.
//!
//! - [`types`]: the fixed 128-byte records (`Account`, `Transfer`, ...), flags and result codes.
//! - [`protocol`]: frames and bodies of the TCP protocol (`docs/protocol.md`).
//! - `json` (feature `json`): the JSON mapping of records and replies used by the command-line
//!   client and the replay tool.
//!
//! This crate knows bytes only: no sockets, no files, no clock. With the `rkyv` feature the
//! records are also archivable (the daemon's journal and snapshots store them that way).

pub mod protocol;
pub mod types;

#[cfg(feature = "json")]
pub mod json;
