//! `ledgerd`: an LMAX-style, event-sourced ledger.
//!
//! Where things live (dependencies point down this list, never up):
//! - [`types`]: the fixed 128-byte records (`Account`, `Transfer`, ...) and result codes.
//! - [`state_machine`]: deterministic rules of SPEC §3; `(state, request, timestamp) ->
//!   (results, event)`; no I/O, no clock.
//! - [`event`]: the rkyv-archived change events the state machine emits and replays.
//! - [`journal`]: segment files of checksummed, chained records; knows bytes and sequence
//!   numbers, not accounts.
//! - [`snapshot`] and [`recovery`]: consistent images of the state, and restart =
//!   newest valid snapshot + journal tail.
//! - [`protocol`], `client`, `net`, `pipeline`: the daemon's wire format and moving parts.

pub mod change_events;
pub mod client;
pub mod config;
pub mod daemon;
pub mod event;
pub mod http;
pub mod journal;
pub mod json;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod protocol;
pub mod recovery;
pub mod snapshot;
pub mod state_machine;
pub mod types;
