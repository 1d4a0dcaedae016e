//! Hot state in memory, history on disk: what may leave memory, and what the caller brings
//! back for one request.
//!
//! A disk index (maintained off the business thread from the journal) holds every record of
//! every journal record up to a timestamp, its *watermark*. [`StateMachine::evict`] drops from
//! memory what that index already holds and what no future decision needs in memory:
//! - a transfer's **creation** (its entries in the account lists and the balance-history rows
//!   up to its timestamp) once its timestamp is at or before the watermark;
//! - the **record** itself once its creation is evicted and it is not pending, and, for a
//!   pending transfer that was posted, voided or expired, once that change is at or before the
//!   watermark too (so the index has its final state). Pending transfers stay in memory;
//! - a remembered failed id once the event that failed is at or before the watermark.
//!
//! Eviction walks queues in timestamp order (creations, finished pendings, failed ids), a
//! bounded number of records per call, and never touches accounts. Evicted records still count
//! in [`StateMachine::counts`] and in the state hash (their terms move to `evicted_sums`).
//!
//! Before a request, the caller puts into [`ColdHits`] what the disk index holds for it: the
//! transfers and failed ids its events name (new ids are filtered out before any disk read),
//! and the first page of an account filter. The state machine looks there only for what it
//! does not find in memory, so a hit that is also in memory is harmless, and a record evicted
//! after the caller looked it up is found because eviction only ever drops what the index held
//! when the caller looked (the caller evicts with the watermark it looked up with).

use std::collections::{HashMap, HashSet};

use super::{StateMachine, TransferState, MARK_CREATION_EVICTED, MARK_FINISH_EVICTED};
use crate::types::{AccountBalance, Transfer, TransferFlags};

type FixedState = foldhash::fast::FixedState;

/// Records of one request that are no longer in memory, found by the caller in the disk
/// index (see the module docs). Cleared by the caller before each request; its allocations
/// are kept.
#[derive(Default)]
pub struct ColdHits {
    transfers: HashMap<u128, (Transfer, TransferState), FixedState>,
    failed: HashSet<u128, FixedState>,
    /// The account filter's results among indexed records: its first `limit` records in its
    /// order (the state machine merges them with the ones in memory).
    pub account_transfers: Vec<Transfer>,
    pub account_balances: Vec<AccountBalance>,
}

impl ColdHits {
    pub fn clear(&mut self) {
        self.transfers.clear();
        self.failed.clear();
        self.account_transfers.clear();
        self.account_balances.clear();
    }

    pub fn add_transfer(&mut self, t: Transfer, state: TransferState) {
        self.transfers.insert(t.id, (t, state));
    }

    pub fn add_failed(&mut self, id: u128) {
        self.failed.insert(id);
    }

    #[inline]
    pub(super) fn transfer(&self, id: u128) -> Option<(Transfer, TransferState)> {
        if self.transfers.is_empty() {
            return None;
        }
        self.transfers.get(&id).copied()
    }

    #[inline]
    pub(super) fn failed(&self, id: u128) -> bool {
        !self.failed.is_empty() && self.failed.contains(&id)
    }
}

impl StateMachine {
    /// Drops from memory at most `budget` records that the disk index holds up to
    /// `watermark_ns` (see the module docs); returns how many it dropped. Never in a chain.
    pub fn evict(&mut self, watermark_ns: u64, budget: usize) -> usize {
        assert!(!self.in_chain, "eviction between requests only");
        let mut done = 0;
        while done < budget {
            let Some(&slot) = self.creation_order.front() else {
                break;
            };
            let t = self.transfers[slot as usize];
            if t.timestamp > watermark_ns {
                break;
            }
            self.creation_order.pop_front();
            self.evict_creation(slot, &t);
            let marks = &mut self.slot_marks[slot as usize];
            *marks |= MARK_CREATION_EVICTED;
            if !t.has(TransferFlags::PENDING) || *marks & MARK_FINISH_EVICTED != 0 {
                self.evict_record(slot);
            }
            done += 1;
        }
        while done < budget {
            let Some(&(ts, slot)) = self.finished.front() else {
                break;
            };
            if ts > watermark_ns {
                break;
            }
            self.finished.pop_front();
            let marks = &mut self.slot_marks[slot as usize];
            *marks |= MARK_FINISH_EVICTED;
            if *marks & MARK_CREATION_EVICTED != 0 {
                self.evict_record(slot);
            }
            done += 1;
        }
        while done < budget {
            let Some(&(ts, slot)) = self.failed_order.front() else {
                break;
            };
            if ts > watermark_ns {
                break;
            }
            self.failed_order.pop_front();
            let f = self.failed[slot as usize];
            let removed = self.failed_index.remove(f.id, &self.failed);
            assert!(removed, "a remembered failed id is in its index");
            self.evicted_sums.failed =
                self.evicted_sums.failed.wrapping_add(super::digest::failed_term(&f));
            self.failed[slot as usize].id = 0;
            self.free_failed_slots.push(slot);
            self.evicted_through_ns = self.evicted_through_ns.max(ts);
            done += 1;
        }
        done
    }

    /// Newest timestamp whose records may have left memory (0 if none ever did).
    pub fn evicted_through_ns(&self) -> u64 {
        self.evicted_through_ns
    }

    /// Drops the account-list entries and balance-history rows of the oldest transfer still
    /// listed, and the rows before it.
    fn evict_creation(&mut self, slot: u32, t: &Transfer) {
        for id in [t.debit_account_id, t.credit_account_id] {
            let account = self.account_slot(id);
            let ext = &mut self.account_ext[account as usize];
            let front = ext.transfers.pop_front();
            assert_eq!(front, Some(slot), "account lists follow creation order");
            while ext.history.front().is_some_and(|row| row.timestamp <= t.timestamp) {
                ext.history.pop_front();
                ext.history_sides.pop_front();
            }
        }
        self.evicted_through_ns = self.evicted_through_ns.max(t.timestamp);
    }

    /// Drops a finished transfer's record from memory.
    fn evict_record(&mut self, slot: u32) {
        let t = self.transfers[slot as usize];
        let state = self.transfer_states[slot as usize];
        assert!(state != TransferState::Pending, "pending transfer {} evicted", t.id);
        let removed = self.transfer_index.remove(t.id, &self.transfers);
        assert!(removed, "an evicted transfer is in its index");
        self.evicted_sums.transfers =
            self.evicted_sums.transfers.wrapping_add(super::digest::transfer_term(&t, state));
        self.release_slot(slot);
    }
}
