package ledgerd

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

// JSON helpers for the golden-frame test: u128 and u64 values are decimal strings, u32 and
// u16 JSON numbers, flags integers.

const zeroTime = 0

func decodeJSON(t *testing.T, raw json.RawMessage) jsonAny {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v jsonAny
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// canonical renders a JSON value with sorted keys, so that two values compare as strings.
func canonical(t *testing.T, v jsonAny) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(decodeJSONString(t, b))
}

func decodeJSONString(t *testing.T, b []byte) []byte {
	v := decodeJSON(t, b)
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func n(v interface{}) json.Number {
	switch x := v.(type) {
	case uint8:
		return json.Number(strconv.FormatUint(uint64(x), 10))
	case ReplicaRole:
		return json.Number(strconv.FormatUint(uint64(x), 10))
	case uint16:
		return json.Number(strconv.FormatUint(uint64(x), 10))
	case uint32:
		return json.Number(strconv.FormatUint(uint64(x), 10))
	case AccountFlags:
		return json.Number(strconv.FormatUint(uint64(x), 10))
	case TransferFlags:
		return json.Number(strconv.FormatUint(uint64(x), 10))
	}
	panic("n: unexpected type")
}

func u64s(v uint64) string { return strconv.FormatUint(v, 10) }

func jnum(t *testing.T, v jsonAny) int64 {
	t.Helper()
	num, ok := v.(json.Number)
	if !ok {
		t.Fatalf("not a JSON number: %#v", v)
	}
	i, err := num.Int64()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func ju64(t *testing.T, v jsonAny) uint64 {
	t.Helper()
	s, ok := v.(string)
	if !ok {
		t.Fatalf("not a decimal string: %#v", v)
	}
	u, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func ju128(t *testing.T, v jsonAny) Uint128 {
	t.Helper()
	s, ok := v.(string)
	if !ok {
		t.Fatalf("not a decimal string: %#v", v)
	}
	u, err := ParseUint128(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func accountJSON(a Account) map[string]jsonAny {
	return map[string]jsonAny{
		"id": a.ID.String(), "debits_pending": a.DebitsPending.String(),
		"debits_posted": a.DebitsPosted.String(), "credits_pending": a.CreditsPending.String(),
		"credits_posted": a.CreditsPosted.String(), "user_data_128": a.UserData128.String(),
		"user_data_64": u64s(a.UserData64), "user_data_32": n(a.UserData32),
		"ledger": n(a.Ledger), "code": n(a.Code), "flags": n(a.Flags), "timestamp": u64s(a.Timestamp),
	}
}

func accountFromJSON(t *testing.T, v jsonAny) Account {
	m := v.(map[string]jsonAny)
	return Account{
		ID: ju128(t, m["id"]), DebitsPending: ju128(t, m["debits_pending"]),
		DebitsPosted: ju128(t, m["debits_posted"]), CreditsPending: ju128(t, m["credits_pending"]),
		CreditsPosted: ju128(t, m["credits_posted"]), UserData128: ju128(t, m["user_data_128"]),
		UserData64: ju64(t, m["user_data_64"]), UserData32: uint32(jnum(t, m["user_data_32"])),
		Ledger: uint32(jnum(t, m["ledger"])), Code: uint16(jnum(t, m["code"])),
		Flags: AccountFlags(jnum(t, m["flags"])), Timestamp: ju64(t, m["timestamp"]),
	}
}

func transferJSON(x Transfer) map[string]jsonAny {
	return map[string]jsonAny{
		"id": x.ID.String(), "debit_account_id": x.DebitAccountID.String(),
		"credit_account_id": x.CreditAccountID.String(), "amount": x.Amount.String(),
		"pending_id": x.PendingID.String(), "user_data_128": x.UserData128.String(),
		"user_data_64": u64s(x.UserData64), "user_data_32": n(x.UserData32),
		"timeout": n(x.Timeout), "ledger": n(x.Ledger), "code": n(x.Code), "flags": n(x.Flags),
		"timestamp": u64s(x.Timestamp),
	}
}

func transferFromJSON(t *testing.T, v jsonAny) Transfer {
	m := v.(map[string]jsonAny)
	return Transfer{
		ID: ju128(t, m["id"]), DebitAccountID: ju128(t, m["debit_account_id"]),
		CreditAccountID: ju128(t, m["credit_account_id"]), Amount: ju128(t, m["amount"]),
		PendingID: ju128(t, m["pending_id"]), UserData128: ju128(t, m["user_data_128"]),
		UserData64: ju64(t, m["user_data_64"]), UserData32: uint32(jnum(t, m["user_data_32"])),
		Timeout: uint32(jnum(t, m["timeout"])), Ledger: uint32(jnum(t, m["ledger"])),
		Code: uint16(jnum(t, m["code"])), Flags: TransferFlags(jnum(t, m["flags"])),
		Timestamp: ju64(t, m["timestamp"]),
	}
}

func limitJSON(l AccountLimit) map[string]jsonAny {
	return map[string]jsonAny{"account_id": l.AccountID.String(), "limit": l.Limit.String(), "timestamp": u64s(l.Timestamp)}
}

func limitFromJSON(t *testing.T, v jsonAny) AccountLimit {
	m := v.(map[string]jsonAny)
	return AccountLimit{AccountID: ju128(t, m["account_id"]), Limit: ju128(t, m["limit"]), Timestamp: ju64(t, m["timestamp"])}
}
