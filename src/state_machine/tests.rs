//! Unit tests: one or more per rule and per result code. Every request also replays its
//! event into a second state machine and checks that the state hashes agree.

use super::*;
use crate::event;
use crate::types::{AccountFilter, AccountFilterFlags};
use ResultCode as R;

const S: u64 = NS_PER_S;

struct Harness {
    sm: StateMachine,
    replica: StateMachine,
    now: u64,
    results: Vec<CreateResult>,
    event: Event,
    bytes: rkyv::util::AlignedVec<16>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            sm: StateMachine::new(),
            replica: StateMachine::new(),
            now: 1_000 * S,
            results: Vec::new(),
            event: Event::default(),
            bytes: Default::default(),
        }
    }

    fn replay(&mut self) {
        if self.event.is_empty() {
            return;
        }
        event::encode(&self.event, &mut self.bytes);
        let archived = event::access(&self.bytes).unwrap();
        self.replica.apply_event(archived).unwrap();
        assert_eq!(self.replica.state_hash(), self.sm.state_hash(), "replay diverged");
        // The running state hash equals one computed from scratch, on both sides.
        self.sm.digest_check().unwrap();
        self.replica.digest_check().unwrap();
        assert_eq!(self.replica.counts(), self.sm.counts());
        assert_eq!(self.replica.next_expiry_ns(), self.sm.next_expiry_ns());
    }

    fn results(&self) -> Vec<(u32, ResultCode)> {
        self.results.iter().map(|r| (r.index, r.result)).collect()
    }

    fn accounts(&mut self, a: &[Account]) -> Vec<(u32, ResultCode)> {
        self.sm.create_accounts(self.now, a, &mut self.results, &mut self.event);
        self.replay();
        self.results()
    }

    fn transfers(&mut self, t: &[Transfer]) -> Vec<(u32, ResultCode)> {
        self.sm.create_transfers(self.now, t, &mut self.results, &mut self.event);
        self.replay();
        self.check_totals();
        self.results()
    }

    fn limits(&mut self, l: &[AccountLimit]) -> Vec<(u32, ResultCode)> {
        self.sm.set_account_limits(self.now, l, &mut self.results, &mut self.event);
        self.replay();
        self.results()
    }

    fn expire(&mut self) -> Vec<u128> {
        self.sm.expire(self.now, &mut self.event);
        self.replay();
        self.check_totals();
        self.event.expired.iter().map(|e| e.pending_id).collect()
    }

    /// The result of a one-event request.
    fn account(&mut self, a: Account) -> ResultCode {
        single(self.accounts(&[a]))
    }

    fn transfer(&mut self, t: Transfer) -> ResultCode {
        single(self.transfers(&[t]))
    }

    fn limit(&mut self, account_id: u128, limit: u128) -> ResultCode {
        single(self.limits(&[AccountLimit { account_id, limit, ..Default::default() }]))
    }

    fn balances(&self, id: u128) -> (u128, u128, u128, u128) {
        let a = self.sm.account(id).unwrap();
        (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
    }

    fn check_totals(&self) {
        for t in self.sm.ledger_totals() {
            assert_eq!(t.debits_posted, t.credits_posted);
            assert_eq!(t.debits_pending, t.credits_pending);
        }
    }
}

fn single(results: Vec<(u32, ResultCode)>) -> ResultCode {
    match results.as_slice() {
        [] => R::Ok,
        [(0, code)] => *code,
        other => panic!("unexpected results {other:?}"),
    }
}

fn acct(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Default::default() }
}

fn acct_flags(id: u128, flags: u16) -> Account {
    Account { flags, ..acct(id) }
}

fn xfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

fn pending(id: u128, dr: u128, cr: u128, amount: u128, timeout: u32) -> Transfer {
    Transfer { flags: TransferFlags::PENDING, timeout, ..xfer(id, dr, cr, amount) }
}

fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        amount,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Default::default()
    }
}

fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer { flags: TransferFlags::VOID_PENDING_TRANSFER, ..post(id, pending_id, 0) }
}

/// Accounts 1, 2, 3 on ledger 1; 9 on ledger 2.
fn with_accounts() -> Harness {
    let mut h = Harness::new();
    assert_eq!(h.accounts(&[acct(1), acct(2), acct(3), Account { ledger: 2, ..acct(9) }]), []);
    h
}

#[test]
fn account_validation_codes() {
    let mut h = Harness::new();
    let cases: Vec<(Account, ResultCode)> = vec![
        (Account { timestamp: 1, ..acct(1) }, R::TimestampMustBeZero),
        (Account { reserved: 1, ..acct(1) }, R::ReservedField),
        (acct_flags(1, 1 << 9), R::FlagsUnknown),
        (acct(0), R::IdMustNotBeZero),
        (acct(u128::MAX), R::IdMustNotBeIntMax),
        (
            acct_flags(
                1,
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            ),
            R::FlagsAreMutuallyExclusive,
        ),
        (Account { debits_pending: 1, ..acct(1) }, R::DebitsPendingMustBeZero),
        (Account { debits_posted: 1, ..acct(1) }, R::DebitsPostedMustBeZero),
        (Account { credits_pending: 1, ..acct(1) }, R::CreditsPendingMustBeZero),
        (Account { credits_posted: 1, ..acct(1) }, R::CreditsPostedMustBeZero),
        (Account { ledger: 0, ..acct(1) }, R::LedgerMustNotBeZero),
        (Account { code: 0, ..acct(1) }, R::CodeMustNotBeZero),
    ];
    for (a, code) in cases {
        assert_eq!(h.account(a), code, "{a:?}");
    }
    assert_eq!(h.sm.counts().accounts, 0);
    assert!(h.event.is_empty());
}

