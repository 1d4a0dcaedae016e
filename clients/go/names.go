// Names and numbers of docs/protocol.md sections 4, 5, 6.12 and 7. vectors_test.go checks
// them against tests/vectors/frames.json both ways.

package ledgerd

import "strconv"

// Operation numbers (docs/protocol.md). Numbers are stable; new ones are only appended.
const (
	OpHello               Operation = 1
	OpCreateAccounts      Operation = 2
	OpCreateTransfers     Operation = 3
	OpSetAccountLimits    Operation = 4
	OpLookupAccounts      Operation = 5
	OpLookupTransfers     Operation = 6
	OpLookupAccountLimits Operation = 7
	OpGetAccountTransfers Operation = 8
	OpGetAccountBalances  Operation = 9
	OpChangeEvents        Operation = 10
	OpStatus              Operation = 11
)

// operationNames maps each number to its protocol name ("" where none).
var operationNames = [...]string{
	1:  "hello",
	2:  "create_accounts",
	3:  "create_transfers",
	4:  "set_account_limits",
	5:  "lookup_accounts",
	6:  "lookup_transfers",
	7:  "lookup_account_limits",
	8:  "get_account_transfers",
	9:  "get_account_balances",
	10: "change_events",
	11: "status",
}

// String returns the protocol name, or "operation(N)" for a number this client does not know.
func (v Operation) String() string {
	if int(v) < len(operationNames) && operationNames[v] != "" {
		return operationNames[v]
	}
	return "operation(" + strconv.FormatUint(uint64(v), 10) + ")"
}

// Status numbers (docs/protocol.md). Numbers are stable; new ones are only appended.
const (
	// StatusOK: The request was executed; the body is the operation's reply.
	StatusOK Status = 0
	// StatusBadMagic: The first 4 bytes of a header are not LDGR.
	StatusBadMagic Status = 1
	// StatusUnsupportedVersion: The header's (or hello's) protocol version is not supported.
	StatusUnsupportedVersion Status = 2
	// StatusBadChecksum: The crc32c over header and body does not match.
	StatusBadChecksum Status = 3
	// StatusUnknownOperation: The operation number is unknown.
	StatusUnknownOperation Status = 4
	// StatusBodyTooLarge: body_length is above FRAME_BODY_MAX.
	StatusBodyTooLarge Status = 5
	// StatusBodyLengthInvalid: The body's length is not what the operation needs (not a multiple of its record size, or not its exact size).
	StatusBodyLengthInvalid Status = 6
	// StatusTooManyEvents: More than EVENTS_PER_REQUEST_MAX records in one request.
	StatusTooManyEvents Status = 7
	// StatusEmptyBatch: A batch operation with no records.
	StatusEmptyBatch Status = 8
	// StatusHelloRequired: The first request of a connection was not a hello.
	StatusHelloRequired Status = 9
	// StatusAuthFailed: The hello's token does not match the daemon's.
	StatusAuthFailed Status = 10
	// StatusBusy: Too many requests in flight, or the daemon is overloaded: retry later.
	StatusBusy Status = 11
	// StatusShuttingDown: The daemon is stopping and accepts no more requests.
	StatusShuttingDown Status = 12
	// StatusJournalUnavailable: The journal cannot be written (disk full, I/O error): nothing was applied; retry later.
	StatusJournalUnavailable Status = 13
	// StatusInternalError: A bug in the daemon: nothing was applied.
	StatusInternalError Status = 14
	// StatusInvalidHeader: A reserved header field is not zero.
	StatusInvalidHeader Status = 15
	// StatusInvalidBody: The body has the right length but invalid content (a filter or change-events request out of range, a bad hello).
	StatusInvalidBody Status = 16
	// StatusHelloRepeated: A second hello on the same connection.
	StatusHelloRepeated Status = 17
	// StatusPermissionDenied: The connection's role does not allow this operation (e.g. a write with a read-only token); nothing was applied.
	StatusPermissionDenied Status = 18
	// StatusAuthThrottled: Too many failed hellos from this address: hellos are refused for a while without looking at the token.
	StatusAuthThrottled Status = 19
	// StatusLedgerFull: A create request could take the ledger past a configured capacity (accounts, transfers or remembered failed ids): nothing in it was applied.
	StatusLedgerFull Status = 20
	// StatusNotLeader: This replica of a cluster does not lead (or stopped leading before the request's entry committed): retry at the leader, which the 8-byte body names. A write refused before it was decided was not applied; one accepted before a leadership change may have been: retrying it with the same ids is safe either way.
	StatusNotLeader Status = 21
)

