package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/store"
)

// The regression tests of issue 22: what records contain. One bad value
// never blocks, loses or invents data.

// TestUnstorableRecordsAreQuarantined: a record Postgres cannot store (U+0000
// in a string, an id too long for the primary key, a number beyond numeric)
// or cannot key (an id that is not valid UTF-8 or holds a lone surrogate, no
// id) is set aside with the reason; the rest of its page and of the resource
// syncs, and the run says how many. A record fixed upstream leaves the
// quarantine when it is stored; one gone upstream when a full read no longer
// sees it.
func TestUnstorableRecordsAreQuarantined(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", 1500)
	now := time.Now()
	api := &scripted{recs: []scriptedRec{
		{ID: "1", Fields: `"name":"fine"`, Stamp: now},
		{ID: "2", Fields: `"name":"a\u0000b"`, Stamp: now},
		{ID: `"` + long + `"`, Fields: `"name":"long id"`, Stamp: now},
		{ID: "4", Fields: `"amount":1e200000`, Stamp: now},
		{ID: `"x\ud800"`, Fields: `"name":"lone surrogate"`, Stamp: now},
		{ID: `"x\udbff"`, Fields: `"name":"another lone surrogate"`, Stamp: now},
		{ID: "\"y\xff\"", Fields: `"name":"invalid UTF-8"`, Stamp: now},
		{ID: "7", Fields: `"name":"fine too"`, Stamp: now},
	}}
	f := startScripted(t, api, `
pagination: {style: cursor, cursor_param: cursor, next_field: next_cursor, limit_param: limit, limit: 3}
full_sync: {detect_deletes: true}`)
	run := f.mustSucceed(f.full())
	if live := f.live(); len(live) != 2 || live["1"] == nil || live["7"] == nil {
		t.Fatalf("live records %v, want 1 and 7", keys(live))
	}
	if run.RecordsQuarantined != 6 {
		t.Fatalf("run records_quarantined = %d, want 6", run.RecordsQuarantined)
	}
	reasons := f.quarantine()
	for id, want := range map[string]string{"2": "U+0000", long: "bytes long", "4": "Postgres cannot store it"} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("quarantine reason of %.20q = %q, want it to say %q", id, reasons[id], want)
		}
	}
	if n := f.count(`SELECT count(*) FROM record_quarantine WHERE external_id IS NULL AND (reason LIKE '%surrogate%' OR reason LIKE '%UTF-8%')`); n != 3 {
		t.Errorf("%d quarantined records with invalid ids, want 3 (two lone surrogates told apart, one invalid UTF-8)", n)
	}
	if st := f.state(); st.Quarantined != 6 {
		t.Errorf("sync_state.quarantined = %d, want 6", st.Quarantined)
	}
	// One event per page that set records aside, with the page.
	if n := f.count(`SELECT coalesce(sum((payload->>'quarantined')::int), 0) FROM outbox WHERE event = 'records.quarantined'`); n != 6 {
		t.Errorf("records.quarantined events count %d records, want 6", n)
	}
	events := f.count(`SELECT count(*) FROM outbox WHERE event = 'records.quarantined'`)

	// Fixed upstream: record 2 is stored and leaves the quarantine; the
	// long id is gone upstream and leaves it at the full read's end. The
	// same bad records again raise no second event.
	api.mu.Lock()
	api.set(scriptedRec{ID: "2", Fields: `"name":"ab"`, Stamp: now})
	api.remove(`"` + long + `"`)
	api.mu.Unlock()
	f.mustSucceed(f.full())
	if f.live()["2"] == nil {
		t.Fatal("record 2, fixed upstream, was not stored")
	}
	reasons = f.quarantine()
	if _, ok := reasons["2"]; ok {
		t.Error("record 2 is still quarantined after it was stored")
	}
	if _, ok := reasons[long]; ok {
		t.Error("the long id is still quarantined after a full read no longer saw it")
	}
	if st := f.state(); st.Quarantined != 4 {
		t.Errorf("sync_state.quarantined = %d, want 4", st.Quarantined)
	}
	if n := f.count(`SELECT count(*) FROM outbox WHERE event = 'records.quarantined'`); n != events {
		t.Errorf("%d records.quarantined events after a second read, want still %d: the same records again are not news", n, events)
	}
}

