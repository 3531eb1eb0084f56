package worker

import (
	"fmt"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// RecordCursor is a record's delta field value as a fetch reads it for the
// watermark, in the delta's format. When the fetch would leave it out of
// the watermark (missing, unreadable, too far in the future of readStart,
// the upstream's clock when the read began), why says so; the record is
// stored all the same. tidemark preview shows both.
func RecordCursor(r extract.Record, d *config.Delta, readStart time.Time) (value, why string) {
	var s cursorStats
	c, ok := s.take(r, d, readStart)
	if ok {
		return c.format(d.Format), ""
	}
	switch {
	case s.missing > 0:
		return "", fmt.Sprintf("no %s: left out of the watermark", d.Field)
	case s.future > 0:
		return c.format(d.Format), fmt.Sprintf("in the future, beyond the read's start and delta.clock_skew (%s): left out of the watermark", d.ClockSkew.D())
	}
	_, err := parseCursor(r.Cursor, d.Format) // unreadable: take said so
	return fmt.Sprint(r.Cursor), fmt.Sprintf("not %s (%v): left out of the watermark", d.Format, err)
}

// DeltaStart says how a fetch of res would begin given its sync state st:
// the watermark a delta would start from ("" for none: a watermark made
// under another delta field or format is not used), whether the fetch
// would be a full read whatever was asked (the id path changed: it re-keys
// every record), and the notes its run would carry about both.
func DeltaStart(res *config.Resource, st store.State) (watermark string, full bool, notes []string) {
	f := &run{res: res, st: st, basis: basisOf(res)}
	f.checkBasis()
	watermark = st.Watermark
	if f.ignoreMark {
		watermark = ""
	}
	return watermark, f.rekey, f.notes
}

// FirstPosition is where a fetch of res in mode would begin at now, given
// the watermark it would start from (DeltaStart): its first URL and, for a
// POST, its body's values; and the notes its run would carry about it.
func FirstPosition(client *upstream.Client, res *config.Resource, mode tidemark.RunKind, watermark string, now time.Time) (upstream.Position, []string) {
	f := &run{res: res, client: client, mode: mode, began: now, st: store.State{Watermark: watermark}}
	return f.beginning(), f.notes
}