#[test]
fn account_exists_codes_name_the_first_differing_field() {
    let mut h = Harness::new();
    let a = Account { user_data_128: 5, user_data_64: 6, user_data_32: 7, ..acct(1) };
    assert_eq!(h.account(a), R::Ok);
    let created = *h.sm.account(1).unwrap();
    assert_eq!(created.timestamp, h.now);
    let hash = h.sm.state_hash();
    assert_eq!(h.account(a), R::Exists);
    assert!(h.event.is_empty(), "an exists retry changes nothing");
    assert_eq!(h.sm.state_hash(), hash);
    let cases = [
        (acct_flags(1, AccountFlags::HISTORY), R::ExistsWithDifferentFlags),
        (Account { user_data_128: 0, ..a }, R::ExistsWithDifferentUserData128),
        (Account { user_data_64: 0, ..a }, R::ExistsWithDifferentUserData64),
        (Account { user_data_32: 0, ..a }, R::ExistsWithDifferentUserData32),
        (Account { ledger: 2, ..a }, R::ExistsWithDifferentLedger),
        (Account { code: 2, ..a }, R::ExistsWithDifferentCode),
    ];
    for (b, code) in cases {
        assert_eq!(h.account(b), code);
    }
    assert_eq!(*h.sm.account(1).unwrap(), created);
}

#[test]
fn account_chains_are_all_or_nothing() {
    let mut h = Harness::new();
    let l = AccountFlags::LINKED;
    // A failing chain: the failing event keeps its code, the others are linked_event_failed.
    let r = h.accounts(&[acct_flags(1, l), acct_flags(2, l), acct(0), acct(4)]);
    assert_eq!(r, [(0, R::LinkedEventFailed), (1, R::LinkedEventFailed), (2, R::IdMustNotBeZero)]);
    assert!(h.sm.account(1).is_none() && h.sm.account(2).is_none());
    assert!(h.sm.account(4).is_some());
    assert_eq!(h.event.accounts.len(), 1);
    // A chain left open at the end of the request fails as a whole.
    let r = h.accounts(&[acct(5), acct_flags(6, l), acct_flags(7, l)]);
    assert_eq!(r, [(1, R::LinkedEventFailed), (2, R::LinkedEventChainOpen)]);
    assert!(h.sm.account(6).is_none() && h.sm.account(5).is_some());
    // A closed chain succeeds.
    assert_eq!(h.accounts(&[acct_flags(6, l), acct(7)]), []);
    // A duplicate inside the chain sees the tentative record.
    let r = h.accounts(&[acct_flags(8, l), acct(8)]);
    assert_eq!(r, [(0, R::LinkedEventFailed), (1, R::ExistsWithDifferentFlags)]);
    assert!(h.sm.account(8).is_none());
    assert_eq!(single(h.accounts(&[acct_flags(10, l)])), R::LinkedEventChainOpen);
}

#[test]
fn timestamps_strictly_increase_even_when_the_clock_steps_back() {
    let mut h = Harness::new();
    h.now = 500;
    assert_eq!(h.accounts(&[acct(1), acct(2)]), []);
    h.now = 100;
    assert_eq!(h.accounts(&[acct(3)]), []);
    let ts: Vec<u64> = (1..=3).map(|id| h.sm.account(id).unwrap().timestamp).collect();
    assert_eq!(ts, [500, 501, 502]);
    assert_eq!(h.sm.clock_ns(), 502);
    assert_eq!(h.event.timestamp, 502);
}

#[test]
fn transfer_validation_codes() {
    let mut h = with_accounts();
    let p = TransferFlags::PENDING;
    let cases: Vec<(Transfer, ResultCode)> = vec![
        (Transfer { timestamp: 1, ..xfer(10, 1, 2, 1) }, R::TimestampMustBeZero),
        (Transfer { flags: 1 << 10, ..xfer(10, 1, 2, 1) }, R::FlagsUnknown),
        (xfer(0, 1, 2, 1), R::IdMustNotBeZero),
        (xfer(u128::MAX, 1, 2, 1), R::IdMustNotBeIntMax),
        (
            Transfer { flags: p | TransferFlags::POST_PENDING_TRANSFER, ..xfer(10, 1, 2, 1) },
            R::FlagsAreMutuallyExclusive,
        ),
        (
            Transfer {
                flags: TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
                ..xfer(10, 1, 2, 1)
            },
            R::FlagsAreMutuallyExclusive,
        ),
        (
            Transfer {
                flags: TransferFlags::VOID_PENDING_TRANSFER | TransferFlags::BALANCING_DEBIT,
                ..xfer(10, 1, 2, 1)
            },
            R::FlagsAreMutuallyExclusive,
        ),
        (Transfer { pending_id: 5, ..xfer(10, 1, 2, 1) }, R::PendingIdMustBeZero),
        (Transfer { timeout: 5, ..xfer(10, 1, 2, 1) }, R::TimeoutReservedForPendingTransfer),
        (xfer(10, 0, 2, 1), R::DebitAccountIdMustNotBeZero),
        (xfer(10, u128::MAX, 2, 1), R::DebitAccountIdMustNotBeIntMax),
        (xfer(10, 1, 0, 1), R::CreditAccountIdMustNotBeZero),
        (xfer(10, 1, u128::MAX, 1), R::CreditAccountIdMustNotBeIntMax),
        (xfer(10, 1, 1, 1), R::AccountsMustBeDifferent),
        (Transfer { ledger: 0, ..xfer(10, 1, 2, 1) }, R::LedgerMustNotBeZero),
        (Transfer { code: 0, ..xfer(10, 1, 2, 1) }, R::CodeMustNotBeZero),
        (xfer(10, 1, 2, 0), R::AmountMustNotBeZero),
        (xfer(10, 1, 9, 1), R::AccountsMustHaveTheSameLedger),
        (Transfer { ledger: 2, ..xfer(10, 1, 2, 1) }, R::TransferMustHaveTheSameLedgerAsAccounts),
    ];
    for (t, code) in cases {
        assert_eq!(h.transfer(t), code, "{t:?}");
        assert!(h.event.is_empty(), "pure validation failures are not remembered");
    }
    // Not found: transient, remembered.
    assert_eq!(h.transfer(xfer(11, 77, 2, 1)), R::DebitAccountNotFound);
    assert_eq!(h.event.failed, [FailedId::new(11, R::DebitAccountNotFound)]);
    assert_eq!(h.transfer(xfer(12, 1, 77, 1)), R::CreditAccountNotFound);
    assert_eq!(h.sm.counts().transfers, 0);
    assert_eq!(h.sm.counts().failed_ids, 2);
    // A corrected request may reuse an id that failed validation.
    assert_eq!(h.transfer(xfer(10, 1, 2, 1)), R::Ok);
}

