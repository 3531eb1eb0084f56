package sim

import (
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Content says what the records of a scenario hold: the kind of ids, how
// often a value is one real APIs send and databases choke on, and how the
// cursor field is written.
type Content struct {
	IDs IDKind
	// Hostile is the chance that a generated string or number is a hard
	// one: control characters, NUL, lone surrogates, invalid UTF-8, long,
	// or a number too large for Postgres; for ids, a long or invalid id.
	Hostile float64
	// Format is the delta field's format (config.Format*), "" without delta.
	Format string
	// ZoneOffset writes rfc3339 cursors in this zone instead of UTC.
	ZoneOffset int
	// OddCursor is the chance that a record's cursor is null, missing,
	// unparseable, an hour in the future, or (unix) in milliseconds.
	OddCursor float64
	// SeqBase is where change sequence numbers start: near 2^53, so
	// number cursors cross the float64 limit.
	SeqBase int64
}

// IDKind is the kind of ids a collection has.
type IDKind int

const (
	IntIDs       IDKind = iota // 1, 2, 3, ...
	RespelledIDs               // integers, written 10, 10.0, 1e1 or 10.00 by response
	BigIDs                     // 64-bit and larger integers
	DecimalIDs                 // 1.5, 2.25, ...
	StringIDs                  // strings, some with non-ASCII and (hostile) invalid ones
	idKinds
)

func (k IDKind) String() string {
	return [...]string{"int", "respelled", "big", "decimal", "string"}[k]
}

// ident is a record id as the upstream knows it.
type ident struct {
	num     *num   // a numeric id
	str     strVal // a string id
	numeric bool
}

func (c Content) newID(rng *rand.Rand, uid int) ident {
	switch c.IDs {
	case IntIDs, RespelledIDs:
		return ident{numeric: true, num: intNum(int64(uid + 1))}
	case BigIDs:
		n := new(big.Int).Lsh(big.NewInt(1), 63)
		if uid%2 == 1 {
			n.Lsh(n, 1) // past 2^64 too
		}
		n.Add(n, big.NewInt(int64(uid)))
		return ident{numeric: true, num: bigNum(n)}
	case DecimalIDs:
		n := &num{digits: strconv.Itoa(uid*4 + 6), exp: -1} // 0.6, 1 (1.0), 1.4, ...
		n.normalise()
		return ident{numeric: true, num: n}
	}
	s := strVal{raw: fmt.Sprintf("rec-%d", uid)}
	if rng.Float64() < c.Hostile {
		switch rng.IntN(5) {
		case 0:
			s = s.with(strings.Repeat("x", MaxKeyBytes+rng.IntN(2000))) // too long for the primary key
		case 1:
			s = s.with(`\ud800`) // lone surrogate: must not collapse with another id
			s.lone = true
		case 2:
			s = s.with("\xff") // invalid UTF-8
			s.badUTF8 = true
		case 3:
			s = s.with(`é中\ud83d\ude00`) // fine: non-ASCII and a surrogate pair
		default:
			s = s.with(`\ufffd`) // fine: the replacement character itself
		}
	}
	return ident{str: s}
}

// json writes the id as a response spells it.
func (i ident) json(spell int, kind IDKind) string {
	if !i.numeric {
		return `"` + i.str.raw + `"`
	}
	if kind == RespelledIDs {
		return i.num.spelled(spell)
	}
	return i.num.canonical()
}

// key is the external_id tidemark should store the record under: numbers
// by value, strings as decoded. Invalid ids get a key of their own in the
// model (they are never stored), so two of them never merge.
func (i ident) key() string {
	if i.numeric {
		return i.num.canonical()
	}
	if i.str.lone || i.str.badUTF8 {
		return "invalid:" + i.str.raw
	}
	return i.str.decoded()
}

// invalid says why tidemark must reject the id, or "".
func (i ident) invalid() string {
	switch {
	case i.str.lone:
		return "id holds a lone surrogate"
	case i.str.badUTF8:
		return "id is not valid UTF-8"
	}
	return ""
}

// strVal is a JSON string as written in a body: raw is what goes between
// the quotes (escapes included).
type strVal struct {
	raw           string
	nul           bool
	lone, badUTF8 bool
}

func (s strVal) with(piece string) strVal { s.raw += piece; return s }

func (s strVal) hasNUL() bool { return s.nul }

// decoded is the string a JSON decoder reads from raw.
func (s strVal) decoded() string {
	var out string
	if err := json.Unmarshal([]byte(`"`+s.raw+`"`), &out); err != nil {
		panic(fmt.Sprintf("sim: bad string literal %q: %v", s.raw, err))
	}
	return out
}

// str draws a string value.
func (c Content) str(rng *rand.Rand) strVal {
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot"}
	s := strVal{raw: words[rng.IntN(len(words))]}
	if rng.Float64() >= c.Hostile {
		return s
	}
	switch rng.IntN(9) {
	case 0:
		s = s.with(`\u0000`) // jsonb cannot hold U+0000
		s.nul = true
	case 1:
		s = s.with(`\u0001\u001f\n\t`)
	case 2:
		s = s.with(`\ud800`) // a lone surrogate in a value decodes to U+FFFD
	case 3:
		s = s.with("\xfe") // invalid UTF-8 in a value decodes to U+FFFD
	case 4:
		s = s.with(`\"quoted\" \\ back`)
	case 5:
		s = s.with("é中" + `\ud83d\ude00`)
	case 6:
		s = s.with(strings.Repeat("long ", 400))
	case 7:
		s = s.with(`<script>&amp;`)
	default:
		s = s.with("\u2028\u2029")
	}
	return s
}

// num is a decimal number by value: (-1)^neg × digits × 10^exp, with no
// leading or trailing zeros in digits ("" is zero).
type num struct {
	neg    bool
	digits string
	exp    int
}

func intNum(v int64) *num { return bigNum(big.NewInt(v)) }

func bigNum(v *big.Int) *num {
	s := v.String()
	n := &num{}
	if strings.HasPrefix(s, "-") {
		n.neg, s = true, s[1:]
	}
	n.digits = s
	n.normalise()
	return n
}

func (n *num) normalise() {
	n.digits = strings.TrimLeft(n.digits, "0")
	for strings.HasSuffix(n.digits, "0") {
		n.digits = n.digits[:len(n.digits)-1]
		n.exp++
	}
	if n.digits == "" {
		n.neg, n.exp = false, 0
	}
}

// number draws a number value.
func (c Content) number(rng *rand.Rand) num {
	var n num
	switch rng.IntN(4) {
	case 0:
		n = num{digits: strconv.Itoa(rng.IntN(1000))}
	case 1:
		n = num{digits: strconv.Itoa(rng.IntN(100000)), exp: -2} // cents
	case 2:
		n = num{} // zero, which has a negative spelling
	default:
		n = num{digits: strconv.FormatUint(rng.Uint64(), 10), neg: rng.IntN(2) == 0} // past 2^53
	}
	if rng.Float64() < c.Hostile {
		switch rng.IntN(3) {
		case 0:
			n = num{digits: "1", exp: 200000} // beyond Postgres' numeric
		case 1:
			n = num{digits: "123456789", exp: -40}
		default:
			n = num{digits: "9", exp: 300}
		}
	}
	n.normalise()
	return n
}

// outOfRange reports a number Postgres' numeric cannot hold (more than
// 131072 digits before the point or 16383 after).
func (n num) outOfRange() bool {
	return n.digits != "" && (n.exp+len(n.digits) > 131072 || n.exp < -16383)
}

// canonical is the plain decimal form: no exponent, no leading or
// trailing zeros, no sign on zero.
func (n num) canonical() string {
	if n.digits == "" {
		return "0"
	}
	if n.outOfRange() {
		return n.sci()
	}
	var b strings.Builder
	if n.neg {
		b.WriteByte('-')
	}
	switch {
	case n.exp >= 0:
		b.WriteString(n.digits)
		b.WriteString(strings.Repeat("0", n.exp))
	case -n.exp < len(n.digits):
		b.WriteString(n.digits[:len(n.digits)+n.exp])
		b.WriteByte('.')
		b.WriteString(n.digits[len(n.digits)+n.exp:])
	default:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -n.exp-len(n.digits)))
		b.WriteString(n.digits)
	}
	return b.String()
}

