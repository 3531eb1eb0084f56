package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tidemark/tidemark/store"
)

// audit is what record_changes holds of the test resource, by op.
func audit(t *testing.T, s *store.Store) map[string]int64 {
	t.Helper()
	var rows []struct {
		Op string
		N  int64
	}
	if err := s.DBForTests().Raw(`SELECT op, count(*) AS n FROM record_changes GROUP BY op`).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Op] = r.N
	}
	return out
}

func newPage(run int64, from, to int) store.Page {
	p := store.Page{Key: key, RunID: run}
	for i := from; i < to; i++ {
		p.Records = append(p.Records, rec(fmt.Sprint(i), fmt.Sprintf(`{"n":%d}`, i)))
	}
	return p
}

// TestCopiedPageIsStoredLikeAnUpserted: a page of new records (copied)
// leaves the records, audit rows, counters, version hash and event an
// upsert leaves, whether the comparison found it new or the caller
// expected it to be.
func TestCopiedPageIsStoredLikeAnUpserted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	run := startRun(t, s, store.KindFull)
	for i, expect := range []bool{false, true} {
		p := newPage(run, i*100, i*100+100)
		p.ExpectChanged = expect
		got, err := s.ApplyPage(ctx, p)
		if err != nil || counts(got) != [3]int{100, 0, 0} || len(got.Changed) != 100 {
			t.Fatalf("page %d = %+v, %v; want 100 created", i, got, err)
		}
	}
	var rows []struct {
		Version int64
		Payload string
		Deleted bool
		Run     int64
	}
	s.DBForTests().Raw(`SELECT version, payload::text AS payload, deleted_at IS NOT NULL AS deleted, last_run_id AS run
		FROM records WHERE external_id = '142'`).Scan(&rows)
	if len(rows) != 1 || rows[0].Version != 1 || rows[0].Payload != `{"n": 142}` || rows[0].Deleted || rows[0].Run != run {
		t.Fatalf("record 142 = %+v, want version 1 of {\"n\": 142}, live, written by run %d", rows, run)
	}
	if a := audit(t, s); a["created"] != 200 || len(a) != 1 {
		t.Fatalf("audit rows %v, want 200 created", a)
	}
	// Each page's rows carry its transaction's one id (the simulator ties
	// an event to the audit rows of its transaction by it).
	var xids int
	s.DBForTests().Raw(`SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM records UNION ALL
		SELECT xmin::text FROM record_changes UNION ALL SELECT xmin::text FROM outbox) w`).Scan(&xids)
	if xids != 2 {
		t.Fatalf("the two pages' records, audit rows and events carry %d transaction ids, want 2", xids)
	}
	// The version hash kept per page equals one computed from the table.
	vh, err := s.VersionHash(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	s.DBForTests().Exec(`UPDATE sync_state SET live_count = NULL`)
	if scanned, _ := s.VersionHash(ctx, key); scanned != vh {
		t.Fatalf("version hash kept per page %s, scanned %s", vh, scanned)
	}
	var r store.Run
	s.DBForTests().First(&r, run)
	if r.RecordsCreated != 200 || r.Pages != 2 {
		t.Fatalf("run counted %d created in %d pages, want 200 in 2", r.RecordsCreated, r.Pages)
	}
}

// TestCopyFallsBackWhenARecordIsStored: a page expected to be all new that
// is not (a record stored meanwhile, one tombstoned, one the previous page
// held already) is applied whole by the upsert: nothing fails, nothing is
// lost, each record is counted and audited for what happened to it.
func TestCopyFallsBackWhenARecordIsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	run := startRun(t, s, store.KindFull)
	if _, err := s.ApplyPage(ctx, newPage(run, 0, 10)); err != nil {
		t.Fatal(err)
	}
	s.DBForTests().Exec(`UPDATE records SET deleted_at = now() WHERE external_id = '5'`)
	s.DBForTests().Exec(`UPDATE sync_state SET live_count = NULL`) // recount: the tombstone above bypassed the store

	for _, summarize := range []bool{false, true} {
		p := newPage(run, 20, 30)
		p.Records = append(p.Records,
			rec("9", `{"n":9}`),       // the previous page's, unchanged
			rec("5", `{"n":5}`),       // tombstoned: created again
			rec("3", `{"n":"three"}`)) // stored meanwhile, now changed
		p.ExpectChanged, p.SummarizeCreates = true, summarize
		if summarize {
			p = newPage(run, 40, 50)
			p.Records = append(p.Records, rec("3", `{"n":3}`))
			p.ExpectChanged, p.SummarizeCreates = true, true
		}
		got, err := s.ApplyPage(ctx, p)
		want := [3]int{11, 1, 1}
		if summarize {
			want = [3]int{10, 1, 0}
		}
		if err != nil || counts(got) != want {
			t.Fatalf("summarize %v: page = %+v, %v; want created/updated/unchanged %v", summarize, got, err, want)
		}
	}
	var live int64
	s.DBForTests().Raw(`SELECT count(*) FROM records WHERE deleted_at IS NULL`).Scan(&live)
	if live != 30 {
		t.Fatalf("%d live records, want 30", live)
	}
	var v int64
	s.DBForTests().Raw(`SELECT version FROM records WHERE external_id = '5'`).Scan(&v)
	if v != 2 {
		t.Fatalf("the tombstoned record is at version %d, want 2", v)
	}
	// The summarized page audits its update, not its creations.
	if a := audit(t, s); a["created"] != 10+11 || a["updated"] != 2 || a["initial_load"] != 1 {
		t.Fatalf("audit rows %v, want 21 created, 2 updated, 1 initial_load", a)
	}
	vh, _ := s.VersionHash(ctx, key)
	s.DBForTests().Exec(`UPDATE sync_state SET live_count = NULL`)
	if scanned, _ := s.VersionHash(ctx, key); scanned != vh {
		t.Fatalf("version hash kept per page %s, scanned %s", vh, scanned)
	}
}