// TestNULInIDIsQuarantined: an id holding U+0000 cannot be a key in
// Postgres (text refuses it) even where the stored projection leaves the
// id out: the record is set aside, and the rest of the page syncs.
func TestNULInIDIsQuarantined(t *testing.T) {
	t.Parallel()
	now := time.Now()
	api := &scripted{recs: []scriptedRec{
		{ID: "1", Fields: `"name":"fine"`, Stamp: now},
		{ID: `"a\u0000b"`, Fields: `"name":"NUL in its id"`, Stamp: now},
		{ID: "3", Fields: `"name":"fine too"`, Stamp: now},
	}}
	f := startScripted(t, api, `
fields: {name: name}
full_sync: {detect_deletes: true}`)
	run := f.mustSucceed(f.full())
	if live := f.live(); len(live) != 2 || live["1"] == nil || live["3"] == nil {
		t.Fatalf("live records %v, want 1 and 3", keys(live))
	}
	if run.RecordsQuarantined != 1 {
		t.Fatalf("run records_quarantined = %d, want 1", run.RecordsQuarantined)
	}
	if n := f.count(`SELECT count(*) FROM record_quarantine WHERE reason LIKE '%U+0000%'`); n != 1 {
		t.Errorf("%d quarantined records saying U+0000, want 1", n)
	}
}

// TestRecordWithoutIDHoldsDeletes: a full read that met a record with no id
// at all cannot tell which stored record it was: it tombstones nothing, and
// says why.
func TestRecordWithoutIDHoldsDeletes(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(4, time.Now())}
	f := startScripted(t, api, `
pagination: {style: none}
full_sync: {detect_deletes: true}`)
	f.mustSucceed(f.full())
	api.mu.Lock()
	api.recs[0].ID = "null" // record 1 loses its id
	api.mu.Unlock()
	run := f.mustSucceed(f.full())
	if run.RecordsDeleted != 0 || f.live()["1"] == nil || !strings.Contains(run.Note, "no usable id") {
		t.Fatalf("deleted %d (record 1 live: %t), note %q; want nothing deleted and why", run.RecordsDeleted, f.live()["1"] != nil, run.Note)
	}
}

// TestOddCursorsDoNotFailRuns: a record whose delta field is missing, null,
// or a time without a zone is stored and left out of the watermark; the run
// counts them once in its note. Full reads and deltas both succeed.
func TestOddCursorsDoNotFailRuns(t *testing.T) {
	t.Parallel()
	now := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	api := &scripted{recs: numbered(3, now)}
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":[{"id":1,"updated_at":%q},{"id":2,"updated_at":null},{"id":3},{"id":4,"updated_at":"2026-01-02T03:04:05"}]}`,
			now.Format(time.RFC3339Nano))
		return true
	}
	f := startScripted(t, api, `
pagination: {style: none}
delta: {param: updated_since, field: updated_at, format: rfc3339}`)
	full := f.mustSucceed(f.full())
	delta := f.mustSucceed(f.delta())
	if len(f.live()) != 4 {
		t.Fatalf("%d records stored, want 4", len(f.live()))
	}
	for _, run := range []store.Run{full, delta} {
		if !strings.Contains(run.Note, "2 records had no updated_at") || !strings.Contains(run.Note, "has no time zone") {
			t.Errorf("run %d note %q does not count the missing and zoneless cursors", run.ID, run.Note)
		}
	}
	if wm := f.state().Watermark; wm != now.UTC().Format(time.RFC3339Nano) {
		t.Errorf("watermark %q, want record 1's %s", wm, now.UTC().Format(time.RFC3339Nano))
	}
}