// statusNames maps each number to its protocol name ("" where none).
var statusNames = [...]string{
	0:  "ok",
	1:  "bad_magic",
	2:  "unsupported_version",
	3:  "bad_checksum",
	4:  "unknown_operation",
	5:  "body_too_large",
	6:  "body_length_invalid",
	7:  "too_many_events",
	8:  "empty_batch",
	9:  "hello_required",
	10: "auth_failed",
	11: "busy",
	12: "shutting_down",
	13: "journal_unavailable",
	14: "internal_error",
	15: "invalid_header",
	16: "invalid_body",
	17: "hello_repeated",
	18: "permission_denied",
	19: "auth_throttled",
	20: "ledger_full",
	21: "not_leader",
}

// String returns the protocol name, or "status(N)" for a number this client does not know.
func (v Status) String() string {
	if int(v) < len(statusNames) && statusNames[v] != "" {
		return statusNames[v]
	}
	return "status(" + strconv.FormatUint(uint64(v), 10) + ")"
}

// statusCloses says, per known status, whether the daemon closes the connection after it.
var statusCloses = [...]bool{
	StatusBadMagic:           true,
	StatusUnsupportedVersion: true,
	StatusBadChecksum:        true,
	StatusBodyTooLarge:       true,
	StatusHelloRequired:      true,
	StatusAuthFailed:         true,
	StatusShuttingDown:       true,
	StatusInvalidHeader:      true,
	StatusHelloRepeated:      true,
	StatusAuthThrottled:      true,
}

