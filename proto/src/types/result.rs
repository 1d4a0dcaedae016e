//! Result codes: one stable number and one snake_case name per outcome.
//!
//! Numbers are part of the wire protocol and the journal: never renumber, only append.
//! `docs/protocol.md` lists every code with its meaning.

macro_rules! result_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $num:literal => $name:literal, )*) => {
        /// The outcome of one event (account, transfer or limit) of a create request.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum ResultCode {
            $( $(#[doc = $doc])* $variant = $num, )*
        }

        impl ResultCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ResultCode] = &[ $( ResultCode::$variant, )* ];

            /// The stable snake_case name (`"exceeds_credits"`).
            pub fn name(self) -> &'static str {
                match self { $( ResultCode::$variant => $name, )* }
            }

            /// The code with this name, if any.
            pub fn from_name(name: &str) -> Option<ResultCode> {
                match name { $( $name => Some(ResultCode::$variant), )* _ => None }
            }

            /// The code with this number, if any.
            pub fn from_u32(n: u32) -> Option<ResultCode> {
                match n { $( $num => Some(ResultCode::$variant), )* _ => None }
            }

            /// One line that says what the code means.
            pub fn description(self) -> &'static str {
                match self { $( ResultCode::$variant => concat!($($doc),*), )* }
            }
        }
    };
}