// TestNumberCursorsAreExact: a number cursor above 2^53 is kept exact (a
// float rounds 2^53+3 up to 2^53+4 and the next delta skips a record).
func TestNumberCursorsAreExact(t *testing.T) {
	t.Parallel()
	seqs := []string{"9007199254740993", "9007199254740995"}
	api := &scripted{}
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		after := r.URL.Query().Get("after")
		var parts []string
		for i, seq := range seqs {
			if after == "" || len(seq) > len(after) || len(seq) == len(after) && seq > after {
				parts = append(parts, fmt.Sprintf(`{"id":%d,"seq":%s}`, i+1, seq))
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":[%s]}`, strings.Join(parts, ","))
		return true
	}
	f := startScripted(t, api, `
pagination: {style: none}
delta: {param: after, field: seq, format: number}`)
	f.mustSucceed(f.delta())
	if wm := f.state().Watermark; wm != "9007199254740995" {
		t.Fatalf("watermark %q, want 9007199254740995 exactly", wm)
	}
	api.mu.Lock()
	seqs = append(seqs, "9007199254740996")
	api.mu.Unlock()
	run := f.mustSucceed(f.delta())
	if run.RecordsCreated != 1 || f.live()["3"] == nil {
		t.Fatalf("the delta after 9007199254740995 created %d records, want record 3 (seq 9007199254740996)", run.RecordsCreated)
	}
}

// TestFutureCursorDoesNotSkipChanges: one record stamped an hour ahead (a
// node's clock) must not lift the watermark past now: a change made after
// it, correctly stamped, is read by the next delta.
func TestFutureCursorDoesNotSkipChanges(t *testing.T) {
	t.Parallel()
	now := time.Now().Truncate(time.Millisecond)
	api := &scripted{recs: []scriptedRec{
		{ID: "1", Fields: `"name":"a"`, Stamp: now.Add(-time.Minute)},
		{ID: "2", Fields: `"name":"from the future"`, Stamp: now.Add(time.Hour)},
	}}
	f := startScripted(t, api, `
pagination: {style: none}
delta: {param: updated_since, field: updated_at, format: rfc3339}`)
	run := f.mustSucceed(f.delta())
	if !strings.Contains(run.Note, "in the future") {
		t.Errorf("run note %q does not report the future cursor", run.Note)
	}
	if wm, _ := time.Parse(time.RFC3339Nano, f.state().Watermark); wm.After(time.Now()) {
		t.Fatalf("watermark %s is in the future", wm)
	}
	api.mu.Lock()
	api.set(scriptedRec{ID: "1", Fields: `"name":"changed"`, Stamp: time.Now().Truncate(time.Millisecond)})
	api.mu.Unlock()
	f.mustSucceed(f.delta())
	if got := f.live()["1"]["name"]; got != "changed" {
		t.Fatalf("record 1 = %v: the change after a future-stamped record was skipped", got)
	}

	// A watermark an earlier release let into the future moves back.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	if err := f.store.DBForTests().Exec(`UPDATE sync_state SET watermark = ?`, future).Error; err != nil {
		t.Fatal(err)
	}
	run = f.mustSucceed(f.delta())
	if wm, _ := time.Parse(time.RFC3339Nano, f.state().Watermark); wm.After(time.Now()) || !strings.Contains(run.Note, "moves back") {
		t.Fatalf("a stored watermark in the future stayed %s (note %q)", f.state().Watermark, run.Note)
	}
	api.mu.Lock()
	api.set(scriptedRec{ID: "1", Fields: `"name":"changed again"`, Stamp: time.Now().Truncate(time.Millisecond)})
	api.mu.Unlock()
	f.mustSucceed(f.delta())
	if got := f.live()["1"]["name"]; got != "changed again" {
		t.Fatalf("record 1 = %v after the watermark moved back", got)
	}
}

// TestSameIDSpelledTwoWays: 10 and 10.0 are one record to the upstream and
// to tidemark: a full read that sees the other spelling changes nothing.
func TestSameIDSpelledTwoWays(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: []scriptedRec{{ID: "10", Fields: `"amount":1`}}}
	f := startScripted(t, api, `
pagination: {style: none}
full_sync: {detect_deletes: true}`)
	f.mustSucceed(f.full())
	api.mu.Lock()
	api.recs = []scriptedRec{{ID: "10.0", Fields: `"amount":1.0`}} // and the amount re-spelled
	api.mu.Unlock()
	run := f.mustSucceed(f.full())
	if run.RecordsCreated+run.RecordsUpdated+run.RecordsDeleted != 0 {
		t.Fatalf("re-spelled id and amount: %d created, %d updated, %d deleted; want no change", run.RecordsCreated, run.RecordsUpdated, run.RecordsDeleted)
	}
	if live := f.live(); len(live) != 1 || live["10"] == nil {
		t.Fatalf("live records %v, want just 10", keys(live))
	}
}