#[test]
fn id_already_failed_never_flips_an_outcome() {
    let mut h = with_accounts();
    assert_eq!(h.transfer(xfer(10, 1, 50, 5)), R::CreditAccountNotFound);
    assert_eq!(h.account(acct(50)), R::Ok);
    assert_eq!(h.transfer(xfer(10, 1, 50, 5)), R::IdAlreadyFailed);
    assert!(h.event.is_empty());
    assert_eq!(h.sm.account(50).unwrap().credits_posted, 0);
}

#[test]
fn single_phase_moves_posted_balances_and_retries_are_safe() {
    let mut h = with_accounts();
    let t = Transfer { user_data_128: 1, user_data_64: 2, user_data_32: 3, ..xfer(10, 1, 2, 7) };
    assert_eq!(h.transfer(t), R::Ok);
    assert_eq!(h.balances(1), (0, 7, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 7));
    let stored = *h.sm.transfer_by_id(10).unwrap();
    assert_eq!(stored.timestamp, h.sm.clock_ns());
    assert_eq!(h.event.transfer_balances[0].debit.debits_posted, 7);
    let hash = h.sm.state_hash();
    assert_eq!(h.transfer(t), R::Exists);
    assert_eq!(h.sm.state_hash(), hash);
    let cases = [
        (Transfer { flags: TransferFlags::PENDING, ..t }, R::ExistsWithDifferentFlags),
        (Transfer { debit_account_id: 3, ..t }, R::ExistsWithDifferentDebitAccountId),
        (Transfer { credit_account_id: 3, ..t }, R::ExistsWithDifferentCreditAccountId),
        (Transfer { amount: 8, ..t }, R::ExistsWithDifferentAmount),
        (Transfer { pending_id: 8, ..t }, R::ExistsWithDifferentPendingId),
        (Transfer { user_data_128: 0, ..t }, R::ExistsWithDifferentUserData128),
        (Transfer { user_data_64: 0, ..t }, R::ExistsWithDifferentUserData64),
        (Transfer { user_data_32: 0, ..t }, R::ExistsWithDifferentUserData32),
        (Transfer { timeout: 1, ..t }, R::ExistsWithDifferentTimeout),
        (Transfer { ledger: 2, ..t }, R::ExistsWithDifferentLedger),
        (Transfer { code: 2, ..t }, R::ExistsWithDifferentCode),
    ];
    for (u, code) in cases {
        assert_eq!(h.transfer(u), code);
    }
    assert_eq!(h.sm.state_hash(), hash);
}

#[test]
fn pending_then_post_full_partial_and_void() {
    let mut h = with_accounts();
    assert_eq!(h.transfer(pending(10, 1, 2, 100, 0)), R::Ok);
    assert_eq!(h.balances(1), (100, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 100, 0));
    assert_eq!(h.sm.counts().pending, 1);
    // Partial post: fields left at zero come from the pending transfer.
    assert_eq!(h.transfer(post(11, 10, 60)), R::Ok);
    assert_eq!(h.balances(1), (0, 60, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 60));
    let p = *h.sm.transfer_by_id(11).unwrap();
    assert_eq!((p.debit_account_id, p.credit_account_id, p.ledger, p.code), (1, 2, 1, 1));
    assert_eq!(h.sm.counts().pending, 0);
    assert_eq!(h.transfer(post(11, 10, 60)), R::Exists);
    assert_eq!(h.transfer(post(11, 10, 0)), R::ExistsWithDifferentAmount);
    assert_eq!(h.transfer(post(12, 10, 1)), R::PendingTransferAlreadyPosted);
    assert_eq!(h.transfer(void(12, 10)), R::PendingTransferAlreadyPosted);

    // Full post with amount 0; retry with zeros is `exists`.
    assert_eq!(h.transfer(pending(20, 1, 2, 30, 0)), R::Ok);
    assert_eq!(h.transfer(post(21, 20, 0)), R::Ok);
    assert_eq!(h.sm.transfer_by_id(21).unwrap().amount, 30);
    assert_eq!(h.transfer(post(21, 20, 0)), R::Exists);
    assert_eq!(h.transfer(post(21, 20, 30)), R::Exists);
    assert_eq!(h.balances(1), (0, 90, 0, 0));

    // Void releases everything.
    assert_eq!(h.transfer(pending(30, 1, 2, 40, 0)), R::Ok);
    assert_eq!(
        h.transfer(Transfer { amount: 39, ..void(31, 30) }),
        R::PendingTransferHasDifferentAmount
    );
    assert_eq!(h.transfer(Transfer { amount: 40, ..void(31, 30) }), R::Ok);
    assert_eq!(h.balances(1), (0, 90, 0, 0));
    assert_eq!(h.transfer(void(32, 30)), R::PendingTransferAlreadyVoided);
    assert_eq!(h.transfer(post(32, 30, 100)), R::PendingTransferAlreadyVoided, "before amount");
}