// Result code numbers (docs/protocol.md). Numbers are stable; new ones are only appended.
const (
	// ResultOK: The event was applied.
	ResultOK ResultCode = 0
	// ResultLinkedEventFailed: Another event of the same linked chain failed, so this one was not applied.
	ResultLinkedEventFailed ResultCode = 1
	// ResultLinkedEventChainOpen: The last event of the request has linked set: the chain is never closed.
	ResultLinkedEventChainOpen ResultCode = 2
	// ResultTimestampMustBeZero: timestamp is set by the ledger and must be 0 on input.
	ResultTimestampMustBeZero ResultCode = 3
	// ResultReservedField: A reserved field is not 0.
	ResultReservedField ResultCode = 4
	// ResultFlagsUnknown: A flag bit that has no meaning is set.
	ResultFlagsUnknown ResultCode = 5
	// ResultIDMustNotBeZero: id must not be 0.
	ResultIDMustNotBeZero ResultCode = 6
	// ResultIDMustNotBeIntMax: id must not be 2^128 - 1.
	ResultIDMustNotBeIntMax ResultCode = 7
	// ResultFlagsAreMutuallyExclusive: Two flags that exclude each other are both set.
	ResultFlagsAreMutuallyExclusive ResultCode = 8
	// ResultLedgerMustNotBeZero: ledger must not be 0.
	ResultLedgerMustNotBeZero ResultCode = 9
	// ResultCodeMustNotBeZero: code must not be 0.
	ResultCodeMustNotBeZero ResultCode = 10
	// ResultDebitsPendingMustBeZero: A new account's debits_pending must be 0: balances are kept by the ledger.
	ResultDebitsPendingMustBeZero ResultCode = 11
	// ResultDebitsPostedMustBeZero: A new account's debits_posted must be 0.
	ResultDebitsPostedMustBeZero ResultCode = 12
	// ResultCreditsPendingMustBeZero: A new account's credits_pending must be 0.
	ResultCreditsPendingMustBeZero ResultCode = 13
	// ResultCreditsPostedMustBeZero: A new account's credits_posted must be 0.
	ResultCreditsPostedMustBeZero ResultCode = 14
	// ResultExists: An event with this id exists with identical fields: nothing changed (a safe retry).
	ResultExists ResultCode = 15
	// ResultExistsWithDifferentFlags: An event with this id exists with different flags.
	ResultExistsWithDifferentFlags ResultCode = 16
	// ResultExistsWithDifferentUserData128: An event with this id exists with a different user_data_128.
	ResultExistsWithDifferentUserData128 ResultCode = 17
	// ResultExistsWithDifferentUserData64: An event with this id exists with a different user_data_64.
	ResultExistsWithDifferentUserData64 ResultCode = 18
	// ResultExistsWithDifferentUserData32: An event with this id exists with a different user_data_32.
	ResultExistsWithDifferentUserData32 ResultCode = 19
	// ResultExistsWithDifferentLedger: An event with this id exists with a different ledger.
	ResultExistsWithDifferentLedger ResultCode = 20
	// ResultExistsWithDifferentCode: An event with this id exists with a different code.
	ResultExistsWithDifferentCode ResultCode = 21
	// ResultExistsWithDifferentDebitAccountID: A transfer with this id exists with a different debit_account_id.
	ResultExistsWithDifferentDebitAccountID ResultCode = 22
	// ResultExistsWithDifferentCreditAccountID: A transfer with this id exists with a different credit_account_id.
	ResultExistsWithDifferentCreditAccountID ResultCode = 23
	// ResultExistsWithDifferentAmount: A transfer with this id exists with a different amount.
	ResultExistsWithDifferentAmount ResultCode = 24
	// ResultExistsWithDifferentPendingID: A transfer with this id exists with a different pending_id.
	ResultExistsWithDifferentPendingID ResultCode = 25
	// ResultExistsWithDifferentTimeout: A transfer with this id exists with a different timeout.
	ResultExistsWithDifferentTimeout ResultCode = 26
	// ResultIDAlreadyFailed: This id failed earlier for a reason that could have changed since; it stays failed.
	ResultIDAlreadyFailed ResultCode = 27
	// ResultDebitAccountIDMustNotBeZero: debit_account_id must not be 0.
	ResultDebitAccountIDMustNotBeZero ResultCode = 28
	// ResultDebitAccountIDMustNotBeIntMax: debit_account_id must not be 2^128 - 1.
	ResultDebitAccountIDMustNotBeIntMax ResultCode = 29
	// ResultCreditAccountIDMustNotBeZero: credit_account_id must not be 0.
	ResultCreditAccountIDMustNotBeZero ResultCode = 30
	// ResultCreditAccountIDMustNotBeIntMax: credit_account_id must not be 2^128 - 1.
	ResultCreditAccountIDMustNotBeIntMax ResultCode = 31
	// ResultAccountsMustBeDifferent: The debit and credit accounts are the same account.
	ResultAccountsMustBeDifferent ResultCode = 32
	// ResultPendingIDMustBeZero: pending_id must be 0 unless the transfer posts or voids a pending transfer.
	ResultPendingIDMustBeZero ResultCode = 33
	// ResultPendingIDMustNotBeZero: A post or void must name the pending transfer in pending_id.
	ResultPendingIDMustNotBeZero ResultCode = 34
	// ResultPendingIDMustNotBeIntMax: pending_id must not be 2^128 - 1.
	ResultPendingIDMustNotBeIntMax ResultCode = 35
	// ResultPendingIDMustBeDifferent: pending_id must differ from the transfer's own id.
	ResultPendingIDMustBeDifferent ResultCode = 36
	// ResultTimeoutReservedForPendingTransfer: timeout is only for pending transfers.
	ResultTimeoutReservedForPendingTransfer ResultCode = 37
	// ResultAmountMustNotBeZero: amount must not be 0 (except on a post or void, where 0 means the pending amount).
	ResultAmountMustNotBeZero ResultCode = 38
	// ResultDebitAccountNotFound: No account has debit_account_id.
	ResultDebitAccountNotFound ResultCode = 39
	// ResultCreditAccountNotFound: No account has credit_account_id.
	ResultCreditAccountNotFound ResultCode = 40
	// ResultAccountsMustHaveTheSameLedger: The two accounts are on different ledgers.
	ResultAccountsMustHaveTheSameLedger ResultCode = 41
	// ResultTransferMustHaveTheSameLedgerAsAccounts: The transfer's ledger differs from its accounts' ledger.
	ResultTransferMustHaveTheSameLedgerAsAccounts ResultCode = 42
	// ResultPendingTransferNotFound: No transfer has pending_id.
	ResultPendingTransferNotFound ResultCode = 43
	// ResultPendingTransferNotPending: The transfer named by pending_id is not a pending transfer.
	ResultPendingTransferNotPending ResultCode = 44
	// ResultPendingTransferHasDifferentDebitAccountID: The pending transfer has a different debit_account_id.
	ResultPendingTransferHasDifferentDebitAccountID ResultCode = 45
	// ResultPendingTransferHasDifferentCreditAccountID: The pending transfer has a different credit_account_id.
	ResultPendingTransferHasDifferentCreditAccountID ResultCode = 46
	// ResultPendingTransferHasDifferentLedger: The pending transfer has a different ledger.
	ResultPendingTransferHasDifferentLedger ResultCode = 47
	// ResultPendingTransferHasDifferentCode: The pending transfer has a different code.
	ResultPendingTransferHasDifferentCode ResultCode = 48
	// ResultExceedsPendingTransferAmount: A post's amount is above the pending amount.
	ResultExceedsPendingTransferAmount ResultCode = 49
	// ResultPendingTransferHasDifferentAmount: A void's amount is neither 0 nor the pending amount.
	ResultPendingTransferHasDifferentAmount ResultCode = 50
	// ResultPendingTransferAlreadyPosted: The pending transfer was already posted.
	ResultPendingTransferAlreadyPosted ResultCode = 51
	// ResultPendingTransferAlreadyVoided: The pending transfer was already voided.
	ResultPendingTransferAlreadyVoided ResultCode = 52
	// ResultPendingTransferExpired: The pending transfer's timeout passed: the ledger voided it.
	ResultPendingTransferExpired ResultCode = 53
	// ResultOverflowsDebitsPending: debits_pending of an account would pass 2^128 - 1.
	ResultOverflowsDebitsPending ResultCode = 54
	// ResultOverflowsCreditsPending: credits_pending of an account would pass 2^128 - 1.
	ResultOverflowsCreditsPending ResultCode = 55
	// ResultOverflowsDebitsPosted: debits_posted of an account would pass 2^128 - 1.
	ResultOverflowsDebitsPosted ResultCode = 56
	// ResultOverflowsCreditsPosted: credits_posted of an account would pass 2^128 - 1.
	ResultOverflowsCreditsPosted ResultCode = 57
	// ResultOverflowsDebits: debits_pending + debits_posted of an account would pass 2^128 - 1.
	ResultOverflowsDebits ResultCode = 58
	// ResultOverflowsCredits: credits_pending + credits_posted of an account would pass 2^128 - 1.
	ResultOverflowsCredits ResultCode = 59
	// ResultOverflowsTimeout: timestamp + timeout would pass 2^64 - 1 nanoseconds.
	ResultOverflowsTimeout ResultCode = 60
	// ResultExceedsCredits: The debit account's debits would exceed its credits (plus its limit).
	ResultExceedsCredits ResultCode = 61
	// ResultExceedsDebits: The credit account's credits would exceed its debits (plus its limit).
	ResultExceedsDebits ResultCode = 62
	// ResultAccountNotFound: No account has this id (set_account_limits).
	ResultAccountNotFound ResultCode = 63
	// ResultAccountHasNoBalanceLimitFlag: A limit needs debits_must_not_exceed_credits or credits_must_not_exceed_debits.
	ResultAccountHasNoBalanceLimitFlag ResultCode = 64
	// ResultLimitBelowCurrentBalance: The account's current balance already goes further past zero than the new limit.
	ResultLimitBelowCurrentBalance ResultCode = 65
	// ResultAccountIDMustNotBeZero: account_id must not be 0 or 2^128 - 1 (set_account_limits).
	ResultAccountIDMustNotBeZero ResultCode = 66
)

