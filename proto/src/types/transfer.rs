//! `Transfer` (128 bytes): a double-entry movement of `amount` between two accounts.

use super::{read_u128, read_u16, read_u32, read_u64};

/// Flags of a transfer. Unknown bits are refused with `flags_unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransferFlags;

impl TransferFlags {
    /// Chains this event with the next one: they succeed or fail together.
    pub const LINKED: u16 = 1 << 0;
    /// Reserve `amount` (debits_pending / credits_pending) until posted, voided or expired.
    pub const PENDING: u16 = 1 << 1;
    /// Post the pending transfer `pending_id` (all of it, or a smaller amount).
    pub const POST_PENDING_TRANSFER: u16 = 1 << 2;
    /// Release the pending transfer `pending_id`.
    pub const VOID_PENDING_TRANSFER: u16 = 1 << 3;
    /// Clamp `amount` to what the debit account's limit still allows.
    pub const BALANCING_DEBIT: u16 = 1 << 4;
    /// Clamp `amount` to what the credit account's limit still allows.
    pub const BALANCING_CREDIT: u16 = 1 << 5;
    /// Every bit that has a meaning.
    pub const ALL: u16 = Self::LINKED
        | Self::PENDING
        | Self::POST_PENDING_TRANSFER
        | Self::VOID_PENDING_TRANSFER
        | Self::BALANCING_DEBIT
        | Self::BALANCING_CREDIT;
    /// Flag names as the CLI and JSON use them, with their bits, in bit order.
    pub const NAMES: [(&'static str, u16); 6] = [
        ("linked", Self::LINKED),
        ("pending", Self::PENDING),
        ("post_pending_transfer", Self::POST_PENDING_TRANSFER),
        ("void_pending_transfer", Self::VOID_PENDING_TRANSFER),
        ("balancing_debit", Self::BALANCING_DEBIT),
        ("balancing_credit", Self::BALANCING_CREDIT),
    ];
}

/// A transfer.
///
/// Wire and journal layout (little-endian), 128 bytes:
/// `id@0 u128, debit_account_id@16 u128, credit_account_id@32 u128, amount@48 u128,
/// pending_id@64 u128, user_data_128@80 u128, user_data_64@96 u64, user_data_32@104 u32,
/// timeout@108 u32, ledger@112 u32, code@116 u16, flags@118 u16, timestamp@120 u64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "rkyv",
    derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize),
    rkyv(derive(Debug))
)]
#[repr(C)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Seconds; only for `pending` transfers. 0 means "never expires".
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

const _: () = assert!(std::mem::size_of::<Transfer>() == Transfer::SIZE);
const _: () = assert!(std::mem::align_of::<Transfer>() == 16);
#[cfg(feature = "rkyv")]
const _: () = assert!(std::mem::size_of::<ArchivedTransfer>() == Transfer::SIZE);

impl Transfer {
    /// Size of one record on the wire and in the journal.
    pub const SIZE: usize = 128;

    /// Encodes into exactly [`Transfer::SIZE`] little-endian bytes.
    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::SIZE);
        out[0..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..32].copy_from_slice(&self.debit_account_id.to_le_bytes());
        out[32..48].copy_from_slice(&self.credit_account_id.to_le_bytes());
        out[48..64].copy_from_slice(&self.amount.to_le_bytes());
        out[64..80].copy_from_slice(&self.pending_id.to_le_bytes());
        out[80..96].copy_from_slice(&self.user_data_128.to_le_bytes());
        out[96..104].copy_from_slice(&self.user_data_64.to_le_bytes());
        out[104..108].copy_from_slice(&self.user_data_32.to_le_bytes());
        out[108..112].copy_from_slice(&self.timeout.to_le_bytes());
        out[112..116].copy_from_slice(&self.ledger.to_le_bytes());
        out[116..118].copy_from_slice(&self.code.to_le_bytes());
        out[118..120].copy_from_slice(&self.flags.to_le_bytes());
        out[120..128].copy_from_slice(&self.timestamp.to_le_bytes());
    }

    /// Decodes exactly [`Transfer::SIZE`] little-endian bytes.
    pub fn read_from(bytes: &[u8]) -> Self {
        assert_eq!(bytes.len(), Self::SIZE);
        Transfer {
            id: read_u128(bytes, 0),
            debit_account_id: read_u128(bytes, 16),
            credit_account_id: read_u128(bytes, 32),
            amount: read_u128(bytes, 48),
            pending_id: read_u128(bytes, 64),
            user_data_128: read_u128(bytes, 80),
            user_data_64: read_u64(bytes, 96),
            user_data_32: read_u32(bytes, 104),
            timeout: read_u32(bytes, 108),
            ledger: read_u32(bytes, 112),
            code: read_u16(bytes, 116),
            flags: read_u16(bytes, 118),
            timestamp: read_u64(bytes, 120),
        }
    }

    /// The bytes as [`Transfer::write_to`] writes them.
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
impl From<&ArchivedTransfer> for Transfer {
    fn from(t: &ArchivedTransfer) -> Self {
        Transfer {
            id: t.id.to_native(),
            debit_account_id: t.debit_account_id.to_native(),
            credit_account_id: t.credit_account_id.to_native(),
            amount: t.amount.to_native(),
            pending_id: t.pending_id.to_native(),
            user_data_128: t.user_data_128.to_native(),
            user_data_64: t.user_data_64.to_native(),
            user_data_32: t.user_data_32.to_native(),
            timeout: t.timeout.to_native(),
            ledger: t.ledger.to_native(),
            code: t.code.to_native(),
            flags: t.flags.to_native(),
            timestamp: t.timestamp.to_native(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_round_trips_and_golden_bytes() {
        let t = Transfer {
            id: 1,
            debit_account_id: 2,
            credit_account_id: 3,
            amount: u128::MAX - 1,
            pending_id: 5,
            user_data_128: 6,
            user_data_64: 7,
            user_data_32: 8,
            timeout: 9,
            ledger: 10,
            code: 11,
            flags: TransferFlags::PENDING | TransferFlags::LINKED,
            timestamp: 0x0102_0304_0506_0708,
        };
        let bytes = t.to_bytes();
        assert_eq!(Transfer::read_from(&bytes), t);
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[16], 2);
        assert_eq!(bytes[32], 3);
        assert_eq!(bytes[48], 0xfe);
        assert_eq!(bytes[63], 0xff);
        assert_eq!(bytes[64], 5);
        assert_eq!(bytes[108], 9);
        assert_eq!(bytes[118], 3);
        assert_eq!(&bytes[120..128], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[cfg(feature = "rkyv")]
    #[test]
    fn archived_transfer_has_the_wire_layout() {
        let t = Transfer {
            id: 9,
            amount: 1 << 70,
            ledger: 1,
            code: 1,
            timeout: 3,
            ..Default::default()
        };
        let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&t).unwrap();
        assert_eq!(&archived[..], &t.to_bytes()[..]);
    }
}