#[test]
fn post_and_void_validation_codes() {
    let mut h = with_accounts();
    assert_eq!(h.transfer(pending(10, 1, 2, 100, 0)), R::Ok);
    assert_eq!(h.transfer(xfer(11, 1, 2, 1)), R::Ok);
    let cases = [
        (post(20, 0, 1), R::PendingIdMustNotBeZero),
        (post(20, u128::MAX, 1), R::PendingIdMustNotBeIntMax),
        (post(20, 20, 1), R::PendingIdMustBeDifferent),
        (Transfer { timeout: 1, ..post(20, 10, 1) }, R::TimeoutReservedForPendingTransfer),
        (
            Transfer { debit_account_id: u128::MAX, ..post(20, 10, 1) },
            R::DebitAccountIdMustNotBeIntMax,
        ),
        (
            Transfer { credit_account_id: u128::MAX, ..post(20, 10, 1) },
            R::CreditAccountIdMustNotBeIntMax,
        ),
        (
            Transfer { debit_account_id: 2, credit_account_id: 2, ..post(20, 10, 1) },
            R::AccountsMustBeDifferent,
        ),
        (post(20, 11, 1), R::PendingTransferNotPending),
        (
            Transfer { debit_account_id: 3, ..post(20, 10, 1) },
            R::PendingTransferHasDifferentDebitAccountId,
        ),
        (
            Transfer { credit_account_id: 3, ..post(20, 10, 1) },
            R::PendingTransferHasDifferentCreditAccountId,
        ),
        (Transfer { ledger: 2, ..post(20, 10, 1) }, R::PendingTransferHasDifferentLedger),
        (Transfer { code: 2, ..post(20, 10, 1) }, R::PendingTransferHasDifferentCode),
        (post(20, 10, 101), R::ExceedsPendingTransferAmount),
    ];
    for (t, code) in cases {
        assert_eq!(h.transfer(t), code, "{t:?}");
        assert!(h.event.is_empty());
    }
    assert_eq!(h.transfer(post(20, 99, 1)), R::PendingTransferNotFound);
    assert_eq!(h.event.failed, [FailedId::new(20, R::PendingTransferNotFound)]);
    assert_eq!(h.transfer(post(20, 10, 1)), R::IdAlreadyFailed);
    // Matching explicit fields are fine.
    let full = Transfer {
        debit_account_id: 1,
        credit_account_id: 2,
        ledger: 1,
        code: 1,
        ..post(21, 10, 100)
    };
    assert_eq!(h.transfer(full), R::Ok);
}

#[test]
fn pending_timeouts_expire_by_the_ledger() {
    let mut h = with_accounts();
    let t0 = h.now;
    assert_eq!(h.transfer(pending(10, 1, 2, 5, 10)), R::Ok);
    assert_eq!(h.transfer(pending(11, 1, 2, 6, 20)), R::Ok);
    assert_eq!(h.transfer(pending(12, 1, 2, 7, 0)), R::Ok);
    let ts10 = h.sm.transfer_by_id(10).unwrap().timestamp;
    assert_eq!(h.sm.next_expiry_ns(), Some(ts10 + 10 * S));
    h.now = t0 + 5 * S;
    assert!(h.expire().is_empty());
    // Past the deadline, before any sweep: posting already fails.
    h.now = ts10 + 10 * S;
    assert_eq!(h.transfer(post(20, 10, 0)), R::PendingTransferExpired);
    assert!(h.event.failed.is_empty(), "expiry is final, not transient");
    assert_eq!(h.expire(), [10]);
    assert_eq!(h.balances(1), (13, 0, 0, 0));
    assert_eq!(h.transfer(void(20, 10)), R::PendingTransferExpired);
    let ts11 = h.sm.transfer_by_id(11).unwrap().timestamp;
    assert_eq!(h.sm.next_expiry_ns(), Some(ts11 + 20 * S));
    // Voided before its deadline: the sweep skips it and the heap empties.
    assert_eq!(h.transfer(void(21, 11)), R::Ok);
    assert_eq!(h.sm.next_expiry_ns(), None);
    h.now += 100 * S;
    assert!(h.expire().is_empty());
    assert_eq!(h.balances(1), (7, 0, 0, 0));
    assert_eq!(h.sm.counts().pending, 1);
    // Timeout overflow.
    h.now = u64::MAX - S;
    assert_eq!(h.transfer(pending(30, 1, 2, 1, 2)), R::OverflowsTimeout);
}

#[test]
fn expire_is_bounded_per_event() {
    let mut h = with_accounts();
    let batch: Vec<Transfer> =
        (0..EXPIRED_PER_EVENT_MAX as u128 + 3).map(|i| pending(100 + i, 1, 2, 1, 1)).collect();
    for chunk in batch.chunks(EVENTS_PER_REQUEST_MAX) {
        assert_eq!(h.transfers(chunk), []);
    }
    h.now += 1000 * S;
    assert_eq!(h.expire().len(), EXPIRED_PER_EVENT_MAX);
    assert_eq!(h.expire().len(), 3);
    assert_eq!(h.sm.counts().pending, 0);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
}

#[test]
fn balance_limits_count_pending_amounts() {
    let mut h = Harness::new();
    let dmnec = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    let cmned = AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    assert_eq!(h.accounts(&[acct(1), acct_flags(2, dmnec), acct_flags(3, cmned)]), []);
    assert_eq!(h.transfer(xfer(10, 1, 2, 100)), R::Ok); // 2 has 100 to spend
    assert_eq!(h.transfer(pending(11, 2, 1, 70, 0)), R::Ok);
    assert_eq!(h.transfer(xfer(12, 2, 1, 31)), R::ExceedsCredits);
    assert_eq!(h.event.failed, [FailedId::new(12, R::ExceedsCredits)]);
    assert_eq!(h.transfer(xfer(13, 2, 1, 30)), R::Ok);
    // Credits of 3 may not exceed its debits.
    assert_eq!(h.transfer(xfer(14, 1, 3, 1)), R::ExceedsDebits);
    assert_eq!(h.transfer(xfer(15, 3, 1, 5)), R::Ok);
    assert_eq!(h.transfer(pending(16, 1, 3, 5, 0)), R::Ok);
    assert_eq!(h.transfer(xfer(17, 1, 3, 1)), R::ExceedsDebits);
}

