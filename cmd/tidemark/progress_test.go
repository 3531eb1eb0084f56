package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// TestProgressOfALongFullSync reads 100,000 records in 200 pages and
// watches the run while it goes: the running sync_runs row, `tidemark
// status` and the run.progress events all show pages and records rising,
// the events at most once a second.
func TestProgressOfALongFullSync(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 records")
	}
	t.Parallel()
	const total = 100_000
	up := httptest.NewServer(demoapi.New(demoapi.Options{Seed: 11, Records: total}))
	t.Cleanup(up.Close)
	confPath := filepath.Join(t.TempDir(), "tidemark.yaml")
	yaml := fmt.Sprintf(`
sources:
  - name: progress
    base_url: %s
    allow_private: true
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        freshness: 1h
        records: {path: data, id: id}
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 500}
        probe: {strategy: etag, method: HEAD, every: 1h}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h}
`, up.URL)
	if err := os.WriteFile(confPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	conf, err := config.Load(confPath)
	if err != nil {
		t.Fatal(err)
	}
	dbURL, redisURL := testenv.Database(t), testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Concurrency: 2}, conf, st, redisOpt, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	client := asynq.NewClient(redisOpt)
	opt := redisOpt.(asynq.RedisClientOpt)
	rdb := redis.NewClient(&redis.Options{Addr: opt.Addr, DB: opt.DB})
	t.Cleanup(func() { cancel(); <-done; client.Close(); rdb.Close(); st.Close() })

	// The progress events, as the server's event hub receives them.
	inst, err := events.Installation(ctx, st, rdb)
	if err != nil {
		t.Fatal(err)
	}
	ps := rdb.Subscribe(ctx, events.ProgressChannel(inst))
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		at time.Time
		p  events.Progress
	}
	progress := make(chan seen, 1000)
	var runID atomic.Int64
	go func() {
		for msg := range ps.Channel() {
			var p events.Progress
			// Pub/sub channels span Redis DBs: other tests' runs publish too.
			if json.Unmarshal([]byte(msg.Payload), &p) == nil && p.Source == "progress" && p.RunID == runID.Load() {
				progress <- seen{time.Now(), p}
			}
		}
	}()

	res := conf.Sources[0].Resource("ticket_sales")
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "progress", Resource: "ticket_sales", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}, jobs.FetchOptions(res)...)
	if err == nil {
		_, err = client.Enqueue(task)
	}
	if err != nil {
		t.Fatal(err)
	}

	statusRE := regexp.MustCompile(`full running for \S+: (\d+) pages, (\d+) records`)
	env := map[string]string{"TIDEMARK_CONFIG": confPath, "TIDEMARK_DATABASE_URL": dbURL}
	var rowRecords, statusRecords []int64
	deadline, lastStatus := time.Now().Add(3*time.Minute), time.Time{}
	for {
		runs, err := st.Runs(ctx, store.RunFilter{Source: "progress"})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) > 0 && runs[0].Status != store.StatusRunning {
			if runs[0].Status != store.StatusSucceeded || runs[0].RecordsFetched != total {
				t.Fatalf("run %d: %s, %d records: %s", runs[0].ID, runs[0].Status, runs[0].RecordsFetched, runs[0].Error)
			}
			break
		}
		if len(runs) > 0 {
			runID.Store(runs[0].ID)
			rowRecords = append(rowRecords, runs[0].RecordsFetched)
		}
		if len(runs) > 0 && time.Since(lastStatus) >= time.Second { // status counts records: not every sample
			lastStatus = time.Now()
			code, out, errOut := runCmd(t, env, "status")
			if code != 0 {
				t.Fatalf("tidemark status: %d: %s", code, errOut)
			}
			if m := statusRE.FindStringSubmatch(out); m != nil {
				n, _ := strconv.ParseInt(m[2], 10, 64)
				statusRecords = append(statusRecords, n)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the full sync did not finish within 3 minutes")
		}
		time.Sleep(200 * time.Millisecond) // sampling interval of the progress, not a wait for it
	}
	rising := func(what string, xs []int64) {
		t.Helper()
		distinct := 0
		for i := 1; i < len(xs); i++ {
			if xs[i] < xs[i-1] {
				t.Errorf("%s went down: %v", what, xs)
				return
			}
			if xs[i] > xs[i-1] && xs[i-1] > 0 {
				distinct++
			}
		}
		t.Logf("%s: %d samples, %d rises: %v", what, len(xs), distinct, xs)
		if distinct < 2 || xs[0] >= total {
			t.Errorf("%s while running: want at least 2 rises below %d: %v", what, total, xs)
		}
	}
	rising("sync_runs.records_fetched", rowRecords)
	rising("tidemark status records", statusRecords)

	ps.Close()
	var evs []seen
	for {
		select {
		case s := <-progress:
			evs = append(evs, s)
			continue
		default:
		}
		break
	}
	if len(evs) < 2 {
		t.Fatalf("%d run.progress events, want one a second while the run lasts", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if gap := evs[i].at.Sub(evs[i-1].at); gap < 900*time.Millisecond {
			t.Errorf("run.progress events %d and %d only %s apart: want at most one a second", i-1, i, gap)
		}
		if evs[i].p.RecordsFetched <= evs[i-1].p.RecordsFetched {
			t.Errorf("run.progress records did not rise: %d then %d", evs[i-1].p.RecordsFetched, evs[i].p.RecordsFetched)
		}
	}
}
