// Package money converts between integer fen, the only representation of CNY
// amounts inside diamondd, and the decimal yuan strings some channels speak
// (Alipay sends and expects "6.00").
//
// Parsing is deliberately strict: a channel amount that is not exactly a
// plain decimal with at most two fraction digits is a protocol error, never
// something to round, truncate or guess about.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ErrInvalidYuan is wrapped by every ParseYuan error.
var ErrInvalidYuan = errors.New("money: invalid yuan amount")

// ParseYuan converts a yuan amount such as "6.00", "6.5" or "6" into fen.
//
// Accepted: one or more ASCII digits without a superfluous leading zero,
// optionally followed by a dot and one or two digits. Rejected: signs,
// exponents, whitespace, ".5", "5.", more than two decimals, digit-group
// separators, and values that do not fit in an int64 number of fen. Zero
// ("0.00") is accepted: callers decide whether zero is a valid amount.
func ParseYuan(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrInvalidYuan)
	}
	intPart, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			intPart, frac = s[:i], s[i+1:]
			if frac == "" {
				return 0, fmt.Errorf("%w: %q: no digits after the dot", ErrInvalidYuan, s)
			}
			break
		}
	}
	if intPart == "" {
		return 0, fmt.Errorf("%w: %q: no digits before the dot", ErrInvalidYuan, s)
	}
	if !allDigits(intPart) || !allDigits(frac) {
		return 0, fmt.Errorf("%w: %q: not a plain decimal", ErrInvalidYuan, s)
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("%w: %q: more than two decimals", ErrInvalidYuan, s)
	}
	// "06.00" is not how any channel writes amounts; accepting it would make
	// two spellings of one amount both valid.
	if len(intPart) > 1 && intPart[0] == '0' {
		return 0, fmt.Errorf("%w: %q: leading zero", ErrInvalidYuan, s)
	}

	var yuan int64
	for i := 0; i < len(intPart); i++ {
		d := int64(intPart[i] - '0')
		if yuan > (math.MaxInt64-d)/10 {
			return 0, fmt.Errorf("%w: %q: too large", ErrInvalidYuan, s)
		}
		yuan = yuan*10 + d
	}
	var cents int64
	switch len(frac) {
	case 1:
		cents = int64(frac[0]-'0') * 10
	case 2:
		cents = int64(frac[0]-'0')*10 + int64(frac[1]-'0')
	}
	if yuan > (math.MaxInt64-cents)/100 {
		return 0, fmt.Errorf("%w: %q: too large", ErrInvalidYuan, s)
	}
	return yuan*100 + cents, nil
}

// FormatFen formats fen as yuan with exactly two decimals: 600 → "6.00",
// 1 → "0.01", -250 → "-2.50". For fen ≥ 0 the result is accepted by ParseYuan
// and parses back to fen.
func FormatFen(fen int64) string {
	sign := ""
	// Work in uint64 so that math.MinInt64 has a magnitude too.
	mag := uint64(fen)
	if fen < 0 {
		sign = "-"
		mag = -mag
	}
	cents := mag % 100
	return sign + strconv.FormatUint(mag/100, 10) + "." + string([]byte{byte('0' + cents/10), byte('0' + cents%10)})
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
