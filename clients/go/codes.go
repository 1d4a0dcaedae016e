package ledgerd

import (
	"strconv"
	"strings"
)

// Limits of protocol version 1 (docs/protocol.md section 2). The daemon tells its own values
// in the hello reply; the client uses the smaller of the two.
const (
	// ProtocolVersion is the version in every header and in the hello.
	ProtocolVersion = 1
	// HeaderSize is the size of every frame header, in bytes.
	HeaderSize = 64
	// FrameBodyMax is the largest body of any frame, either direction.
	FrameBodyMax = 1 << 20
	// EventsPerRequestMax is the most records (accounts, transfers, limits, ids) in one request.
	EventsPerRequestMax = 8190
	// ChangeEventsPerReplyMax is the most change events in one reply.
	ChangeEventsPerReplyMax = 2048
	// HelloTokenMax is the longest auth token, in bytes.
	HelloTokenMax = 256
	// RequestsInFlightMaxDefault is the daemon's default for requests in flight per connection.
	RequestsInFlightMaxDefault = 64
)

// Operation is a request kind (docs/protocol.md section 4); a reply echoes its request's.
type Operation uint16

// Status says whether a request was executed (docs/protocol.md section 5). Statuses other
// than StatusOK reach callers as a *StatusError. New statuses may be appended: a number this
// client does not know prints as "status(N)".
type Status uint16

// Closes reports whether the daemon closes the connection after a reply with this status.
// Unknown statuses are assumed not to.
func (s Status) Closes() bool {
	return int(s) < len(statusCloses) && statusCloses[s]
}

// Retryable reports whether a request refused with this status was not applied and may be
// sent again as it is, after a pause (busy, journal_unavailable) or on a new connection
// (shutting_down). The client does this itself; callers see these statuses only if their
// deadline passes first.
func (s Status) Retryable() bool {
	return s == StatusBusy || s == StatusJournalUnavailable || s == StatusShuttingDown
}

// ResultCode is the outcome of one event of a create request (docs/protocol.md section 7).
// A create reply lists failed events only: an event that is not listed got ResultOK.
type ResultCode uint32

// ChangeEventKind says what a ChangeEvent records (docs/protocol.md section 6.12).
type ChangeEventKind uint16

// ReplicaRole is what a daemon is in its cluster (StatusReply.Role).
type ReplicaRole uint8

// Replica roles (docs/protocol.md section 6.13). A status reply with any other value is a
// *ProtocolError.
const (
	// RoleStandalone: a single daemon, no replication.
	RoleStandalone ReplicaRole = 0
	// RoleFollower: a replica that follows the leader.
	RoleFollower ReplicaRole = 1
	// RoleCandidate: a replica standing for election.
	RoleCandidate ReplicaRole = 2
	// RoleLeader: the replica that accepts writes.
	RoleLeader ReplicaRole = 3
)

var replicaRoleNames = [...]string{"standalone", "follower", "candidate", "leader"}

// String returns the role's name, or "role(N)" for a value that is not a role.
func (r ReplicaRole) String() string {
	if int(r) < len(replicaRoleNames) {
		return replicaRoleNames[r]
	}
	return "role(" + strconv.FormatUint(uint64(r), 10) + ")"
}

// LeaderUnknown is the leader position (StatusReply.Leader, StatusError.LeaderHint) that names
// no replica: no leader is known, or the daemon is standalone.
const LeaderUnknown uint32 = 0xFFFFFFFF

// AccountFlags are the bits of Account.Flags.
type AccountFlags uint16

// Account flags (docs/protocol.md section 6.3).
const (
	// AccountLinked chains this account with the next event of the request: all or nothing.
	AccountLinked AccountFlags = 0x1
	// AccountDebitsMustNotExceedCredits: debits_pending + debits_posted <= credits_posted
	// (plus the account's limit): a wallet that is never overdrawn, stock never oversold.
	AccountDebitsMustNotExceedCredits AccountFlags = 0x2
	// AccountCreditsMustNotExceedDebits is the symmetric rule.
	AccountCreditsMustNotExceedDebits AccountFlags = 0x4
	// AccountHistory keeps a balance history, for GetAccountBalances.
	AccountHistory AccountFlags = 0x8
)

var accountFlagNames = []flagName{
	{0x1, "linked"}, {0x2, "debits_must_not_exceed_credits"},
	{0x4, "credits_must_not_exceed_debits"}, {0x8, "history"},
}

// String lists the set flags by protocol name, joined with "|" ("0" when none).
func (f AccountFlags) String() string { return flagString(uint32(f), accountFlagNames) }

// TransferFlags are the bits of Transfer.Flags.
type TransferFlags uint16

// Transfer flags (docs/protocol.md section 6.4).
const (
	// TransferLinked chains this transfer with the next event of the request: all or nothing.
	TransferLinked TransferFlags = 0x1
	// TransferPending reserves the amount; a later post or void settles it.
	TransferPending TransferFlags = 0x2
	// TransferPostPendingTransfer posts the pending transfer named by PendingID.
	TransferPostPendingTransfer TransferFlags = 0x4
	// TransferVoidPendingTransfer releases the pending transfer named by PendingID.
	TransferVoidPendingTransfer TransferFlags = 0x8
	// TransferBalancingDebit clamps the amount to what the debit account's limit allows.
	TransferBalancingDebit TransferFlags = 0x10
	// TransferBalancingCredit clamps the amount to what the credit account's limit allows.
	TransferBalancingCredit TransferFlags = 0x20
)

var transferFlagNames = []flagName{
	{0x1, "linked"}, {0x2, "pending"}, {0x4, "post_pending_transfer"},
	{0x8, "void_pending_transfer"}, {0x10, "balancing_debit"}, {0x20, "balancing_credit"},
}

// String lists the set flags by protocol name, joined with "|" ("0" when none).
func (f TransferFlags) String() string { return flagString(uint32(f), transferFlagNames) }

// FilterFlags are the bits of AccountFilter.Flags.
type FilterFlags uint32

// Filter flags (docs/protocol.md section 6.8). At least one of FilterDebits and FilterCredits.
const (
	// FilterDebits selects transfers that debit the account.
	FilterDebits FilterFlags = 0x1
	// FilterCredits selects transfers that credit the account.
	FilterCredits FilterFlags = 0x2
	// FilterReversed returns the newest first.
	FilterReversed FilterFlags = 0x4
)

var filterFlagNames = []flagName{{0x1, "debits"}, {0x2, "credits"}, {0x4, "reversed"}}

// String lists the set flags by protocol name, joined with "|" ("0" when none).
func (f FilterFlags) String() string { return flagString(uint32(f), filterFlagNames) }

type flagName struct {
	bit  uint32
	name string
}

func flagString(v uint32, names []flagName) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	for _, n := range names {
		if v&n.bit != 0 {
			parts = append(parts, n.name)
			v &^= n.bit
		}
	}
	if v != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(uint64(v), 16))
	}
	return strings.Join(parts, "|")
}
