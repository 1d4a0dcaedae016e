//! The state hash, kept current by every change instead of computed over the whole state.
//!
//! The hash is a sum (mod 2^128) of one term per record, so it depends on the set of records
//! and not on their order, and each change costs O(1): add the new record's term, subtract the
//! old one's.
//! - An account's term is `h · (1 + K₀·debits_pending + K₁·debits_posted + K₂·credits_pending
//!   + K₃·credits_posted)`, where `h` is an odd xxh3-128 of everything about the account but its
//!   balances (its record with the balances zeroed, its limit and the limit's timestamp). The
//!   term is linear in the balances, so a balance change adds `h · Σ Kᵢ·Δᵢ` without hashing.
//! - A transfer's term is the xxh3-128 of its record, seeded with its [`TransferState`].
//! - A remembered failed id's term is the xxh3-128 of the id, seeded with its code.
//!
//! [`StateMachine::state_hash`] folds the three sums and the record counts into one xxh3-128.
//! `StateSums::of` recomputes everything from scratch: snapshot loading uses it, and `verify`
//! checks that the running sums equal it.

use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

use super::{StateMachine, TransferState};
use crate::event::{Balances, FailedId};
use crate::types::{Account, Transfer};

/// Odd multipliers of the four balances in an account's term.
const K: [u128; 4] = [
    0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835,
    0xc2b2_ae3d_27d4_eb4f_1656_67b1_9e37_79f9,
    0x85eb_ca77_c2b2_ae63_27d4_eb2f_1656_67c5,
    0xd6e8_feb8_6659_fd93_a076_1d64_78bd_642f,
];

/// Seeds that keep the three kinds of terms apart.
const SEED_TRANSFER: u64 = 0x7472_616e_7366_6572;
const SEED_FAILED: u64 = 0x6661_696c_6564_6964;

/// The running sums of the three kinds of terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StateSums {
    pub accounts: u128,
    pub transfers: u128,
    pub failed: u128,
}

/// `h` of an account: odd, so that no balance change can vanish from the term by a factor 2^k.
pub(super) fn account_key(a: &Account, limit: u128, limit_timestamp: u64) -> u128 {
    let unbalanced = Account {
        debits_pending: 0,
        debits_posted: 0,
        credits_pending: 0,
        credits_posted: 0,
        ..*a
    };
    let mut bytes = [0u8; Account::SIZE + 24];
    bytes[..Account::SIZE].copy_from_slice(&unbalanced.to_bytes());
    bytes[Account::SIZE..Account::SIZE + 16].copy_from_slice(&limit.to_le_bytes());
    bytes[Account::SIZE + 16..].copy_from_slice(&limit_timestamp.to_le_bytes());
    xxh3_128(&bytes) | 1
}

/// `Σ Kᵢ·balanceᵢ`: multiplied by the account's key it is the balance part of its term.
pub(super) fn balance_weight(b: &Balances) -> u128 {
    K[0].wrapping_mul(b.debits_pending)
        .wrapping_add(K[1].wrapping_mul(b.debits_posted))
        .wrapping_add(K[2].wrapping_mul(b.credits_pending))
        .wrapping_add(K[3].wrapping_mul(b.credits_posted))
}

/// `Σ Kᵢ·(newᵢ - oldᵢ)`: what a balance change adds to the weight (mod 2^128).
#[inline]
fn weight_delta(old: &Balances, new: &Balances) -> u128 {
    K[0].wrapping_mul(new.debits_pending.wrapping_sub(old.debits_pending))
        .wrapping_add(K[1].wrapping_mul(new.debits_posted.wrapping_sub(old.debits_posted)))
        .wrapping_add(K[2].wrapping_mul(new.credits_pending.wrapping_sub(old.credits_pending)))
        .wrapping_add(K[3].wrapping_mul(new.credits_posted.wrapping_sub(old.credits_posted)))
}

pub(super) fn account_term(key: u128, b: &Balances) -> u128 {
    key.wrapping_mul(1u128.wrapping_add(balance_weight(b)))
}

pub(super) fn transfer_term(t: &Transfer, state: TransferState) -> u128 {
    xxh3_128_with_seed(&t.to_bytes(), SEED_TRANSFER ^ state as u64)
}

pub(super) fn failed_term(f: &FailedId) -> u128 {
    xxh3_128_with_seed(&f.id.to_le_bytes(), SEED_FAILED ^ u64::from(f.code))
}