// resultCodeNames maps each number to its protocol name ("" where none).
var resultCodeNames = [...]string{
	0:  "ok",
	1:  "linked_event_failed",
	2:  "linked_event_chain_open",
	3:  "timestamp_must_be_zero",
	4:  "reserved_field",
	5:  "flags_unknown",
	6:  "id_must_not_be_zero",
	7:  "id_must_not_be_int_max",
	8:  "flags_are_mutually_exclusive",
	9:  "ledger_must_not_be_zero",
	10: "code_must_not_be_zero",
	11: "debits_pending_must_be_zero",
	12: "debits_posted_must_be_zero",
	13: "credits_pending_must_be_zero",
	14: "credits_posted_must_be_zero",
	15: "exists",
	16: "exists_with_different_flags",
	17: "exists_with_different_user_data_128",
	18: "exists_with_different_user_data_64",
	19: "exists_with_different_user_data_32",
	20: "exists_with_different_ledger",
	21: "exists_with_different_code",
	22: "exists_with_different_debit_account_id",
	23: "exists_with_different_credit_account_id",
	24: "exists_with_different_amount",
	25: "exists_with_different_pending_id",
	26: "exists_with_different_timeout",
	27: "id_already_failed",
	28: "debit_account_id_must_not_be_zero",
	29: "debit_account_id_must_not_be_int_max",
	30: "credit_account_id_must_not_be_zero",
	31: "credit_account_id_must_not_be_int_max",
	32: "accounts_must_be_different",
	33: "pending_id_must_be_zero",
	34: "pending_id_must_not_be_zero",
	35: "pending_id_must_not_be_int_max",
	36: "pending_id_must_be_different",
	37: "timeout_reserved_for_pending_transfer",
	38: "amount_must_not_be_zero",
	39: "debit_account_not_found",
	40: "credit_account_not_found",
	41: "accounts_must_have_the_same_ledger",
	42: "transfer_must_have_the_same_ledger_as_accounts",
	43: "pending_transfer_not_found",
	44: "pending_transfer_not_pending",
	45: "pending_transfer_has_different_debit_account_id",
	46: "pending_transfer_has_different_credit_account_id",
	47: "pending_transfer_has_different_ledger",
	48: "pending_transfer_has_different_code",
	49: "exceeds_pending_transfer_amount",
	50: "pending_transfer_has_different_amount",
	51: "pending_transfer_already_posted",
	52: "pending_transfer_already_voided",
	53: "pending_transfer_expired",
	54: "overflows_debits_pending",
	55: "overflows_credits_pending",
	56: "overflows_debits_posted",
	57: "overflows_credits_posted",
	58: "overflows_debits",
	59: "overflows_credits",
	60: "overflows_timeout",
	61: "exceeds_credits",
	62: "exceeds_debits",
	63: "account_not_found",
	64: "account_has_no_balance_limit_flag",
	65: "limit_below_current_balance",
	66: "account_id_must_not_be_zero",
}