func (n num) sci() string {
	s := n.digits + "e" + strconv.Itoa(n.exp)
	if n.neg {
		s = "-" + s
	}
	return s
}

// spelled writes the number one of four ways, all of the same value.
func (n num) spelled(spell int) string {
	if n.outOfRange() {
		return n.sci()
	}
	switch spell % 4 {
	case 1: // trailing zeros
		c := n.canonical()
		if !strings.Contains(c, ".") {
			return c + ".0"
		}
		return c + "00"
	case 2: // exponent form
		if n.digits == "" {
			return "0e5"
		}
		return n.sci()
	case 3: // signed zero, or an exponent with a sign and capital E
		if n.digits == "" {
			return "-0"
		}
		s := n.digits + "0E" + fmt.Sprintf("%+d", n.exp-1)
		if n.neg {
			s = "-" + s
		}
		return s
	}
	return n.canonical()
}

// Cursor modes: how a record's updated_at (or seq) is written.
const (
	cursorNormal = iota
	cursorNull
	cursorMissing
	cursorZoneless // "2006-01-02T15:04:05": no zone, unparseable
	cursorFuture   // an hour ahead of the upstream's clock
	cursorMillis   // unix: milliseconds in a seconds field
	cursorModes
)

func (c Content) cursorMode(rng *rand.Rand) int {
	if c.Format == "" || rng.Float64() >= c.OddCursor {
		return cursorNormal
	}
	return 1 + rng.IntN(cursorModes-1)
}

