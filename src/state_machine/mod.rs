//! The deterministic state machine of SPEC §3: `(state, batch, now_ns) -> (results, event)`.
//!
//! It owns every account, transfer, pending status, limit, balance history row and remembered
//! failed id in memory, except what the caller evicted because a disk index holds it (`evict`:
//! finished history); a request then brings back what it needs ([`ColdHits`]). It does no
//! I/O and reads no clock: the caller passes `now_ns`, and replay
//! ([`StateMachine::apply_event`]) needs no clock at all because every change event carries
//! its final records and timestamps.
//!
//! Layout: accounts live in a vector indexed by `u32`; transfers and failed ids in vectors of
//! reusable `u32` slots (a freed slot has id 0), with queues that keep their creation order.
//! Open-addressing id indexes map ids to slots (`index`). Creation order is timestamp order,
//! so images and queries are canonical whatever slot a record landed in; the state hash
//! (`digest`) is a sum over the set of records, kept current by every change.
//!
//! Linked chains are all-or-nothing: each event is fully validated before it mutates anything,
//! and while a chain is open every mutation pushes an [`Undo`] record into a reused log, so a
//! failing event rolls the chain back in reverse order. Pending expiries reached by a chain are
//! only pushed into the expiry heap when the chain commits.
//!
//! Submodules: `digest` (the state hash), `evict` (what leaves memory, what comes back),
//! `image` (snapshot images), `index` (id indexes), `query` (lookups and filters), `replay`
//! (applying journaled events).

mod digest;
mod evict;
mod image;
mod index;
mod query;
mod replay;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use index::{prefetch_ptr, prefetch_record, IdIndex};

use crate::event::{BalancePair, Balances, Event, Expiry, FailedId, EXPIRED_PER_EVENT_MAX};
use crate::types::{
    Account, AccountBalance, AccountFlags, AccountLimit, CreateResult, ResultCode, Transfer,
    TransferFlags, EVENTS_PER_REQUEST_MAX, ID_INVALID_MAX,
};

pub use evict::ColdHits;
pub use image::{ImageError, IMAGE_VERSION};
pub use query::FilterScan;
pub use replay::ReplayError;

/// Nanoseconds per second, for pending transfer timeouts (given in seconds).
pub const NS_PER_S: u64 = 1_000_000_000;

/// Most records `get_account_transfers` / `get_account_balances` return in one reply.
pub const QUERY_RESULTS_MAX: usize = EVENTS_PER_REQUEST_MAX;

/// How many events ahead [`BatchEvent::warm`] runs each of its stages: the id index slots
/// first, then the records those slots point to, then what those records point to.
const WARM_AHEAD_EVENTS: [usize; WARM_STAGES] = [16, 8, 4];
const WARM_STAGES: usize = 3;

/// Most records of each kind the ledger holds. A create request that could take a count past
/// its limit is refused whole (status `ledger_full`) before anything in it applies; the limit
/// is checked against the request's size, not against how many of its events would succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub accounts: u64,
    pub transfers: u64,
    /// Transfer ids remembered as failed (each failed create may add one).
    pub failed_ids: u64,
}

impl Capacity {
    /// What the in-memory indexes can address.
    pub const MAX: Capacity = Capacity {
        accounts: index::RECORDS_MAX,
        transfers: index::RECORDS_MAX,
        failed_ids: index::RECORDS_MAX,
    };

    /// Memory one record of each kind costs, with its share of indexes and lists (an account
    /// with its extension and index slots; a transfer with its state, index slots and the two
    /// account-list entries; a failed id with its index slots), rounded up.
    pub const ACCOUNT_BYTES: u64 = 320;
    pub const TRANSFER_BYTES: u64 = 192;
    pub const FAILED_ID_BYTES: u64 = 64;

    /// The defaults on a machine with `memory_bytes` of RAM: accounts and failed ids may use
    /// 1/20 of it each and transfers 3/10, so that a full ledger holds 2/5 of the memory. The
    /// snapshot process holds a second copy while it runs: both stay within 4/5.
    pub fn for_memory(memory_bytes: u64) -> Capacity {
        let share = |numerator: u64, denominator: u64, per_record: u64| {
            (memory_bytes / denominator * numerator / per_record).clamp(1, index::RECORDS_MAX)
        };
        Capacity {
            accounts: share(1, 20, Self::ACCOUNT_BYTES),
            transfers: share(3, 10, Self::TRANSFER_BYTES),
            failed_ids: share(1, 20, Self::FAILED_ID_BYTES),
        }
    }
}

/// The life of a transfer as far as two-phase commits are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TransferState {
    /// A single-phase transfer, or a post or void: nothing more can happen to it.
    Final = 0,
    /// A pending transfer still holding its reservation.
    Pending = 1,
    Posted = 2,
    Voided = 3,
    /// Voided by the ledger because its timeout passed.
    Expired = 4,
}

impl TransferState {
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => TransferState::Final,
            1 => TransferState::Pending,
            2 => TransferState::Posted,
            3 => TransferState::Voided,
            4 => TransferState::Expired,
            _ => return None,
        })
    }
}

/// Row flags of a balance history entry: which side of the transfer the account was on.
const SIDE_DEBIT: u8 = 1;
const SIDE_CREDIT: u8 = 2;

/// What the ledger keeps beside an account record.
#[derive(Clone, Debug, Default)]
struct AccountExt {
    /// Overdraft / credit line (see [`AccountLimit`]); 0 until set.
    limit: u128,
    /// When the limit was last set; 0 if never.
    limit_timestamp: u64,
    /// Slots in `transfers` of every transfer in memory on either side whose creation was not
    /// evicted yet, ascending timestamps.
    transfers: VecDeque<u32>,
    /// `history` accounts only: balances after each change not evicted yet, ascending
    /// timestamps.
    history: VecDeque<AccountBalance>,
    /// `SIDE_*` of each `history` row.
    history_sides: VecDeque<u8>,
}

/// One mutation, recorded while a linked chain is open so that the chain can be undone.
#[derive(Clone, Copy, Debug)]
enum Undo {
    /// The last account appended.
    AccountCreated,
    /// The last transfer appended (with its account list entries and history rows).
    TransferCreated,
    Balances {
        account: u32,
        balances: Balances,
    },
    State {
        transfer: u32,
        state: TransferState,
    },
}

/// Sizes of the state, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub accounts: u64,
    pub transfers: u64,
    /// Pending transfers still holding a reservation.
    pub pending: u64,
    pub failed_ids: u64,
    /// Accounts whose limit was ever set.
    pub account_limits: u64,
}

/// Sums of all account balances of one ledger. Debits equal credits, always.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    pub ledger: u32,
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub debits_pending: u128,
    pub credits_pending: u128,
}

/// Bits of [`StateMachine::slot_marks`].
const MARK_CREATION_EVICTED: u8 = 1;
const MARK_FINISH_EVICTED: u8 = 2;

