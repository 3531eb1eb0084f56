package worker

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/tidemark/tidemark/config"
)

// Watermarks are stored in the delta field's own format and compared as
// instants.

// parseCursor reads a delta field value (a record's, or a stored watermark).
func parseCursor(v any, format string) (time.Time, error) {
	switch format {
	case config.FormatUnix, config.FormatUnixMS:
		var n float64
		switch x := v.(type) {
		case json.Number:
			f, err := x.Float64()
			if err != nil {
				return time.Time{}, fmt.Errorf("%q is not a number", x)
			}
			n = f
		case string:
			f, err := strconv.ParseFloat(x, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("%q is not a number", x)
			}
			n = f
		default:
			return time.Time{}, fmt.Errorf("%v is not a number", v)
		}
		if format == config.FormatUnix {
			return time.UnixMilli(int64(n * 1000)).UTC(), nil
		}
		return time.UnixMilli(int64(n)).UTC(), nil
	default:
		s, ok := v.(string)
		if !ok {
			return time.Time{}, fmt.Errorf("%v is not an RFC 3339 string", v)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
		}
		return t.UTC(), nil
	}
}

// formatCursor writes an instant in the delta field's format. Unix seconds
// round down, so a filter built from it re-reads rather than skips.
func formatCursor(t time.Time, format string) string {
	switch format {
	case config.FormatUnix:
		return strconv.FormatInt(t.Unix(), 10)
	case config.FormatUnixMS:
		return strconv.FormatInt(t.UnixMilli(), 10)
	default:
		return t.UTC().Format(time.RFC3339Nano)
	}
}
