//! `Account` (128 bytes) and `AccountBalance` (128 bytes, one row of a `history` account).

use super::{read_u128, read_u16, read_u32, read_u64};

/// Flags of an account. Unknown bits are refused with `flags_unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountFlags;

impl AccountFlags {
    /// Chains this event with the next one: they succeed or fail together.
    pub const LINKED: u16 = 1 << 0;
    /// `debits_pending + debits_posted <= credits_posted (+ limit)`: no overdraft, no overselling.
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 1;
    /// `credits_pending + credits_posted <= debits_posted (+ limit)`.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 2;
    /// Keep a balance row after every transfer, for `get_account_balances`.
    pub const HISTORY: u16 = 1 << 3;
    /// Every bit that has a meaning.
    pub const ALL: u16 = Self::LINKED
        | Self::DEBITS_MUST_NOT_EXCEED_CREDITS
        | Self::CREDITS_MUST_NOT_EXCEED_DEBITS
        | Self::HISTORY;
    /// Flag names as the CLI and JSON use them, with their bits, in bit order.
    pub const NAMES: [(&'static str, u16); 4] = [
        ("linked", Self::LINKED),
        ("debits_must_not_exceed_credits", Self::DEBITS_MUST_NOT_EXCEED_CREDITS),
        ("credits_must_not_exceed_debits", Self::CREDITS_MUST_NOT_EXCEED_DEBITS),
        ("history", Self::HISTORY),
    ];
}

/// An account: balances kept by the ledger, identity and metadata chosen by the client.
///
/// Wire and journal layout (little-endian), 128 bytes:
/// `id@0 u128, debits_pending@16 u128, debits_posted@32 u128, credits_pending@48 u128,
/// credits_posted@64 u128, user_data_128@80 u128, user_data_64@96 u64, user_data_32@104 u32,
/// reserved@108 u32, ledger@112 u32, code@116 u16, flags@118 u16, timestamp@120 u64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "rkyv",
    derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize),
    rkyv(derive(Debug))
)]
#[repr(C)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub reserved: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

const _: () = assert!(std::mem::size_of::<Account>() == Account::SIZE);
const _: () = assert!(std::mem::align_of::<Account>() == 16);
#[cfg(feature = "rkyv")]
const _: () = assert!(std::mem::size_of::<ArchivedAccount>() == Account::SIZE);

impl Account {
    /// Size of one record on the wire and in the journal.
    pub const SIZE: usize = 128;

    /// Encodes into exactly [`Account::SIZE`] little-endian bytes.
    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::SIZE);
        out[0..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..32].copy_from_slice(&self.debits_pending.to_le_bytes());
        out[32..48].copy_from_slice(&self.debits_posted.to_le_bytes());
        out[48..64].copy_from_slice(&self.credits_pending.to_le_bytes());
        out[64..80].copy_from_slice(&self.credits_posted.to_le_bytes());
        out[80..96].copy_from_slice(&self.user_data_128.to_le_bytes());
        out[96..104].copy_from_slice(&self.user_data_64.to_le_bytes());
        out[104..108].copy_from_slice(&self.user_data_32.to_le_bytes());
        out[108..112].copy_from_slice(&self.reserved.to_le_bytes());
        out[112..116].copy_from_slice(&self.ledger.to_le_bytes());
        out[116..118].copy_from_slice(&self.code.to_le_bytes());
        out[118..120].copy_from_slice(&self.flags.to_le_bytes());
        out[120..128].copy_from_slice(&self.timestamp.to_le_bytes());
    }

    /// Decodes exactly [`Account::SIZE`] little-endian bytes.
    pub fn read_from(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::SIZE);
        Account {
            id: read_u128(bytes, 0),
            debits_pending: read_u128(bytes, 16),
            debits_posted: read_u128(bytes, 32),
            credits_pending: read_u128(bytes, 48),
            credits_posted: read_u128(bytes, 64),
            user_data_128: read_u128(bytes, 80),
            user_data_64: read_u64(bytes, 96),
            user_data_32: read_u32(bytes, 104),
            reserved: read_u32(bytes, 108),
            ledger: read_u32(bytes, 112),
            code: read_u16(bytes, 116),
            flags: read_u16(bytes, 118),
            timestamp: read_u64(bytes, 120),
        }
    }

    /// The bytes as [`Account::write_to`] writes them.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        self.write_to(&mut out);
        out
    }

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