/// The whole ledger state. See the module docs.
pub struct StateMachine {
    /// Highest timestamp assigned so far (ns since the Unix epoch).
    clock_ns: u64,
    accounts: Vec<Account>,
    account_ext: Vec<AccountExt>,
    /// What each account's term in the state hash multiplies its balances by (see `digest`),
    /// dense: every balance change reads one.
    account_keys: Vec<u128>,
    account_index: IdIndex<Account>,
    /// Transfers in memory, by slot. A slot freed by eviction has id 0 and is reused.
    transfers: Vec<Transfer>,
    transfer_states: Vec<TransferState>,
    transfer_index: IdIndex<Transfer>,
    /// `MARK_*` bits of each slot (see [`StateMachine::evict`]).
    slot_marks: Vec<u8>,
    /// Slots in creation order whose creation was not evicted yet (front: oldest).
    creation_order: VecDeque<u32>,
    /// `(timestamp, slot)` of pending transfers that were posted, voided or expired, in that
    /// order, until the change is evicted.
    finished: VecDeque<(u64, u32)>,
    free_slots: Vec<u32>,
    /// Transfers ever created, in memory or evicted.
    transfers_created: u64,
    /// Transfer ids that failed transiently, with their code, by slot (freed slots: id 0).
    failed: Vec<FailedId>,
    failed_index: IdIndex<FailedId>,
    /// `(timestamp, slot)` of remembered failed ids in memory, in the order they failed.
    failed_order: VecDeque<(u64, u32)>,
    free_failed_slots: Vec<u32>,
    /// Failed ids ever remembered, in memory or evicted.
    failed_remembered: u64,
    /// Newest timestamp whose records may have left memory (0: nothing evicted yet).
    evicted_through_ns: u64,
    /// What this request needs from records no longer in memory (see [`ColdHits`]).
    cold: ColdHits,
    /// `(expires_at_ns, transfer id)` of pending transfers with a timeout. Entries of
    /// transfers no longer pending are dropped lazily; the top is always live between calls.
    expiries: BinaryHeap<Reverse<(u64, u128)>>,
    pending_count: u64,
    /// The state hash's running sums (see `digest`).
    sums: digest::StateSums,
    /// The terms of the evicted records, part of `sums`.
    evicted_sums: digest::StateSums,

    // Scratch, reused across calls (no allocation on the hot path once grown).
    undo: Vec<Undo>,
    in_chain: bool,
    chain_expiries: Vec<(u64, u128)>,
    chain_event_lens: (usize, usize),
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// How a batch of one kind of event is driven through linked chains.
trait BatchEvent: Copy {
    fn linked(&self) -> bool;
    fn apply(sm: &mut StateMachine, e: &Self, ts: u64, event: &mut Event) -> ResultCode;
    /// Prefetches the memory that `apply` will need for `e` some events later, so that its
    /// cache misses overlap with the work in between. Stage `s` runs
    /// `WARM_AHEAD_EVENTS[s]` events ahead and may rely on what earlier stages fetched.
    fn warm(_sm: &StateMachine, _e: &Self, _stage: usize) {}
    /// Called for every failed event (after any chain rollback).
    fn failed(_sm: &mut StateMachine, _e: &Self, _code: ResultCode, _event: &mut Event) {}
}

impl BatchEvent for Account {
    fn linked(&self) -> bool {
        self.has(AccountFlags::LINKED)
    }
    fn apply(sm: &mut StateMachine, a: &Self, ts: u64, event: &mut Event) -> ResultCode {
        sm.create_account(a, ts, event)
    }
}

impl BatchEvent for Transfer {
    fn linked(&self) -> bool {
        self.has(TransferFlags::LINKED)
    }
    fn apply(sm: &mut StateMachine, t: &Self, ts: u64, event: &mut Event) -> ResultCode {
        sm.create_transfer(t, ts, event)
    }
    fn warm(sm: &StateMachine, t: &Self, stage: usize) {
        match stage {
            0 => {
                sm.transfer_index.prefetch(t.id);
                sm.account_index.prefetch(t.debit_account_id);
                sm.account_index.prefetch(t.credit_account_id);
            }
            1 => {
                for id in [t.debit_account_id, t.credit_account_id] {
                    if let Some(i) = sm.account_index.guess(id) {
                        prefetch_record(&sm.accounts, i as usize);
                        prefetch_record(&sm.account_ext, i as usize);
                        prefetch_record(&sm.account_keys, i as usize);
                    }
                }
            }
            _ => {
                for id in [t.debit_account_id, t.credit_account_id] {
                    if let Some(ext) =
                        sm.account_index.guess(id).and_then(|i| sm.account_ext.get(i as usize))
                    {
                        // Where `push_transfer` appends this transfer's slot.
                        let (front, back) = ext.transfers.as_slices();
                        let end = if back.is_empty() { front } else { back };
                        prefetch_ptr(end.as_ptr().wrapping_add(end.len()));
                    }
                }
            }
        }
    }
    fn failed(sm: &mut StateMachine, t: &Self, code: ResultCode, event: &mut Event) {
        if code.is_transient() {
            debug_assert!(t.id != 0 && t.id != ID_INVALID_MAX);
            debug_assert!(!sm.transfer_index.contains(t.id, &sm.transfers));
            let failed = FailedId::new(t.id, code);
            sm.remember_failed(failed, sm.clock_ns);
            event.failed.push(failed);
        }
    }
}

impl BatchEvent for AccountLimit {
    fn linked(&self) -> bool {
        false
    }
    fn apply(sm: &mut StateMachine, l: &Self, ts: u64, event: &mut Event) -> ResultCode {
        sm.set_account_limit(l, ts, event)
    }
}

impl StateMachine {
    pub fn new() -> Self {
        Self::with_capacity(0, 0)
    }

    /// Preallocates the id indexes and record vectors.
    pub fn with_capacity(accounts: usize, transfers: usize) -> Self {
        StateMachine {
            clock_ns: 0,
            accounts: Vec::with_capacity(accounts),
            account_ext: Vec::with_capacity(accounts),
            account_keys: Vec::with_capacity(accounts),
            account_index: IdIndex::with_capacity(accounts),
            transfers: Vec::with_capacity(transfers),
            transfer_states: Vec::with_capacity(transfers),
            transfer_index: IdIndex::with_capacity(transfers),
            slot_marks: Vec::with_capacity(transfers),
            creation_order: VecDeque::with_capacity(transfers),
            finished: VecDeque::new(),
            free_slots: Vec::new(),
            transfers_created: 0,
            failed: Vec::new(),
            failed_index: IdIndex::with_capacity(0),
            failed_order: VecDeque::new(),
            free_failed_slots: Vec::new(),
            failed_remembered: 0,
            evicted_through_ns: 0,
            cold: ColdHits::default(),
            expiries: BinaryHeap::new(),
            pending_count: 0,
            sums: digest::StateSums::default(),
            evicted_sums: digest::StateSums::default(),
            undo: Vec::with_capacity(64),
            in_chain: false,
            chain_expiries: Vec::new(),
            chain_event_lens: (0, 0),
        }
    }

    /// The highest timestamp assigned (or replayed) so far.
    pub fn clock_ns(&self) -> u64 {
        self.clock_ns
    }

    /// Whether `n` more accounts stay within `capacity`.
    pub fn accounts_fit(&self, capacity: &Capacity, n: usize) -> bool {
        self.accounts.len() as u64 + n as u64 <= capacity.accounts
    }