// TestRespelledNumbersAreNotChanges: 0 → -0 and 1 → 1.0 → 1e0 leave the
// record's version, audit trail and events alone.
func TestRespelledNumbersAreNotChanges(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: []scriptedRec{{ID: "1", Fields: `"a":0,"b":1,"c":100`}}}
	f := startScripted(t, api, `pagination: {style: none}`)
	f.mustSucceed(f.full())
	events := f.count(`SELECT count(*) FROM outbox`)
	for _, fields := range []string{`"a":-0,"b":1.0,"c":1e2`, `"a":0.0,"b":1e0,"c":100.00`} {
		api.mu.Lock()
		api.recs[0].Fields = fields
		api.mu.Unlock()
		run := f.mustSucceed(f.full())
		if run.RecordsUpdated != 0 {
			t.Fatalf("%s: %d records updated, want 0", fields, run.RecordsUpdated)
		}
	}
	if v := f.count(`SELECT version FROM records WHERE external_id = '1'`); v != 1 {
		t.Errorf("version %d, want 1", v)
	}
	if n := f.count(`SELECT count(*) FROM record_changes WHERE op = 'updated'`); n != 0 {
		t.Errorf("%d update audit rows, want 0", n)
	}
	if n := f.count(`SELECT count(*) FROM outbox`); n != events {
		t.Errorf("%d events after re-spellings, want %d", n, events)
	}
}

// TestConfigChangeDoesNotStrandTheWatermark: a watermark made under another
// delta field or format is not used (the delta reads from the start and
// takes a new one), and a new id path makes the next read a full one that
// re-keys the records; each run says so.
func TestConfigChangeDoesNotStrandTheWatermark(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(3, time.Now().Add(-time.Minute))}
	f := startScripted(t, api, `
pagination: {style: none}
delta: {param: updated_since, field: updated_at, format: rfc3339}
full_sync: {detect_deletes: true}`)
	f.mustSucceed(f.delta())
	// As an earlier config (format unix_ms, field modified) left them.
	if err := f.store.DBForTests().Exec(`UPDATE sync_state SET watermark = '99999999999999',
		basis = '{"id":"id","delta_field":"modified","delta_format":"unix_ms"}'`).Error; err != nil {
		t.Fatal(err)
	}
	run := f.mustSucceed(f.delta())
	if !strings.Contains(run.Note, "the delta field or format changed") || run.RecordsFetched != 3 {
		t.Fatalf("delta under a new format: fetched %d, note %q; want all 3 read and why", run.RecordsFetched, run.Note)
	}
	if _, err := time.Parse(time.RFC3339Nano, f.state().Watermark); err != nil {
		t.Fatalf("watermark %q is not an rfc3339 one taken anew: %v", f.state().Watermark, err)
	}
	if err := f.store.DBForTests().Exec(`UPDATE sync_state SET basis = jsonb_set(basis, '{id}', '"old_id"')`).Error; err != nil {
		t.Fatal(err)
	}
	run = f.mustSucceed(f.delta())
	if run.Kind != store.KindFull || !strings.Contains(run.Note, "the id path changed") {
		t.Fatalf("after an id path change: a %s run, note %q; want a full read that re-keys", run.Kind, run.Note)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// quarantine returns the resource's quarantined records: reason by id.
func (f *scriptedFleet) quarantine() map[string]string {
	f.t.Helper()
	var rows []struct {
		ExternalID *string
		Reason     string
	}
	if err := f.store.DBForTests().WithContext(context.Background()).Raw(`SELECT external_id, reason FROM record_quarantine`).Scan(&rows).Error; err != nil {
		f.t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rows {
		if r.ExternalID != nil {
			out[*r.ExternalID] = r.Reason
		}
	}
	return out
}