#[cfg(feature = "rkyv")]
impl From<&ArchivedAccount> for Account {
    fn from(a: &ArchivedAccount) -> Self {
        Account {
            id: a.id.to_native(),
            debits_pending: a.debits_pending.to_native(),
            debits_posted: a.debits_posted.to_native(),
            credits_pending: a.credits_pending.to_native(),
            credits_posted: a.credits_posted.to_native(),
            user_data_128: a.user_data_128.to_native(),
            user_data_64: a.user_data_64.to_native(),
            user_data_32: a.user_data_32.to_native(),
            reserved: a.reserved.to_native(),
            ledger: a.ledger.to_native(),
            code: a.code.to_native(),
            flags: a.flags.to_native(),
            timestamp: a.timestamp.to_native(),
        }
    }
}

/// The balances of a `history` account right after one transfer changed them.
///
/// Layout, 128 bytes: `debits_pending@0 u128, debits_posted@16 u128, credits_pending@32 u128,
/// credits_posted@48 u128, timestamp@64 u64` (the transfer's timestamp), `reserved@72 [u8; 56]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "rkyv",
    derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize),
    rkyv(derive(Debug))
)]
#[repr(C)]
pub struct AccountBalance {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub timestamp: u64,
    pub reserved: [u8; 56],
}

const _: () = assert!(std::mem::size_of::<AccountBalance>() == AccountBalance::SIZE);

impl Default for AccountBalance {
    fn default() -> Self {
        AccountBalance {
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            timestamp: 0,
            reserved: [0; 56],
        }
    }
}

impl AccountBalance {
    pub const SIZE: usize = 128;

    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::SIZE);
        out[0..16].copy_from_slice(&self.debits_pending.to_le_bytes());
        out[16..32].copy_from_slice(&self.debits_posted.to_le_bytes());
        out[32..48].copy_from_slice(&self.credits_pending.to_le_bytes());
        out[48..64].copy_from_slice(&self.credits_posted.to_le_bytes());
        out[64..72].copy_from_slice(&self.timestamp.to_le_bytes());
        out[72..128].copy_from_slice(&self.reserved);
    }

    pub fn read_from(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::SIZE);
        AccountBalance {
            debits_pending: read_u128(bytes, 0),
            debits_posted: read_u128(bytes, 16),
            credits_pending: read_u128(bytes, 32),
            credits_posted: read_u128(bytes, 48),
            timestamp: read_u64(bytes, 64),
            reserved: bytes[72..128].try_into().expect("56 bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_round_trips_and_golden_bytes() {
        let a = Account {
            id: 0x0102,
            debits_pending: 3,
            debits_posted: 4,
            credits_pending: 5,
            credits_posted: 6,
            user_data_128: 7,
            user_data_64: 8,
            user_data_32: 9,
            reserved: 0,
            ledger: 10,
            code: 11,
            flags: AccountFlags::HISTORY,
            timestamp: 12,
        };
        let bytes = a.to_bytes();
        assert_eq!(Account::read_from(&bytes), a);
        assert_eq!(&bytes[0..2], &[0x02, 0x01]);
        assert_eq!(bytes[16], 3);
        assert_eq!(bytes[64], 6);
        assert_eq!(bytes[96], 8);
        assert_eq!(bytes[104], 9);
        assert_eq!(bytes[112], 10);
        assert_eq!(bytes[116], 11);
        assert_eq!(bytes[118], 8);
        assert_eq!(bytes[120], 12);
    }

    #[cfg(feature = "rkyv")]
    #[test]
    fn archived_account_has_the_wire_layout() {
        let a = Account {
            id: 42,
            credits_posted: 7,
            ledger: 3,
            code: 2,
            timestamp: 99,
            ..Default::default()
        };
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&a).unwrap();
        assert_eq!(&archived[..], &a.to_bytes()[..]);
    }
}
