//! Replay: applying a journaled change event without a clock and without business rules.
//!
//! An event holds final records (timestamps assigned, balancing amounts clamped, post/void
//! fields filled in), so replay only re-applies the balance arithmetic. It still checks what
//! it can: ids are new, referenced records exist, nothing overflows, and the post-balances
//! stored in the event are the ones replay computes. Any mismatch means the journal does not
//! belong to this state; the state is then unspecified and must be discarded.

use std::cmp::Reverse;

use super::{
    expires_at_ns, pair_mut, release_pending, BatchEvent, StateMachine, TransferState,
    WARM_AHEAD_EVENTS,
};
use crate::event::{ArchivedBalancePair, ArchivedEvent, BalancePair, Balances, FailedId};
use crate::types::{Account, AccountLimit, ResultCode, Transfer, TransferFlags};

/// Why a journaled event could not be applied.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("account {0} already exists")]
    AccountExists(u128),
    #[error("transfer {0} already exists")]
    TransferExists(u128),
    #[error("transfer {transfer}: account {account} not found")]
    AccountNotFound { transfer: u128, account: u128 },
    #[error("transfer {transfer}: debit and credit account are the same")]
    SameAccount { transfer: u128 },
    #[error("limit of account {0}: account not found")]
    LimitAccountNotFound(u128),
    #[error("pending transfer {0} not found")]
    PendingNotFound(u128),
    #[error("pending transfer {0} is not pending any more")]
    PendingNotPending(u128),
    #[error("transfer {0}: amount above its pending transfer's amount")]
    AmountAbovePending(u128),
    #[error("transfer {0}: a balance would overflow or go negative")]
    Overflow(u128),
    #[error("transfer or expiry {0}: post-balances differ from the journaled ones")]
    BalanceMismatch(u128),
    #[error("event lists {transfers} transfers but {balances} balance pairs")]
    BalancesLength { transfers: usize, balances: usize },
    #[error("failed id {0} is already known")]
    FailedIdKnown(u128),
    #[error("failed id {id} carries code {code}, which is not a transient failure")]
    FailedCode { id: u128, code: u32 },
    #[error("event timestamp {event} is below a record timestamp {record}")]
    Timestamp { event: u64, record: u64 },
}

impl StateMachine {
    /// Applies an archived event, as [`crate::event::access`] returns it, in the order the
    /// event module documents: expired, accounts, transfers, limits, failed, then the clock.
    pub fn apply_event(&mut self, event: &ArchivedEvent) -> Result<(), ReplayError> {
        debug_assert!(!self.in_chain);
        let event_ts = event.timestamp.to_native();
        let mut max_ts = 0u64;

        for expiry in event.expired.iter() {
            let id = expiry.pending_id.to_native();
            let index = self
                .transfer_index
                .get(id, &self.transfers)
                .ok_or(ReplayError::PendingNotFound(id))?;
            if self.transfer_states[index as usize] != TransferState::Pending {
                return Err(ReplayError::PendingNotPending(id));
            }
            let ts = expiry.timestamp.to_native();
            max_ts = max_ts.max(ts);
            let balances = self.expire_pending(index, ts);
            if !same_balances(&balances, &expiry.balances) {
                return Err(ReplayError::BalanceMismatch(id));
            }
        }

        for a in event.accounts.iter() {
            let a = Account::from(a);
            if self.account_index.contains(a.id, &self.accounts) {
                return Err(ReplayError::AccountExists(a.id));
            }
            max_ts = max_ts.max(a.timestamp);
            self.insert_account(a);
        }

        if event.transfers.len() != event.transfer_balances.len() {
            return Err(ReplayError::BalancesLength {
                transfers: event.transfers.len(),
                balances: event.transfer_balances.len(),
            });
        }
        for (i, (t, expected)) in
            event.transfers.iter().zip(event.transfer_balances.iter()).enumerate()
        {
            // The same staged prefetch as live creation: replay is as memory-bound.
            for (stage, ahead) in WARM_AHEAD_EVENTS.iter().enumerate() {
                if let Some(next) = event.transfers.get(i + ahead) {
                    <Transfer as BatchEvent>::warm(self, &Transfer::from(next), stage);
                }
            }
            let t = Transfer::from(t);
            max_ts = max_ts.max(t.timestamp);
            let balances = self.replay_transfer(&t)?;
            if !same_balances(&balances, expected) {
                return Err(ReplayError::BalanceMismatch(t.id));
            }
        }

        for l in event.limits.iter() {
            let l = AccountLimit::from(l);
            let index = self
                .account_index
                .get(l.account_id, &self.accounts)
                .ok_or(ReplayError::LimitAccountNotFound(l.account_id))?;
            max_ts = max_ts.max(l.timestamp);
            self.apply_limit(index, &l);
        }

        for f in event.failed.iter() {
            let id = f.id.to_native();
            let code = f.code.to_native();
            if self.failed_index.contains(id, &self.failed)
                || self.transfer_index.contains(id, &self.transfers)
            {
                return Err(ReplayError::FailedIdKnown(id));
            }
            match ResultCode::from_u32(code) {
                Some(c) if c.is_transient() => self.remember_failed(FailedId::new(id, c), event_ts),
                _ => return Err(ReplayError::FailedCode { id, code }),
            }
        }

        if max_ts > event_ts {
            return Err(ReplayError::Timestamp { event: event_ts, record: max_ts });
        }
        self.clock_ns = self.clock_ns.max(event_ts);
        self.drop_stale_expiries();
        Ok(())
    }

