//! The fixed-size records of the ledger and their result codes.
//!
//! Every record is `#[repr(C)]`, little-endian on the wire and in the journal, with its size
//! checked at compile time. This module knows nothing about state, files or sockets: it is the
//! vocabulary every other module shares.

mod account;
mod filter;
mod limits;
mod result;
mod transfer;

pub use account::{Account, AccountBalance, AccountFlags};
pub use filter::{AccountFilter, AccountFilterFlags};
pub use limits::{AccountLimit, EVENTS_PER_REQUEST_MAX};
pub use result::{CreateResult, ResultCode};
pub use transfer::{Transfer, TransferFlags};

/// Ids 0 and `u128::MAX` are reserved (0 means "absent", MAX is a sentinel for clients).
pub const ID_INVALID_MAX: u128 = u128::MAX;

/// Reads a little-endian `u128` at `offset`. Panics if `bytes` is too short: callers pass
/// slices whose length they have already checked against the record size.
#[inline]
pub fn read_u128(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(bytes[offset..offset + 16].try_into().expect("16 bytes"))
}
#[inline]
pub fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}
#[inline]
pub fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}
#[inline]
pub fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("2 bytes"))
}