#[test]
fn account_limits_allow_an_overdraft_and_are_validated() {
    let mut h = with_accounts();
    let dmnec = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    assert_eq!(
        h.accounts(&[
            acct_flags(5, dmnec),
            acct_flags(6, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        ]),
        []
    );
    assert_eq!(h.transfer(xfer(10, 5, 1, 1)), R::ExceedsCredits);
    assert_eq!(h.limit(5, 50), R::Ok);
    assert_eq!(h.event.limits[0].timestamp, h.sm.clock_ns());
    assert_eq!(h.transfer(xfer(11, 5, 1, 50)), R::Ok);
    assert_eq!(h.transfer(xfer(12, 5, 1, 1)), R::ExceedsCredits);
    assert_eq!(h.limit(5, 49), R::LimitBelowCurrentBalance);
    assert_eq!(h.limit(6, 10), R::Ok);
    assert_eq!(h.transfer(xfer(13, 1, 6, 10)), R::Ok);
    assert_eq!(h.limit(6, 9), R::LimitBelowCurrentBalance);
    let cases = [
        (
            AccountLimit { account_id: 5, timestamp: 1, ..Default::default() },
            R::TimestampMustBeZero,
        ),
        (AccountLimit { account_id: 5, reserved: [1; 24], ..Default::default() }, R::ReservedField),
        (AccountLimit { account_id: 0, ..Default::default() }, R::AccountIdMustNotBeZero),
        (AccountLimit { account_id: u128::MAX, ..Default::default() }, R::AccountIdMustNotBeZero),
        (AccountLimit { account_id: 77, ..Default::default() }, R::AccountNotFound),
        (AccountLimit { account_id: 1, ..Default::default() }, R::AccountHasNoBalanceLimitFlag),
    ];
    for (l, code) in cases {
        assert_eq!(single(h.limits(&[l])), code);
    }
    let mut out = Vec::new();
    h.sm.lookup_account_limits(&[5, 77, 1], &mut out);
    assert_eq!(out.iter().map(|l| (l.account_id, l.limit)).collect::<Vec<_>>(), [(5, 50), (1, 0)]);
}

#[test]
fn balancing_transfers_clamp_to_what_the_limit_allows() {
    let mut h = Harness::new();
    let dmnec = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    let cmned = AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    assert_eq!(h.accounts(&[acct(1), acct_flags(2, dmnec), acct_flags(3, cmned)]), []);
    assert_eq!(h.transfer(xfer(10, 1, 2, 40)), R::Ok); // stock of 40
    let sell = Transfer { flags: TransferFlags::BALANCING_DEBIT, ..xfer(11, 2, 1, 100) };
    assert_eq!(h.transfer(sell), R::Ok);
    assert_eq!(h.sm.transfer_by_id(11).unwrap().amount, 40);
    assert_eq!(h.transfer(sell), R::Exists);
    assert_eq!(h.transfer(Transfer { amount: 39, ..sell }), R::ExistsWithDifferentAmount);
    assert_eq!(h.transfer(Transfer { id: 12, ..sell }), R::ExceedsCredits);
    // balancing_credit against the credit account's limit, pending.
    assert_eq!(h.transfer(xfer(13, 3, 1, 25)), R::Ok);
    let t = Transfer {
        flags: TransferFlags::BALANCING_CREDIT | TransferFlags::PENDING,
        ..xfer(14, 1, 3, 1000)
    };
    assert_eq!(h.transfer(t), R::Ok);
    assert_eq!(h.sm.transfer_by_id(14).unwrap().amount, 25);
    assert_eq!(h.transfer(Transfer { id: 15, ..t }), R::ExceedsDebits);
}

#[test]
fn overflow_codes() {
    let m = u128::MAX;
    let cases: [(&[Transfer], Transfer, ResultCode); 6] = [
        (&[xfer(10, 1, 2, m)], xfer(11, 1, 3, 1), R::OverflowsDebitsPosted),
        (&[xfer(10, 1, 2, m)], xfer(11, 3, 2, 1), R::OverflowsCreditsPosted),
        (&[pending(10, 1, 2, m, 0)], pending(11, 1, 3, 1, 0), R::OverflowsDebitsPending),
        (&[pending(10, 1, 2, m, 0)], pending(11, 3, 2, 1, 0), R::OverflowsCreditsPending),
        (&[xfer(10, 1, 2, m)], pending(11, 1, 3, 1, 0), R::OverflowsDebits),
        (&[xfer(10, 1, 2, m)], pending(11, 3, 2, 1, 0), R::OverflowsCredits),
    ];
    for (setup, t, code) in cases {
        let mut h = with_accounts();
        assert_eq!(h.transfers(setup), []);
        assert_eq!(h.transfer(t), code);
        assert_eq!(h.event.failed, [FailedId::new(11, code)]);
    }
}

#[test]
fn linked_transfer_chains_roll_back_as_a_whole() {
    let mut h = with_accounts();
    let l = TransferFlags::LINKED;
    assert_eq!(h.transfer(pending(5, 1, 2, 10, 0)), R::Ok);
    let r = h.transfers(&[
        Transfer { flags: l, ..xfer(10, 1, 2, 3) },
        Transfer { flags: l | TransferFlags::POST_PENDING_TRANSFER, ..post(11, 5, 4) },
        Transfer { flags: l | TransferFlags::PENDING, timeout: 1, ..xfer(12, 2, 3, 5) },
        xfer(13, 1, 77, 1),
        xfer(14, 1, 2, 1),
    ]);
    assert_eq!(
        r,
        [
            (0, R::LinkedEventFailed),
            (1, R::LinkedEventFailed),
            (2, R::LinkedEventFailed),
            (3, R::CreditAccountNotFound)
        ]
    );
    assert_eq!(h.event.transfers.iter().map(|t| t.id).collect::<Vec<_>>(), [14]);
    assert_eq!(h.event.failed, [FailedId::new(13, R::CreditAccountNotFound)]);
    assert!(h.sm.transfer_by_id(10).is_none() && h.sm.transfer_by_id(12).is_none());
    assert_eq!(h.sm.next_expiry_ns(), None, "a rolled-back pending never expires");
    assert_eq!(h.balances(1), (10, 1, 0, 0));
    assert_eq!(h.sm.counts().pending, 1);
    // The post was undone: the pending transfer can still be posted.
    assert_eq!(h.transfer(post(11, 5, 4)), R::Ok);
    // Events after the failure in the same chain are not applied.
    let r = h.transfers(&[
        Transfer { flags: l, ..xfer(20, 1, 1, 3) },
        Transfer { flags: l, ..xfer(21, 1, 2, 3) },
        xfer(22, 1, 2, 3),
    ]);
    assert_eq!(
        r,
        [(0, R::AccountsMustBeDifferent), (1, R::LinkedEventFailed), (2, R::LinkedEventFailed)]
    );
    assert!(h.event.is_empty());
    // Open chain.
    let r = h.transfers(&[xfer(30, 1, 2, 1), Transfer { flags: l, ..xfer(31, 1, 2, 1) }]);
    assert_eq!(r, [(1, R::LinkedEventChainOpen)]);
    // A good chain with a pending created and posted inside it.
    let r = h.transfers(&[
        Transfer { flags: l | TransferFlags::PENDING, timeout: 5, ..xfer(40, 1, 2, 9) },
        Transfer { flags: l | TransferFlags::POST_PENDING_TRANSFER, ..post(41, 40, 0) },
        xfer(42, 2, 1, 1),
    ]);
    assert_eq!(r, []);
    assert_eq!(h.sm.next_expiry_ns(), None);
}

#[test]
fn history_and_account_transfer_queries() {
    let mut h = Harness::new();
    assert_eq!(h.accounts(&[acct_flags(1, AccountFlags::HISTORY), acct(2)]), []);
    for i in 0..6u128 {
        let t = if i % 2 == 0 { xfer(10 + i, 1, 2, 10) } else { xfer(10 + i, 2, 1, 1) };
        assert_eq!(h.transfer(t), R::Ok);
    }
    let ts = |id| h.sm.transfer_by_id(id).unwrap().timestamp;
    let both = AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS;
    let filter = AccountFilter { account_id: 1, limit: 10, flags: both, ..Default::default() };
    let mut out = Vec::new();
    let ids = |out: &Vec<Transfer>| out.iter().map(|t| t.id).collect::<Vec<_>>();
    h.sm.get_account_transfers(&filter, &mut out);
    assert_eq!(ids(&out), [10, 11, 12, 13, 14, 15]);
    h.sm.get_account_transfers(
        &AccountFilter { flags: AccountFilterFlags::DEBITS, ..filter },
        &mut out,
    );
    assert_eq!(ids(&out), [10, 12, 14]);
    h.sm.get_account_transfers(
        &AccountFilter { flags: both | AccountFilterFlags::REVERSED, limit: 2, ..filter },
        &mut out,
    );
    assert_eq!(ids(&out), [15, 14]);
    // Paging: next page starts one past the last timestamp.
    h.sm.get_account_transfers(&AccountFilter { limit: 2, ..filter }, &mut out);
    assert_eq!(ids(&out), [10, 11]);
    let next = AccountFilter { limit: 2, timestamp_min: ts(11) + 1, ..filter };
    h.sm.get_account_transfers(&next, &mut out);
    assert_eq!(ids(&out), [12, 13]);
    h.sm.get_account_transfers(&AccountFilter { timestamp_max: ts(12), ..next }, &mut out);
    assert_eq!(ids(&out), [12]);
    // Invalid filters return nothing.
    for bad in [
        AccountFilter { limit: 0, ..filter },
        AccountFilter { flags: 0, ..filter },
        AccountFilter { flags: 1 << 7, ..filter },
        AccountFilter { account_id: 0, ..filter },
        AccountFilter { account_id: 99, ..filter },
        AccountFilter { reserved: [1; 24], ..filter },
        AccountFilter { timestamp_min: 10, timestamp_max: 9, ..filter },
    ] {
        h.sm.get_account_transfers(&bad, &mut out);
        assert!(out.is_empty(), "{bad:?}");
    }
    // Balances of the history account after every transfer.
    let mut rows = Vec::new();
    h.sm.get_account_balances(&filter, &mut rows);
    assert_eq!(rows.len(), 6);
    assert_eq!((rows[5].debits_posted, rows[5].credits_posted), (30, 3));
    assert_eq!(rows[0].timestamp, ts(10));
    h.sm.get_account_balances(
        &AccountFilter {
            flags: AccountFilterFlags::CREDITS | AccountFilterFlags::REVERSED,
            ..filter
        },
        &mut rows,
    );
    assert_eq!(rows.iter().map(|r| r.credits_posted).collect::<Vec<_>>(), [3, 2, 1]);
    h.sm.get_account_balances(&AccountFilter { account_id: 2, ..filter }, &mut rows);
    assert!(rows.is_empty(), "only history accounts keep rows");
    // Lookups: found ones only, request order.
    let mut accounts = Vec::new();
    h.sm.lookup_accounts(&[2, 99, 1], &mut accounts);
    assert_eq!(accounts.iter().map(|a| a.id).collect::<Vec<_>>(), [2, 1]);
    h.sm.lookup_transfers(&[15, 0, 10], &mut out);
    assert_eq!(ids(&out), [15, 10]);
}

#[test]
fn images_round_trip_and_are_checked() {
    let mut h = with_accounts();
    assert_eq!(
        h.accounts(&[acct_flags(
            5,
            AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
        )]),
        []
    );
    assert_eq!(h.limit(5, 100), R::Ok);
    assert_eq!(
        h.transfers(&[pending(10, 5, 1, 20, 30), xfer(11, 5, 2, 3), xfer(12, 1, 88, 1)]),
        [(2, R::CreditAccountNotFound)]
    );
    assert_eq!(h.transfers(&[pending(13, 1, 2, 4, 0), void(14, 13)]), []);
    let mut bytes = rkyv::util::AlignedVec::<16>::new();
    h.sm.write_image(&mut bytes);
    let back = StateMachine::from_image(&bytes).unwrap();
    assert_eq!(back.state_hash(), h.sm.state_hash());
    assert_eq!(back.counts(), h.sm.counts());
    assert_eq!(back.clock_ns(), h.sm.clock_ns());
    assert_eq!(back.next_expiry_ns(), h.sm.next_expiry_ns());
    let filter = AccountFilter {
        account_id: 5,
        limit: 100,
        flags: AccountFilterFlags::DEBITS,
        ..Default::default()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    back.get_account_balances(&filter, &mut a);
    h.sm.get_account_balances(&filter, &mut b);
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    // Misaligned input is copied, not refused.
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    assert_eq!(StateMachine::from_image(&shifted[1..]).unwrap().state_hash(), h.sm.state_hash());
    // Damage is refused.
    assert!(matches!(StateMachine::from_image(&bytes[..8]), Err(ImageError::TooShort(8))));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(StateMachine::from_image(&bad), Err(ImageError::Magic(_))));
    let mut bad = bytes.clone();
    bad[8] = 99;
    assert!(matches!(StateMachine::from_image(&bad), Err(ImageError::Version { .. })));
    assert!(matches!(
        StateMachine::from_image(&bytes[..bytes.len() - 16]),
        Err(ImageError::Length { .. })
    ));
    // A damaged archive (the last part overwritten) is refused.
    let mut bad = bytes.clone();
    let (_, parts) = image_parts(&bytes);
    let last = bad.len() - parts.last().unwrap().len();
    let len = u64::from_le_bytes(bad[last..last + 8].try_into().unwrap()) as usize;
    bad[last + 16..last + 16 + len].fill(0xff);
    assert!(matches!(StateMachine::from_image(&bad), Err(ImageError::Archive { .. })));
    // The rebuilt state keeps working.
    let mut back = back;
    let mut results = Vec::new();
    let mut event = Event::default();
    back.create_transfers(h.now, &[post(20, 10, 0), xfer(12, 1, 2, 1)], &mut results, &mut event);
    assert_eq!(results, [CreateResult { index: 1, result: R::IdAlreadyFailed }]);
}

/// Splits image bytes into (header, parts) at the part boundaries.
fn image_parts(bytes: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut parts = Vec::new();
    let mut offset = 16;
    while offset < bytes.len() {
        let len = u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap()) as usize;
        let end = offset + 16 + len.next_multiple_of(16);
        parts.push(bytes[offset..end].to_vec());
        offset = end;
    }
    (bytes[..16].to_vec(), parts)
}