    fn replay_transfer(&mut self, t: &Transfer) -> Result<BalancePair, ReplayError> {
        if self.transfer_index.contains(t.id, &self.transfers) {
            return Err(ReplayError::TransferExists(t.id));
        }
        let account = |sm: &Self, account: u128| {
            sm.account_index
                .get(account, &sm.accounts)
                .ok_or(ReplayError::AccountNotFound { transfer: t.id, account })
        };
        let dr_index = account(self, t.debit_account_id)?;
        let cr_index = account(self, t.credit_account_id)?;
        if dr_index == cr_index {
            return Err(ReplayError::SameAccount { transfer: t.id });
        }
        let claimed = self.transfer_index.claim(t.id, self.next_slot(), &self.transfers);
        debug_assert!(claimed.is_ok());
        let post = t.has(TransferFlags::POST_PENDING_TRANSFER);
        if post || t.has(TransferFlags::VOID_PENDING_TRANSFER) {
            let p_index = self
                .transfer_index
                .get(t.pending_id, &self.transfers)
                .ok_or(ReplayError::PendingNotFound(t.pending_id))?;
            if self.transfer_states[p_index as usize] != TransferState::Pending {
                return Err(ReplayError::PendingNotPending(t.pending_id));
            }
            let p = self.transfers[p_index as usize];
            if p.debit_account_id != t.debit_account_id
                || p.credit_account_id != t.credit_account_id
            {
                return Err(ReplayError::PendingNotFound(t.pending_id));
            }
            if t.amount > p.amount {
                return Err(ReplayError::AmountAbovePending(t.id));
            }
            let (dr_old, cr_old) = self.save_balances(dr_index, cr_index);
            let (dr, cr) = pair_mut(&mut self.accounts, dr_index, cr_index);
            release_pending(dr, cr, p.amount, if post { t.amount } else { 0 })
                .ok_or(ReplayError::Overflow(t.id))?;
            self.digest_balances_changed(dr_index, &dr_old);
            self.digest_balances_changed(cr_index, &cr_old);
            let state = if post { TransferState::Posted } else { TransferState::Voided };
            self.finish_pending(p_index, state, t.timestamp);
            self.push_transfer(*t, TransferState::Final, dr_index, cr_index);
        } else {
            let pending = t.has(TransferFlags::PENDING);
            let (dr_old, cr_old) = self.save_balances(dr_index, cr_index);
            let (dr, cr) = pair_mut(&mut self.accounts, dr_index, cr_index);
            let overflow = ReplayError::Overflow(t.id);
            let (dr_field, cr_field) = if pending {
                (&mut dr.debits_pending, &mut cr.credits_pending)
            } else {
                (&mut dr.debits_posted, &mut cr.credits_posted)
            };
            *dr_field = dr_field.checked_add(t.amount).ok_or(overflow.clone())?;
            *cr_field = cr_field.checked_add(t.amount).ok_or(overflow.clone())?;
            dr.debits_pending.checked_add(dr.debits_posted).ok_or(overflow.clone())?;
            cr.credits_pending.checked_add(cr.credits_posted).ok_or(overflow)?;
            self.digest_balances_changed(dr_index, &dr_old);
            self.digest_balances_changed(cr_index, &cr_old);
            let state = if pending { TransferState::Pending } else { TransferState::Final };
            let index = self.push_transfer(*t, state, dr_index, cr_index);
            if pending && t.timeout > 0 {
                debug_assert_eq!(self.transfers[index as usize].id, t.id);
                self.expiries.push(Reverse((expires_at_ns(t), t.id)));
            }
        }
        Ok(BalancePair {
            debit: Balances::of(&self.accounts[dr_index as usize]),
            credit: Balances::of(&self.accounts[cr_index as usize]),
        })
    }
}

fn same_balances(b: &BalancePair, archived: &ArchivedBalancePair) -> bool {
    let same = |b: &Balances, a: &crate::event::ArchivedBalances| {
        b.debits_pending == a.debits_pending.to_native()
            && b.debits_posted == a.debits_posted.to_native()
            && b.credits_pending == a.credits_pending.to_native()
            && b.credits_posted == a.credits_posted.to_native()
    };
    same(&b.debit, &archived.debit) && same(&b.credit, &archived.credit)
}
