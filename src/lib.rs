//! `ledgerd`: an LMAX-style, event-sourced ledger.
//!
//! Where things live (dependencies point down this list, never up):
//! - [`types`] and [`protocol`] (re-exported from the `ledgerd-proto` crate, shared with the
//!   clients): the fixed 128-byte records, result codes, frames and bodies.
//! - [`state_machine`]: deterministic rules of SPEC §3; `(state, request, timestamp) ->
//!   (results, event)`; no I/O, no clock.
//! - [`event`]: the rkyv-archived change events the state machine emits and replays.
//! - [`journal`]: segment files of checksummed, chained records; knows bytes and sequence
//!   numbers, not accounts.
//! - [`cold`]: the cold index, history on disk (fjall) derived from durable journal records
//!   by its own thread; rebuildable from the journal at any time.
//! - [`snapshot`] and [`recovery`]: consistent images of the state, and restart =
//!   newest valid snapshot + journal tail.
//! - [`replication`]: the events as the log of a Raft group (raft-rs), applied in the same
//!   order on every replica.
//! - `net`, `pipeline`, `daemon`: the daemon's moving parts. The Rust client lives in its own
//!   crate (`clients/rust`, `ledgerd-client`), which does not depend on this one.
//! - [`harness`]: starting and stopping a `ledgerd` process (free loopback ports, readiness,
//!   SIGTERM then SIGKILL), shared by the end-to-end tests, the benchmarks and `ledger-chaos`;
//!   the daemon itself never uses it.

pub mod change_events;
pub mod cold;
pub mod config;
pub mod daemon;
pub mod event;
pub mod harness;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod recovery;
pub mod replication;
pub mod snapshot;
pub mod state_machine;

pub use ledgerd_proto::{json, protocol, types};
