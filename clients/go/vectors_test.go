package ledgerd

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The golden frames, generated from the daemon's own codec: every request this client
// encodes and every reply it decodes must match them byte for byte, and its tables of
// names and numbers must equal theirs both ways.

const vectorsPath = "../../tests/vectors/frames.json"

type vectorFile struct {
	ProtocolVersion  int            `json:"protocol_version"`
	HeaderSize       int            `json:"header_size"`
	Limits           map[string]int `json:"limits"`
	Operations       map[string]int `json:"operations"`
	Statuses         map[string]int `json:"statuses"`
	ResultCodes      map[string]int `json:"result_codes"`
	ChangeEventKinds map[string]int `json:"change_event_kinds"`
	AccountFlags     map[string]int `json:"account_flags"`
	TransferFlags    map[string]int `json:"transfer_flags"`
	FilterFlags      map[string]int `json:"filter_flags"`
	Frames           []vectorFrame  `json:"frames"`
}

type jsonAny = interface{}

type vectorFrame struct {
	Name      string          `json:"name"`
	Direction string          `json:"direction"`
	Operation string          `json:"operation"`
	Status    string          `json:"status"`
	RequestID string          `json:"request_id"`
	Body      json.RawMessage `json:"body"`
	Hex       string          `json:"hex"`
}

func loadVectors(t *testing.T) *vectorFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.FromSlash(vectorsPath))
	if err != nil {
		t.Fatalf("golden frames: %v (the daemon's test suite writes %s)", err, vectorsPath)
	}
	var v vectorFile
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("golden frames: %v", err)
	}
	if len(v.Frames) == 0 {
		t.Fatal("golden frames: no frames")
	}
	return &v
}

// checkTable compares a table of the file with the client's names, both ways.
func checkTable(t *testing.T, what string, file map[string]int, client map[string]int) {
	t.Helper()
	for name, num := range file {
		got, ok := client[name]
		if !ok {
			t.Errorf("%s: %q (%d) is in the golden file, not in the client", what, name, num)
		} else if got != num {
			t.Errorf("%s: %q is %d in the golden file, %d in the client", what, name, num, got)
		}
	}
	for name, num := range client {
		if _, ok := file[name]; !ok {
			t.Errorf("%s: %q (%d) is in the client, not in the golden file", what, name, num)
		}
	}
}

func namesTable(names []string) map[string]int {
	m := map[string]int{}
	for i, n := range names {
		if n != "" {
			m[n] = i
		}
	}
	return m
}

func flagTable(names []flagName) map[string]int {
	m := map[string]int{}
	for _, n := range names {
		m[n.name] = int(n.bit)
	}
	return m
}

func TestVectorTables(t *testing.T) {
	v := loadVectors(t)
	if v.ProtocolVersion != ProtocolVersion || v.HeaderSize != HeaderSize {
		t.Errorf("protocol version %d / header size %d in the file", v.ProtocolVersion, v.HeaderSize)
	}
	checkTable(t, "limits", v.Limits, map[string]int{
		"frame_body_max":                 FrameBodyMax,
		"events_per_request_max":         EventsPerRequestMax,
		"change_events_per_reply_max":    ChangeEventsPerReplyMax,
		"hello_token_max":                HelloTokenMax,
		"requests_in_flight_max_default": RequestsInFlightMaxDefault,
	})
	checkTable(t, "operations", v.Operations, namesTable(operationNames[:]))
	checkTable(t, "statuses", v.Statuses, namesTable(statusNames[:]))
	checkTable(t, "result_codes", v.ResultCodes, namesTable(resultCodeNames[:]))
	checkTable(t, "change_event_kinds", v.ChangeEventKinds, namesTable(changeEventKindNames[:]))
	checkTable(t, "account_flags", v.AccountFlags, flagTable(accountFlagNames))
	checkTable(t, "transfer_flags", v.TransferFlags, flagTable(transferFlagNames))
	checkTable(t, "filter_flags", v.FilterFlags, flagTable(filterFlagNames))
	// String() gives the same names.
	for name, num := range v.ResultCodes {
		if got := ResultCode(num).String(); got != name {
			t.Errorf("ResultCode(%d).String() = %q, want %q", num, got, name)
		}
	}
	for name, num := range v.Statuses {
		if got := Status(num).String(); got != name {
			t.Errorf("Status(%d).String() = %q, want %q", num, got, name)
		}
	}
}

