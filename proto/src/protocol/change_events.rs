//! Change events on the wire: how a follower reads every change of the ledger, in journal
//! order, with the post-state of every account a change touched.
//!
//! A position in the stream is `(sequence, index)`: the journal sequence of the request that
//! made the change, and the change's index among that request's changes (expiries first, then
//! accounts, transfers and limits, as the journal event lists them).

use super::{Status, CHANGE_EVENTS_PER_REPLY_MAX};
use crate::types::{read_u16, read_u32, read_u64};
use crate::types::{Account, AccountLimit, Transfer};

/// Asks for change events from a position.
///
/// Body, exactly 16 bytes: `from_sequence@0 u64, limit@8 u32, from_index@12 u32`.
/// `limit` must be in `1..=CHANGE_EVENTS_PER_REPLY_MAX` (`invalid_body` otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeEventsRequest {
    pub from_sequence: u64,
    pub limit: u32,
    pub from_index: u32,
}

impl ChangeEventsRequest {
    pub const SIZE: usize = 16;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.from_sequence.to_le_bytes());
        out.extend_from_slice(&self.limit.to_le_bytes());
        out.extend_from_slice(&self.from_index.to_le_bytes());
    }

    pub fn decode(body: &[u8]) -> Result<ChangeEventsRequest, Status> {
        if body.len() != Self::SIZE {
            return Err(Status::BodyLengthInvalid);
        }
        let request = ChangeEventsRequest {
            from_sequence: read_u64(body, 0),
            limit: read_u32(body, 8),
            from_index: read_u32(body, 12),
        };
        if request.limit == 0 || request.limit as usize > CHANGE_EVENTS_PER_REPLY_MAX {
            return Err(Status::InvalidBody);
        }
        Ok(request)
    }
}

/// What kind of change a [`ChangeEvent`] is. Numbers are part of the wire format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ChangeEventKind {
    /// An account was created: `debit_account` is the new account.
    #[default]
    AccountCreated = 1,
    /// A single-phase transfer applied: `transfer`, both accounts after it.
    TransferSinglePhase = 2,
    /// A pending transfer reserved its amount: `transfer`, both accounts after it.
    TransferPending = 3,
    /// A pending transfer was posted: `transfer` is the post, both accounts after it.
    TransferPosted = 4,
    /// A pending transfer was voided: `transfer` is the void, both accounts after it.
    TransferVoided = 5,
    /// A pending transfer timed out and the ledger voided it: `transfer` is the pending
    /// transfer, both accounts after the release; `timestamp` is when the expiry applied.
    TransferExpired = 6,
    /// An account's limit was set: `limit`, and `debit_account` is the account.
    LimitSet = 7,
}

impl ChangeEventKind {
    pub const ALL: [ChangeEventKind; 7] = [
        ChangeEventKind::AccountCreated,
        ChangeEventKind::TransferSinglePhase,
        ChangeEventKind::TransferPending,
        ChangeEventKind::TransferPosted,
        ChangeEventKind::TransferVoided,
        ChangeEventKind::TransferExpired,
        ChangeEventKind::LimitSet,
    ];

    pub fn from_u16(n: u16) -> Option<ChangeEventKind> {
        Self::ALL.iter().copied().find(|k| *k as u16 == n)
    }

    pub fn name(self) -> &'static str {
        match self {
            ChangeEventKind::AccountCreated => "account_created",
            ChangeEventKind::TransferSinglePhase => "transfer_single_phase",
            ChangeEventKind::TransferPending => "transfer_pending",
            ChangeEventKind::TransferPosted => "transfer_posted",
            ChangeEventKind::TransferVoided => "transfer_voided",
            ChangeEventKind::TransferExpired => "transfer_expired",
            ChangeEventKind::LimitSet => "limit_set",
        }
    }

    pub fn from_name(name: &str) -> Option<ChangeEventKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// One change, with the full post-state of the accounts it touched.
///
/// Record, exactly [`ChangeEvent::SIZE`] = 480 bytes: `sequence@0 u64, index@8 u32,
/// kind@12 u16, reserved@14 u16, timestamp@16 u64, reserved@24 u64, transfer@32 Transfer(128),
/// debit_account@160 Account(128), credit_account@288 Account(128), limit@416
/// AccountLimit(64)`. Parts a kind does not use are all zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeEvent {
    pub sequence: u64,
    pub index: u32,
    pub kind: ChangeEventKind,
    /// When the change applied (the transfer's, account's or limit's timestamp; for an
    /// expiry, the time the ledger voided the pending transfer).
    pub timestamp: u64,
    pub transfer: Transfer,
    /// The debit account after the change; for `account_created` and `limit_set`, the account.
    pub debit_account: Account,
    /// The credit account after the change (transfers only).
    pub credit_account: Account,
    /// The limit set (`limit_set` only).
    pub limit: AccountLimit,
}

impl ChangeEvent {
    pub const SIZE: usize = 480;