// TestFirstLoadIsSummarized: pages that summarize their creations write one
// initial_load row per run, counting them, with the version hash after the
// last; no created row. A page that creates nothing leaves it alone.
func TestFirstLoadIsSummarized(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	runs := []int64{startRun(t, s, store.KindFull), 0}
	for i := range 3 {
		p := newPage(runs[0], i*100, i*100+100)
		p.SummarizeCreates, p.ExpectChanged = true, i > 0
		if _, err := s.ApplyPage(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// A second run of the first load (a retry that read again from the
	// start) counts only what it created.
	runs[1] = startRun(t, s, store.KindFull)
	for _, p := range []store.Page{newPage(runs[1], 0, 100), newPage(runs[1], 250, 350)} {
		p.SummarizeCreates = true
		if _, err := s.ApplyPage(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	vh, err := s.VersionHash(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		RunID      int64
		ExternalID string
		Records    int64
		NewHash    string
	}
	s.DBForTests().Raw(`SELECT run_id, external_id, records, new_hash FROM record_changes ORDER BY id`).Scan(&rows)
	if len(rows) != 2 || rows[0].RunID != runs[0] || rows[0].Records != 300 || rows[1].RunID != runs[1] || rows[1].Records != 50 ||
		rows[1].NewHash != vh || rows[0].ExternalID != "" {
		t.Fatalf("audit rows %+v, want one initial_load row per run: 300 for run %d, 50 for run %d with version %s", rows, runs[0], runs[1], vh)
	}
	loads, err := s.FirstLoads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.FirstLoad{Records: 350, Runs: 2, RunID: runs[1], VersionHash: vh}
	if got := loads[key]; got.Records != want.Records || got.Runs != 2 || got.RunID != want.RunID || got.VersionHash != vh {
		t.Fatalf("FirstLoads = %+v, want %+v", got, want)
	}
	if got, w := loads[key].String(), fmt.Sprintf("first load: 350 records, 2 runs, the last #%d, version %s", runs[1], vh); got != w {
		t.Fatalf("shown as %q, want %q", got, w)
	}
}

// TestCopiedPageRollsBackWhole: a page whose transaction fails after its
// COPY (its run was taken over) leaves nothing: no record, no audit row,
// no summary, no counter.
func TestCopiedPageRollsBackWhole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	run := startRun(t, s, store.KindFull)
	if err := s.AbandonRunning(ctx, key, 0); err != nil {
		t.Fatal(err)
	}
	for _, summarize := range []bool{false, true} {
		p := newPage(run, 0, 100)
		p.SummarizeCreates = summarize
		if _, err := s.ApplyPage(ctx, p); !errors.Is(err, store.ErrSuperseded) {
			t.Fatalf("applying a page of a run taken over: %v, want ErrSuperseded", err)
		}
	}
	snap := take(t, s)
	if len(snap.Records) != 0 || snap.Changes != 0 || snap.Outbox != 0 {
		t.Fatalf("a failed page left %d records, %d audit rows, %d events", len(snap.Records), snap.Changes, snap.Outbox)
	}
	if vh, _ := s.VersionHash(ctx, key); vh != "0-0000000000000000" {
		t.Fatalf("version hash after a failed page = %s, want that of nothing", vh)
	}
}

// TestCopiedPageQuarantinesWhatPostgresRefuses: a value COPY cannot store
// (JSON Postgres rejects) fails the page's statement like the upsert's;
// the page is applied again without it, and it is quarantined.
func TestCopiedPageQuarantinesWhatPostgresRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	run := startRun(t, s, store.KindFull)
	p := newPage(run, 0, 10)
	p.Records[4].Payload = []byte(`{"n": 1e999999}`) // beyond numeric
	got, err := s.ApplyPage(ctx, p)
	if err != nil || got.Created != 9 || got.Quarantined != 1 {
		t.Fatalf("page = %+v, %v; want 9 created, 1 quarantined", got, err)
	}
}