fn join_image(header: &[u8], parts: &[Vec<u8>]) -> rkyv::util::AlignedVec<16> {
    let mut out = rkyv::util::AlignedVec::<16>::new();
    out.extend_from_slice(&header[..12]);
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

#[test]
fn images_are_written_in_bounded_parts_and_a_missing_or_misplaced_part_is_refused() {
    let mut h = with_accounts();
    let history = AccountFlags::HISTORY;
    assert_eq!(h.accounts(&[acct_flags(20, history), acct_flags(21, history)]), []);
    let wallets: Vec<Account> =
        (22..26).map(|id| acct_flags(id, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)).collect();
    assert_eq!(h.accounts(&wallets), []);
    for wallet in 22..26 {
        assert_eq!(h.limit(wallet, 10), R::Ok);
    }
    let mut id = 100;
    for round in 0..4u128 {
        let mut batch = Vec::new();
        for _ in 0..5 {
            batch.push(xfer(id, 20, 1 + round % 2, 1));
            batch.push(pending(id + 1, 21, 2, 1, 3600));
            id += 2;
        }
        assert_eq!(h.transfers(&batch), []);
        // Remembered failed ids: past the wallet's limit.
        assert_eq!(h.transfer(xfer(1000 + round, 22, 1, 1000)), R::ExceedsCredits);
    }
    let mut bytes = rkyv::util::AlignedVec::<16>::new();
    h.sm.write_image(&mut bytes);
    let (header, parts) = image_parts(&bytes);
    let declared = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    assert_eq!(declared, parts.len());
    // 10 accounts, 4 limits, 20 + 20 history rows, 40 transfers, 20 expiries, 4 failed ids;
    // 3 records per part.
    assert!(parts.len() > 40, "{} parts", parts.len());
    // Each part holds its own records only: the image is the records' size plus framing.
    let records = 10 * 128 + 4 * 64 + 40 * 128 + 40 * 129 + 4 * 32;
    assert!(bytes.len() < records * 2, "{} bytes for {records} bytes of records", bytes.len());
    let back = StateMachine::from_image(&bytes).unwrap();
    assert_eq!(back.state_hash(), h.sm.state_hash());
    assert_eq!(back.counts(), h.sm.counts());
    assert_eq!((back.counts().failed_ids, back.counts().account_limits), (4, 4));
    assert_eq!(back.next_expiry_ns(), h.sm.next_expiry_ns());
    let filter = AccountFilter {
        account_id: 20,
        limit: 100,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        ..Default::default()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    back.get_account_balances(&filter, &mut a);
    h.sm.get_account_balances(&filter, &mut b);
    assert_eq!(a, b);
    assert_eq!(a.len(), 20);

    // Every part missing in turn: the totals (or the order) refuse it.
    for skip in 0..parts.len() {
        let mut fewer = parts.clone();
        fewer.remove(skip);
        let err = StateMachine::from_image(&join_image(&header, &fewer)).err();
        assert!(matches!(err, Some(ImageError::Inconsistent(_))), "without part {skip}: {err:?}");
    }
    // Two parts swapped across kinds: refused.
    let mut swapped = parts.clone();
    let last = swapped.len() - 1;
    swapped.swap(1, last);
    assert!(StateMachine::from_image(&join_image(&header, &swapped)).is_err());
    // An accounts part twice: its ids are repeated.
    let mut twice = parts.clone();
    twice.insert(2, parts[1].clone());
    match StateMachine::from_image(&join_image(&header, &twice)) {
        Err(ImageError::Inconsistent(reason)) => assert!(reason.contains("repeated"), "{reason}"),
        other => panic!("an accounts part twice: {:?}", other.map(|_| ())),
    }
    // A part cut short, or bytes after the last part: refused.
    let cut = &bytes[..bytes.len() - 16];
    assert!(matches!(StateMachine::from_image(cut), Err(ImageError::Length { .. })));
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0u8; 16]);
    assert!(matches!(StateMachine::from_image(&longer), Err(ImageError::Length { .. })));
}