    /// Whether a request of `n` transfers stays within `capacity` whatever its results: each
    /// may create a transfer or remember a failed id.
    pub fn transfers_fit(&self, capacity: &Capacity, n: usize) -> bool {
        let (transfers, failed) = self.in_memory();
        transfers + n as u64 <= capacity.transfers && failed + n as u64 <= capacity.failed_ids
    }

    /// Transfers and failed ids held in memory (the others were evicted).
    pub fn in_memory(&self) -> (u64, u64) {
        (
            (self.transfers.len() - self.free_slots.len()) as u64,
            (self.failed.len() - self.free_failed_slots.len()) as u64,
        )
    }

    /// Transfers and failed ids no longer in memory (the disk index holds them).
    pub fn evicted_ids(&self) -> u64 {
        let (transfers, failed) = self.in_memory();
        (self.transfers_created - transfers) + (self.failed_remembered - failed)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            accounts: self.accounts.len() as u64,
            transfers: self.transfers_created,
            pending: self.pending_count,
            failed_ids: self.failed_remembered,
            account_limits: self.account_ext.iter().filter(|e| e.limit_timestamp != 0).count()
                as u64,
        }
    }

    /// Per-ledger sums of all account balances, sorted by ledger. Sums saturate at u128::MAX
    /// (only reachable with more than 2^128 units moved in total).
    pub fn ledger_totals(&self) -> Vec<LedgerTotals> {
        let mut totals: Vec<LedgerTotals> = Vec::new();
        let mut by_ledger = std::collections::BTreeMap::<u32, LedgerTotals>::new();
        for a in &self.accounts {
            let t = by_ledger
                .entry(a.ledger)
                .or_insert(LedgerTotals { ledger: a.ledger, ..Default::default() });
            t.debits_posted = t.debits_posted.saturating_add(a.debits_posted);
            t.credits_posted = t.credits_posted.saturating_add(a.credits_posted);
            t.debits_pending = t.debits_pending.saturating_add(a.debits_pending);
            t.credits_pending = t.credits_pending.saturating_add(a.credits_pending);
        }
        totals.extend(by_ledger.into_values());
        totals
    }

    pub fn account(&self, id: u128) -> Option<&Account> {
        self.account_index.get(id, &self.accounts).map(|i| &self.accounts[i as usize])
    }

    /// A transfer held in memory.
    pub fn transfer_by_id(&self, id: u128) -> Option<&Transfer> {
        self.transfer_index.get(id, &self.transfers).map(|i| &self.transfers[i as usize])
    }

    /// A transfer and its state, from memory or else from this request's [`ColdHits`].
    pub fn transfer_anywhere(&self, id: u128) -> Option<(Transfer, TransferState)> {
        match self.transfer_index.get(id, &self.transfers) {
            Some(i) => Some((self.transfers[i as usize], self.transfer_states[i as usize])),
            None => self.cold.transfer(id),
        }
    }

    /// The state of a transfer held in memory.
    pub fn transfer_state(&self, id: u128) -> Option<TransferState> {
        self.transfer_index.get(id, &self.transfers).map(|i| self.transfer_states[i as usize])
    }

    /// Whether `id` is remembered as failed in memory.
    pub fn is_failed(&self, id: u128) -> bool {
        self.failed_index.contains(id, &self.failed)
    }

    /// Where the caller puts, before a request, what it found on disk for that request.
    pub fn cold_hits(&mut self) -> &mut ColdHits {
        &mut self.cold
    }

    /// Index of an account that must exist (named by a stored transfer).
    fn account_slot(&self, id: u128) -> u32 {
        self.account_index.get(id, &self.accounts).expect("a stored transfer's account exists")
    }

    /// When the earliest pending transfer with a timeout expires, if any.
    pub fn next_expiry_ns(&self) -> Option<u64> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// The next timestamp: `max(now_ns, clock + 1)`, strictly increasing.
    fn tick(&mut self, now_ns: u64) -> u64 {
        let next = self.clock_ns.checked_add(1).expect("ledger clock overflow");
        self.clock_ns = now_ns.max(next);
        self.clock_ns
    }

    // ---------------------------------------------------------------------------------------
    // Batches and linked chains.

    pub fn create_accounts(
        &mut self,
        now_ns: u64,
        accounts: &[Account],
        results: &mut Vec<CreateResult>,
        event: &mut Event,
    ) {
        self.run_batch(now_ns, accounts, results, event);
    }

    pub fn create_transfers(
        &mut self,
        now_ns: u64,
        transfers: &[Transfer],
        results: &mut Vec<CreateResult>,
        event: &mut Event,
    ) {
        self.run_batch(now_ns, transfers, results, event);
        self.drop_stale_expiries();
    }

    pub fn set_account_limits(
        &mut self,
        now_ns: u64,
        limits: &[AccountLimit],
        results: &mut Vec<CreateResult>,
        event: &mut Event,
    ) {
        self.run_batch(now_ns, limits, results, event);
    }

    fn run_batch<E: BatchEvent>(
        &mut self,
        now_ns: u64,
        events: &[E],
        results: &mut Vec<CreateResult>,
        event: &mut Event,
    ) {
        assert!(events.len() <= EVENTS_PER_REQUEST_MAX, "batch of {} events", events.len());
        results.clear();
        event.clear();
        debug_assert!(!self.in_chain && self.undo.is_empty() && self.chain_expiries.is_empty());

        let last = events.len().wrapping_sub(1);
        let mut chain_start: Option<usize> = None;
        let mut chain_broken = false;
        for (i, e) in events.iter().enumerate() {
            for (stage, ahead) in WARM_AHEAD_EVENTS.iter().enumerate() {
                if let Some(e) = events.get(i + ahead) {
                    E::warm(self, e, stage);
                }
            }
            let ts = self.tick(now_ns);
            let linked = e.linked();
            if linked && chain_start.is_none() {
                chain_start = Some(i);
                chain_broken = false;
                self.chain_open(event);
            }
            let result = if linked && i == last {
                ResultCode::LinkedEventChainOpen
            } else if chain_broken {
                ResultCode::LinkedEventFailed
            } else {
                E::apply(self, e, ts, event)
            };
            if result != ResultCode::Ok {
                if let Some(start) = chain_start {
                    if !chain_broken {
                        chain_broken = true;
                        self.chain_rollback(event);
                        for j in start..i {
                            results.push(CreateResult {
                                index: j as u32,
                                result: ResultCode::LinkedEventFailed,
                            });
                        }
                    }
                }
                results.push(CreateResult { index: i as u32, result });
                E::failed(self, e, result, event);
            }
            if chain_start.is_some() && (!linked || result == ResultCode::LinkedEventChainOpen) {
                if !chain_broken {
                    self.chain_commit();
                }
                self.in_chain = false;
                chain_start = None;
                chain_broken = false;
            }
        }
        debug_assert!(chain_start.is_none() && !self.in_chain);
        if !event.is_empty() {
            event.timestamp = self.clock_ns;
        }
    }

