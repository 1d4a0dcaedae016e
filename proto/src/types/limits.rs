//! `AccountLimit` (64 bytes) and the request-size limit shared by every layer.

use super::{read_u128, read_u64};

/// Most events (accounts, transfers, ids, limits) in one request: 8190 records of 128 bytes
/// is just under 1 MiB. The protocol, the state machine and the journal all size for it.
pub const EVENTS_PER_REQUEST_MAX: usize = 8190;

/// Sets how far an account's balance may go past zero (an overdraft or credit line).
///
/// The account must have `debits_must_not_exceed_credits` (then `limit` is the overdraft:
/// `debits_pending + debits_posted <= credits_posted + limit`) or
/// `credits_must_not_exceed_debits` (then `limit` is the credit line:
/// `credits_pending + credits_posted <= debits_posted + limit`). A new account's limit is 0.
///
/// Layout, 64 bytes: `account_id@0 u128, limit@16 u128, timestamp@32 u64` (set by the ledger,
/// must be 0 on input), `reserved@40 [u8; 24]` (must be 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "rkyv",
    derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize),
    rkyv(derive(Debug))
)]
#[repr(C)]
pub struct AccountLimit {
    pub account_id: u128,
    pub limit: u128,
    pub timestamp: u64,
    pub reserved: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<AccountLimit>() == AccountLimit::SIZE);

impl AccountLimit {
    pub const SIZE: usize = 64;

    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::SIZE);
        out[0..16].copy_from_slice(&self.account_id.to_le_bytes());
        out[16..32].copy_from_slice(&self.limit.to_le_bytes());
        out[32..40].copy_from_slice(&self.timestamp.to_le_bytes());
        out[40..64].copy_from_slice(&self.reserved);
    }

    pub fn read_from(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::SIZE);
        AccountLimit {
            account_id: read_u128(bytes, 0),
            limit: read_u128(bytes, 16),
            timestamp: read_u64(bytes, 32),
            reserved: bytes[40..64].try_into().expect("24 bytes"),
        }
    }
}

#[cfg(feature = "rkyv")]
impl From<&ArchivedAccountLimit> for AccountLimit {
    fn from(l: &ArchivedAccountLimit) -> Self {
        AccountLimit {
            account_id: l.account_id.to_native(),
            limit: l.limit.to_native(),
            timestamp: l.timestamp.to_native(),
            reserved: l.reserved,
        }
    }
}
