package worker

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/tidemark/tidemark/config"
)

// cursor is a value of a resource's delta field: an instant (rfc3339, unix,
// unix_ms) or, with format number, a number such as a monotonic id.
// Watermarks are stored in the field's own format and compared as cursors.
type cursor struct {
	t       time.Time
	n       float64
	numeric bool
}

// parseCursor reads a delta field value (a record's, or a stored watermark).
func parseCursor(v any, format string) (cursor, error) {
	switch format {
	case config.FormatUnix, config.FormatUnixMS, config.FormatNumber:
		var n float64
		switch x := v.(type) {
		case json.Number:
			f, err := x.Float64()
			if err != nil {
				return cursor{}, fmt.Errorf("%q is not a number", x)
			}
			n = f
		case string:
			f, err := strconv.ParseFloat(x, 64)
			if err != nil {
				return cursor{}, fmt.Errorf("%q is not a number", x)
			}
			n = f
		default:
			return cursor{}, fmt.Errorf("%v is not a number", v)
		}
		switch format {
		case config.FormatUnix:
			return cursor{t: time.UnixMilli(int64(n * 1000)).UTC()}, nil
		case config.FormatUnixMS:
			return cursor{t: time.UnixMilli(int64(n)).UTC()}, nil
		}
		return cursor{n: n, numeric: true}, nil
	default:
		s, ok := v.(string)
		if !ok {
			return cursor{}, fmt.Errorf("%v is not an RFC 3339 string", v)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return cursor{}, fmt.Errorf("%q is not an RFC 3339 time", s)
		}
		return cursor{t: t.UTC()}, nil
	}
}

// mustCursor parses a cursor this worker formatted itself.
func mustCursor(v, format string) cursor {
	c, _ := parseCursor(v, format)
	return c
}

// After reports whether c is later (greater) than o.
func (c cursor) After(o cursor) bool {
	if c.numeric {
		return c.n > o.n
	}
	return c.t.After(o.t)
}

// minus moves an instant back by the overlap; numbers have no overlap.
func (c cursor) minus(d time.Duration) cursor {
	if !c.numeric {
		c.t = c.t.Add(-d)
	}
	return c
}

// format writes c in the delta field's format. Unix seconds round down, so a
// filter built from it re-reads rather than skips.
func (c cursor) format(format string) string {
	switch format {
	case config.FormatNumber:
		return strconv.FormatFloat(c.n, 'f', -1, 64)
	case config.FormatUnix:
		return strconv.FormatInt(c.t.Unix(), 10)
	case config.FormatUnixMS:
		return strconv.FormatInt(c.t.UnixMilli(), 10)
	default:
		return c.t.UTC().Format(time.RFC3339Nano)
	}
}