    fn chain_open(&mut self, event: &Event) {
        debug_assert!(self.undo.is_empty() && self.chain_expiries.is_empty());
        self.in_chain = true;
        self.chain_event_lens = (event.accounts.len(), event.transfers.len());
    }

    fn chain_commit(&mut self) {
        self.undo.clear();
        for &(at, id) in &self.chain_expiries {
            self.expiries.push(Reverse((at, id)));
        }
        self.chain_expiries.clear();
        self.in_chain = false;
    }

    fn chain_rollback(&mut self, event: &mut Event) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::AccountCreated => {
                    let id = self.accounts.last().expect("undo account").id;
                    self.digest_account_removed(self.accounts.len() as u32 - 1);
                    let removed = self.account_index.remove(id, &self.accounts);
                    debug_assert!(removed);
                    self.accounts.pop();
                    self.account_ext.pop();
                    self.account_keys.pop();
                }
                Undo::TransferCreated => self.pop_transfer(),
                Undo::Balances { account, balances } => {
                    let old = Balances::of(&self.accounts[account as usize]);
                    set_balances(&mut self.accounts[account as usize], &balances);
                    self.digest_balances_changed(account, &old);
                }
                Undo::State { transfer, state } => {
                    debug_assert_eq!(state, TransferState::Pending);
                    self.set_state(transfer, state);
                    let finished = self.finished.pop_back();
                    debug_assert_eq!(finished.map(|(_, slot)| slot), Some(transfer));
                }
            }
        }
        self.chain_expiries.clear();
        let (accounts_len, transfers_len) = self.chain_event_lens;
        event.accounts.truncate(accounts_len);
        event.transfers.truncate(transfers_len);
        event.transfer_balances.truncate(transfers_len);
        self.in_chain = false;
    }

    fn record(&mut self, undo: Undo) {
        if self.in_chain {
            self.undo.push(undo);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Accounts.

    fn create_account(&mut self, a: &Account, ts: u64, event: &mut Event) -> ResultCode {
        if let Err(code) = validate_account(a) {
            return code;
        }
        if let Some(i) = self.account_index.get(a.id, &self.accounts) {
            return account_exists(a, &self.accounts[i as usize]);
        }
        let account = Account { timestamp: ts, ..*a };
        self.insert_account(account);
        self.record(Undo::AccountCreated);
        event.accounts.push(account);
        ResultCode::Ok
    }

    fn insert_account(&mut self, account: Account) {
        let index = u32::try_from(self.accounts.len()).expect("accounts fit u32 indexes");
        let claimed = self.account_index.claim(account.id, index, &self.accounts);
        debug_assert!(claimed.is_ok());
        self.accounts.push(account);
        self.account_ext.push(AccountExt::default());
        self.account_keys.push(0);
        self.digest_account_added(index);
    }

    // ---------------------------------------------------------------------------------------
    // Limits.

    fn set_account_limit(&mut self, l: &AccountLimit, ts: u64, event: &mut Event) -> ResultCode {
        if l.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
        if l.reserved != [0; 24] {
            return ResultCode::ReservedField;
        }
        if l.account_id == 0 || l.account_id == ID_INVALID_MAX {
            return ResultCode::AccountIdMustNotBeZero;
        }
        let Some(index) = self.account_index.get(l.account_id, &self.accounts) else {
            return ResultCode::AccountNotFound;
        };
        let a = &self.accounts[index as usize];
        if let Err(code) = limit_allows(a, l.limit) {
            return code;
        }
        let limit = AccountLimit { timestamp: ts, ..*l };
        self.apply_limit(index, &limit);
        event.limits.push(limit);
        ResultCode::Ok
    }

    fn apply_limit(&mut self, index: u32, limit: &AccountLimit) {
        self.digest_account_removed(index);
        let ext = &mut self.account_ext[index as usize];
        ext.limit = limit.limit;
        ext.limit_timestamp = limit.timestamp;
        self.digest_account_added(index);
    }

    // ---------------------------------------------------------------------------------------
    // Transfers.

    fn create_transfer(&mut self, t: &Transfer, ts: u64, event: &mut Event) -> ResultCode {
        if t.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
        if t.flags & !TransferFlags::ALL != 0 {
            return ResultCode::FlagsUnknown;
        }
        if t.id == 0 {
            return ResultCode::IdMustNotBeZero;
        }
        if t.id == ID_INVALID_MAX {
            return ResultCode::IdMustNotBeIntMax;
        }
        // One probe of the (large) id index on the success path: claim the id for the slot
        // the transfer will get, and give it back if the transfer fails.
        let index = self.next_slot();
        if let Err(i) = self.transfer_index.claim(t.id, index, &self.transfers) {
            return self.transfer_exists(t, &self.transfers[i as usize]);
        }
        if let Some((e, _)) = self.cold.transfer(t.id) {
            let removed = self.transfer_index.remove(t.id, &self.transfers);
            debug_assert!(removed);
            return self.transfer_exists(t, &e);
        }
        let result = self.create_new_transfer(t, ts, event);
        if result != ResultCode::Ok {
            let removed = self.transfer_index.remove(t.id, &self.transfers);
            debug_assert!(removed);
        }
        debug_assert!(result != ResultCode::Ok || self.transfers[index as usize].id == t.id);
        result
    }

    /// [`StateMachine::create_transfer`] for an id that does not exist (already claimed in
    /// the id index at `transfers.len()`).
    fn create_new_transfer(&mut self, t: &Transfer, ts: u64, event: &mut Event) -> ResultCode {
        if !self.failed.is_empty() && self.failed_index.contains(t.id, &self.failed) {
            return ResultCode::IdAlreadyFailed;
        }
        if self.cold.failed(t.id) {
            return ResultCode::IdAlreadyFailed;
        }
        let post = t.has(TransferFlags::POST_PENDING_TRANSFER);
        let void = t.has(TransferFlags::VOID_PENDING_TRANSFER);
        let pending = t.has(TransferFlags::PENDING);
        let balancing =
            t.has(TransferFlags::BALANCING_DEBIT) || t.has(TransferFlags::BALANCING_CREDIT);
        if (pending as u8 + post as u8 + void as u8) > 1 || (balancing && (post || void)) {
            return ResultCode::FlagsAreMutuallyExclusive;
        }
        if post || void {
            self.post_or_void(t, ts, post, event)
        } else {
            self.single_or_pending(t, ts, pending, event)
        }
    }

    fn single_or_pending(
        &mut self,
        t: &Transfer,
        ts: u64,
        pending: bool,
        event: &mut Event,
    ) -> ResultCode {
        if t.pending_id != 0 {
            return ResultCode::PendingIdMustBeZero;
        }
        if t.timeout != 0 && !pending {
            return ResultCode::TimeoutReservedForPendingTransfer;
        }
        if t.debit_account_id == 0 {
            return ResultCode::DebitAccountIdMustNotBeZero;
        }
        if t.debit_account_id == ID_INVALID_MAX {
            return ResultCode::DebitAccountIdMustNotBeIntMax;
        }
        if t.credit_account_id == 0 {
            return ResultCode::CreditAccountIdMustNotBeZero;
        }
        if t.credit_account_id == ID_INVALID_MAX {
            return ResultCode::CreditAccountIdMustNotBeIntMax;
        }
        if t.debit_account_id == t.credit_account_id {
            return ResultCode::AccountsMustBeDifferent;
        }
        if t.ledger == 0 {
            return ResultCode::LedgerMustNotBeZero;
        }
        if t.code == 0 {
            return ResultCode::CodeMustNotBeZero;
        }
        if t.amount == 0 {
            return ResultCode::AmountMustNotBeZero;
        }
        let Some(dr_index) = self.account_index.get(t.debit_account_id, &self.accounts) else {
            return ResultCode::DebitAccountNotFound;
        };
        let Some(cr_index) = self.account_index.get(t.credit_account_id, &self.accounts) else {
            return ResultCode::CreditAccountNotFound;
        };
        let dr = &self.accounts[dr_index as usize];
        let cr = &self.accounts[cr_index as usize];
        if dr.ledger != cr.ledger {
            return ResultCode::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return ResultCode::TransferMustHaveTheSameLedgerAsAccounts;
        }

        let mut amount = t.amount;
        if t.has(TransferFlags::BALANCING_DEBIT) {
            let limit = self.account_ext[dr_index as usize].limit;
            let room = dr
                .credits_posted
                .saturating_add(limit)
                .saturating_sub(dr.debits_pending.saturating_add(dr.debits_posted));
            amount = amount.min(room);
            if amount == 0 {
                return ResultCode::ExceedsCredits;
            }
        }
        if t.has(TransferFlags::BALANCING_CREDIT) {
            let limit = self.account_ext[cr_index as usize].limit;
            let room = cr
                .debits_posted
                .saturating_add(limit)
                .saturating_sub(cr.credits_pending.saturating_add(cr.credits_posted));
            amount = amount.min(room);
            if amount == 0 {
                return ResultCode::ExceedsDebits;
            }
        }

        if pending {
            if dr.debits_pending.checked_add(amount).is_none() {
                return ResultCode::OverflowsDebitsPending;
            }
            if cr.credits_pending.checked_add(amount).is_none() {
                return ResultCode::OverflowsCreditsPending;
            }
        } else {
            if dr.debits_posted.checked_add(amount).is_none() {
                return ResultCode::OverflowsDebitsPosted;
            }
            if cr.credits_posted.checked_add(amount).is_none() {
                return ResultCode::OverflowsCreditsPosted;
            }
        }
        // Invariant kept by every change: pending + posted never overflows.
        let dr_debits = dr.debits_pending + dr.debits_posted;
        let cr_credits = cr.credits_pending + cr.credits_posted;
        let Some(dr_debits_new) = dr_debits.checked_add(amount) else {
            return ResultCode::OverflowsDebits;
        };
        let Some(cr_credits_new) = cr_credits.checked_add(amount) else {
            return ResultCode::OverflowsCredits;
        };
        let mut expires_at = 0;
        if pending && t.timeout > 0 {
            match (t.timeout as u64).checked_mul(NS_PER_S).and_then(|ns| ts.checked_add(ns)) {
                Some(at) => expires_at = at,
                None => return ResultCode::OverflowsTimeout,
            }
        }
        if dr.has(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
            let limit = self.account_ext[dr_index as usize].limit;
            if dr_debits_new > dr.credits_posted.saturating_add(limit) {
                return ResultCode::ExceedsCredits;
            }
        }
        if cr.has(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
            let limit = self.account_ext[cr_index as usize].limit;
            if cr_credits_new > cr.debits_posted.saturating_add(limit) {
                return ResultCode::ExceedsDebits;
            }
        }

        // Validated: from here on nothing fails.
        let transfer = Transfer { amount, timestamp: ts, ..*t };
        let (dr_old, cr_old) = self.save_balances(dr_index, cr_index);
        let (dr, cr) = pair_mut(&mut self.accounts, dr_index, cr_index);
        if pending {
            dr.debits_pending += amount;
            cr.credits_pending += amount;
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        }
        self.digest_balances_changed(dr_index, &dr_old);
        self.digest_balances_changed(cr_index, &cr_old);
        self.assert_balances_hold(dr_index);
        self.assert_balances_hold(cr_index);
        let state = if pending { TransferState::Pending } else { TransferState::Final };
        let index = self.push_transfer(transfer, state, dr_index, cr_index);
        if expires_at != 0 {
            debug_assert_eq!(self.transfers[index as usize].id, t.id);
            if self.in_chain {
                self.chain_expiries.push((expires_at, t.id));
            } else {
                self.expiries.push(Reverse((expires_at, t.id)));
            }
        }
        self.emit_transfer(event, transfer, dr_index, cr_index);
        ResultCode::Ok
    }

    fn post_or_void(&mut self, t: &Transfer, ts: u64, post: bool, event: &mut Event) -> ResultCode {
        if t.pending_id == 0 {
            return ResultCode::PendingIdMustNotBeZero;
        }
        if t.pending_id == ID_INVALID_MAX {
            return ResultCode::PendingIdMustNotBeIntMax;
        }
        if t.pending_id == t.id {
            return ResultCode::PendingIdMustBeDifferent;
        }
        if t.timeout != 0 {
            return ResultCode::TimeoutReservedForPendingTransfer;
        }
        if t.debit_account_id == ID_INVALID_MAX {
            return ResultCode::DebitAccountIdMustNotBeIntMax;
        }
        if t.credit_account_id == ID_INVALID_MAX {
            return ResultCode::CreditAccountIdMustNotBeIntMax;
        }
        if t.debit_account_id != 0 && t.debit_account_id == t.credit_account_id {
            return ResultCode::AccountsMustBeDifferent;
        }
        // A transfer no longer in memory is never pending (pending ones stay): the checks
        // below end at its state at the latest.
        let (p, p_state, p_index) = match self.transfer_index.get(t.pending_id, &self.transfers) {
            Some(i) => (self.transfers[i as usize], self.transfer_states[i as usize], i),
            None => match self.cold.transfer(t.pending_id) {
                Some((p, state)) => {
                    assert!(state != TransferState::Pending, "evicted pending {}", p.id);
                    (p, state, u32::MAX)
                }
                None => return ResultCode::PendingTransferNotFound,
            },
        };
        if !p.has(TransferFlags::PENDING) {
            return ResultCode::PendingTransferNotPending;
        }
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return ResultCode::PendingTransferHasDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return ResultCode::PendingTransferHasDifferentCreditAccountId;
        }
        if t.ledger != 0 && t.ledger != p.ledger {
            return ResultCode::PendingTransferHasDifferentLedger;
        }
        if t.code != 0 && t.code != p.code {
            return ResultCode::PendingTransferHasDifferentCode;
        }
        match p_state {
            TransferState::Pending => {}
            TransferState::Posted => return ResultCode::PendingTransferAlreadyPosted,
            TransferState::Voided => return ResultCode::PendingTransferAlreadyVoided,
            TransferState::Expired => return ResultCode::PendingTransferExpired,
            TransferState::Final => unreachable!("a pending transfer has a pending state"),
        }
        let amount = if post {
            if t.amount > p.amount {
                return ResultCode::ExceedsPendingTransferAmount;
            }
            if t.amount == 0 {
                p.amount
            } else {
                t.amount
            }
        } else {
            if t.amount != 0 && t.amount != p.amount {
                return ResultCode::PendingTransferHasDifferentAmount;
            }
            p.amount
        };
        if p.timeout > 0 && expires_at_ns(&p) <= ts {
            return ResultCode::PendingTransferExpired;
        }
        let dr_index = self.account_slot(p.debit_account_id);
        let cr_index = self.account_slot(p.credit_account_id);

        let transfer = Transfer {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            ledger: p.ledger,
            code: p.code,
            amount,
            timestamp: ts,
            ..*t
        };
        let (dr_old, cr_old) = self.save_balances(dr_index, cr_index);
        let (dr, cr) = pair_mut(&mut self.accounts, dr_index, cr_index);
        release_pending(dr, cr, p.amount, if post { amount } else { 0 })
            .expect("a pending reservation is within the balances");
        self.digest_balances_changed(dr_index, &dr_old);
        self.digest_balances_changed(cr_index, &cr_old);
        self.assert_balances_hold(dr_index);
        self.assert_balances_hold(cr_index);
        debug_assert!(p_index != u32::MAX);
        self.record(Undo::State { transfer: p_index, state: TransferState::Pending });
        self.finish_pending(
            p_index,
            if post { TransferState::Posted } else { TransferState::Voided },
            ts,
        );
        self.push_transfer(transfer, TransferState::Final, dr_index, cr_index);
        self.emit_transfer(event, transfer, dr_index, cr_index);
        ResultCode::Ok
    }

    fn transfer_exists(&self, t: &Transfer, e: &Transfer) -> ResultCode {
        if t.flags != e.flags {
            return ResultCode::ExistsWithDifferentFlags;
        }
        // A post or void may leave accounts, ledger, code and amount at zero: they were taken
        // from the pending transfer, so compare what they resolved to.
        let post_or_void = t.has(TransferFlags::POST_PENDING_TRANSFER)
            || t.has(TransferFlags::VOID_PENDING_TRANSFER);
        let differs = |given: u128, stored: u128| given != stored && !(post_or_void && given == 0);
        if differs(t.debit_account_id, e.debit_account_id) {
            return ResultCode::ExistsWithDifferentDebitAccountId;
        }
        if differs(t.credit_account_id, e.credit_account_id) {
            return ResultCode::ExistsWithDifferentCreditAccountId;
        }
        let balancing =
            t.has(TransferFlags::BALANCING_DEBIT) || t.has(TransferFlags::BALANCING_CREDIT);
        let amount_differs = if post_or_void {
            let resolved = if t.amount == 0 {
                self.transfer_anywhere(e.pending_id).map_or(e.amount, |(p, _)| p.amount)
            } else {
                t.amount
            };
            resolved != e.amount
        } else if balancing {
            // The stored amount is the clamped one: any larger request clamps to it too.
            t.amount < e.amount
        } else {
            t.amount != e.amount
        };
        if amount_differs {
            return ResultCode::ExistsWithDifferentAmount;
        }
        if t.pending_id != e.pending_id {
            return ResultCode::ExistsWithDifferentPendingId;
        }
        if t.user_data_128 != e.user_data_128 {
            return ResultCode::ExistsWithDifferentUserData128;
        }
        if t.user_data_64 != e.user_data_64 {
            return ResultCode::ExistsWithDifferentUserData64;
        }
        if t.user_data_32 != e.user_data_32 {
            return ResultCode::ExistsWithDifferentUserData32;
        }
        if t.timeout != e.timeout {
            return ResultCode::ExistsWithDifferentTimeout;
        }
        if differs(t.ledger as u128, e.ledger as u128) {
            return ResultCode::ExistsWithDifferentLedger;
        }
        if differs(t.code as u128, e.code as u128) {
            return ResultCode::ExistsWithDifferentCode;
        }
        ResultCode::Exists
    }

    /// Remembers a failed id; `ts` is the timestamp of the event that failed (it orders
    /// eviction).
    fn remember_failed(&mut self, failed: FailedId, ts: u64) {
        let index = match self.free_failed_slots.last() {
            Some(&slot) => slot,
            None => u32::try_from(self.failed.len()).expect("failed ids fit u32 slots"),
        };
        let claimed = self.failed_index.claim(failed.id, index, &self.failed);
        debug_assert!(claimed.is_ok());
        if self.free_failed_slots.pop().is_some() {
            self.failed[index as usize] = failed;
        } else {
            self.failed.push(failed);
        }
        self.failed_order.push_back((ts, index));
        self.failed_remembered += 1;
        self.digest_failed_added(&failed);
    }

    // ---------------------------------------------------------------------------------------
    // Expiry.

    /// Voids every pending transfer whose deadline is at or before `now_ns`, at most
    /// [`EXPIRED_PER_EVENT_MAX`] per call, oldest deadline first.
    pub fn expire(&mut self, now_ns: u64, event: &mut Event) {
        event.clear();
        debug_assert!(!self.in_chain);
        while event.expired.len() < EXPIRED_PER_EVENT_MAX {
            let Some(&Reverse((at, id))) = self.expiries.peek() else {
                break;
            };
            if at > now_ns {
                break;
            }
            self.expiries.pop();
            let Some(index) = self.live_expiry(id) else {
                continue;
            };
            let ts = self.tick(now_ns);
            let balances = self.expire_pending(index, ts);
            event.expired.push(Expiry {
                pending_id: self.transfers[index as usize].id,
                timestamp: ts,
                reserved: 0,
                balances,
            });
        }
        self.drop_stale_expiries();
        if !event.is_empty() {
            event.timestamp = self.clock_ns;
        }
    }

    /// Releases the reservation of pending transfer `index` at `ts`; returns the post-balances.
    fn expire_pending(&mut self, index: u32, ts: u64) -> BalancePair {
        let p = self.transfers[index as usize];
        debug_assert_eq!(self.transfer_states[index as usize], TransferState::Pending);
        let dr_index = self.account_slot(p.debit_account_id);
        let cr_index = self.account_slot(p.credit_account_id);
        let (dr_old, cr_old) = self.save_balances(dr_index, cr_index);
        let (dr, cr) = pair_mut(&mut self.accounts, dr_index, cr_index);
        release_pending(dr, cr, p.amount, 0).expect("a pending reservation is within the balances");
        self.digest_balances_changed(dr_index, &dr_old);
        self.digest_balances_changed(cr_index, &cr_old);
        self.finish_pending(index, TransferState::Expired, ts);
        self.push_history(dr_index, ts, SIDE_DEBIT);
        self.push_history(cr_index, ts, SIDE_CREDIT);
        BalancePair {
            debit: Balances::of(&self.accounts[dr_index as usize]),
            credit: Balances::of(&self.accounts[cr_index as usize]),
        }
    }

    /// Keeps the invariant that the top of the expiry heap is a live pending transfer.
    fn drop_stale_expiries(&mut self) {
        while let Some(&Reverse((_, id))) = self.expiries.peek() {
            if self.live_expiry(id).is_some() {
                break;
            }
            self.expiries.pop();
        }
    }

    /// The slot of the transfer an expiry entry names if it is still pending.
    fn live_expiry(&self, id: u128) -> Option<u32> {
        let index = self.transfer_index.get(id, &self.transfers)?;
        (self.transfer_states[index as usize] == TransferState::Pending).then_some(index)
    }

    /// A pending transfer in slot `index` was posted, voided or expired at `ts`.
    fn finish_pending(&mut self, index: u32, state: TransferState, ts: u64) {
        debug_assert_eq!(self.transfer_states[index as usize], TransferState::Pending);
        debug_assert!(state != TransferState::Pending && state != TransferState::Final);
        self.set_state(index, state);
        self.finished.push_back((ts, index));
    }

    // ---------------------------------------------------------------------------------------
    // Invariants.

    /// Asserts what every balance change leaves true for account `index` (cheap: a few
    /// compares, so it runs in release builds after each change): pending + posted does not
    /// overflow on either side, and a balance-limit flag's rule holds with the account's limit.
    /// Validation checked all of this before the change; a failure here is a bug.
    #[inline]
    fn assert_balances_hold(&self, index: u32) {
        let a = &self.accounts[index as usize];
        let limit = self.account_ext[index as usize].limit;
        if let Err(problem) = balances_hold(a, limit) {
            panic!("invariant broken after a balance change: {problem}");
        }
    }

    /// Checks the whole state, O(accounts + transfers + failed ids): per ledger debits equal
    /// credits (pending and posted separately), every account's limits, and that every index
    /// points at the record it names, and that the state hash's running sums match the
    /// state. For tests and long runs (`--verify`); the daemon panics
    /// (and so aborts) on an error.
    pub fn verify(&self) -> Result<(), String> {
        if self.accounts.len() != self.account_ext.len() {
            return Err("accounts and their extensions differ in number".into());
        }
        if self.transfers.len() != self.transfer_states.len() {
            return Err("transfers and their states differ in number".into());
        }
        for totals in self.ledger_totals() {
            if totals.debits_posted != totals.credits_posted
                || totals.debits_pending != totals.credits_pending
            {
                return Err(format!(
                    "ledger {}: debits differ from credits: {totals:?}",
                    totals.ledger
                ));
            }
        }
        if self.account_index.len() != self.accounts.len() {
            return Err("account index size differs from the accounts".into());
        }
        for (i, a) in self.accounts.iter().enumerate() {
            balances_hold(a, self.account_ext[i].limit)?;
            if self.account_index.get(a.id, &self.accounts) != Some(i as u32) {
                return Err(format!("account {} is not found at its index {i}", a.id));
            }
        }
        let (transfers_in_memory, failed_in_memory) = self.in_memory();
        if self.transfer_index.len() as u64 != transfers_in_memory {
            return Err("transfer index size differs from the transfers".into());
        }
        let mut pending = 0u64;
        for (i, t) in self.transfers.iter().enumerate() {
            if t.id == 0 {
                if !self.free_slots.contains(&(i as u32)) {
                    return Err(format!("transfer slot {i} has id 0 and is not free"));
                }
                continue;
            }
            if self.transfer_index.get(t.id, &self.transfers) != Some(i as u32) {
                return Err(format!("transfer {} is not found at its index {i}", t.id));
            }
            if self.account_index.get(t.debit_account_id, &self.accounts).is_none()
                || self.account_index.get(t.credit_account_id, &self.accounts).is_none()
            {
                return Err(format!("transfer {} names an account that does not exist", t.id));
            }
            pending += u64::from(self.transfer_states[i] == TransferState::Pending);
        }
        if pending != self.pending_count {
            return Err(format!("{pending} pending transfers, counted {}", self.pending_count));
        }
        if self.failed_index.len() as u64 != failed_in_memory
            || self.failed_order.len() as u64 != failed_in_memory
        {
            return Err("failed-id index size differs from the failed ids".into());
        }
        for (i, f) in self.failed.iter().enumerate().filter(|(_, f)| f.id != 0) {
            if self.failed_index.get(f.id, &self.failed) != Some(i as u32) {
                return Err(format!("failed id {} is not found at its index {i}", f.id));
            }
        }
        self.digest_check()
    }

    // ---------------------------------------------------------------------------------------
    // Shared mutation helpers (also used by replay).

    /// The balances of a transfer's two accounts before it changes them: saved for undo
    /// while a chain is open, returned for the state hash.
    fn save_balances(&mut self, dr: u32, cr: u32) -> (Balances, Balances) {
        let saved =
            (Balances::of(&self.accounts[dr as usize]), Balances::of(&self.accounts[cr as usize]));
        if self.in_chain {
            self.undo.push(Undo::Balances { account: dr, balances: saved.0 });
            self.undo.push(Undo::Balances { account: cr, balances: saved.1 });
        }
        saved
    }

    fn set_state(&mut self, transfer: u32, state: TransferState) {
        let old = self.transfer_states[transfer as usize];
        if old == state {
            return;
        }
        self.digest_transfer(transfer, false);
        let was_pending = old == TransferState::Pending;
        let is_pending = state == TransferState::Pending;
        self.pending_count = self.pending_count + is_pending as u64 - was_pending as u64;
        self.transfer_states[transfer as usize] = state;
        self.digest_transfer(transfer, true);
    }

    /// The slot the next transfer gets: a freed one, or a new one at the end.
    #[inline]
    fn next_slot(&self) -> u32 {
        match self.free_slots.last() {
            Some(&slot) => slot,
            None => u32::try_from(self.transfers.len()).expect("transfers fit u32 slots"),
        }
    }

    /// Stores a transfer (balances already updated) in [`StateMachine::next_slot`]: account
    /// lists, history rows. The caller has already put `t.id` into the id index.
    fn push_transfer(&mut self, t: Transfer, state: TransferState, dr: u32, cr: u32) -> u32 {
        let index = self.next_slot();
        if self.free_slots.pop().is_none() {
            self.transfers.push(t);
            self.transfer_states.push(state);
            self.slot_marks.push(0);
        } else {
            self.transfers[index as usize] = t;
            self.transfer_states[index as usize] = state;
            self.slot_marks[index as usize] = 0;
        }
        debug_assert_eq!(self.transfer_index.get(t.id, &self.transfers), Some(index));
        self.pending_count += u64::from(state == TransferState::Pending);
        self.transfers_created += 1;
        self.creation_order.push_back(index);
        self.digest_transfer(index, true);
        self.account_ext[dr as usize].transfers.push_back(index);
        self.account_ext[cr as usize].transfers.push_back(index);
        self.push_history(dr, t.timestamp, SIDE_DEBIT);
        self.push_history(cr, t.timestamp, SIDE_CREDIT);
        self.record(Undo::TransferCreated);
        index
    }

    /// Undoes [`StateMachine::push_transfer`] of the last transfer (nothing was evicted since).
    fn pop_transfer(&mut self) {
        let index = self.creation_order.pop_back().expect("undo transfer");
        let t = self.transfers[index as usize];
        let removed = self.transfer_index.remove(t.id, &self.transfers);
        debug_assert!(removed);
        self.set_state(index, TransferState::Final);
        self.digest_transfer(index, false);
        self.release_slot(index);
        self.transfers_created -= 1;
        let dr = self.account_slot(t.debit_account_id);
        let cr = self.account_slot(t.credit_account_id);
        for (account, side) in [(cr, SIDE_CREDIT), (dr, SIDE_DEBIT)] {
            let ext = &mut self.account_ext[account as usize];
            let popped = ext.transfers.pop_back();
            debug_assert_eq!(popped, Some(index));
            if self.accounts[account as usize].has(AccountFlags::HISTORY) {
                ext.history.pop_back();
                let popped = ext.history_sides.pop_back();
                debug_assert_eq!(popped, Some(side));
            }
        }
    }

    /// Frees a transfer slot (already out of the id index) for the next transfer.
    fn release_slot(&mut self, index: u32) {
        if index as usize + 1 == self.transfers.len() {
            self.transfers.pop();
            self.transfer_states.pop();
            self.slot_marks.pop();
        } else {
            // Id 0 marks a free slot: the id index never matches it.
            self.transfers[index as usize].id = 0;
            self.free_slots.push(index);
        }
    }

    fn push_history(&mut self, account: u32, ts: u64, side: u8) {
        let a = &self.accounts[account as usize];
        if a.has(AccountFlags::HISTORY) {
            let row = AccountBalance {
                debits_pending: a.debits_pending,
                debits_posted: a.debits_posted,
                credits_pending: a.credits_pending,
                credits_posted: a.credits_posted,
                timestamp: ts,
                reserved: [0; 56],
            };
            let ext = &mut self.account_ext[account as usize];
            ext.history.push_back(row);
            ext.history_sides.push_back(side);
        }
    }

    fn emit_transfer(&self, event: &mut Event, t: Transfer, dr: u32, cr: u32) {
        event.transfers.push(t);
        event.transfer_balances.push(BalancePair {
            debit: Balances::of(&self.accounts[dr as usize]),
            credit: Balances::of(&self.accounts[cr as usize]),
        });
    }
}

