package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// TestFetchesThatDieBehindChangedProbesAddUp runs the scheduler and a
// worker against an upstream whose HEAD answers an ETag (so every probe
// sees a change: nothing was ever fetched) while its GET answers malformed
// JSON (so every fetch dies at once). The probes between the failed
// fetches do not reset the streak: it counts every failed fetch, starts at
// the first, and fires run.failed at the threshold.
func TestFetchesThatDieBehindChangedProbesAddUp(t *testing.T) {
	t.Parallel()
	var heads atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v2"`)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodHead {
			heads.Add(1)
			return
		}
		w.Write([]byte(`{"data":[{"id":"a"},`))
	}))
	t.Cleanup(srv.Close)
	conf, err := config.Parse("streak.yaml", []byte(`
sources:
  - name: streak
    base_url: `+srv.URL+`
    allow_private: true
    resources:
      - name: items
        path: /items
        freshness: 1h
        records: {path: data, id: id}
        probe: {strategy: etag, method: HEAD, every: 1s, max_every: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	// A probe re-enqueues the change's fetch once the last is older than
	// RefetchAfter: each dies (a bad response is permanent), and the next
	// probe comes before the next fetch.
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2, RefetchAfter: 500 * time.Millisecond})
	runScheduler(t, conf, w)
	ctx := context.Background()
	key := store.Key{Source: "streak", Resource: "items"}
	// history reads the failed fetches, oldest first, and counts the runs
	// of changed probes after the first of them.
	history := func() (failed []store.Run, probesBetween int) {
		t.Helper()
		runs, err := w.Store.Runs(ctx, store.RunFilter{Source: "streak", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for i := len(runs) - 1; i >= 0; i-- {
			switch r := runs[i]; {
			case r.Kind == tidemark.RunProbe && len(failed) > 0:
				probesBetween++
			case r.Kind != tidemark.RunProbe && (r.Status == store.StatusFailed || r.Status == store.StatusDead):
				failed = append(failed, r) // malformed JSON: dead at once
			}
		}
		return failed, probesBetween
	}
	var failed []store.Run
	waitFor(t, 30*time.Second, "four failed fetches with probes between them", func() (bool, string) {
		var probes int
		failed, probes = history()
		return len(failed) >= 4 && probes >= 3, fmt.Sprintf("%d failed fetches, %d probes since the first, %d HEAD requests", len(failed), probes, heads.Load())
	})
	streaks, err := w.Store.FailureStreaks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.Store.State(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// Fetches may have failed since history read them: at least as many.
	s := streaks[key]
	if st.ConsecutiveFailures < len(failed) || s.Attempts < len(failed) || !s.Since.Equal(failed[0].StartedAt) {
		t.Fatalf("%d failed fetches from %s: consecutive_failures %d, failure streak %d since %s; want all of them since the first",
			len(failed), failed[0].StartedAt, st.ConsecutiveFailures, s.Attempts, s.Since)
	}
	waitFor(t, 10*time.Second, "run.failed", func() (bool, string) {
		evs, err := w.Store.OutboxAfter(ctx, store.OutboxFilter{Source: "streak"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Event == tidemark.EventRunFailed {
				return true, ""
			}
		}
		return false, ""
	})
}