    /// Writes exactly [`ChangeEvent::SIZE`] bytes.
    pub fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::SIZE);
        out[0..32].fill(0);
        out[0..8].copy_from_slice(&self.sequence.to_le_bytes());
        out[8..12].copy_from_slice(&self.index.to_le_bytes());
        out[12..14].copy_from_slice(&(self.kind as u16).to_le_bytes());
        out[16..24].copy_from_slice(&self.timestamp.to_le_bytes());
        self.transfer.write_to(&mut out[32..160]);
        self.debit_account.write_to(&mut out[160..288]);
        self.credit_account.write_to(&mut out[288..416]);
        self.limit.write_to(&mut out[416..480]);
    }

    /// Reads exactly [`ChangeEvent::SIZE`] bytes; `invalid_body` for an unknown kind or
    /// non-zero reserved bytes.
    pub fn read_from(bytes: &[u8]) -> Result<ChangeEvent, Status> {
        if bytes.len() != Self::SIZE {
            return Err(Status::BodyLengthInvalid);
        }
        let kind = ChangeEventKind::from_u16(read_u16(bytes, 12)).ok_or(Status::InvalidBody)?;
        if read_u16(bytes, 14) != 0 || read_u64(bytes, 24) != 0 {
            return Err(Status::InvalidBody);
        }
        Ok(ChangeEvent {
            sequence: read_u64(bytes, 0),
            index: read_u32(bytes, 8),
            kind,
            timestamp: read_u64(bytes, 16),
            transfer: Transfer::read_from(&bytes[32..160]),
            debit_account: Account::read_from(&bytes[160..288]),
            credit_account: Account::read_from(&bytes[288..416]),
            limit: AccountLimit::read_from(&bytes[416..480]),
        })
    }
}

/// The answer to [`ChangeEventsRequest`].
///
/// Body: a 32-byte prefix `next_sequence@0 u64, next_index@8 u32, count@12 u32,
/// head_sequence@16 u64, reserved@24 u64`, then `count` [`ChangeEvent`] records.
/// `(next_sequence, next_index)` is where the next request continues; `head_sequence` is the
/// last durable journal sequence (caught up when `next_sequence > head_sequence`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeEventsReply {
    pub next_sequence: u64,
    pub next_index: u32,
    pub head_sequence: u64,
    pub events: Vec<ChangeEvent>,
}

impl ChangeEventsReply {
    pub const PREFIX_SIZE: usize = 32;

    /// Appends the prefix and records.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.events.len() <= CHANGE_EVENTS_PER_REPLY_MAX);
        Self::encode_prefix(
            out,
            self.next_sequence,
            self.next_index,
            self.events.len() as u32,
            self.head_sequence,
        );
        for event in &self.events {
            let start = out.len();
            out.resize(start + ChangeEvent::SIZE, 0);
            event.write_to(&mut out[start..]);
        }
    }

    /// Appends only the prefix: a server may write the records itself right after it.
    pub fn encode_prefix(
        out: &mut Vec<u8>,
        next_sequence: u64,
        next_index: u32,
        count: u32,
        head_sequence: u64,
    ) {
        out.extend_from_slice(&next_sequence.to_le_bytes());
        out.extend_from_slice(&next_index.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&head_sequence.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
    }

    pub fn decode(body: &[u8]) -> Result<ChangeEventsReply, Status> {
        if body.len() < Self::PREFIX_SIZE {
            return Err(Status::BodyLengthInvalid);
        }
        let count = read_u32(body, 12) as usize;
        if count > CHANGE_EVENTS_PER_REPLY_MAX
            || body.len() != Self::PREFIX_SIZE + count * ChangeEvent::SIZE
        {
            return Err(Status::BodyLengthInvalid);
        }
        if read_u64(body, 24) != 0 {
            return Err(Status::InvalidBody);
        }
        let events = body[Self::PREFIX_SIZE..]
            .chunks_exact(ChangeEvent::SIZE)
            .map(ChangeEvent::read_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChangeEventsReply {
            next_sequence: read_u64(body, 0),
            next_index: read_u32(body, 8),
            head_sequence: read_u64(body, 16),
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rules() {
        let r = ChangeEventsRequest { from_sequence: 5, limit: 10, from_index: 2 };
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(b.len(), 16);
        assert_eq!(ChangeEventsRequest::decode(&b), Ok(r));
        assert_eq!(ChangeEventsRequest::decode(&b[1..]), Err(Status::BodyLengthInvalid));
        for limit in [0, CHANGE_EVENTS_PER_REPLY_MAX as u32 + 1] {
            let mut b = Vec::new();
            ChangeEventsRequest { limit, ..r }.encode(&mut b);
            assert_eq!(ChangeEventsRequest::decode(&b), Err(Status::InvalidBody));
        }
    }

    #[test]
    fn reply_round_trip_and_rules() {
        let event = ChangeEvent {
            sequence: 3,
            index: 1,
            kind: ChangeEventKind::TransferPosted,
            timestamp: 99,
            transfer: Transfer { id: 7, amount: u128::MAX, ..Default::default() },
            debit_account: Account { id: 1, debits_posted: 5, ..Default::default() },
            credit_account: Account { id: 2, credits_posted: 5, ..Default::default() },
            limit: AccountLimit::default(),
        };
        let reply = ChangeEventsReply {
            next_sequence: 3,
            next_index: 2,
            head_sequence: 10,
            events: vec![event, ChangeEvent { index: 2, kind: ChangeEventKind::LimitSet, ..event }],
        };
        let mut b = Vec::new();
        reply.encode(&mut b);
        assert_eq!(b.len(), 32 + 2 * 480);
        assert_eq!(b[32 + 12], 4, "kind at offset 12 of the record");
        assert_eq!(ChangeEventsReply::decode(&b), Ok(reply));
        assert_eq!(ChangeEventsReply::decode(&b[..b.len() - 1]), Err(Status::BodyLengthInvalid));
        let mut bad_kind = b.clone();
        bad_kind[32 + 12] = 0;
        assert_eq!(ChangeEventsReply::decode(&bad_kind), Err(Status::InvalidBody));
        let mut bad_count = b;
        bad_count[12] = 3;
        assert_eq!(ChangeEventsReply::decode(&bad_count), Err(Status::BodyLengthInvalid));
        for kind in ChangeEventKind::ALL {
            assert_eq!(ChangeEventKind::from_name(kind.name()), Some(kind));
            assert_eq!(ChangeEventKind::from_u16(kind as u16), Some(kind));
        }
    }
}
