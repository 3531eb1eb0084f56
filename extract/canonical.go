package extract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// appendCanonical appends the canonical JSON of v, leaving out the dotted
// paths of skip (as without does), to b. It writes exactly the bytes
// encoding/json's Encoder (SetEscapeHTML(false)) writes for the decoded
// values Decode produces — stored hashes depend on it — except numbers,
// which it writes as CanonicalNumber does, and InvalidStrings, which it
// writes as the strings they decode to. It does so without reflection and
// without copying objects to drop ignored fields: on a full sync
// encoding/json ran at about 65 µs per 300-byte record, more than the
// decoding. Anything it has no fast path for (non-ASCII or escaped
// strings, numbers not yet canonical, other types) takes a slower one.
func appendCanonical(b []byte, v any, skip [][]string) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		if x {
			return append(b, "true"...), nil
		}
		return append(b, "false"...), nil
	case string:
		return appendString(b, x)
	case json.Number:
		if canonicalNumber(string(x)) {
			return append(b, x...), nil
		}
		if !plainNumber(string(x)) {
			return appendSlow(b, x) // encoding/json's error; "" is 0
		}
		return append(b, CanonicalNumber(string(x))...), nil
	case []any:
		if x == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendCanonical(b, e, nil); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		if x == nil {
			return append(b, "null"...), nil
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		first := true
		for _, k := range keys {
			sub, drop := below(skip, k)
			if drop {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			var err error
			if b, err = appendString(b, k); err != nil {
				return nil, err
			}
			b = append(b, ':')
			if b, err = appendCanonical(b, x[k], sub); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case InvalidString:
		return appendString(b, x.Text)
	default:
		// Not a value Decode makes: encoding/json encodes it, and its
		// numbers are made canonical too.
		enc, err := appendSlow(nil, without(v, skip))
		if err != nil {
			return nil, err
		}
		dv, err := Decode(enc)
		if err != nil {
			return nil, fmt.Errorf("encode record: %w", err)
		}
		return appendCanonical(b, dv, nil)
	}
}

// appendString writes a string that needs no escaping as is; any other
// goes through encoding/json so that escapes stay byte for byte the same.
func appendString(b []byte, s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return appendSlow(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), nil
}

// MaxPlainNumber is the longest plain form CanonicalNumber writes, in
// bytes: a number whose plain form would be longer keeps an exponent form.
const MaxPlainNumber = 1000

// CanonicalNumber returns the canonical spelling of a JSON number: one
// spelling for each exact value, so that a number whose spelling alone
// changes upstream (0 → -0, 1 → 1.0, 100 → 1e2, 1.50 → 1.5) is no change.
// Both the payload and the hashed form of every record, and HashBody, write
// numbers this way.
//
// The canonical form is plain decimal notation: '-' if the value is
// negative, the integer part without leading zeros ("0" when it is zero),
// then, if the value has a fractional part, '.' and its digits without
// trailing zeros. There is no exponent, no '+', and zero is "0", never
// "-0". The value is exact, never rounded through float64: 1.0 → 1,
// -0.0e5 → 0, 1.50e1 → 15, 0.000120 → 0.00012, 1e2 → 100, and
// 12345678901234567890123 stays as it is.
//
// A number whose plain form would be longer than MaxPlainNumber bytes ('-'
// included) is written in exponent form instead, so that 1e999999 does not
// become a megabyte of zeros: '-' if negative, the first significant digit,
// then, if there are more significant digits, '.' and the rest of them
// without trailing zeros, then 'e' and the exponent in decimal without
// leading zeros, with '-' if it is negative and no sign otherwise:
// 1e999999, -1.25e-2000, and 1.00…01e1000 for the integer 10^1000+1 (1,001
// digits written plainly).
//
// Text already in canonical form, as nearly every number is, is returned
// as is without allocating. Text that is not a JSON number is returned
// unchanged.
func CanonicalNumber(text string) string {
	if canonicalNumber(text) {
		return text
	}
	neg, intPart, frac, exp, ok := splitNumber(text)
	if !ok {
		return text
	}
	// The value is 0.digits × 10^point once the digits' leading zeros
	// are gone: point is where the decimal point goes in digits.
	digits := intPart + frac
	lead := len(digits) - len(strings.TrimLeft(digits, "0"))
	digits = strings.TrimRight(digits[lead:], "0")
	if digits == "" {
		return "0"
	}
	n := int64(len(digits))
	e, small := smallExponent(exp)
	if !small {
		// |exponent| >= 10^18: far beyond any plain form.
		point := new(big.Int)
		point.SetString(exp, 10)
		point.Add(point, big.NewInt(int64(len(intPart)-lead-1)))
		return exponentForm(neg, digits, point.String())
	}
	point := int64(len(intPart)-lead) + e
	size := point // digits then zeros
	switch {
	case point <= 0:
		size = 2 - point + n // "0." zeros digits
	case point < n:
		size = n + 1 // a point inside the digits
	}
	if neg {
		size++
	}
	if size > MaxPlainNumber {
		return exponentForm(neg, digits, strconv.FormatInt(point-1, 10))
	}
	b := make([]byte, 0, size)
	if neg {
		b = append(b, '-')
	}
	switch {
	case point <= 0:
		b = append(b, "0."...)
		for range -point {
			b = append(b, '0')
		}
		b = append(b, digits...)
	case point < n:
		b = append(b, digits[:point]...)
		b = append(b, '.')
		b = append(b, digits[point:]...)
	default:
		b = append(b, digits...)
		for range point - n {
			b = append(b, '0')
		}
	}
	return string(b)
}

// exponentForm writes significant digits (no leading or trailing zeros)
// with an exponent, as CanonicalNumber describes.
func exponentForm(neg bool, digits, exp string) string {
	var b strings.Builder
	b.Grow(len(digits) + len(exp) + 3)
	if neg {
		b.WriteByte('-')
	}
	b.WriteByte(digits[0])
	if len(digits) > 1 {
		b.WriteByte('.')
		b.WriteString(digits[1:])
	}
	b.WriteByte('e')
	b.WriteString(exp)
	return b.String()
}

// smallExponent parses an exponent (an optional sign, then digits) that
// has at most 18 significant digits.
func smallExponent(exp string) (int64, bool) {
	digits := strings.TrimLeft(strings.TrimLeft(exp, "+-"), "0")
	if len(digits) > 18 {
		return 0, false
	}
	if digits == "" {
		return 0, true
	}
	e, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	if exp[0] == '-' {
		e = -e
	}
	return e, true
}

// splitNumber splits a JSON number, -?int(.frac)?([eE][+-]?exp)?, into
// its parts; exp keeps its sign ("" without an exponent).
func splitNumber(s string) (neg bool, intPart, frac, exp string, ok bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	digits := func() string {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return s[j:i]
	}
	if i < len(s) && s[i] == '0' {
		intPart = "0"
		i++
	} else if intPart = digits(); intPart == "" {
		return
	}
	if i < len(s) && s[i] == '.' {
		i++
		if frac = digits(); frac == "" {
			return
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		j := i
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == "" {
			return
		}
		exp = s[j:i]
	}
	return neg, intPart, frac, exp, i == len(s)
}

// plainNumber reports whether s is a JSON number (as encoding/json would
// write it unchanged): -?int frac? exp?.
func plainNumber(s string) bool {
	_, _, _, _, ok := splitNumber(s)
	return ok
}

// canonicalNumber reports whether s is a JSON number in canonical form
// (CanonicalNumber's plain form): the fast path of nearly every number.
// scanner.number decides the same while it reads a number.
func canonicalNumber(s string) bool {
	if len(s) == 0 || len(s) > MaxPlainNumber {
		return false
	}
	i := 0
	if s[0] == '-' {
		i++
	}
	if i == len(s) {
		return false
	}
	zero := s[i] == '0'
	if zero {
		i++
	} else {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == j {
			return false
		}
	}
	if i == len(s) {
		return !zero || s[0] != '-' // "-0" is "0"
	}
	if s[i] != '.' {
		return false // an exponent, or not a number
	}
	i++
	j := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i == len(s) && i > j && s[i-1] != '0'
}

func appendSlow(b []byte, v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...), nil
}
