package ledgerd

import (
	"encoding/binary"
)

// Record sizes on the wire, in bytes (docs/protocol.md section 6).
const (
	helloRequestSize        = 264
	helloReplySize          = 64
	accountSize             = 128
	transferSize            = 128
	accountLimitSize        = 64
	idSize                  = 16
	createResultSize        = 8
	accountFilterSize       = 64
	accountBalanceSize      = 128
	changeEventsRequestSize = 16
	changeEventsPrefixSize  = 32
	changeEventSize         = 480
	statusReplySize         = 128
	notLeaderReplySize      = 8
)

// Account is an account record (docs/protocol.md section 6.3). On create, the balances and
// Timestamp must be zero: the ledger keeps them.
type Account struct {
	ID             Uint128 // client-chosen, not 0 and not 2^128-1
	DebitsPending  Uint128
	DebitsPosted   Uint128
	CreditsPending Uint128
	CreditsPosted  Uint128
	UserData128    Uint128
	UserData64     uint64
	UserData32     uint32
	Ledger         uint32 // not 0: the currency or asset
	Code           uint16 // not 0: the account's kind, user-defined
	Flags          AccountFlags
	Timestamp      uint64 // nanoseconds since the Unix epoch, set by the ledger
}

// Transfer is a transfer record (docs/protocol.md section 6.4).
type Transfer struct {
	ID              Uint128
	DebitAccountID  Uint128
	CreditAccountID Uint128
	Amount          Uint128
	PendingID       Uint128 // post and void only: the pending transfer
	UserData128     Uint128
	UserData64      uint64
	UserData32      uint32
	Timeout         uint32 // seconds, pending transfers only (0: never expires)
	Ledger          uint32
	Code            uint16
	Flags           TransferFlags
	Timestamp       uint64 // set by the ledger
}

// AccountLimit is how far past zero an account's balance may go: an overdraft or credit line
// (docs/protocol.md section 6.5). It needs one of the two balance-limit account flags.
type AccountLimit struct {
	AccountID Uint128
	Limit     Uint128
	Timestamp uint64 // set by the ledger
}

// AccountFilter selects an account's transfers or balance rows (docs/protocol.md section 6.8).
type AccountFilter struct {
	AccountID    Uint128
	TimestampMin uint64 // inclusive; 0: unbounded
	TimestampMax uint64 // inclusive; 0: unbounded
	Limit        uint32 // 1..=EventsPerRequestMax
	Flags        FilterFlags
}

// AccountBalance is an account's balances after one of its transfers (history accounts;
// docs/protocol.md section 6.9).
type AccountBalance struct {
	DebitsPending  Uint128
	DebitsPosted   Uint128
	CreditsPending Uint128
	CreditsPosted  Uint128
	Timestamp      uint64 // of the transfer after which the account had these balances
}

// CreateResult is the outcome of one failed event of a create call. Index is the event's
// position in the caller's own slice; events with no CreateResult succeeded.
type CreateResult struct {
	Index  uint32
	Result ResultCode
}

// HelloReply carries the daemon's protocol version and limits (docs/protocol.md section 6.2).
type HelloReply struct {
	Version                 uint16
	RequestsInFlightMax     uint32
	FrameBodyMax            uint32
	EventsPerRequestMax     uint32
	ChangeEventsPerReplyMax uint32
}

// ChangeEventsRequest asks for change events from a position (docs/protocol.md section 6.10).
type ChangeEventsRequest struct {
	FromSequence uint64
	Limit        uint32 // 1..=ChangeEventsPerReplyMax
	FromIndex    uint32
}

// ChangeEventsReply is one page of the change stream (docs/protocol.md section 6.11).
// Continue from (NextSequence, NextIndex); no events means caught up.
type ChangeEventsReply struct {
	NextSequence uint64
	NextIndex    uint32
	HeadSequence uint64 // the last durable journal sequence
	Events       []ChangeEvent
}

// ChangeEvent is one change of the ledger with the complete post-state of what it touched
// (docs/protocol.md section 6.12). Sub-records that do not apply to Kind are zero.
type ChangeEvent struct {
	Sequence      uint64
	Index         uint32
	Kind          ChangeEventKind
	Timestamp     uint64
	Transfer      Transfer
	DebitAccount  Account // for account_created and limit_set: the account
	CreditAccount Account
	Limit         AccountLimit
}

// StatusReply holds the daemon's counters and state hash, and its place in its cluster
// (docs/protocol.md section 6.13).
type StatusReply struct {
	Sequence         uint64
	SnapshotSequence uint64
	StateHash        Uint128 // print with Hex()
	Accounts         uint64
	Transfers        uint64
	PendingTransfers uint64
	FailedIDs        uint64
	ClockNs          uint64
	AccountLimits    uint64
	UptimeNs         uint64
	Connections      uint32
	Role             ReplicaRole
	Replica          uint8  // this replica's position in the cluster's address list; 0 standalone
	Term             uint64 // the replicated log's term; 0 standalone
	Commit           uint64 // the replicated log's commit index; 0 standalone
	Leader           uint32 // the leader's position in the address list, or LeaderUnknown
}

