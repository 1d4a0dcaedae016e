package ledgerd

import (
	"encoding/json"
	"math/big"
	"math/rand"
	"testing"
)

func TestUint128Decimal(t *testing.T) {
	cases := []struct {
		s string
		u Uint128
	}{
		{"0", Uint128{}},
		{"1", U128(1)},
		{"18446744073709551615", U128(^uint64(0))},
		{"18446744073709551616", Uint128{Hi: 1}},
		{"10000000000000000000", U128(10_000_000_000_000_000_000)},
		{"340282366920938463463374607431768211455", Uint128Max},
		// 0x0123456789abcdeffedcba9876543210, a value of the golden frames
		{"1512366075204170947332355369683137040", Uint128{Lo: 0xfedcba9876543210, Hi: 0x0123456789abcdef}},
	}
	for _, c := range cases {
		got, err := ParseUint128(c.s)
		if err != nil || got != c.u {
			t.Errorf("ParseUint128(%q) = %v, %v; want %#v", c.s, got, err, c.u)
		}
		if s := c.u.String(); s != c.s {
			t.Errorf("String() = %q, want %q", s, c.s)
		}
		if b := c.u.Big(); b.String() != c.s {
			t.Errorf("Big() = %s, want %s", b, c.s)
		}
	}
	for _, bad := range []string{"", "-1", "1a", " 1", "340282366920938463463374607431768211456", "1000000000000000000000000000000000000000"} {
		if _, err := ParseUint128(bad); err == nil {
			t.Errorf("ParseUint128(%q) accepted", bad)
		}
	}
}

func TestUint128RandomAgainstBig(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	mod := new(big.Int).Lsh(big.NewInt(1), 128)
	for i := 0; i < 10000; i++ {
		u := Uint128{Lo: rng.Uint64(), Hi: rng.Uint64() >> uint(rng.Intn(64))}
		v := Uint128{Lo: rng.Uint64(), Hi: rng.Uint64() >> uint(rng.Intn(64))}
		b := u.Big()
		back, err := Uint128FromBig(b)
		if err != nil || back != u {
			t.Fatalf("big round trip of %v: %v %v", u, back, err)
		}
		parsed, err := ParseUint128(b.String())
		if err != nil || parsed != u || u.String() != b.String() {
			t.Fatalf("decimal of %v: %q vs %q", u, u.String(), b.String())
		}
		sum, carry := u.Add(v)
		want := new(big.Int).Add(b, v.Big())
		if carry != (want.Cmp(mod) >= 0) || sum.Big().Cmp(new(big.Int).Mod(want, mod)) != 0 {
			t.Fatalf("%v + %v = %v (carry %v)", u, v, sum, carry)
		}
		diff, borrow := u.Sub(v)
		wantDiff := new(big.Int).Sub(b, v.Big())
		if borrow != (wantDiff.Sign() < 0) || diff.Big().Cmp(new(big.Int).Mod(wantDiff, mod)) != 0 {
			t.Fatalf("%v - %v = %v (borrow %v)", u, v, diff, borrow)
		}
		if u.Cmp(v) != b.Cmp(v.Big()) {
			t.Fatalf("Cmp(%v, %v)", u, v)
		}
		if Uint128FromBytes(u.Bytes()) != u {
			t.Fatalf("bytes round trip of %v", u)
		}
	}
}

func TestUint128Edges(t *testing.T) {
	if _, err := Uint128FromBig(big.NewInt(-1)); err == nil {
		t.Error("negative accepted")
	}
	if _, err := Uint128FromBig(new(big.Int).Lsh(big.NewInt(1), 128)); err == nil {
		t.Error("2^128 accepted")
	}
	if got := Uint128Max.Add64(1); !got.IsZero() {
		t.Errorf("max + 1 = %v, want 0 (wraps)", got)
	}
	if got := U128(^uint64(0)).Add64(1); got != (Uint128{Hi: 1}) {
		t.Errorf("carry into the high half: %#v", got)
	}
	if h := (Uint128{Lo: 0xfedcba9876543210, Hi: 0x0123456789abcdef}).Hex(); h != "0123456789abcdeffedcba9876543210" {
		t.Errorf("Hex() = %s", h)
	}
	if b := U128(1).Bytes(); b[0] != 1 || b[15] != 0 {
		t.Errorf("wire bytes are little-endian: % x", b)
	}
	var j struct{ ID Uint128 }
	if err := json.Unmarshal([]byte(`{"ID":"340282366920938463463374607431768211455"}`), &j); err != nil || j.ID != Uint128Max {
		t.Errorf("JSON decimal: %v %v", j.ID, err)
	}
	out, _ := json.Marshal(j)
	if string(out) != `{"ID":"340282366920938463463374607431768211455"}` {
		t.Errorf("JSON encoding %s", out)
	}
}