result_codes! {
    /// The event was applied.
    Ok = 0 => "ok",
    /// Another event of the same linked chain failed, so this one was not applied.
    LinkedEventFailed = 1 => "linked_event_failed",
    /// The last event of the request has `linked` set: the chain is never closed.
    LinkedEventChainOpen = 2 => "linked_event_chain_open",
    /// `timestamp` is set by the ledger and must be 0 on input.
    TimestampMustBeZero = 3 => "timestamp_must_be_zero",
    /// A reserved field is not 0.
    ReservedField = 4 => "reserved_field",
    /// A flag bit that has no meaning is set.
    FlagsUnknown = 5 => "flags_unknown",
    /// `id` must not be 0.
    IdMustNotBeZero = 6 => "id_must_not_be_zero",
    /// `id` must not be 2^128 - 1.
    IdMustNotBeIntMax = 7 => "id_must_not_be_int_max",
    /// Two flags that exclude each other are both set.
    FlagsAreMutuallyExclusive = 8 => "flags_are_mutually_exclusive",
    /// `ledger` must not be 0.
    LedgerMustNotBeZero = 9 => "ledger_must_not_be_zero",
    /// `code` must not be 0.
    CodeMustNotBeZero = 10 => "code_must_not_be_zero",
    /// A new account's `debits_pending` must be 0: balances are kept by the ledger.
    DebitsPendingMustBeZero = 11 => "debits_pending_must_be_zero",
    /// A new account's `debits_posted` must be 0.
    DebitsPostedMustBeZero = 12 => "debits_posted_must_be_zero",
    /// A new account's `credits_pending` must be 0.
    CreditsPendingMustBeZero = 13 => "credits_pending_must_be_zero",
    /// A new account's `credits_posted` must be 0.
    CreditsPostedMustBeZero = 14 => "credits_posted_must_be_zero",
    /// An event with this id exists with identical fields: nothing changed (a safe retry).
    Exists = 15 => "exists",
    /// An event with this id exists with different `flags`.
    ExistsWithDifferentFlags = 16 => "exists_with_different_flags",
    /// An event with this id exists with a different `user_data_128`.
    ExistsWithDifferentUserData128 = 17 => "exists_with_different_user_data_128",
    /// An event with this id exists with a different `user_data_64`.
    ExistsWithDifferentUserData64 = 18 => "exists_with_different_user_data_64",
    /// An event with this id exists with a different `user_data_32`.
    ExistsWithDifferentUserData32 = 19 => "exists_with_different_user_data_32",
    /// An event with this id exists with a different `ledger`.
    ExistsWithDifferentLedger = 20 => "exists_with_different_ledger",
    /// An event with this id exists with a different `code`.
    ExistsWithDifferentCode = 21 => "exists_with_different_code",
    /// A transfer with this id exists with a different `debit_account_id`.
    ExistsWithDifferentDebitAccountId = 22 => "exists_with_different_debit_account_id",
    /// A transfer with this id exists with a different `credit_account_id`.
    ExistsWithDifferentCreditAccountId = 23 => "exists_with_different_credit_account_id",
    /// A transfer with this id exists with a different `amount`.
    ExistsWithDifferentAmount = 24 => "exists_with_different_amount",
    /// A transfer with this id exists with a different `pending_id`.
    ExistsWithDifferentPendingId = 25 => "exists_with_different_pending_id",
    /// A transfer with this id exists with a different `timeout`.
    ExistsWithDifferentTimeout = 26 => "exists_with_different_timeout",
    /// This id failed earlier for a reason that could have changed since; it stays failed.
    IdAlreadyFailed = 27 => "id_already_failed",
    /// `debit_account_id` must not be 0.
    DebitAccountIdMustNotBeZero = 28 => "debit_account_id_must_not_be_zero",
    /// `debit_account_id` must not be 2^128 - 1.
    DebitAccountIdMustNotBeIntMax = 29 => "debit_account_id_must_not_be_int_max",
    /// `credit_account_id` must not be 0.
    CreditAccountIdMustNotBeZero = 30 => "credit_account_id_must_not_be_zero",
    /// `credit_account_id` must not be 2^128 - 1.
    CreditAccountIdMustNotBeIntMax = 31 => "credit_account_id_must_not_be_int_max",
    /// The debit and credit accounts are the same account.
    AccountsMustBeDifferent = 32 => "accounts_must_be_different",
    /// `pending_id` must be 0 unless the transfer posts or voids a pending transfer.
    PendingIdMustBeZero = 33 => "pending_id_must_be_zero",
    /// A post or void must name the pending transfer in `pending_id`.
    PendingIdMustNotBeZero = 34 => "pending_id_must_not_be_zero",
    /// `pending_id` must not be 2^128 - 1.
    PendingIdMustNotBeIntMax = 35 => "pending_id_must_not_be_int_max",
    /// `pending_id` must differ from the transfer's own `id`.
    PendingIdMustBeDifferent = 36 => "pending_id_must_be_different",
    /// `timeout` is only for `pending` transfers.
    TimeoutReservedForPendingTransfer = 37 => "timeout_reserved_for_pending_transfer",
    /// `amount` must not be 0 (except on a post or void, where 0 means the pending amount).
    AmountMustNotBeZero = 38 => "amount_must_not_be_zero",
    /// No account has `debit_account_id`.
    DebitAccountNotFound = 39 => "debit_account_not_found",
    /// No account has `credit_account_id`.
    CreditAccountNotFound = 40 => "credit_account_not_found",
    /// The two accounts are on different ledgers.
    AccountsMustHaveTheSameLedger = 41 => "accounts_must_have_the_same_ledger",
    /// The transfer's `ledger` differs from its accounts' ledger.
    TransferMustHaveTheSameLedgerAsAccounts = 42 => "transfer_must_have_the_same_ledger_as_accounts",
    /// No transfer has `pending_id`.
    PendingTransferNotFound = 43 => "pending_transfer_not_found",
    /// The transfer named by `pending_id` is not a pending transfer.
    PendingTransferNotPending = 44 => "pending_transfer_not_pending",
    /// The pending transfer has a different `debit_account_id`.
    PendingTransferHasDifferentDebitAccountId = 45 => "pending_transfer_has_different_debit_account_id",
    /// The pending transfer has a different `credit_account_id`.
    PendingTransferHasDifferentCreditAccountId = 46 => "pending_transfer_has_different_credit_account_id",
    /// The pending transfer has a different `ledger`.
    PendingTransferHasDifferentLedger = 47 => "pending_transfer_has_different_ledger",
    /// The pending transfer has a different `code`.
    PendingTransferHasDifferentCode = 48 => "pending_transfer_has_different_code",
    /// A post's amount is above the pending amount.
    ExceedsPendingTransferAmount = 49 => "exceeds_pending_transfer_amount",
    /// A void's amount is neither 0 nor the pending amount.
    PendingTransferHasDifferentAmount = 50 => "pending_transfer_has_different_amount",
    /// The pending transfer was already posted.
    PendingTransferAlreadyPosted = 51 => "pending_transfer_already_posted",
    /// The pending transfer was already voided.
    PendingTransferAlreadyVoided = 52 => "pending_transfer_already_voided",
    /// The pending transfer's timeout passed: the ledger voided it.
    PendingTransferExpired = 53 => "pending_transfer_expired",
    /// `debits_pending` of an account would pass 2^128 - 1.
    OverflowsDebitsPending = 54 => "overflows_debits_pending",
    /// `credits_pending` of an account would pass 2^128 - 1.
    OverflowsCreditsPending = 55 => "overflows_credits_pending",
    /// `debits_posted` of an account would pass 2^128 - 1.
    OverflowsDebitsPosted = 56 => "overflows_debits_posted",
    /// `credits_posted` of an account would pass 2^128 - 1.
    OverflowsCreditsPosted = 57 => "overflows_credits_posted",
    /// `debits_pending + debits_posted` of an account would pass 2^128 - 1.
    OverflowsDebits = 58 => "overflows_debits",
    /// `credits_pending + credits_posted` of an account would pass 2^128 - 1.
    OverflowsCredits = 59 => "overflows_credits",
    /// `timestamp + timeout` would pass 2^64 - 1 nanoseconds.
    OverflowsTimeout = 60 => "overflows_timeout",
    /// The debit account's debits would exceed its credits (plus its limit).
    ExceedsCredits = 61 => "exceeds_credits",
    /// The credit account's credits would exceed its debits (plus its limit).
    ExceedsDebits = 62 => "exceeds_debits",
    /// No account has this id (set_account_limits).
    AccountNotFound = 63 => "account_not_found",
    /// A limit needs `debits_must_not_exceed_credits` or `credits_must_not_exceed_debits`.
    AccountHasNoBalanceLimitFlag = 64 => "account_has_no_balance_limit_flag",
    /// The account's current balance already goes further past zero than the new limit.
    LimitBelowCurrentBalance = 65 => "limit_below_current_balance",
    /// `account_id` must not be 0 or 2^128 - 1 (set_account_limits).
    AccountIdMustNotBeZero = 66 => "account_id_must_not_be_zero",
}

