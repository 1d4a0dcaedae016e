//! A plain reference model of SPEC §3, driven with random operation sequences by proptest and
//! compared with the real state machine after every step.
//!
//! The model favours obviousness over speed: ordered maps, whole-state clones to roll back a
//! linked chain, linear scans for queries and expiry. After every step the test compares
//! results and every record, checks the ledger invariants (debits equal credits per ledger,
//! limits hold), replays the emitted event into a second state machine (encode, access,
//! apply_event) and compares state hashes; at the end it round-trips a snapshot image.
//!
//! The second property runs the same with a tiny hot window: before every step the state
//! machine evicts what a disk index lagging a few steps behind would hold, so that idempotency
//! checks, posts and voids, lookups and queries go through the records the caller brings back
//! from disk ([`ColdHits`], filled here from the replica, which keeps everything in memory).

use std::collections::{BTreeMap, BTreeSet};

use ledgerd::event::{self, Event};
use ledgerd::state_machine::{ColdHits, StateMachine};
use ledgerd::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, AccountLimit,
    CreateResult, ResultCode as R, Transfer, TransferFlags,
};
use proptest::prelude::*;

const S: u64 = 1_000_000_000;
const ACCOUNT_IDS: u128 = 6;
const TRANSFER_IDS: u128 = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Final,
    Pending,
    Posted,
    Voided,
    Expired,
}

#[derive(Clone, Default)]
struct Model {
    clock: u64,
    /// Account, limit, limit timestamp, creation order.
    accounts: BTreeMap<u128, (Account, u128, u64)>,
    transfers: BTreeMap<u128, (Transfer, State, usize)>,
    failed: BTreeSet<u128>,
    /// (row, was the account on the debit side) per history account.
    history: BTreeMap<u128, Vec<(AccountBalance, bool)>>,
}

fn exceeds_credits(a: &Account, limit: u128, extra: u128) -> bool {
    a.flags & AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
        && a.debits_pending.saturating_add(a.debits_posted).saturating_add(extra)
            > a.credits_posted.saturating_add(limit)
}

fn exceeds_debits(a: &Account, limit: u128, extra: u128) -> bool {
    a.flags & AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
        && a.credits_pending.saturating_add(a.credits_posted).saturating_add(extra)
            > a.debits_posted.saturating_add(limit)
}

impl Model {
    fn tick(&mut self, now: u64) -> u64 {
        self.clock = now.max(self.clock + 1);
        self.clock
    }

    /// Runs a batch with linked-chain semantics; `apply` returns the code of one event.
    fn batch<E>(
        &mut self,
        now: u64,
        events: &[E],
        linked: impl Fn(&E) -> bool,
        mut apply: impl FnMut(&mut Model, &E, u64) -> R,
        transfer_ids: impl Fn(&E) -> Option<u128>,
    ) -> Vec<(u32, R)> {
        let mut results = vec![R::Ok; events.len()];
        let mut chain: Option<(usize, Model)> = None;
        let mut broken = false;
        for (i, e) in events.iter().enumerate() {
            let ts = self.tick(now);
            if linked(e) && chain.is_none() {
                chain = Some((i, self.clone()));
                broken = false;
            }
            let r = if linked(e) && i == events.len() - 1 {
                R::LinkedEventChainOpen
            } else if broken {
                R::LinkedEventFailed
            } else {
                apply(self, e, ts)
            };
            if r != R::Ok {
                if let Some((start, saved)) = &chain {
                    if !broken {
                        broken = true;
                        let clock = self.clock;
                        let failed = self.failed.clone();
                        *self = saved.clone();
                        self.clock = clock;
                        self.failed = failed;
                        for res in &mut results[*start..i] {
                            *res = R::LinkedEventFailed;
                        }
                    }
                }
                if r.is_transient() {
                    self.failed.insert(transfer_ids(e).expect("only transfers fail transiently"));
                }
            }
            results[i] = r;
            if chain.is_some() && (!linked(e) || r == R::LinkedEventChainOpen) {
                chain = None;
                broken = false;
            }
        }
        results
            .into_iter()
            .enumerate()
            .filter(|(_, r)| *r != R::Ok)
            .map(|(i, r)| (i as u32, r))
            .collect()
    }