#[test]
fn replay_refuses_events_that_do_not_fit() {
    let mut h = with_accounts();
    assert_eq!(h.transfer(xfer(10, 1, 2, 5)), R::Ok);
    event::encode(&h.event, &mut h.bytes);
    let archived = event::access(&h.bytes).unwrap();
    assert_eq!(h.replica.apply_event(archived), Err(ReplayError::TransferExists(10)));
    let mut fresh = StateMachine::new();
    assert!(matches!(
        fresh.apply_event(archived),
        Err(ReplayError::AccountNotFound { transfer: 10, account: 1 })
    ));
}

#[test]
fn totals_balance_per_ledger() {
    let mut h = with_accounts();
    assert_eq!(h.accounts(&[Account { ledger: 2, ..acct(8) }]), []);
    assert_eq!(
        h.transfers(&[
            xfer(10, 1, 2, 5),
            pending(11, 2, 3, 2, 0),
            Transfer { ledger: 2, ..xfer(12, 9, 8, 7) }
        ]),
        []
    );
    let totals = h.sm.ledger_totals();
    assert_eq!(
        totals,
        [
            LedgerTotals {
                ledger: 1,
                debits_posted: 5,
                credits_posted: 5,
                debits_pending: 2,
                credits_pending: 2
            },
            LedgerTotals {
                ledger: 2,
                debits_posted: 7,
                credits_posted: 7,
                debits_pending: 0,
                credits_pending: 0
            },
        ]
    );
    assert_eq!(
        h.sm.counts(),
        Counts { accounts: 5, transfers: 3, pending: 1, failed_ids: 0, account_limits: 0 }
    );
}

