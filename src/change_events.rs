//! Serving `change_events`: the ledger's changes read back from the durable journal, with
//! the post-balances each journal event recorded, so a follower sees every change in order.
//!
//! A journal record lists its changes as expiries, accounts, transfers, then limits; a
//! change's `index` is its place in that list. Account records in a change carry the
//! account's fixed fields from the live state and the balances the event recorded right after
//! the change (for `account_created`, the new account as created; for `limit_set`, the
//! account's current record).

use crate::event::{self, ArchivedBalances, ArchivedEvent};
use crate::journal::Journal;
use crate::protocol::{
    ChangeEvent, ChangeEventKind, ChangeEventsReply, ChangeEventsRequest, Status,
};
use crate::state_machine::StateMachine;
use crate::types::{Account, AccountLimit, Transfer, TransferFlags};

/// Writes the reply body for `request` into `body` (cleared first), from the journal's records
/// up to `head` (its durable sequence; a replica's commit index, which may be lower).
/// `evicted` finds a
/// transfer no longer in memory (history on disk); an expiry's change names the expired
/// pending transfer, which the journal record does not carry.
pub fn collect(
    journal: &Journal,
    head: u64,
    state: &StateMachine,
    evicted: &dyn Fn(u128) -> Option<Transfer>,
    request: &ChangeEventsRequest,
    body: &mut Vec<u8>,
) -> Result<(), Status> {
    body.clear();
    ChangeEventsReply::encode_prefix(body, 0, 0, 0, 0);
    assert!(head <= journal.durable_sequence(), "change events past the durable records");
    let limit = request.limit as usize;
    let mut count = 0usize;
    let (mut next_sequence, mut next_index) = (request.from_sequence.max(1), request.from_index);
    if request.from_sequence == 0 {
        next_index = 0;
    }
    'records: for (sequence, bytes) in journal.records_from(next_sequence) {
        if sequence > head {
            break;
        }
        if bytes.is_empty() {
            // A replica's entry without an event: no changes.
            next_sequence = sequence + 1;
            next_index = 0;
            continue;
        }
        let archived = event::access(bytes).map_err(|_| Status::InternalError)?;
        let skip = if sequence == next_sequence { next_index } else { 0 };
        let mut index = 0u32;
        let mut push = |change: ChangeEvent| -> bool {
            let i = index;
            index += 1;
            if i < skip {
                return true;
            }
            if count == limit {
                return false;
            }
            let start = body.len();
            body.resize(start + ChangeEvent::SIZE, 0);
            ChangeEvent { sequence, index: i, ..change }.write_to(&mut body[start..]);
            count += 1;
            true
        };
        if !for_each_change(archived, state, evicted, &mut push)? {
            next_sequence = sequence;
            next_index = index - 1;
            break 'records;
        }
        next_sequence = sequence + 1;
        next_index = 0;
    }
    let mut prefix = Vec::with_capacity(ChangeEventsReply::PREFIX_SIZE);
    ChangeEventsReply::encode_prefix(&mut prefix, next_sequence, next_index, count as u32, head);
    body[..ChangeEventsReply::PREFIX_SIZE].copy_from_slice(&prefix);
    Ok(())
}

/// Calls `push` for every change of one journal event, in index order, until it returns false.
fn for_each_change(
    event: &ArchivedEvent,
    state: &StateMachine,
    evicted: &dyn Fn(u128) -> Option<Transfer>,
    push: &mut dyn FnMut(ChangeEvent) -> bool,
) -> Result<bool, Status> {
    for expiry in event.expired.iter() {
        let pending_id = expiry.pending_id.to_native();
        // Not in memory and not found in the disk index: the index could not be read.
        let transfer = state
            .transfer_by_id(pending_id)
            .copied()
            .or_else(|| evicted(pending_id))
            .ok_or(Status::JournalUnavailable)?;
        let change = ChangeEvent {
            kind: ChangeEventKind::TransferExpired,
            timestamp: expiry.timestamp.to_native(),
            transfer,
            debit_account: with_balances(state, transfer.debit_account_id, &expiry.balances.debit),
            credit_account: with_balances(
                state,
                transfer.credit_account_id,
                &expiry.balances.credit,
            ),
            ..Default::default()
        };
        if !push(change) {
            return Ok(false);
        }
    }
    for account in event.accounts.iter() {
        let account = Account::from(account);
        let change = ChangeEvent {
            kind: ChangeEventKind::AccountCreated,
            timestamp: account.timestamp,
            debit_account: account,
            ..Default::default()
        };
        if !push(change) {
            return Ok(false);
        }
    }
    for (transfer, balances) in event.transfers.iter().zip(event.transfer_balances.iter()) {
        let transfer = Transfer::from(transfer);
        let kind = if transfer.flags & TransferFlags::PENDING != 0 {
            ChangeEventKind::TransferPending
        } else if transfer.flags & TransferFlags::POST_PENDING_TRANSFER != 0 {
            ChangeEventKind::TransferPosted
        } else if transfer.flags & TransferFlags::VOID_PENDING_TRANSFER != 0 {
            ChangeEventKind::TransferVoided
        } else {
            ChangeEventKind::TransferSinglePhase
        };
        let change = ChangeEvent {
            kind,
            timestamp: transfer.timestamp,
            transfer,
            debit_account: with_balances(state, transfer.debit_account_id, &balances.debit),
            credit_account: with_balances(state, transfer.credit_account_id, &balances.credit),
            ..Default::default()
        };
        if !push(change) {
            return Ok(false);
        }
    }
    for limit in event.limits.iter() {
        let limit = AccountLimit::from(limit);
        let change = ChangeEvent {
            kind: ChangeEventKind::LimitSet,
            timestamp: limit.timestamp,
            debit_account: state.account(limit.account_id).copied().unwrap_or_default(),
            limit,
            ..Default::default()
        };
        if !push(change) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The account's record with the balances an event recorded.
fn with_balances(state: &StateMachine, id: u128, balances: &ArchivedBalances) -> Account {
    let mut account = state.account(id).copied().unwrap_or_default();
    account.debits_pending = balances.debits_pending.to_native();
    account.debits_posted = balances.debits_posted.to_native();
    account.credits_pending = balances.credits_pending.to_native();
    account.credits_posted = balances.credits_posted.to_native();
    account
}
