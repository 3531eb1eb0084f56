package worker_test

import (
	"context"

	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// TestTightRateLimitFirstSyncsFinish: five resources share a source whose
// fleet rate limit is far below what their probes and fetches ask for, and
// the upstream keeps changing, so probes keep asking for deltas while the
// first (scheduled, full) reads run and are handed back by the limiter over
// and over. The real scheduler and worker must bring every resource's first
// full sync to an end, each reading its pages about once: a handed-back
// read continues where it stopped, and a delta asked for meanwhile waits
// for it rather than taking the resource and restarting it.
func TestTightRateLimitFirstSyncsFinish(t *testing.T) {
	const records, limit = 200, 50
	up := demoapi.New(demoapi.Options{Seed: 20, Records: records, ChangeRate: 20})
	upCtx, stopUp := context.WithCancel(context.Background())
	upDone := make(chan struct{})
	go func() { defer close(upDone); up.Run(upCtx) }()
	t.Cleanup(func() { stopUp(); <-upDone })
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)

	conf := demoConfig(t, srv.URL)
	src := &conf.Sources[0]
	src.RateLimit = &config.RateLimit{Requests: 6, Per: config.Duration(time.Second), Burst: 1}
	src.MaxConcurrency = 4
	for i := range src.Resources {
		res := &src.Resources[i]
		res.Pagination.Limit = limit
		// Probes every 2s see a change each time (the upstream changes
		// about four times a second per resource).
		res.Probe.Every, res.Probe.MaxEvery = config.Duration(2*time.Second), config.Duration(2*time.Second)
	}
	// A short MaxWait makes hand-backs frequent; a short retry check
	// brings a handed-back task back soon.
	w := workertest.Start(t, conf, worker.Config{Concurrency: 4, MaxWait: 300 * time.Millisecond, RetryCheckInterval: 300 * time.Millisecond})
	sched := scheduler.New(scheduler.Config{Tick: 200 * time.Millisecond}, conf, w.Store, w.Client, workertest.Logger())
	schedCtx, stopSched := context.WithCancel(context.Background())
	schedDone := make(chan error, 1)
	go func() { schedDone <- sched.Run(schedCtx) }()
	t.Cleanup(func() {
		stopSched()
		if err := <-schedDone; err != nil {
			t.Errorf("scheduler: %v", err)
		}
	})

	began := time.Now()
	ctx := context.Background()
	synced := map[string]time.Time{}
	waitFor(t, 2*time.Minute, "every resource's first full sync", func() (bool, string) {
		var waiting []string
		for _, name := range demoapi.Resources {
			st, err := w.Store.State(ctx, store.Key{Source: "demo", Resource: name})
			if err != nil {
				t.Fatal(err)
			}
			if st.LastFullSyncAt == nil {
				waiting = append(waiting, name)
				continue
			}
			if _, ok := synced[name]; !ok {
				synced[name] = time.Now()
			}
		}
		return len(waiting) == 0, "waiting for " + strings.Join(waiting, ", ")
	})
	t.Logf("every first full sync done after %s", time.Since(began).Round(time.Millisecond))

	// Pages read up to each resource's first full sync: restarts show up
	// as pages read again.
	stats := up.Stats()
	for _, name := range demoapi.Resources {
		runs, err := w.Store.Runs(ctx, store.RunFilter{Source: "demo", Resource: name, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		first := firstFullSuccess(runs)
		if first == nil {
			t.Fatalf("%s: no succeeded full run although last_full_sync_at is set", name)
		}
		requests, attempts := 0, 0
		for _, r := range runs {
			if r.Kind != tidemark.RunFull && r.Kind != tidemark.RunDelta || r.ID > first.ID {
				continue
			}
			requests += r.HTTPRequests
			attempts++
		}
		clean := stats.Resources[name].Records/limit + 2 // the pages of one read, and a last short or empty one
		t.Logf("%s: first full sync after %s, %d fetch requests in %d attempts (a clean read: about %d)",
			name, synced[name].Sub(began).Round(time.Millisecond), requests, attempts, clean-1)
		if float64(requests) > 1.5*float64(clean) {
			t.Errorf("%s: %d fetch requests before its first full sync succeeded, want at most 1.5 × %d: reads restarted", name, requests, clean)
		}
	}
}

// firstFullSuccess is the oldest succeeded full run of runs (newest first).
func firstFullSuccess(runs []store.Run) *store.Run {
	var first *store.Run
	for i := range runs {
		if runs[i].Kind == tidemark.RunFull && runs[i].Status == store.StatusSucceeded {
			first = &runs[i]
		}
	}
	return first
}

// TestHandedBackTakeoverGoesOn: the fetch that takes over the run of a
// worker that is gone is handed back by the source's rate limit after
// every page. Its later attempts go on with the read it began, although
// the run it took over has ended (ended by its own first attempt), and
// the read succeeds.
func TestHandedBackTakeoverGoesOn(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 3, Records: 100})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := demoConfig(t, srv.URL)
	src := &conf.Sources[0]
	// A request every 500ms, a worker that waits at most 100ms for one:
	// every page but the first of an attempt is handed back.
	src.RateLimit = &config.RateLimit{Requests: 2, Per: config.Duration(time.Second), Burst: 1}
	src.Resource("ticket_sales").Pagination.Limit = 20
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2, MaxWait: 100 * time.Millisecond, RetryCheckInterval: 200 * time.Millisecond})
	ctx := context.Background()
	// A fetch whose worker is gone: running, no fetch lock.
	gone := store.Run{Source: "demo", Resource: "ticket_sales", Kind: tidemark.RunFull, Trigger: jobs.TriggerSchedule, TaskID: "gone", Attempt: 1}
	if err := w.Store.StartRun(ctx, &gone); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the takeover's read to succeed", func() (bool, string) {
		runs, err := w.Store.Runs(ctx, store.RunFilter{Source: "demo", Resource: "ticket_sales", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		for _, r := range runs {
			if r.Trigger == jobs.TriggerTakeover && r.Status == store.StatusSucceeded {
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("%d %s %s p%d", r.ID, r.Trigger, r.Status, r.Pages))
		}
		return false, strings.Join(seen, "; ")
	})
}