#[test]
#[should_panic(expected = "batch of 8191 events")]
fn oversized_batches_are_refused() {
    let mut h = Harness::new();
    let batch = vec![acct(1); EVENTS_PER_REQUEST_MAX + 1];
    h.accounts(&batch);
}

#[test]
fn verify_finds_a_broken_state() {
    let mut h = with_accounts();
    assert_eq!(h.transfers(&[xfer(10, 1, 2, 5)]), []);
    assert_eq!(h.sm.verify(), Ok(()));
    // One side of a transfer lost: debits no longer equal credits.
    h.sm.accounts[0].debits_posted -= 1;
    assert!(h.sm.verify().unwrap_err().contains("debits differ from credits"));
    h.sm.accounts[0].debits_posted += 1;
    // A balance-limit flag whose rule no longer holds.
    h.sm.accounts[0].flags |= AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    assert!(h.sm.verify().unwrap_err().contains("exceed credits"));
    h.sm.accounts[0].flags &= !AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    // An index that points elsewhere.
    h.sm.accounts.swap(0, 1);
    h.sm.account_ext.swap(0, 1);
    h.sm.account_keys.swap(0, 1);
    assert!(h.sm.verify().unwrap_err().contains("is not found at its index"));
    h.sm.accounts.swap(0, 1);
    h.sm.account_ext.swap(0, 1);
    h.sm.account_keys.swap(0, 1);
    assert_eq!(h.sm.verify(), Ok(()));
    // A change that leaves every rule true but did not go through the state hash.
    h.sm.transfers[0].user_data_64 ^= 1;
    assert!(h.sm.verify().unwrap_err().contains("state hash sums"));
}

#[test]
#[should_panic(expected = "invariant broken after a balance change")]
fn a_broken_limit_after_a_balance_change_panics() {
    let mut h = with_accounts();
    // Account 1 claims a limit rule its balance already breaks (as a bug would leave it):
    // the next change to it must not go unnoticed.
    h.sm.accounts[0].flags |= AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    h.sm.accounts[0].debits_posted = 10;
    h.sm.accounts[1].credits_posted = 10;
    h.sm.assert_balances_hold(0);
}

#[test]
fn eviction_keeps_pending_transfers_and_needs_cold_hits_for_the_rest() {
    let mut h = with_accounts();
    assert_eq!(h.accounts(&[acct_flags(4, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]), []);
    assert_eq!(h.transfers(&[xfer(10, 1, 2, 5), xfer(11, 2, 3, 1), pending(12, 1, 3, 7, 0)]), []);
    // A transient failure: remembered.
    assert_eq!(single(h.transfers(&[xfer(13, 4, 1, 5)])), R::ExceedsCredits);
    let hash = h.sm.state_hash();
    let counts = h.sm.counts();
    assert_eq!(h.sm.in_memory(), (3, 1));

    // An index that holds everything up to now: all but the pending transfer may go.
    let evicted = h.sm.evict(h.sm.clock_ns(), usize::MAX);
    assert_eq!(evicted, 4, "three creations and one failed id");
    assert_eq!(h.sm.in_memory(), (1, 0));
    assert_eq!(h.sm.state_hash(), hash, "eviction is not a change of the ledger");
    assert_eq!(h.sm.counts(), counts);
    assert_eq!(h.sm.verify(), Ok(()));
    assert!(h.sm.transfer_by_id(10).is_none());

    // Without what the index holds, an evicted id would look new; with it, the answers are
    // the same as if it were in memory.
    let retry = [xfer(10, 1, 2, 5), xfer(11, 2, 3, 2), xfer(13, 4, 1, 5)];
    let hits = h.sm.cold_hits();
    hits.clear();
    for id in [10, 11] {
        let (t, state) = h.replica.transfer_anywhere(id).unwrap();
        hits.add_transfer(t, state);
    }
    hits.add_failed(13);
    assert_eq!(
        h.transfers(&retry),
        [(0, R::Exists), (1, R::ExistsWithDifferentAmount), (2, R::IdAlreadyFailed)]
    );
    // The pending transfer stayed in memory: it can still be posted.
    assert_eq!(h.transfers(&[post(14, 12, 0)]), []);
    assert_eq!(h.sm.transfer_state(12), Some(TransferState::Posted));
    // Once the index holds the post too, the pending transfer goes as well.
    h.sm.cold_hits().clear();
    h.sm.evict(h.sm.clock_ns(), usize::MAX);
    assert_eq!(h.sm.in_memory(), (0, 0));
    // A second post finds the pending transfer on disk, already posted.
    let (p, state) = h.replica.transfer_anywhere(12).unwrap();
    h.sm.cold_hits().add_transfer(p, state);
    assert_eq!(single(h.transfers(&[post(15, 12, 0)])), R::PendingTransferAlreadyPosted);

    // A snapshot of the evicted state loads to the same hash and counts.
    let mut image = Default::default();
    h.sm.write_image(&mut image);
    let back = StateMachine::from_image(&image).unwrap();
    assert_eq!(back.state_hash(), h.sm.state_hash());
    assert_eq!(back.counts(), h.sm.counts());
    assert_eq!(back.in_memory(), h.sm.in_memory());
    assert_eq!(back.verify(), Ok(()));
}