/// Pure validation of an account to create (no state).
fn validate_account(a: &Account) -> Result<(), ResultCode> {
    if a.timestamp != 0 {
        return Err(ResultCode::TimestampMustBeZero);
    }
    if a.reserved != 0 {
        return Err(ResultCode::ReservedField);
    }
    if a.flags & !AccountFlags::ALL != 0 {
        return Err(ResultCode::FlagsUnknown);
    }
    if a.id == 0 {
        return Err(ResultCode::IdMustNotBeZero);
    }
    if a.id == ID_INVALID_MAX {
        return Err(ResultCode::IdMustNotBeIntMax);
    }
    if a.has(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && a.has(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
    {
        return Err(ResultCode::FlagsAreMutuallyExclusive);
    }
    if a.debits_pending != 0 {
        return Err(ResultCode::DebitsPendingMustBeZero);
    }
    if a.debits_posted != 0 {
        return Err(ResultCode::DebitsPostedMustBeZero);
    }
    if a.credits_pending != 0 {
        return Err(ResultCode::CreditsPendingMustBeZero);
    }
    if a.credits_posted != 0 {
        return Err(ResultCode::CreditsPostedMustBeZero);
    }
    if a.ledger == 0 {
        return Err(ResultCode::LedgerMustNotBeZero);
    }
    if a.code == 0 {
        return Err(ResultCode::CodeMustNotBeZero);
    }
    Ok(())
}

fn account_exists(a: &Account, e: &Account) -> ResultCode {
    if a.flags != e.flags {
        return ResultCode::ExistsWithDifferentFlags;
    }
    if a.user_data_128 != e.user_data_128 {
        return ResultCode::ExistsWithDifferentUserData128;
    }
    if a.user_data_64 != e.user_data_64 {
        return ResultCode::ExistsWithDifferentUserData64;
    }
    if a.user_data_32 != e.user_data_32 {
        return ResultCode::ExistsWithDifferentUserData32;
    }
    if a.ledger != e.ledger {
        return ResultCode::ExistsWithDifferentLedger;
    }
    if a.code != e.code {
        return ResultCode::ExistsWithDifferentCode;
    }
    ResultCode::Exists
}

/// The balance invariants of one account: no side overflows, and a balance-limit flag's rule
/// holds with `limit`.
fn balances_hold(a: &Account, limit: u128) -> Result<(), String> {
    let debits = a.debits_pending.checked_add(a.debits_posted);
    let credits = a.credits_pending.checked_add(a.credits_posted);
    let (Some(debits), Some(credits)) = (debits, credits) else {
        return Err(format!("account {}: pending + posted overflows", a.id));
    };
    if a.has(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && debits > a.credits_posted.saturating_add(limit)
    {
        return Err(format!("account {}: debits {debits} exceed credits plus limit {limit}", a.id));
    }
    if a.has(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        && credits > a.debits_posted.saturating_add(limit)
    {
        return Err(format!(
            "account {}: credits {credits} exceed debits plus limit {limit}",
            a.id
        ));
    }
    Ok(())
}

/// Whether `limit` may be set on `a`: it needs a balance-limit flag, and the account's
/// balance must not already be further past zero than `limit` allows.
fn limit_allows(a: &Account, limit: u128) -> Result<(), ResultCode> {
    if a.has(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
        if a.debits_pending + a.debits_posted > a.credits_posted.saturating_add(limit) {
            return Err(ResultCode::LimitBelowCurrentBalance);
        }
    } else if a.has(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
        if a.credits_pending + a.credits_posted > a.debits_posted.saturating_add(limit) {
            return Err(ResultCode::LimitBelowCurrentBalance);
        }
    } else {
        return Err(ResultCode::AccountHasNoBalanceLimitFlag);
    }
    Ok(())
}

fn expires_at_ns(p: &Transfer) -> u64 {
    debug_assert!(p.timeout > 0);
    p.timestamp.saturating_add((p.timeout as u64).saturating_mul(NS_PER_S))
}

/// Releases a reservation of `pending` and posts `posted` (<= pending) of it.
fn release_pending(dr: &mut Account, cr: &mut Account, pending: u128, posted: u128) -> Option<()> {
    debug_assert!(posted <= pending);
    let dr_pending = dr.debits_pending.checked_sub(pending)?;
    let cr_pending = cr.credits_pending.checked_sub(pending)?;
    let dr_posted = dr.debits_posted.checked_add(posted)?;
    let cr_posted = cr.credits_posted.checked_add(posted)?;
    dr.debits_pending = dr_pending;
    cr.credits_pending = cr_pending;
    dr.debits_posted = dr_posted;
    cr.credits_posted = cr_posted;
    Some(())
}

fn set_balances(a: &mut Account, b: &Balances) {
    a.debits_pending = b.debits_pending;
    a.debits_posted = b.debits_posted;
    a.credits_pending = b.credits_pending;
    a.credits_posted = b.credits_posted;
}

/// Two distinct elements of `v`, mutably.
fn pair_mut<T>(v: &mut [T], a: u32, b: u32) -> (&mut T, &mut T) {
    let (a, b) = (a as usize, b as usize);
    assert_ne!(a, b);
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}
