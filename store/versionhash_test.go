package store_test

import (
	"context"
	"testing"

	"github.com/tidemark/tidemark/store"
)

// TestVersionHashFollowsEveryWrite checks the version hash kept up to date by
// each write against a full scan of the records, after creates, updates,
// tombstones and a resurrection, and that a state row without the
// bookkeeping (one that predates it) gets it from a scan.
func TestVersionHashFollowsEveryWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	if err := s.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	check := func(step string) string {
		t.Helper()
		kept, err := s.VersionHash(ctx, key)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		// Forget the kept parts: VersionHash recomputes them by scanning.
		if err := s.DBForTests().Exec(`UPDATE sync_state SET live_count = NULL, live_xor = NULL`).Error; err != nil {
			t.Fatal(err)
		}
		scanned, err := s.VersionHash(ctx, key)
		if err != nil {
			t.Fatalf("%s: scan: %v", step, err)
		}
		if kept != scanned {
			t.Fatalf("%s: kept version hash %s, a scan of the records says %s", step, kept, scanned)
		}
		return kept
	}
	empty := check("no records")
	if empty != "0-0000000000000000" {
		t.Fatalf("empty resource's version hash = %s", empty)
	}

	first := startRun(t, s, store.KindFull)
	apply := func(run int64, recs ...store.Record) {
		t.Helper()
		if _, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: run, PassID: run, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	apply(first, rec("1", `{"a":1}`), rec("2", `{"a":2}`), rec("3", `{"a":3}`))
	created := check("three created")

	second := startRun(t, s, store.KindFull)
	apply(second, rec("1", `{"a":1}`), rec("2", `{"a":20}`))
	finish(t, s, second, 2, store.DeletePolicy{})
	changed := check("one updated, one tombstoned")
	if changed == created || changed[:2] != "2-" {
		t.Fatalf("after an update and a delete the version hash is %s (before %s)", changed, created)
	}

	third := startRun(t, s, store.KindDelta)
	apply(third, rec("3", `{"a":3}`), rec("2", `{"a":2}`))
	// Records 1, 2 and 3 now hold what they held after the first page.
	if back := check("resurrected and reverted"); back != created {
		t.Fatalf("same records as after the first page, version hash %s, then %s", back, created)
	}
}