func TestVectorFrames(t *testing.T) {
	v := loadVectors(t)
	ops := map[string]Operation{}
	for name, num := range v.Operations {
		ops[name] = Operation(num)
	}
	statuses := map[string]Status{}
	for name, num := range v.Statuses {
		statuses[name] = Status(num)
	}
	seen := map[string]bool{}
	for _, f := range v.Frames {
		f := f
		t.Run(f.Name, func(t *testing.T) {
			op, ok := ops[f.Operation]
			if !ok {
				t.Fatalf("unknown operation %q", f.Operation)
			}
			status, ok := statuses[f.Status]
			if !ok {
				t.Fatalf("unknown status %q", f.Status)
			}
			id, err := strconv.ParseUint(f.RequestID, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			want, err := hex.DecodeString(f.Hex)
			if err != nil {
				t.Fatal(err)
			}
			body := decodeJSON(t, f.Body)
			switch f.Direction {
			case "request":
				got := encodeVectorRequest(t, op, id, body)
				if !bytes.Equal(got, want) {
					t.Errorf("encoded request differs\n got %x\nwant %x", got, want)
				}
			case "reply":
				h, b, err := decodeFrame(want)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if h.operation != op || h.status != status || h.requestID != id {
					t.Fatalf("header: operation %s status %s id %d", h.operation, h.status, h.requestID)
				}
				got := decodeVectorReply(t, op, status, b)
				if canonical(t, got) != canonical(t, body) {
					t.Errorf("decoded reply differs\n got %s\nwant %s", canonical(t, got), canonical(t, body))
				}
			default:
				t.Fatalf("direction %q", f.Direction)
			}
			seen[f.Direction+" "+f.Operation] = true
		})
	}
	// Every operation's request and ok reply is covered (status has no reply body record
	// besides its own; hello's reply too).
	for name := range v.Operations {
		for _, d := range []string{"request", "reply"} {
			if !seen[d+" "+name] {
				t.Errorf("no %s frame for %s in the golden file", d, name)
			}
		}
	}
}

// encodeVectorRequest encodes a request the way the client does.
func encodeVectorRequest(t *testing.T, op Operation, id uint64, body jsonAny) []byte {
	t.Helper()
	m, _ := body.(map[string]jsonAny)
	var frame []byte
	encodeCalls := func(cl *call) []byte {
		req := &request{op: op, calls: []*call{cl}, events: cl.events}
		if !req.encode(id, cl.events) {
			t.Fatal("encode dropped the call")
		}
		return req.frame
	}
	switch op {
	case OpHello:
		frame = make([]byte, HeaderSize+helloRequestSize)
		if jnum(t, m["version"]) != ProtocolVersion {
			t.Fatalf("hello version %v", m["version"])
		}
		putHelloRequest(frame[HeaderSize:], m["token"].(string))
		finishFrame(frame, op, StatusOK, id)
		return frame
	case OpCreateAccounts:
		cl := newCall(op, zeroTime)
		for _, r := range m["accounts"].([]jsonAny) {
			cl.accounts = append(cl.accounts, accountFromJSON(t, r))
		}
		cl.events = len(cl.accounts)
		return encodeCalls(cl)
	case OpCreateTransfers:
		cl := newCall(op, zeroTime)
		for _, r := range m["transfers"].([]jsonAny) {
			cl.transfers = append(cl.transfers, transferFromJSON(t, r))
		}
		cl.events = len(cl.transfers)
		return encodeCalls(cl)
	case OpSetAccountLimits:
		cl := newCall(op, zeroTime)
		for _, r := range m["limits"].([]jsonAny) {
			cl.limits = append(cl.limits, limitFromJSON(t, r))
		}
		cl.events = len(cl.limits)
		return encodeCalls(cl)
	case OpLookupAccounts, OpLookupTransfers, OpLookupAccountLimits:
		var ids []Uint128
		for _, s := range m["ids"].([]jsonAny) {
			ids = append(ids, ju128(t, s))
		}
		cl := newCall(op, zeroTime)
		cl.body = encodeIDs(ids)
		return encodeCalls(cl)
	case OpGetAccountTransfers, OpGetAccountBalances:
		f := m["filter"].(map[string]jsonAny)
		filter := AccountFilter{
			AccountID:    ju128(t, f["account_id"]),
			TimestampMin: ju64(t, f["timestamp_min"]),
			TimestampMax: ju64(t, f["timestamp_max"]),
			Limit:        uint32(jnum(t, f["limit"])),
			Flags:        FilterFlags(jnum(t, f["flags"])),
		}
		cl := newCall(op, zeroTime)
		cl.body = make([]byte, accountFilterSize)
		putAccountFilter(cl.body, &filter)
		return encodeCalls(cl)
	case OpChangeEvents:
		r := ChangeEventsRequest{
			FromSequence: ju64(t, m["from_sequence"]),
			Limit:        uint32(jnum(t, m["limit"])),
			FromIndex:    uint32(jnum(t, m["from_index"])),
		}
		cl := newCall(op, zeroTime)
		cl.body = make([]byte, changeEventsRequestSize)
		putChangeEventsRequest(cl.body, &r)
		return encodeCalls(cl)
	case OpStatus:
		if body != nil {
			t.Fatalf("status request body %v", body)
		}
		cl := newCall(op, zeroTime)
		cl.body = []byte{}
		return encodeCalls(cl)
	}
	t.Fatalf("no encoder for %s", op)
	return nil
}

// decodeVectorReply decodes a reply body the way the client does, as the file's JSON.
func decodeVectorReply(t *testing.T, op Operation, status Status, body []byte) jsonAny {
	t.Helper()
	if status != StatusOK {
		// Every refusal has an empty body, but for not_leader's leader hint.
		if status != StatusNotLeader && len(body) != 0 {
			t.Fatalf("%s reply with a %d-byte body", status, len(body))
		}
		var se *StatusError
		if err := replyError(op, status, body); !errors.As(err, &se) || se.Status != status || se.Operation != op {
			t.Fatalf("%s reply gives %v", status, err)
		}
		if status == StatusNotLeader {
			return map[string]jsonAny{"leader": n(se.LeaderHint)}
		}
		return nil
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	list := func(n int, f func(i int) jsonAny) []jsonAny {
		out := make([]jsonAny, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	switch op {
	case OpHello:
		h, err := decodeHelloReply(body)
		must(err)
		return map[string]jsonAny{
			"version": n(h.Version), "requests_in_flight_max": n(h.RequestsInFlightMax),
			"frame_body_max": n(h.FrameBodyMax), "events_per_request_max": n(h.EventsPerRequestMax),
			"change_events_per_reply_max": n(h.ChangeEventsPerReplyMax),
		}
	case OpCreateAccounts, OpCreateTransfers, OpSetAccountLimits:
		rs, err := decodeCreateResults(body, EventsPerRequestMax, nil)
		must(err)
		return map[string]jsonAny{"results": list(len(rs), func(i int) jsonAny {
			return map[string]jsonAny{"index": n(rs[i].Index), "result": rs[i].Result.String()}
		})}
	case OpLookupAccounts:
		rs, err := decodeRecords(body, accountSize, EventsPerRequestMax, getAccount)
		must(err)
		return map[string]jsonAny{"accounts": list(len(rs), func(i int) jsonAny { return accountJSON(rs[i]) })}
	case OpLookupTransfers, OpGetAccountTransfers:
		rs, err := decodeRecords(body, transferSize, EventsPerRequestMax, getTransfer)
		must(err)
		return map[string]jsonAny{"transfers": list(len(rs), func(i int) jsonAny { return transferJSON(rs[i]) })}
	case OpLookupAccountLimits:
		rs, err := decodeRecords(body, accountLimitSize, EventsPerRequestMax, getAccountLimit)
		must(err)
		return map[string]jsonAny{"limits": list(len(rs), func(i int) jsonAny { return limitJSON(rs[i]) })}
	case OpGetAccountBalances:
		rs, err := decodeRecords(body, accountBalanceSize, EventsPerRequestMax, getAccountBalance)
		must(err)
		return map[string]jsonAny{"balances": list(len(rs), func(i int) jsonAny {
			b := rs[i]
			return map[string]jsonAny{
				"debits_pending": b.DebitsPending.String(), "debits_posted": b.DebitsPosted.String(),
				"credits_pending": b.CreditsPending.String(), "credits_posted": b.CreditsPosted.String(),
				"timestamp": u64s(b.Timestamp),
			}
		})}
	case OpChangeEvents:
		r, err := decodeChangeEventsReply(body)
		must(err)
		return map[string]jsonAny{
			"next_sequence": u64s(r.NextSequence), "next_index": n(r.NextIndex),
			"head_sequence": u64s(r.HeadSequence),
			"events": list(len(r.Events), func(i int) jsonAny {
				e := r.Events[i]
				return map[string]jsonAny{
					"sequence": u64s(e.Sequence), "index": n(e.Index), "kind": e.Kind.String(),
					"timestamp": u64s(e.Timestamp), "transfer": transferJSON(e.Transfer),
					"debit_account": accountJSON(e.DebitAccount), "credit_account": accountJSON(e.CreditAccount),
					"limit": limitJSON(e.Limit),
				}
			}),
		}
	case OpStatus:
		s, err := decodeStatusReply(body)
		must(err)
		return map[string]jsonAny{
			"sequence": u64s(s.Sequence), "snapshot_sequence": u64s(s.SnapshotSequence),
			"state_hash": s.StateHash.Hex(), "accounts": u64s(s.Accounts), "transfers": u64s(s.Transfers),
			"pending_transfers": u64s(s.PendingTransfers), "failed_ids": u64s(s.FailedIDs),
			"clock_ns": u64s(s.ClockNs), "account_limits": u64s(s.AccountLimits),
			"uptime_ns": u64s(s.UptimeNs), "connections": n(s.Connections),
			"role": n(s.Role), "replica": n(s.Replica), "term": u64s(s.Term), "commit": u64s(s.Commit),
			"leader": n(s.Leader),
		}
	}
	t.Fatalf("no decoder for %s", op)
	return nil
}