var le = binary.LittleEndian

// The put functions write one record into b, which is at least the record's size; every
// reserved byte is written as zero, so b may hold old data. The get functions read one.

func putAccount(b []byte, a *Account) {
	_ = b[accountSize-1]
	putU128(b[0:], a.ID)
	putU128(b[16:], a.DebitsPending)
	putU128(b[32:], a.DebitsPosted)
	putU128(b[48:], a.CreditsPending)
	putU128(b[64:], a.CreditsPosted)
	putU128(b[80:], a.UserData128)
	le.PutUint64(b[96:], a.UserData64)
	le.PutUint32(b[104:], a.UserData32)
	le.PutUint32(b[108:], 0) // reserved
	le.PutUint32(b[112:], a.Ledger)
	le.PutUint16(b[116:], a.Code)
	le.PutUint16(b[118:], uint16(a.Flags))
	le.PutUint64(b[120:], a.Timestamp)
}

func getAccount(b []byte) Account {
	_ = b[accountSize-1]
	return Account{
		ID:             getU128(b[0:]),
		DebitsPending:  getU128(b[16:]),
		DebitsPosted:   getU128(b[32:]),
		CreditsPending: getU128(b[48:]),
		CreditsPosted:  getU128(b[64:]),
		UserData128:    getU128(b[80:]),
		UserData64:     le.Uint64(b[96:]),
		UserData32:     le.Uint32(b[104:]),
		Ledger:         le.Uint32(b[112:]),
		Code:           le.Uint16(b[116:]),
		Flags:          AccountFlags(le.Uint16(b[118:])),
		Timestamp:      le.Uint64(b[120:]),
	}
}

func putTransfer(b []byte, t *Transfer) {
	_ = b[transferSize-1]
	putU128(b[0:], t.ID)
	putU128(b[16:], t.DebitAccountID)
	putU128(b[32:], t.CreditAccountID)
	putU128(b[48:], t.Amount)
	putU128(b[64:], t.PendingID)
	putU128(b[80:], t.UserData128)
	le.PutUint64(b[96:], t.UserData64)
	le.PutUint32(b[104:], t.UserData32)
	le.PutUint32(b[108:], t.Timeout)
	le.PutUint32(b[112:], t.Ledger)
	le.PutUint16(b[116:], t.Code)
	le.PutUint16(b[118:], uint16(t.Flags))
	le.PutUint64(b[120:], t.Timestamp)
}

func getTransfer(b []byte) Transfer {
	_ = b[transferSize-1]
	return Transfer{
		ID:              getU128(b[0:]),
		DebitAccountID:  getU128(b[16:]),
		CreditAccountID: getU128(b[32:]),
		Amount:          getU128(b[48:]),
		PendingID:       getU128(b[64:]),
		UserData128:     getU128(b[80:]),
		UserData64:      le.Uint64(b[96:]),
		UserData32:      le.Uint32(b[104:]),
		Timeout:         le.Uint32(b[108:]),
		Ledger:          le.Uint32(b[112:]),
		Code:            le.Uint16(b[116:]),
		Flags:           TransferFlags(le.Uint16(b[118:])),
		Timestamp:       le.Uint64(b[120:]),
	}
}

func putAccountLimit(b []byte, l *AccountLimit) {
	_ = b[accountLimitSize-1]
	putU128(b[0:], l.AccountID)
	putU128(b[16:], l.Limit)
	le.PutUint64(b[32:], l.Timestamp)
	zero(b[40:64])
}

func getAccountLimit(b []byte) AccountLimit {
	_ = b[accountLimitSize-1]
	return AccountLimit{AccountID: getU128(b[0:]), Limit: getU128(b[16:]), Timestamp: le.Uint64(b[32:])}
}

func putAccountFilter(b []byte, f *AccountFilter) {
	_ = b[accountFilterSize-1]
	putU128(b[0:], f.AccountID)
	le.PutUint64(b[16:], f.TimestampMin)
	le.PutUint64(b[24:], f.TimestampMax)
	le.PutUint32(b[32:], f.Limit)
	le.PutUint32(b[36:], uint32(f.Flags))
	zero(b[40:64])
}

func getAccountBalance(b []byte) AccountBalance {
	_ = b[accountBalanceSize-1]
	return AccountBalance{
		DebitsPending:  getU128(b[0:]),
		DebitsPosted:   getU128(b[16:]),
		CreditsPending: getU128(b[32:]),
		CreditsPosted:  getU128(b[48:]),
		Timestamp:      le.Uint64(b[64:]),
	}
}

func putHelloRequest(b []byte, token string) {
	_ = b[helloRequestSize-1]
	zero(b[:helloRequestSize])
	le.PutUint16(b[0:], ProtocolVersion)
	le.PutUint16(b[2:], uint16(len(token)))
	copy(b[8:8+HelloTokenMax], token)
}

