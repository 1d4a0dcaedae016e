package ledgerd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// The golden header of docs/protocol.md section 3.
func TestGoldenHeader(t *testing.T) {
	frame := beginFrame(nil)
	frame = append(frame, bytes.Repeat([]byte{0xaa}, 8)...)
	finishFrame(frame, OpCreateTransfers, StatusOK, 0x0102030405060708)
	want := "4c444752" + "0100" + "0300" + "0000" + "0000" + "08000000" + "0807060504030201" +
		"689d1db5" + strings.Repeat("00", 36)
	if got := hex.EncodeToString(frame[:HeaderSize]); got != want {
		t.Fatalf("header\n got %s\nwant %s", got, want)
	}
	h, body, err := decodeFrame(frame)
	if err != nil || h.operation != OpCreateTransfers || h.requestID != 0x0102030405060708 || len(body) != 8 {
		t.Fatalf("decode: %+v %v", h, err)
	}
}

func TestHeaderChecks(t *testing.T) {
	good := beginFrame(nil)
	good = append(good, 1, 2, 3, 4)
	finishFrame(good, OpStatus, StatusOK, 7)
	mutate := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	cases := map[string][]byte{
		"magic":    mutate(func(b []byte) { b[0] = 'X' }),
		"version":  mutate(func(b []byte) { b[4] = 2 }),
		"reserved": mutate(func(b []byte) { b[40] = 1 }),
		"checksum": mutate(func(b []byte) { b[HeaderSize] ^= 1 }),
		"too long": mutate(func(b []byte) { le.PutUint32(b[offBodyLength:], FrameBodyMax+1) }),
	}
	for name, frame := range cases {
		_, _, err := decodeFrame(frame)
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Errorf("%s: got %v, want a ProtocolError", name, err)
		}
	}
	if _, _, err := decodeFrame(good); err != nil {
		t.Errorf("good frame: %v", err)
	}
}

func TestRecordRoundTrips(t *testing.T) {
	a := Account{ID: MustParseUint128("340282366920938463463374607431768211454"), DebitsPending: U128(1),
		DebitsPosted: U128(2), CreditsPending: U128(3), CreditsPosted: Uint128{Hi: 4}, UserData128: U128(5),
		UserData64: 6, UserData32: 7, Ledger: 8, Code: 9, Flags: AccountHistory | AccountLinked, Timestamp: 10}
	b := make([]byte, accountSize)
	for i := range b {
		b[i] = 0xff // put must overwrite reserved bytes too
	}
	putAccount(b, &a)
	if getAccount(b) != a || le.Uint32(b[108:]) != 0 {
		t.Errorf("account round trip: %+v", getAccount(b))
	}
	tr := Transfer{ID: U128(1), DebitAccountID: U128(2), CreditAccountID: U128(3), Amount: Uint128Max,
		PendingID: U128(5), UserData128: U128(6), UserData64: 7, UserData32: 8, Timeout: 9, Ledger: 10,
		Code: 11, Flags: TransferPending | TransferLinked, Timestamp: 12}
	putTransfer(b, &tr)
	if getTransfer(b) != tr {
		t.Errorf("transfer round trip: %+v", getTransfer(b))
	}
	l := AccountLimit{AccountID: U128(1), Limit: U128(2), Timestamp: 3}
	putAccountLimit(b, &l)
	if getAccountLimit(b) != l || !bytes.Equal(b[40:64], make([]byte, 24)) {
		t.Errorf("limit round trip")
	}
}

func TestDecodeCreateResultsRejectsBadReplies(t *testing.T) {
	enc := func(pairs ...uint32) []byte {
		b := make([]byte, 0, len(pairs)*4)
		for _, p := range pairs {
			b = le.AppendUint32(b, p)
		}
		return b
	}
	if rs, err := decodeCreateResults(enc(0, 15, 2, 61), 3, nil); err != nil || len(rs) != 2 || rs[1] != (CreateResult{2, ResultExceedsCredits}) {
		t.Fatalf("good reply: %v %v", rs, err)
	}
	for name, body := range map[string][]byte{
		"index out of range": enc(3, 15),
		"not ascending":      enc(1, 15, 0, 15),
		"ok listed":          enc(0, 0),
		"ragged":             enc(0, 15)[:5],
		"more than events":   enc(0, 15, 1, 15, 2, 15, 3, 15),
	} {
		if _, err := decodeCreateResults(body, 3, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNamesOfUnknownNumbers(t *testing.T) {
	if s := Status(99).String(); s != "status(99)" {
		t.Errorf("unknown status prints %q", s)
	}
	if s := ResultCode(1000).String(); s != "result(1000)" {
		t.Errorf("unknown result prints %q", s)
	}
	if s := ResultExists.String(); s != "exists" {
		t.Errorf("ResultExists prints %q", s)
	}
	if s := (TransferLinked | TransferPending | 0x100).String(); s != "linked|pending|0x100" {
		t.Errorf("flags print %q", s)
	}
	if !StatusShuttingDown.Closes() || StatusBusy.Closes() || StatusNotLeader.Closes() || Status(99).Closes() {
		t.Error("Closes() disagrees with the table")
	}
	if s := RoleCandidate.String(); s != "candidate" {
		t.Errorf("RoleCandidate prints %q", s)
	}
	if s := ReplicaRole(4).String(); s != "role(4)" {
		t.Errorf("unknown role prints %q", s)
	}
}

func TestDecodeStatusReplyRoles(t *testing.T) {
	b := make([]byte, statusReplySize)
	b[92], b[93] = byte(RoleFollower), 2
	le.PutUint64(b[96:], 12)
	le.PutUint64(b[104:], 13)
	le.PutUint32(b[112:], LeaderUnknown)
	s, err := decodeStatusReply(b)
	if err != nil || s.Role != RoleFollower || s.Replica != 2 || s.Term != 12 || s.Commit != 13 || s.Leader != LeaderUnknown {
		t.Fatalf("status reply: %+v %v", s, err)
	}
	b[92] = 4
	var pe *ProtocolError
	if _, err := decodeStatusReply(b); !errors.As(err, &pe) {
		t.Errorf("role 4: got %v, want a *ProtocolError", err)
	}
}

func TestDecodeNotLeaderReply(t *testing.T) {
	body := make([]byte, notLeaderReplySize)
	le.PutUint32(body, 2)
	for _, c := range []struct {
		body []byte
		want uint32
	}{{body, 2}, {nil, LeaderUnknown}} {
		var se *StatusError
		err := replyError(OpCreateTransfers, StatusNotLeader, c.body)
		if !errors.As(err, &se) || se.Status != StatusNotLeader || se.LeaderHint != c.want {
			t.Errorf("%d-byte body: got %v", len(c.body), err)
		}
	}
	var pe *ProtocolError
	if err := replyError(OpCreateTransfers, StatusNotLeader, body[:4]); !errors.As(err, &pe) {
		t.Errorf("4-byte body: got %v, want a *ProtocolError", err)
	}
}