    fn create_account(&mut self, a: &Account, ts: u64) -> R {
        let dmnec = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        let cmned = AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        let checks = [
            (a.timestamp != 0, R::TimestampMustBeZero),
            (a.reserved != 0, R::ReservedField),
            (a.flags & !AccountFlags::ALL != 0, R::FlagsUnknown),
            (a.id == 0, R::IdMustNotBeZero),
            (a.id == u128::MAX, R::IdMustNotBeIntMax),
            (a.flags & dmnec != 0 && a.flags & cmned != 0, R::FlagsAreMutuallyExclusive),
            (a.debits_pending != 0, R::DebitsPendingMustBeZero),
            (a.debits_posted != 0, R::DebitsPostedMustBeZero),
            (a.credits_pending != 0, R::CreditsPendingMustBeZero),
            (a.credits_posted != 0, R::CreditsPostedMustBeZero),
            (a.ledger == 0, R::LedgerMustNotBeZero),
            (a.code == 0, R::CodeMustNotBeZero),
        ];
        if let Some((_, code)) = checks.iter().find(|(bad, _)| *bad) {
            return *code;
        }
        if let Some((e, _, _)) = self.accounts.get(&a.id) {
            let diffs = [
                (a.flags != e.flags, R::ExistsWithDifferentFlags),
                (a.user_data_128 != e.user_data_128, R::ExistsWithDifferentUserData128),
                (a.user_data_64 != e.user_data_64, R::ExistsWithDifferentUserData64),
                (a.user_data_32 != e.user_data_32, R::ExistsWithDifferentUserData32),
                (a.ledger != e.ledger, R::ExistsWithDifferentLedger),
                (a.code != e.code, R::ExistsWithDifferentCode),
            ];
            return diffs.iter().find(|(d, _)| *d).map_or(R::Exists, |(_, c)| *c);
        }
        self.accounts.insert(a.id, (Account { timestamp: ts, ..*a }, 0, 0));
        R::Ok
    }

    fn set_limit(&mut self, l: &AccountLimit, ts: u64) -> R {
        if l.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if l.reserved != [0; 24] {
            return R::ReservedField;
        }
        if l.account_id == 0 || l.account_id == u128::MAX {
            return R::AccountIdMustNotBeZero;
        }
        let Some((a, limit, limit_ts)) = self.accounts.get_mut(&l.account_id) else {
            return R::AccountNotFound;
        };
        let flags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
            | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        if a.flags & flags == 0 {
            return R::AccountHasNoBalanceLimitFlag;
        }
        if exceeds_credits(a, l.limit, 0) || exceeds_debits(a, l.limit, 0) {
            return R::LimitBelowCurrentBalance;
        }
        *limit = l.limit;
        *limit_ts = ts;
        R::Ok
    }

    fn record_history(&mut self, id: u128, ts: u64, debit: bool) {
        let (a, _, _) = self.accounts[&id];
        if a.flags & AccountFlags::HISTORY != 0 {
            let row = AccountBalance {
                debits_pending: a.debits_pending,
                debits_posted: a.debits_posted,
                credits_pending: a.credits_pending,
                credits_posted: a.credits_posted,
                timestamp: ts,
                reserved: [0; 56],
            };
            self.history.entry(id).or_default().push((row, debit));
        }
    }

    fn store(&mut self, t: Transfer, state: State) {
        let order = self.transfers.len();
        self.transfers.insert(t.id, (t, state, order));
        self.record_history(t.debit_account_id, t.timestamp, true);
        self.record_history(t.credit_account_id, t.timestamp, false);
    }

