package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

// cursor is a value of a resource's delta field: an instant (rfc3339, unix,
// unix_ms) or, with format number, a number such as a change sequence,
// compared by its exact value whatever its size (never through a float:
// above 2^53 that rounds, and a watermark rounded up skips records).
// Watermarks are stored in the field's own format and compared as cursors.
type cursor struct {
	t time.Time
	// n and text: a number's value, and the text it came as, which is
	// what goes back to the upstream.
	n    *big.Rat
	text string
}

// errNoCursor is a record without a value in its delta field (missing or
// null, as on a never-edited row): it is stored, and left out of the
// watermark.
var errNoCursor = errors.New("no value")

// jsonNumber is a JSON number's text: what big.Rat may parse here (it would
// also take fractions, hexadecimal and other forms no upstream means).
var jsonNumber = regexp.MustCompile(`^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$`)

// parseCursor reads a delta field value (a record's, or a stored watermark).
func parseCursor(v any, format string) (cursor, error) {
	if v == nil {
		return cursor{}, errNoCursor
	}
	switch format {
	case config.FormatUnix, config.FormatUnixMS, config.FormatNumber:
		var text string
		switch x := v.(type) {
		case json.Number:
			text = string(x)
		case string:
			text = x
		default:
			return cursor{}, fmt.Errorf("%v is not a number", v)
		}
		if len(text) > 100 || !jsonNumber.MatchString(text) {
			return cursor{}, fmt.Errorf("%.40q is not a number", text)
		}
		n, ok := new(big.Rat).SetString(text)
		if !ok {
			return cursor{}, fmt.Errorf("%.40q is not a number", text)
		}
		switch format {
		case config.FormatUnix:
			return instant(n, 1e9, text)
		case config.FormatUnixMS:
			return instant(n, 1e6, text)
		}
		return cursor{n: n, text: text}, nil
	default:
		s, ok := v.(string)
		if !ok {
			return cursor{}, fmt.Errorf("%v is not an RFC 3339 string", v)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			if _, zoneless := time.Parse("2006-01-02T15:04:05.999999999", s); zoneless == nil {
				return cursor{}, fmt.Errorf("%.40q has no time zone: its instant is unknown", s)
			}
			return cursor{}, fmt.Errorf("%.40q is not an RFC 3339 time", s)
		}
		return cursor{t: t.UTC()}, nil
	}
}

// instant turns a count of units (nanoseconds per unit given) into a time,
// rounding down, so that a filter built from it re-reads rather than skips.
func instant(n *big.Rat, nanosPerUnit int64, text string) (cursor, error) {
	ns := new(big.Rat).Mul(n, new(big.Rat).SetInt64(nanosPerUnit))
	whole := new(big.Int).Quo(ns.Num(), ns.Denom()) // rounds towards zero
	if ns.Sign() < 0 && !ns.IsInt() {
		whole.Sub(whole, big.NewInt(1))
	}
	if !whole.IsInt64() {
		return cursor{}, fmt.Errorf("%.40q is out of range for a time", text)
	}
	return cursor{t: time.Unix(0, whole.Int64()).UTC()}, nil
}

func (c cursor) numeric() bool { return c.n != nil }

// After reports whether c is later (greater) than o.
func (c cursor) After(o cursor) bool {
	if c.numeric() {
		return o.numeric() && c.n.Cmp(o.n) > 0
	}
	return c.t.After(o.t)
}

// minus moves an instant back by the overlap; numbers have no overlap.
func (c cursor) minus(d time.Duration) cursor {
	if !c.numeric() {
		c.t = c.t.Add(-d)
	}
	return c
}

// format writes c in the delta field's format: a number as it came, an
// instant rounded down (unix seconds, milliseconds), so that a filter built
// from it re-reads rather than skips.
func (c cursor) format(format string) string {
	switch format {
	case config.FormatNumber:
		return c.text
	case config.FormatUnix:
		return fmt.Sprint(c.t.Unix())
	case config.FormatUnixMS:
		return fmt.Sprint(c.t.UnixMilli())
	default:
		return c.t.UTC().Format(time.RFC3339Nano)
	}
}

// cursorStats counts the records whose cursor stays out of the watermark,
// for the run's note: once per run, not once per record.
type cursorStats struct {
	missing, unreadable, future int
	example                     string // the first unreadable cursor, and why
	latest                      cursor // the furthest in the future
}

// take reads a record's cursor for the watermark: false for none (missing
// or null: the record is stored all the same), one that cannot be read, or
// one further ahead of the read's start than delta.clock_skew (one
// upstream node's clock ahead, milliseconds in a field of seconds): a
// watermark that far ahead would skip every change until its time came.
func (s *cursorStats) take(r extract.Record, d *config.Delta, readStart time.Time) (cursor, bool) {
	c, err := parseCursor(r.Cursor, d.Format)
	switch {
	case errors.Is(err, errNoCursor):
		s.missing++
		return c, false
	case err != nil:
		s.unreadable++
		if s.example == "" {
			s.example = fmt.Sprintf("record %.60q: %v", r.ID, err)
		}
		return c, false
	case !c.numeric() && c.After(timeCursor(readStart.Add(d.ClockSkew.D()))):
		s.future++
		if c.After(s.latest) {
			s.latest = c
		}
		return c, false
	}
	return c, true
}

// notes says what the run's note says of the cursors it left out.
func (s cursorStats) notes(res *config.Resource) []string {
	var out []string
	if res.Delta == nil {
		return nil
	}
	field := res.Delta.Field
	if s.missing > 0 {
		out = append(out, fmt.Sprintf("%d records had no %s: stored, and left out of the watermark", s.missing, field))
	}
	if s.unreadable > 0 {
		out = append(out, fmt.Sprintf("%d records had a %s that is not %s (first: %s): stored, and left out of the watermark",
			s.unreadable, field, res.Delta.Format, s.example))
	}
	if s.future > 0 {
		out = append(out, fmt.Sprintf("%d records had a %s in the future (up to %s), beyond the read's start and delta.clock_skew: stored, and left out of the watermark",
			s.future, field, s.latest.t.Format(time.RFC3339)))
	}
	return out
}

// timeCursor is an instant as a cursor.
func timeCursor(t time.Time) cursor { return cursor{t: t.UTC()} }
