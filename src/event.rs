//! Change events: what one request changed, as the state machine emits it and the journal
//! stores it (one rkyv-archived [`Event`] per journal record).
//!
//! An event is the *result* of applying a request, not the request: created records are
//! final (timestamps assigned, balancing amounts clamped, post/void fields filled in from the
//! pending transfer), so replay needs no clock and no validation. Replay applies the parts
//! in this order: `expired`, `accounts`, `transfers`, `limits`, `failed`, then raises the
//! clock to `timestamp`. The post-balances stored beside every transfer and expiry let
//! replay check itself, and let followers stream changes without a copy of the state.

use crate::types::{Account, AccountLimit, ResultCode, Transfer};

/// The balances of both accounts of a transfer right after it (or its expiry) applied.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct BalancePair {
    pub debit: Balances,
    pub credit: Balances,
}

/// The four balances of one account.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct Balances {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

impl Balances {
    pub fn of(account: &Account) -> Self {
        Balances {
            debits_pending: account.debits_pending,
            debits_posted: account.debits_posted,
            credits_pending: account.credits_pending,
            credits_posted: account.credits_posted,
        }
    }
}

/// A pending transfer that the ledger voided because its timeout passed.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct Expiry {
    pub pending_id: u128,
    /// The ledger timestamp at which the expiry was applied.
    pub timestamp: u64,
    pub reserved: u64,
    pub balances: BalancePair,
}

/// A transfer id that failed for a transient reason and is remembered as failed.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct FailedId {
    pub id: u128,
    /// The [`ResultCode`] number it failed with.
    pub code: u32,
    pub reserved: [u32; 3],
}

impl FailedId {
    pub fn new(id: u128, code: ResultCode) -> Self {
        FailedId { id, code: code as u32, reserved: [0; 3] }
    }
}

/// Everything one request changed. Empty vectors cost 8 bytes each in the archive.
///
/// Reused across requests: [`Event::clear`] keeps the capacity, so the hot path does not
/// allocate once the vectors have grown to a request's size.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Event {
    /// The highest timestamp the request assigned; replay raises the clock to it.
    pub timestamp: u64,
    /// Pending transfers voided by their timeout, applied first.
    pub expired: Vec<Expiry>,
    /// Created accounts, final records.
    pub accounts: Vec<Account>,
    /// Created transfers, final records, in the order they applied.
    pub transfers: Vec<Transfer>,
    /// Post-balances after each transfer: `transfer_balances[i]` belongs to `transfers[i]`.
    pub transfer_balances: Vec<BalancePair>,
    /// Account limits set, final records (timestamp assigned).
    pub limits: Vec<AccountLimit>,
    /// Transfer ids remembered as failed.
    pub failed: Vec<FailedId>,
}

impl Event {
    pub fn clear(&mut self) {
        self.timestamp = 0;
        self.expired.clear();
        self.accounts.clear();
        self.transfers.clear();
        self.transfer_balances.clear();
        self.limits.clear();
        self.failed.clear();
    }

    /// Changes it carries: accounts, transfers, limits and expiries (failed ids are not changes).
    pub fn changes(&self) -> usize {
        self.accounts.len() + self.transfers.len() + self.limits.len() + self.expired.len()
    }

    /// Nothing changed: there is nothing to journal.
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty()
            && self.accounts.is_empty()
            && self.transfers.is_empty()
            && self.limits.is_empty()
            && self.failed.is_empty()
    }
}

impl ArchivedEvent {
    /// As [`Event::changes`].
    pub fn changes(&self) -> usize {
        self.accounts.len() + self.transfers.len() + self.limits.len() + self.expired.len()
    }
}

/// Most expiries one event carries; more that are due wait for the next sweep (a post or
/// void of a due pending transfer fails with `pending_transfer_expired` meanwhile).
pub const EXPIRED_PER_EVENT_MAX: usize = crate::types::EVENTS_PER_REQUEST_MAX;

/// Serializes `event` into `out` (cleared first), reusing its allocation.
pub fn encode(event: &Event, out: &mut rkyv::util::AlignedVec<16>) {
    out.clear();
    let buffer = std::mem::take(out);
    *out = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(event, buffer)
        .expect("an Event always serializes");
}

/// Checks and accesses an archived event (bytes read back from disk).
pub fn access(bytes: &[u8]) -> Result<&ArchivedEvent, rkyv::rancor::BoxedError> {
    rkyv::access::<ArchivedEvent, rkyv::rancor::BoxedError>(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips_through_rkyv() {
        let mut event = Event { timestamp: 7, ..Default::default() };
        event.transfers.push(Transfer { id: 1, amount: 5, ..Default::default() });
        event.transfer_balances.push(BalancePair::default());
        event.failed.push(FailedId::new(9, ResultCode::ExceedsCredits));
        let mut bytes = rkyv::util::AlignedVec::<16>::new();
        encode(&event, &mut bytes);
        let archived = access(&bytes).unwrap();
        assert_eq!(archived.timestamp.to_native(), 7);
        assert_eq!(Transfer::from(&archived.transfers[0]), event.transfers[0]);
        let back: Event = rkyv::deserialize::<Event, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(back, event);
    }
}