    fn create_transfer(&mut self, t: &Transfer, ts: u64) -> R {
        let f = |flag: u16| t.flags & flag != 0;
        if t.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if t.flags & !TransferFlags::ALL != 0 {
            return R::FlagsUnknown;
        }
        if t.id == 0 {
            return R::IdMustNotBeZero;
        }
        if t.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        let post = f(TransferFlags::POST_PENDING_TRANSFER);
        let void = f(TransferFlags::VOID_PENDING_TRANSFER);
        let pending = f(TransferFlags::PENDING);
        let balancing = f(TransferFlags::BALANCING_DEBIT) || f(TransferFlags::BALANCING_CREDIT);
        if let Some((e, _, _)) = self.transfers.get(&t.id) {
            let pv = post || void;
            let differs = |given: u128, stored: u128| given != stored && !(pv && given == 0);
            let amount_differs = if pv {
                let pending_amount = self.transfers.get(&e.pending_id).map(|p| p.0.amount);
                let resolved =
                    if t.amount == 0 { pending_amount.unwrap_or(e.amount) } else { t.amount };
                resolved != e.amount
            } else if balancing {
                t.amount < e.amount
            } else {
                t.amount != e.amount
            };
            let diffs = [
                (t.flags != e.flags, R::ExistsWithDifferentFlags),
                (
                    differs(t.debit_account_id, e.debit_account_id),
                    R::ExistsWithDifferentDebitAccountId,
                ),
                (
                    differs(t.credit_account_id, e.credit_account_id),
                    R::ExistsWithDifferentCreditAccountId,
                ),
                (amount_differs, R::ExistsWithDifferentAmount),
                (t.pending_id != e.pending_id, R::ExistsWithDifferentPendingId),
                (t.user_data_128 != e.user_data_128, R::ExistsWithDifferentUserData128),
                (t.user_data_64 != e.user_data_64, R::ExistsWithDifferentUserData64),
                (t.user_data_32 != e.user_data_32, R::ExistsWithDifferentUserData32),
                (t.timeout != e.timeout, R::ExistsWithDifferentTimeout),
                (differs(t.ledger.into(), e.ledger.into()), R::ExistsWithDifferentLedger),
                (differs(t.code.into(), e.code.into()), R::ExistsWithDifferentCode),
            ];
            return diffs.iter().find(|(d, _)| *d).map_or(R::Exists, |(_, c)| *c);
        }
        if self.failed.contains(&t.id) {
            return R::IdAlreadyFailed;
        }
        if (pending as u8 + post as u8 + void as u8) > 1 || (balancing && (post || void)) {
            return R::FlagsAreMutuallyExclusive;
        }
        if post || void {
            return self.post_or_void(t, ts, post);
        }
        let checks = [
            (t.pending_id != 0, R::PendingIdMustBeZero),
            (t.timeout != 0 && !pending, R::TimeoutReservedForPendingTransfer),
            (t.debit_account_id == 0, R::DebitAccountIdMustNotBeZero),
            (t.debit_account_id == u128::MAX, R::DebitAccountIdMustNotBeIntMax),
            (t.credit_account_id == 0, R::CreditAccountIdMustNotBeZero),
            (t.credit_account_id == u128::MAX, R::CreditAccountIdMustNotBeIntMax),
            (t.debit_account_id == t.credit_account_id, R::AccountsMustBeDifferent),
            (t.ledger == 0, R::LedgerMustNotBeZero),
            (t.code == 0, R::CodeMustNotBeZero),
            (t.amount == 0, R::AmountMustNotBeZero),
        ];
        if let Some((_, code)) = checks.iter().find(|(bad, _)| *bad) {
            return *code;
        }
        let Some(&(dr, dr_limit, _)) = self.accounts.get(&t.debit_account_id) else {
            return R::DebitAccountNotFound;
        };
        let Some(&(cr, cr_limit, _)) = self.accounts.get(&t.credit_account_id) else {
            return R::CreditAccountNotFound;
        };
        if dr.ledger != cr.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        let mut amount = t.amount;
        if f(TransferFlags::BALANCING_DEBIT) {
            let room = dr
                .credits_posted
                .saturating_add(dr_limit)
                .saturating_sub(dr.debits_pending + dr.debits_posted);
            amount = amount.min(room);
            if amount == 0 {
                return R::ExceedsCredits;
            }
        }
        if f(TransferFlags::BALANCING_CREDIT) {
            let room = cr
                .debits_posted
                .saturating_add(cr_limit)
                .saturating_sub(cr.credits_pending + cr.credits_posted);
            amount = amount.min(room);
            if amount == 0 {
                return R::ExceedsDebits;
            }
        }
        let checks = [
            (pending && dr.debits_pending.checked_add(amount).is_none(), R::OverflowsDebitsPending),
            (
                pending && cr.credits_pending.checked_add(amount).is_none(),
                R::OverflowsCreditsPending,
            ),
            (!pending && dr.debits_posted.checked_add(amount).is_none(), R::OverflowsDebitsPosted),
            (
                !pending && cr.credits_posted.checked_add(amount).is_none(),
                R::OverflowsCreditsPosted,
            ),
            (
                (dr.debits_pending + dr.debits_posted).checked_add(amount).is_none(),
                R::OverflowsDebits,
            ),
            (
                (cr.credits_pending + cr.credits_posted).checked_add(amount).is_none(),
                R::OverflowsCredits,
            ),
            (
                pending && t.timeout > 0 && ts.checked_add(t.timeout as u64 * S).is_none(),
                R::OverflowsTimeout,
            ),
            (exceeds_credits(&dr, dr_limit, amount), R::ExceedsCredits),
            (exceeds_debits(&cr, cr_limit, amount), R::ExceedsDebits),
        ];
        if let Some((_, code)) = checks.iter().find(|(bad, _)| *bad) {
            return *code;
        }
        {
            let dr = &mut self.accounts.get_mut(&t.debit_account_id).unwrap().0;
            if pending {
                dr.debits_pending += amount;
            } else {
                dr.debits_posted += amount;
            }
        }
        {
            let cr = &mut self.accounts.get_mut(&t.credit_account_id).unwrap().0;
            if pending {
                cr.credits_pending += amount;
            } else {
                cr.credits_posted += amount;
            }
        }
        let state = if pending { State::Pending } else { State::Final };
        self.store(Transfer { amount, timestamp: ts, ..*t }, state);
        R::Ok
    }

