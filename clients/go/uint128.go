package ledgerd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"strconv"
)

// Uint128 is an unsigned 128-bit integer: ids, amounts and balances. On the wire it is 16
// bytes, least significant first. The zero value is 0.
type Uint128 struct {
	Lo uint64 // the low 64 bits
	Hi uint64 // the high 64 bits
}

// Uint128Max is 2^128 - 1, which no id may be.
var Uint128Max = Uint128{Lo: ^uint64(0), Hi: ^uint64(0)}

// U128 returns v as a Uint128.
func U128(v uint64) Uint128 { return Uint128{Lo: v} }

// IsZero reports whether u is 0.
func (u Uint128) IsZero() bool { return u.Lo == 0 && u.Hi == 0 }

// Cmp returns -1, 0 or +1 as u is less than, equal to or greater than v.
func (u Uint128) Cmp(v Uint128) int {
	switch {
	case u.Hi < v.Hi || (u.Hi == v.Hi && u.Lo < v.Lo):
		return -1
	case u == v:
		return 0
	default:
		return 1
	}
}

// Add returns u + v and whether the sum overflowed 128 bits (the sum then wraps).
func (u Uint128) Add(v Uint128) (Uint128, bool) {
	lo, carry := bits.Add64(u.Lo, v.Lo, 0)
	hi, carry := bits.Add64(u.Hi, v.Hi, carry)
	return Uint128{Lo: lo, Hi: hi}, carry != 0
}

// Add64 returns u + v, wrapping modulo 2^128: handy for ids derived from a base.
func (u Uint128) Add64(v uint64) Uint128 {
	lo, carry := bits.Add64(u.Lo, v, 0)
	return Uint128{Lo: lo, Hi: u.Hi + carry}
}

// Sub returns u - v and whether it borrowed (v > u; the difference then wraps).
func (u Uint128) Sub(v Uint128) (Uint128, bool) {
	lo, borrow := bits.Sub64(u.Lo, v.Lo, 0)
	hi, borrow := bits.Sub64(u.Hi, v.Hi, borrow)
	return Uint128{Lo: lo, Hi: hi}, borrow != 0
}

// Uint64 returns u as a uint64 and whether it fits.
func (u Uint128) Uint64() (uint64, bool) { return u.Lo, u.Hi == 0 }

// Big returns u as a new big.Int.
func (u Uint128) Big() *big.Int {
	b := new(big.Int).SetUint64(u.Hi)
	b.Lsh(b, 64)
	return b.Or(b, new(big.Int).SetUint64(u.Lo))
}

// Uint128FromBig converts b, which must be in [0, 2^128).
func Uint128FromBig(b *big.Int) (Uint128, error) {
	if b.Sign() < 0 || b.BitLen() > 128 {
		return Uint128{}, fmt.Errorf("ledgerd: %s does not fit an unsigned 128-bit integer", b)
	}
	var buf [16]byte
	b.FillBytes(buf[:])
	return Uint128{Hi: binary.BigEndian.Uint64(buf[:8]), Lo: binary.BigEndian.Uint64(buf[8:])}, nil
}

var errUint128Syntax = errors.New("ledgerd: not a decimal unsigned 128-bit integer")

// ParseUint128 parses a decimal string (digits only, at most 2^128 - 1).
func ParseUint128(s string) (Uint128, error) {
	if s == "" || len(s) > 39 {
		return Uint128{}, fmt.Errorf("%w: %q", errUint128Syntax, s)
	}
	var u Uint128
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return Uint128{}, fmt.Errorf("%w: %q", errUint128Syntax, s)
		}
		// u = u*10 + digit, refusing any carry out of the top 64 bits.
		hiHi, hiLo := bits.Mul64(u.Hi, 10)
		loHi, loLo := bits.Mul64(u.Lo, 10)
		hi, carry := bits.Add64(hiLo, loHi, 0)
		if hiHi != 0 || carry != 0 {
			return Uint128{}, fmt.Errorf("%w: %q overflows", errUint128Syntax, s)
		}
		lo, carry := bits.Add64(loLo, uint64(c-'0'), 0)
		hi, carry = bits.Add64(hi, 0, carry)
		if carry != 0 {
			return Uint128{}, fmt.Errorf("%w: %q overflows", errUint128Syntax, s)
		}
		u = Uint128{Lo: lo, Hi: hi}
	}
	return u, nil
}

// MustParseUint128 is ParseUint128 that panics on a bad string: for constants in code.
func MustParseUint128(s string) Uint128 {
	u, err := ParseUint128(s)
	if err != nil {
		panic(err)
	}
	return u
}

// String returns u in decimal.
func (u Uint128) String() string {
	if u.Hi == 0 {
		return formatUint64(u.Lo)
	}
	// Split into base-10^19 digits: at most three, since 2^128 < 10^57.
	const base = 10_000_000_000_000_000_000 // 10^19
	var chunks [3]uint64
	n := 0
	for !u.IsZero() {
		hiQ, hiR := bits.Div64(0, u.Hi, base)
		loQ, r := bits.Div64(hiR, u.Lo, base)
		chunks[n] = r
		n++
		u = Uint128{Lo: loQ, Hi: hiQ}
	}
	s := formatUint64(chunks[n-1])
	for i := n - 2; i >= 0; i-- {
		d := formatUint64(chunks[i])
		s += "0000000000000000000"[len(d):] + d
	}
	return s
}

// Hex returns u as 32 lowercase hex digits, most significant first (how state hashes print).
func (u Uint128) Hex() string { return fmt.Sprintf("%016x%016x", u.Hi, u.Lo) }

// Bytes returns the wire form: 16 bytes, least significant first.
func (u Uint128) Bytes() [16]byte {
	var b [16]byte
	putU128(b[:], u)
	return b
}

// Uint128FromBytes reads the wire form (16 bytes, least significant first).
func Uint128FromBytes(b [16]byte) Uint128 { return getU128(b[:]) }

// MarshalText encodes u in decimal, so that JSON and text formats carry exact values.
func (u Uint128) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText parses a decimal string.
func (u *Uint128) UnmarshalText(b []byte) error {
	v, err := ParseUint128(string(b))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

func putU128(b []byte, u Uint128) {
	binary.LittleEndian.PutUint64(b[0:8], u.Lo)
	binary.LittleEndian.PutUint64(b[8:16], u.Hi)
}

func getU128(b []byte) Uint128 {
	return Uint128{Lo: binary.LittleEndian.Uint64(b[0:8]), Hi: binary.LittleEndian.Uint64(b[8:16])}
}

func formatUint64(v uint64) string { return strconv.FormatUint(v, 10) }

// Equal reports whether u == v (the same as u == v; reads better in chains of calls).
func (u Uint128) Equal(v Uint128) bool { return u == v }