impl StateSums {
    /// The sums of a whole state, from scratch (O(n) in memory; evicted records through their
    /// saved sum).
    pub(super) fn of(sm: &StateMachine) -> StateSums {
        let mut sums = sm.evicted_sums;
        for (a, ext) in sm.accounts.iter().zip(&sm.account_ext) {
            let key = account_key(a, ext.limit, ext.limit_timestamp);
            sums.accounts = sums.accounts.wrapping_add(account_term(key, &Balances::of(a)));
        }
        // Free slots have id 0.
        for (t, state) in sm.transfers.iter().zip(&sm.transfer_states).filter(|(t, _)| t.id != 0) {
            sums.transfers = sums.transfers.wrapping_add(transfer_term(t, *state));
        }
        for f in sm.failed.iter().filter(|f| f.id != 0) {
            sums.failed = sums.failed.wrapping_add(failed_term(f));
        }
        sums
    }
}

impl StateMachine {
    /// Recomputes every account key and the sums from scratch (after loading an image).
    pub(super) fn reset_digest(&mut self) {
        for ((a, ext), key) in
            self.accounts.iter().zip(&self.account_ext).zip(self.account_keys.iter_mut())
        {
            *key = account_key(a, ext.limit, ext.limit_timestamp);
        }
        self.sums = StateSums::of(self);
    }

    /// Adds a new account (zero balances or not) to the sums, setting its key.
    pub(super) fn digest_account_added(&mut self, index: u32) {
        let a = &self.accounts[index as usize];
        let ext = &self.account_ext[index as usize];
        let key = account_key(a, ext.limit, ext.limit_timestamp);
        self.account_keys[index as usize] = key;
        let term = account_term(key, &Balances::of(a));
        self.sums.accounts = self.sums.accounts.wrapping_add(term);
    }

    /// Removes an account from the sums (undo of its creation).
    pub(super) fn digest_account_removed(&mut self, index: u32) {
        let a = &self.accounts[index as usize];
        let term = account_term(self.account_keys[index as usize], &Balances::of(a));
        self.sums.accounts = self.sums.accounts.wrapping_sub(term);
    }

    /// Account `index`'s balances were `old` and are now its record's.
    #[inline]
    pub(super) fn digest_balances_changed(&mut self, index: u32, old: &Balances) {
        let new = Balances::of(&self.accounts[index as usize]);
        let delta = weight_delta(old, &new);
        let key = self.account_keys[index as usize];
        self.sums.accounts = self.sums.accounts.wrapping_add(key.wrapping_mul(delta));
    }

    pub(super) fn digest_transfer(&mut self, index: u32, added: bool) {
        let term =
            transfer_term(&self.transfers[index as usize], self.transfer_states[index as usize]);
        self.sums.transfers = if added {
            self.sums.transfers.wrapping_add(term)
        } else {
            self.sums.transfers.wrapping_sub(term)
        };
    }

    pub(super) fn digest_failed_added(&mut self, f: &FailedId) {
        self.sums.failed = self.sums.failed.wrapping_add(failed_term(f));
    }

    /// A hash of the canonical ledger contents: accounts (with balances and limits), transfers
    /// with their pending status, and the failed-id memory, as a set (see the module docs).
    /// The clock, scratch space and derived indexes and lists do not enter it, so reads,
    /// `exists` retries, replay and snapshot images all leave it unchanged. O(1).
    pub fn state_hash(&self) -> u128 {
        let mut bytes = [0u8; 16 + 3 * 8 + 3 * 16];
        bytes[..16].copy_from_slice(b"ledgerd.state.v2");
        let counts = [self.accounts.len() as u64, self.transfers_created, self.failed_remembered];
        for (i, n) in counts.iter().enumerate() {
            bytes[16 + i * 8..24 + i * 8].copy_from_slice(&n.to_le_bytes());
        }
        let sums = [self.sums.accounts, self.sums.transfers, self.sums.failed];
        for (i, s) in sums.iter().enumerate() {
            bytes[40 + i * 16..56 + i * 16].copy_from_slice(&s.to_le_bytes());
        }
        xxh3_128(&bytes)
    }

    /// Whether the running sums equal a recomputation from scratch.
    pub(super) fn digest_check(&self) -> Result<(), String> {
        let scratch = StateSums::of(self);
        if scratch != self.sums {
            return Err(format!(
                "state hash sums {:?} differ from the state's {:?}",
                self.sums, scratch
            ));
        }
        if self.account_keys.len() != self.accounts.len() {
            return Err("accounts and their hash keys differ in number".into());
        }
        for (i, (a, ext)) in self.accounts.iter().zip(&self.account_ext).enumerate() {
            if self.account_keys[i] != account_key(a, ext.limit, ext.limit_timestamp) {
                return Err(format!("account {i} ({}) has a stale hash key", a.id));
            }
        }
        Ok(())
    }
}