    fn post_or_void(&mut self, t: &Transfer, ts: u64, post: bool) -> R {
        let checks = [
            (t.pending_id == 0, R::PendingIdMustNotBeZero),
            (t.pending_id == u128::MAX, R::PendingIdMustNotBeIntMax),
            (t.pending_id == t.id, R::PendingIdMustBeDifferent),
            (t.timeout != 0, R::TimeoutReservedForPendingTransfer),
            (t.debit_account_id == u128::MAX, R::DebitAccountIdMustNotBeIntMax),
            (t.credit_account_id == u128::MAX, R::CreditAccountIdMustNotBeIntMax),
            (
                t.debit_account_id != 0 && t.debit_account_id == t.credit_account_id,
                R::AccountsMustBeDifferent,
            ),
        ];
        if let Some((_, code)) = checks.iter().find(|(bad, _)| *bad) {
            return *code;
        }
        let Some(&(p, state, _)) = self.transfers.get(&t.pending_id) else {
            return R::PendingTransferNotFound;
        };
        let checks = [
            (p.flags & TransferFlags::PENDING == 0, R::PendingTransferNotPending),
            (
                t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id,
                R::PendingTransferHasDifferentDebitAccountId,
            ),
            (
                t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id,
                R::PendingTransferHasDifferentCreditAccountId,
            ),
            (t.ledger != 0 && t.ledger != p.ledger, R::PendingTransferHasDifferentLedger),
            (t.code != 0 && t.code != p.code, R::PendingTransferHasDifferentCode),
            (state == State::Posted, R::PendingTransferAlreadyPosted),
            (state == State::Voided, R::PendingTransferAlreadyVoided),
            (state == State::Expired, R::PendingTransferExpired),
            (post && t.amount > p.amount, R::ExceedsPendingTransferAmount),
            (!post && t.amount != 0 && t.amount != p.amount, R::PendingTransferHasDifferentAmount),
            (p.timeout > 0 && p.timestamp + p.timeout as u64 * S <= ts, R::PendingTransferExpired),
        ];
        if let Some((_, code)) = checks.iter().find(|(bad, _)| *bad) {
            return *code;
        }
        let amount = if !post || t.amount == 0 { p.amount } else { t.amount };
        let posted = if post { amount } else { 0 };
        self.release(&p, posted);
        self.transfers.get_mut(&p.id).unwrap().1 = if post { State::Posted } else { State::Voided };
        let stored = Transfer {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            ledger: p.ledger,
            code: p.code,
            amount,
            timestamp: ts,
            ..*t
        };
        self.store(stored, State::Final);
        R::Ok
    }

    fn release(&mut self, p: &Transfer, posted: u128) {
        let dr = &mut self.accounts.get_mut(&p.debit_account_id).unwrap().0;
        dr.debits_pending -= p.amount;
        dr.debits_posted += posted;
        let cr = &mut self.accounts.get_mut(&p.credit_account_id).unwrap().0;
        cr.credits_pending -= p.amount;
        cr.credits_posted += posted;
    }

    fn expire(&mut self, now: u64) -> Vec<u128> {
        let mut due: Vec<(u64, usize, u128)> = self
            .transfers
            .values()
            .filter(|(p, s, _)| *s == State::Pending && p.timeout > 0)
            .map(|(p, _, order)| (p.timestamp + p.timeout as u64 * S, *order, p.id))
            .filter(|(at, _, _)| *at <= now)
            .collect();
        due.sort();
        let mut expired = Vec::new();
        for (_, _, id) in due.into_iter().take(event::EXPIRED_PER_EVENT_MAX) {
            let ts = self.tick(now);
            let p = self.transfers[&id].0;
            self.release(&p, 0);
            self.transfers.get_mut(&id).unwrap().1 = State::Expired;
            self.record_history(p.debit_account_id, ts, true);
            self.record_history(p.credit_account_id, ts, false);
            expired.push(id);
        }
        expired
    }