func decodeHelloReply(body []byte) (HelloReply, error) {
	if len(body) != helloReplySize {
		return HelloReply{}, protocolErrorf("hello reply of %d bytes, want %d", len(body), helloReplySize)
	}
	return HelloReply{
		Version:                 le.Uint16(body[0:]),
		RequestsInFlightMax:     le.Uint32(body[4:]),
		FrameBodyMax:            le.Uint32(body[8:]),
		EventsPerRequestMax:     le.Uint32(body[12:]),
		ChangeEventsPerReplyMax: le.Uint32(body[16:]),
	}, nil
}

func putChangeEventsRequest(b []byte, r *ChangeEventsRequest) {
	_ = b[changeEventsRequestSize-1]
	le.PutUint64(b[0:], r.FromSequence)
	le.PutUint32(b[8:], r.Limit)
	le.PutUint32(b[12:], r.FromIndex)
}

func decodeChangeEventsReply(body []byte) (ChangeEventsReply, error) {
	if len(body) < changeEventsPrefixSize {
		return ChangeEventsReply{}, protocolErrorf("change_events reply of %d bytes", len(body))
	}
	count := le.Uint32(body[12:])
	if count > ChangeEventsPerReplyMax || len(body) != changeEventsPrefixSize+int(count)*changeEventSize {
		return ChangeEventsReply{}, protocolErrorf("change_events reply: count %d, %d bytes", count, len(body))
	}
	reply := ChangeEventsReply{
		NextSequence: le.Uint64(body[0:]),
		NextIndex:    le.Uint32(body[8:]),
		HeadSequence: le.Uint64(body[16:]),
		Events:       make([]ChangeEvent, count),
	}
	for i := range reply.Events {
		b := body[changeEventsPrefixSize+i*changeEventSize:]
		reply.Events[i] = ChangeEvent{
			Sequence:      le.Uint64(b[0:]),
			Index:         le.Uint32(b[8:]),
			Kind:          ChangeEventKind(le.Uint16(b[12:])),
			Timestamp:     le.Uint64(b[16:]),
			Transfer:      getTransfer(b[32:]),
			DebitAccount:  getAccount(b[160:]),
			CreditAccount: getAccount(b[288:]),
			Limit:         getAccountLimit(b[416:]),
		}
	}
	return reply, nil
}

func decodeStatusReply(body []byte) (StatusReply, error) {
	if len(body) != statusReplySize {
		return StatusReply{}, protocolErrorf("status reply of %d bytes, want %d", len(body), statusReplySize)
	}
	role := ReplicaRole(body[92])
	if role > RoleLeader {
		return StatusReply{}, protocolErrorf("status reply: unknown role %d", role)
	}
	return StatusReply{
		Sequence:         le.Uint64(body[0:]),
		SnapshotSequence: le.Uint64(body[8:]),
		StateHash:        getU128(body[16:]),
		Accounts:         le.Uint64(body[32:]),
		Transfers:        le.Uint64(body[40:]),
		PendingTransfers: le.Uint64(body[48:]),
		FailedIDs:        le.Uint64(body[56:]),
		ClockNs:          le.Uint64(body[64:]),
		AccountLimits:    le.Uint64(body[72:]),
		UptimeNs:         le.Uint64(body[80:]),
		Connections:      le.Uint32(body[88:]),
		Role:             role,
		Replica:          body[93],
		Term:             le.Uint64(body[96:]),
		Commit:           le.Uint64(body[104:]),
		Leader:           le.Uint32(body[112:]),
	}, nil
}

// decodeNotLeaderReply reads the leader hint of a not_leader reply: 8 bytes, or none at all
// (no hint: LeaderUnknown).
func decodeNotLeaderReply(body []byte) (uint32, error) {
	switch len(body) {
	case 0:
		return LeaderUnknown, nil
	case notLeaderReplySize:
		return le.Uint32(body[0:]), nil
	}
	return 0, protocolErrorf("not_leader reply of %d bytes, want %d or 0", len(body), notLeaderReplySize)
}

// decodeRecords splits a reply body of fixed-size records; at most max records are expected.
func decodeRecords[T any](body []byte, size, max int, get func([]byte) T) ([]T, error) {
	if len(body)%size != 0 || len(body)/size > max {
		return nil, protocolErrorf("reply of %d bytes: not at most %d records of %d bytes", len(body), max, size)
	}
	out := make([]T, len(body)/size)
	for i := range out {
		out[i] = get(body[i*size:])
	}
	return out, nil
}

// decodeCreateResults reads a create reply: failed events only, ascending index, each below
// events. results is reused.
func decodeCreateResults(body []byte, events int, results []CreateResult) ([]CreateResult, error) {
	if len(body)%createResultSize != 0 || len(body)/createResultSize > events {
		return nil, protocolErrorf("create reply of %d bytes for %d events", len(body), events)
	}
	results = results[:0]
	for off := 0; off < len(body); off += createResultSize {
		r := CreateResult{Index: le.Uint32(body[off:]), Result: ResultCode(le.Uint32(body[off+4:]))}
		if int64(r.Index) >= int64(events) || r.Result == ResultOK ||
			(len(results) > 0 && r.Index <= results[len(results)-1].Index) {
			return nil, protocolErrorf("create reply: result %d at index %d out of order, out of range or ok", r.Result, r.Index)
		}
		results = append(results, r)
	}
	return results, nil
}

func zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