// cursorField is the record field the delta cursor is read from.
func (c Content) cursorField() string {
	if c.Format == "number" {
		return "seq"
	}
	return "updated_at"
}

// cursorJSON writes r's cursor, or "" to leave the field out.
func (c Content) cursorJSON(r *rec) string {
	if c.Format == "number" {
		switch r.cursorMode {
		case cursorNull:
			return "null"
		case cursorMissing:
			return ""
		case cursorZoneless:
			return `"n/a"`
		}
		return strconv.FormatInt(r.seq, 10)
	}
	switch r.cursorMode {
	case cursorNull:
		return "null"
	case cursorMissing:
		return ""
	}
	if r.stamp == nil { // the field is written even without a time
		return "null"
	}
	t := *r.stamp
	if r.cursorMode == cursorZoneless {
		return `"` + t.UTC().Format("2006-01-02T15:04:05") + `"`
	}
	switch c.Format {
	case "unix":
		if r.cursorMode == cursorMillis {
			return strconv.FormatInt(t.UnixMilli(), 10)
		}
		if t.Nanosecond() != 0 {
			return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
		}
		return strconv.FormatInt(t.Unix(), 10)
	case "unix_ms":
		return strconv.FormatInt(t.UnixMilli(), 10)
	}
	zone := time.FixedZone("", c.ZoneOffset)
	return `"` + t.In(zone).Format(time.RFC3339Nano) + `"`
}

// render writes a record as the upstream serves it in one response.
func (m *Model) render(r *rec, response int) []byte {
	var b strings.Builder
	b.WriteString(`{"id":`)
	b.WriteString(r.id.json(r.spell+response, m.content.IDs))
	b.WriteString(`,"name":"`)
	b.WriteString(r.name.raw)
	b.WriteString(`","amount":`)
	b.WriteString(r.amount.spelled(r.spell))
	b.WriteString(`,"tags":[`)
	for i, t := range r.tags {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + t.raw + `"`)
	}
	b.WriteString(`],"meta":{"n":`)
	b.WriteString(r.nested.spelled(r.spell + 1))
	// A volatile field (ignore_fields): it differs in every response and
	// must never count as a change.
	fmt.Fprintf(&b, `,"fetched_at":%d}`, response)
	if m.content.Format != "" {
		if v := m.content.cursorJSON(r); v != "" {
			b.WriteString(`,"` + m.content.cursorField() + `":` + v)
		}
	}
	b.WriteByte('}')
	return []byte(b.String())
}