    fn account_transfers(&self, f: &AccountFilter) -> Vec<Transfer> {
        let Some(valid) = self.filter(f) else { return Vec::new() };
        let mut found: Vec<(usize, Transfer)> = self
            .transfers
            .values()
            .filter(|(t, _, _)| {
                (valid.0 && t.debit_account_id == f.account_id)
                    || (valid.1 && t.credit_account_id == f.account_id)
            })
            .filter(|(t, _, _)| valid.2.contains(&t.timestamp))
            .map(|(t, _, order)| (*order, *t))
            .collect();
        found.sort_by_key(|(order, _)| *order);
        if f.flags & AccountFilterFlags::REVERSED != 0 {
            found.reverse();
        }
        found.into_iter().map(|(_, t)| t).take(f.limit as usize).collect()
    }

    fn account_balances(&self, f: &AccountFilter) -> Vec<AccountBalance> {
        let Some(valid) = self.filter(f) else { return Vec::new() };
        let mut rows: Vec<AccountBalance> = self
            .history
            .get(&f.account_id)
            .map(|rows| {
                rows.iter()
                    .filter(|(r, debit)| {
                        ((valid.0 && *debit) || (valid.1 && !*debit))
                            && valid.2.contains(&r.timestamp)
                    })
                    .map(|(r, _)| *r)
                    .collect()
            })
            .unwrap_or_default();
        if f.flags & AccountFilterFlags::REVERSED != 0 {
            rows.reverse();
        }
        rows.truncate(f.limit as usize);
        rows
    }

    /// (debits, credits, timestamp range) of a valid filter.
    fn filter(&self, f: &AccountFilter) -> Option<(bool, bool, std::ops::RangeInclusive<u64>)> {
        let debits = f.flags & AccountFilterFlags::DEBITS != 0;
        let credits = f.flags & AccountFilterFlags::CREDITS != 0;
        let max = if f.timestamp_max == 0 { u64::MAX } else { f.timestamp_max };
        let ok = f.account_id != 0
            && f.account_id != u128::MAX
            && f.flags & !AccountFilterFlags::ALL == 0
            && f.reserved == [0; 24]
            && f.limit != 0
            && (debits || credits)
            && f.timestamp_min <= max
            && self.accounts.contains_key(&f.account_id);
        ok.then_some((debits, credits, f.timestamp_min..=max))
    }
}

// ---------------------------------------------------------------------------------------------
// Random operations.

#[derive(Clone, Debug)]
enum Op {
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
    Limits(Vec<AccountLimit>),
    /// Advance the wall clock by this many milliseconds, then sweep expiries.
    Expire(u64),
    /// Set the wall clock back (the ledger clock must still increase).
    ClockBack(u64),
    Query(AccountFilter),
}

fn account_id() -> impl Strategy<Value = u128> {
    prop_oneof![20 => 1..=ACCOUNT_IDS, 1 => Just(0u128), 1 => Just(u128::MAX)]
}

fn transfer_id() -> impl Strategy<Value = u128> {
    prop_oneof![30 => 1..=TRANSFER_IDS, 1 => Just(0u128), 1 => Just(u128::MAX)]
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        20 => 1..=100u128,
        3 => Just(0u128),
        1 => Just(u128::MAX),
        1 => Just(u128::MAX / 2),
    ]
}