impl ResultCode {
    /// Whether an id that failed with this code is remembered, so that a retry returns
    /// `id_already_failed` instead of succeeding later: the failure depends on state that can
    /// change (an account or pending transfer created later, a balance that moves).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ResultCode::DebitAccountNotFound
                | ResultCode::CreditAccountNotFound
                | ResultCode::PendingTransferNotFound
                | ResultCode::ExceedsCredits
                | ResultCode::ExceedsDebits
                | ResultCode::OverflowsDebitsPending
                | ResultCode::OverflowsCreditsPending
                | ResultCode::OverflowsDebitsPosted
                | ResultCode::OverflowsCreditsPosted
                | ResultCode::OverflowsDebits
                | ResultCode::OverflowsCredits
        )
    }
}

impl std::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One failed event of a create request: its index in the request and its code.
/// Replies list only failures; an index that is absent succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CreateResult {
    pub index: u32,
    pub result: ResultCode,
}

impl CreateResult {
    /// Wire size: `index@0 u32, result@4 u32`.
    pub const SIZE: usize = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique_and_round_trip() {
        let mut names = std::collections::HashSet::new();
        for (i, code) in ResultCode::ALL.iter().enumerate() {
            assert_eq!(*code as u32, i as u32, "codes are dense and in order");
            assert_eq!(ResultCode::from_u32(*code as u32), Some(*code));
            assert_eq!(ResultCode::from_name(code.name()), Some(*code));
            assert!(names.insert(code.name()));
            assert!(!code.description().is_empty());
        }
        assert_eq!(ResultCode::from_u32(ResultCode::ALL.len() as u32), None);
    }

    #[test]
    fn required_names_exist() {
        for name in [
            "ok",
            "exists",
            "exists_with_different_amount",
            "id_already_failed",
            "exceeds_credits",
            "exceeds_debits",
            "linked_event_failed",
            "linked_event_chain_open",
            "pending_transfer_not_found",
            "pending_transfer_expired",
            "pending_transfer_already_posted",
            "pending_transfer_already_voided",
            "debit_account_not_found",
            "credit_account_not_found",
            "accounts_must_be_different",
            "ledger_must_not_be_zero",
            "id_must_not_be_zero",
        ] {
            assert!(ResultCode::from_name(name).is_some(), "{name}");
        }
    }
}
