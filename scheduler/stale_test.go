package scheduler_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
)

// TestPausedResourceRaisesNoStale leaves two resources ten minutes behind a
// 30 s target, one of them paused: the scheduler's alert check fires
// resource.stale for the other only, a resource paused after it went stale
// gets no second event while paused, and a resumed one is stale only if
// it is still behind a target after the resume.
func TestPausedResourceRaisesNoStale(t *testing.T) {
	t.Parallel()
	c, st, client, _ := rig(t, `
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - name: late
        path: /late
        freshness: 30s
        records: {id: id}
      - name: paused_late
        path: /paused_late
        freshness: 30s
        records: {id: id}
`)
	ctx := context.Background()
	if err := st.DBForTests().Exec(`UPDATE sync_state SET in_sync_at = now() - interval '10 minutes'`).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetPaused(ctx, "shop", "paused_late", true); err != nil {
		t.Fatal(err)
	}
	s := scheduler.New(scheduler.Config{}, c, st, client, slog.New(slog.DiscardHandler))
	stale := func() []string {
		t.Helper()
		if err := s.CheckAlerts(ctx); err != nil {
			t.Fatal(err)
		}
		evs, err := st.OutboxAfter(ctx, store.OutboxFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ev := range evs {
			if ev.Event == store.EventResourceStale {
				out = append(out, ev.Resource)
			}
		}
		return out
	}
	if got := stale(); !slices.Equal(got, []string{"late"}) {
		t.Fatalf("resource.stale for %q, want late only", got)
	}
	// late is paused now, stale already: nothing more while paused.
	if _, err := st.SetPaused(ctx, "shop", "late", true); err != nil {
		t.Fatal(err)
	}
	if got := stale(); !slices.Equal(got, []string{"late"}) {
		t.Errorf("after pausing late: resource.stale for %q, want the one event of before", got)
	}
	// Resumed, paused_late has one freshness target to catch up before it
	// is stale: no event at the resume for the lag built up while paused.
	if _, err := st.SetPaused(ctx, "shop", "paused_late", false); err != nil {
		t.Fatal(err)
	}
	if got := stale(); !slices.Equal(got, []string{"late"}) {
		t.Errorf("just resumed: resource.stale for %q, want none for paused_late", got)
	}
	// Still behind a target after the resume: stale.
	if err := st.DBForTests().Exec(`UPDATE sync_state SET resumed_at = now() - interval '31 seconds' WHERE resource = 'paused_late'`).Error; err != nil {
		t.Fatal(err)
	}
	if got := stale(); !slices.Equal(got, []string{"late", "paused_late"}) {
		t.Errorf("a target after the resume: resource.stale for %q, want paused_late too", got)
	}
}