fn account() -> impl Strategy<Value = Account> {
    let flags = prop_oneof![
        6 => Just(0u16),
        3 => Just(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        2 => Just(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        3 => Just(AccountFlags::HISTORY),
        1 => Just(AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        1 => Just(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        1 => Just(1u16 << 12),
    ];
    (account_id(), flags, any::<bool>(), 1..=2u32, 0..=2u16, 0..=1u128, 0..30u8).prop_map(
        |(id, flags, linked, ledger, code, user_data_128, junk)| {
            let mut a = Account {
                id,
                flags: flags | if linked { AccountFlags::LINKED } else { 0 },
                ledger: if junk == 0 { 0 } else { ledger },
                code,
                user_data_128,
                ..Default::default()
            };
            match junk {
                1 => a.timestamp = 1,
                2 => a.reserved = 1,
                3 => a.credits_posted = 1,
                _ => {}
            }
            a
        },
    )
}

fn transfer() -> impl Strategy<Value = Transfer> {
    let kind = prop_oneof![
        8 => Just(0u16),
        5 => Just(TransferFlags::PENDING),
        3 => Just(TransferFlags::POST_PENDING_TRANSFER),
        2 => Just(TransferFlags::VOID_PENDING_TRANSFER),
        1 => Just(TransferFlags::BALANCING_DEBIT),
        1 => Just(TransferFlags::BALANCING_CREDIT),
        1 => Just(TransferFlags::BALANCING_DEBIT | TransferFlags::PENDING),
        1 => Just(TransferFlags::PENDING | TransferFlags::VOID_PENDING_TRANSFER),
        1 => Just(1u16 << 13),
    ];
    (
        (transfer_id(), account_id(), account_id(), amount(), transfer_id()),
        (kind, 0..4u8, 0..=3u32, 1..=2u32, 0..=2u16, 0..=1u64, 0..20u8),
    )
        .prop_map(
            |(
                (id, dr, cr, amount, pending_id),
                (kind, linked, timeout, ledger, code, ud, junk),
            )| {
                let post_or_void = kind
                    & (TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER)
                    != 0;
                let mut t = Transfer {
                    id,
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount,
                    flags: kind | if linked == 0 { TransferFlags::LINKED } else { 0 },
                    ledger,
                    code: code.max(1),
                    user_data_64: ud,
                    ..Default::default()
                };
                if kind & TransferFlags::PENDING != 0 {
                    t.timeout = timeout;
                }
                if post_or_void {
                    t.pending_id = pending_id;
                    // Mostly leave the pending transfer's fields to be filled in.
                    if junk % 3 != 0 {
                        t.debit_account_id = 0;
                        t.credit_account_id = 0;
                        t.ledger = 0;
                        t.code = 0;
                    }
                    if junk % 2 == 0 {
                        t.amount = 0;
                    }
                }
                match junk {
                    1 => t.timestamp = 5,
                    2 => t.code = 0,
                    3 => t.pending_id = 7,
                    4 => t.timeout = 1,
                    _ => {}
                }
                t
            },
        )
}

fn limit() -> impl Strategy<Value = AccountLimit> {
    (account_id(), 0..=50u128, 0..12u8).prop_map(|(account_id, limit, junk)| AccountLimit {
        account_id,
        limit,
        timestamp: if junk == 0 { 1 } else { 0 },
        reserved: if junk == 1 { [1; 24] } else { [0; 24] },
    })
}

fn filter() -> impl Strategy<Value = AccountFilter> {
    (1..=ACCOUNT_IDS, 0..8u32, 0..=6u32, 0..4u8, 0..4u8).prop_map(
        |(account_id, flags, limit, min_pick, max_pick)| AccountFilter {
            account_id,
            flags,
            limit,
            // Bounds picked around the test's clock (which starts at 1000 s).
            timestamp_min: [0, 1000 * S + 3, 1000 * S + 10, 1010 * S][min_pick as usize],
            timestamp_max: [0, 1000 * S + 8, 1005 * S, u64::MAX][max_pick as usize],
            reserved: [0; 24],
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(account(), 1..5).prop_map(Op::Accounts),
        8 => prop::collection::vec(transfer(), 1..7).prop_map(Op::Transfers),
        1 => prop::collection::vec(limit(), 1..3).prop_map(Op::Limits),
        2 => (0..4_000u64).prop_map(Op::Expire),
        1 => (0..3_000u64).prop_map(Op::ClockBack),
        2 => filter().prop_map(Op::Query),
    ]
}

// ---------------------------------------------------------------------------------------------
// The comparison.

/// How the evicting run evicts: with the clock of `lag` steps ago as the index's watermark,
/// at most `budget` records before each step.
#[derive(Clone, Copy, Debug)]
struct Eviction {
    lag: usize,
    budget: usize,
}

struct Run {
    sm: StateMachine,
    replica: StateMachine,
    /// Replays the events too, evicting everything it may after each (as the snapshot
    /// builder and the replay tool do).
    evicting_replica: StateMachine,
    evict: Option<Eviction>,
    /// The ledger clock after each step (the watermarks an index would have reached).
    clocks: Vec<u64>,
    model: Model,
    now: u64,
    results: Vec<CreateResult>,
    event: Event,
    bytes: rkyv::util::AlignedVec<16>,
}

impl Run {
    fn new(evict: Option<Eviction>) -> Run {
        Run {
            sm: StateMachine::new(),
            replica: StateMachine::new(),
            evicting_replica: StateMachine::new(),
            evict,
            clocks: Vec::new(),
            model: Model::default(),
            now: 1000 * S,
            results: Vec::new(),
            event: Event::default(),
            bytes: Default::default(),
        }
    }

    /// Evicts what an index `lag` steps behind holds, then brings back from the replica what
    /// a request naming `ids` (and querying with `filter`) needs.
    fn prepare(&mut self, ids: &[u128], filter: Option<&AccountFilter>) {
        let Some(e) = self.evict else {
            return;
        };
        let watermark = self.clocks.len().checked_sub(e.lag + 1).map_or(0, |i| self.clocks[i]);
        self.sm.evict(watermark, e.budget);
        let replica = &self.replica;
        let hits: &mut ColdHits = self.sm.cold_hits();
        hits.clear();
        for &id in ids {
            if let Some((t, state)) = replica.transfer_anywhere(id) {
                hits.add_transfer(t, state);
                // As the resolve stage does: the pending transfer a stored post or void settled.
                if let Some((p, state)) = replica.transfer_anywhere(t.pending_id) {
                    hits.add_transfer(p, state);
                }
            }
            if replica.is_failed(id) {
                hits.add_failed(id);
            }
        }
        if let Some(f) = filter {
            replica.get_account_transfers(f, &mut hits.account_transfers);
            replica.get_account_balances(f, &mut hits.account_balances);
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Transfers(t) => {
                let ids: Vec<u128> = t.iter().flat_map(|t| [t.id, t.pending_id]).collect();
                self.prepare(&ids, None);
            }
            Op::Query(f) => self.prepare(&[], Some(f)),
            _ => self.prepare(&[], None),
        }
        let expected: Vec<(u32, R)> = match op {
            Op::Accounts(a) => {
                self.sm.create_accounts(self.now, a, &mut self.results, &mut self.event);
                self.model.batch(
                    self.now,
                    a,
                    |a| a.flags & AccountFlags::LINKED != 0,
                    |m, a, ts| m.create_account(a, ts),
                    |_| None,
                )
            }
            Op::Transfers(t) => {
                self.sm.create_transfers(self.now, t, &mut self.results, &mut self.event);
                self.model.batch(
                    self.now,
                    t,
                    |t| t.flags & TransferFlags::LINKED != 0,
                    |m, t, ts| m.create_transfer(t, ts),
                    |t| Some(t.id),
                )
            }
            Op::Limits(l) => {
                self.sm.set_account_limits(self.now, l, &mut self.results, &mut self.event);
                self.model.batch(self.now, l, |_| false, |m, l, ts| m.set_limit(l, ts), |_| None)
            }
            Op::Expire(ms) => {
                self.now += ms * 1_000_000;
                self.sm.expire(self.now, &mut self.event);
                let expired = self.model.expire(self.now);
                let got: Vec<u128> = self.event.expired.iter().map(|e| e.pending_id).collect();
                assert_eq!(got, expired, "expired ids");
                self.results.clear();
                Vec::new()
            }
            Op::ClockBack(ms) => {
                self.now -= ms * 1_000_000;
                self.results.clear();
                self.event.clear();
                Vec::new()
            }
            Op::Query(f) => {
                let mut transfers = Vec::new();
                self.sm.get_account_transfers(f, &mut transfers);
                assert_eq!(
                    transfers,
                    self.model.account_transfers(f),
                    "get_account_transfers {f:?}"
                );
                let mut rows = Vec::new();
                self.sm.get_account_balances(f, &mut rows);
                assert_eq!(rows, self.model.account_balances(f), "get_account_balances {f:?}");
                self.results.clear();
                self.event.clear();
                Vec::new()
            }
        };
        let got: Vec<(u32, R)> = self.results.iter().map(|r| (r.index, r.result)).collect();
        assert_eq!(got, expected, "results of {op:?}");
        assert_eq!(self.sm.clock_ns(), self.model.clock, "ledger clock");
        self.replay();
        self.compare();
        self.clocks.push(self.sm.clock_ns());
    }

    fn compare(&mut self) {
        let mut ids: Vec<u128> = (0..=ACCOUNT_IDS).collect();
        ids.push(u128::MAX);
        let mut found = Vec::new();
        self.sm.lookup_accounts(&ids, &mut found);
        let expected: Vec<Account> =
            ids.iter().filter_map(|id| self.model.accounts.get(id).map(|a| a.0)).collect();
        assert_eq!(found, expected, "accounts");
        let mut limits = Vec::new();
        self.sm.lookup_account_limits(&ids, &mut limits);
        let expected: Vec<(u128, u128, u64)> = ids
            .iter()
            .filter_map(|id| self.model.accounts.get(id).map(|(_, l, ts)| (*id, *l, *ts)))
            .collect();
        let got: Vec<(u128, u128, u64)> =
            limits.iter().map(|l| (l.account_id, l.limit, l.timestamp)).collect();
        assert_eq!(got, expected, "limits");

        let mut ids: Vec<u128> = (0..=TRANSFER_IDS).collect();
        ids.push(u128::MAX);
        self.prepare(&ids, None);
        let mut transfers = Vec::new();
        self.sm.lookup_transfers(&ids, &mut transfers);
        let expected: Vec<Transfer> =
            ids.iter().filter_map(|id| self.model.transfers.get(id).map(|t| t.0)).collect();
        assert_eq!(transfers, expected, "transfers");

        let counts = self.sm.counts();
        assert_eq!(counts.accounts, self.model.accounts.len() as u64);
        assert_eq!(counts.transfers, self.model.transfers.len() as u64);
        assert_eq!(counts.failed_ids, self.model.failed.len() as u64);
        let pending =
            self.model.transfers.values().filter(|(_, s, _)| *s == State::Pending).count();
        assert_eq!(counts.pending, pending as u64);
        let next = self
            .model
            .transfers
            .values()
            .filter(|(p, s, _)| *s == State::Pending && p.timeout > 0)
            .map(|(p, _, _)| p.timestamp + p.timeout as u64 * S)
            .min();
        assert_eq!(self.sm.next_expiry_ns(), next, "next expiry");

        // Invariants: debits equal credits per ledger; limits never broken.
        for totals in self.sm.ledger_totals() {
            assert_eq!(totals.debits_posted, totals.credits_posted, "{totals:?}");
            assert_eq!(totals.debits_pending, totals.credits_pending, "{totals:?}");
        }
        for (a, limit, _) in self.model.accounts.values() {
            assert!(!exceeds_credits(a, *limit, 0), "limit broken: {a:?}");
            assert!(!exceeds_debits(a, *limit, 0), "limit broken: {a:?}");
        }
        // The daemon's own full-state check (`--verify`) agrees after every step.
        if let Err(problem) = self.sm.verify() {
            panic!("StateMachine::verify: {problem}");
        }
    }

    fn replay(&mut self) {
        if self.event.is_empty() {
            return;
        }
        event::encode(&self.event, &mut self.bytes);
        let archived = event::access(&self.bytes).expect("event validates");
        self.replica.apply_event(archived).expect("event replays");
        assert_eq!(self.replica.state_hash(), self.sm.state_hash(), "replay diverged");
        if self.evict.is_some() {
            let r = &mut self.evicting_replica;
            r.apply_event(archived).expect("event replays with eviction");
            r.evict(u64::MAX, usize::MAX);
            assert_eq!(r.state_hash(), self.sm.state_hash(), "evicting replay diverged");
            assert_eq!(r.counts(), self.sm.counts());
            r.verify().expect("the evicting replica verifies");
        }
    }
}

fn run_against_the_model(ops: &[Op], evict: Option<Eviction>) -> Result<(), TestCaseError> {
    let mut run = Run::new(evict);
    {
        for op in ops {
            let hash = run.sm.state_hash();
            run.step(op);
            if let Op::Query(_) = op {
                prop_assert_eq!(run.sm.state_hash(), hash, "a query changed the state");
            }
        }
        let mut image = rkyv::util::AlignedVec::<16>::new();
        run.sm.write_image(&mut image);
        let back = StateMachine::from_image(&image).expect("image loads");
        prop_assert_eq!(back.state_hash(), run.sm.state_hash());
        prop_assert_eq!(back.counts(), run.sm.counts());
        prop_assert_eq!(back.next_expiry_ns(), run.sm.next_expiry_ns());
        prop_assert_eq!(run.replica.state_hash(), run.sm.state_hash());
        if evict.is_some() {
            prop_assert_eq!(back.evicted_through_ns(), run.sm.evicted_through_ns());
            back.verify().map_err(TestCaseError::fail)?;
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn state_machine_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run_against_the_model(&ops, None)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn with_history_evicted_the_state_machine_still_matches_the_model(
        ops in prop::collection::vec(op(), 1..120),
        lag in 0..4usize,
        budget in prop_oneof![1..4usize, Just(usize::MAX)],
    ) {
        // Every account exists from the start (half with balance history), so that most
        // transfers apply and there is history to evict.
        let accounts = (1..=ACCOUNT_IDS)
            .map(|id| Account {
                id,
                ledger: if id <= ACCOUNT_IDS / 2 { 1 } else { 2 },
                code: 1,
                flags: if id % 2 == 1 { AccountFlags::HISTORY } else { 0 },
                ..Default::default()
            })
            .collect();
        let ops: Vec<Op> = std::iter::once(Op::Accounts(accounts)).chain(ops).collect();
        run_against_the_model(&ops, Some(Eviction { lag, budget }))?;
    }
}