// String returns the protocol name, or "result(N)" for a number this client does not know.
func (v ResultCode) String() string {
	if int(v) < len(resultCodeNames) && resultCodeNames[v] != "" {
		return resultCodeNames[v]
	}
	return "result(" + strconv.FormatUint(uint64(v), 10) + ")"
}

// Change-event kind numbers (docs/protocol.md). Numbers are stable; new ones are only appended.
const (
	// ChangeEventAccountCreated: An account was created: debit_account is the new account.
	ChangeEventAccountCreated ChangeEventKind = 1
	// ChangeEventTransferSinglePhase: A single-phase transfer applied: transfer, both accounts after it.
	ChangeEventTransferSinglePhase ChangeEventKind = 2
	// ChangeEventTransferPending: A pending transfer reserved its amount: transfer, both accounts after it.
	ChangeEventTransferPending ChangeEventKind = 3
	// ChangeEventTransferPosted: A pending transfer was posted: transfer is the post (its final amount), both accounts after it.
	ChangeEventTransferPosted ChangeEventKind = 4
	// ChangeEventTransferVoided: A pending transfer was voided: transfer is the void, both accounts after it.
	ChangeEventTransferVoided ChangeEventKind = 5
	// ChangeEventTransferExpired: A pending transfer timed out and the ledger voided it: transfer is the pending transfer, both accounts after the release; timestamp is when the expiry applied.
	ChangeEventTransferExpired ChangeEventKind = 6
	// ChangeEventLimitSet: An account's limit was set: limit, and debit_account is the account.
	ChangeEventLimitSet ChangeEventKind = 7
)

// changeEventKindNames maps each number to its protocol name ("" where none).
var changeEventKindNames = [...]string{
	1: "account_created",
	2: "transfer_single_phase",
	3: "transfer_pending",
	4: "transfer_posted",
	5: "transfer_voided",
	6: "transfer_expired",
	7: "limit_set",
}

// String returns the protocol name, or "kind(N)" for a number this client does not know.
func (v ChangeEventKind) String() string {
	if int(v) < len(changeEventKindNames) && changeEventKindNames[v] != "" {
		return changeEventKindNames[v]
	}
	return "kind(" + strconv.FormatUint(uint64(v), 10) + ")"
}
