//! `AccountFilter` (64 bytes): the query of `get_account_transfers` and `get_account_balances`.

use super::{read_u128, read_u32, read_u64};

/// Flags of an [`AccountFilter`].
pub struct AccountFilterFlags;

impl AccountFilterFlags {
    /// Include transfers where the account is on the debit side.
    pub const DEBITS: u32 = 1 << 0;
    /// Include transfers where the account is on the credit side.
    pub const CREDITS: u32 = 1 << 1;
    /// Newest first (descending timestamps) instead of oldest first.
    pub const REVERSED: u32 = 1 << 2;
    pub const ALL: u32 = Self::DEBITS | Self::CREDITS | Self::REVERSED;
    pub const NAMES: [(&'static str, u32); 3] =
        [("debits", Self::DEBITS), ("credits", Self::CREDITS), ("reversed", Self::REVERSED)];
}

/// Which of an account's transfers (or balance rows) to return, and how many.
///
/// Layout, 64 bytes: `account_id@0 u128, timestamp_min@16 u64, timestamp_max@24 u64,
/// limit@32 u32, flags@36 u32, reserved@40 [u8; 24]`. `timestamp_min`/`timestamp_max` are
/// inclusive bounds; 0 means unbounded. Paging: repeat with `timestamp_min` (or `_max` when
/// reversed) set one past the last timestamp received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct AccountFilter {
    pub account_id: u128,
    pub timestamp_min: u64,
    pub timestamp_max: u64,
    pub limit: u32,
    pub flags: u32,
    pub reserved: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<AccountFilter>() == AccountFilter::SIZE);

impl AccountFilter {
    pub const SIZE: usize = 64;

    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::SIZE);
        out[0..16].copy_from_slice(&self.account_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.timestamp_min.to_le_bytes());
        out[24..32].copy_from_slice(&self.timestamp_max.to_le_bytes());
        out[32..36].copy_from_slice(&self.limit.to_le_bytes());
        out[36..40].copy_from_slice(&self.flags.to_le_bytes());
        out[40..64].copy_from_slice(&self.reserved);
    }

    pub fn read_from(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::SIZE);
        AccountFilter {
            account_id: read_u128(bytes, 0),
            timestamp_min: read_u64(bytes, 16),
            timestamp_max: read_u64(bytes, 24),
            limit: read_u32(bytes, 32),
            flags: read_u32(bytes, 36),
            reserved: bytes[40..64].try_into().expect("24 bytes"),
        }
    }
}
