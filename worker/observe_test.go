package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
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
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// sample is one series of a scrape.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var labelRE = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// scrape reads a Prometheus text exposition.
func scrape(t *testing.T, h http.Handler) (string, []sample) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	var out []sample
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series := line[:i]
		s := sample{name: series, labels: map[string]string{}, value: v}
		if j := strings.IndexByte(series, '{'); j >= 0 {
			s.name = series[:j]
			for _, m := range labelRE.FindAllStringSubmatch(series[j:], -1) {
				s.labels[m[1]] = m[2]
			}
		}
		out = append(out, s)
	}
	return rec.Body.String(), out
}

// sum adds the samples named name whose labels include match.
func sum(samples []sample, name string, match map[string]string) (total float64, n int) {
	for _, s := range samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			ok = ok && s.labels[k] == v
		}
		if ok {
			total += s.value
			n++
		}
	}
	return total, n
}

// syncAll enqueues a full fetch of every configured resource and waits
// until each has a finished run after after.
func syncAll(f *fleet, after int64) {
	f.t.Helper()
	want := 0
	f.conf.Each(func(src *config.Source, res *config.Resource) {
		want++
		task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}, jobs.FetchOptions(res)...)
		if err == nil {
			_, err = f.client.Enqueue(task)
		}
		if err != nil {
			f.t.Fatal(err)
		}
	})
	waitFor(f.t, 60*time.Second, "a finished run of every resource", func() (bool, string) {
		runs, err := f.store.Runs(context.Background(), store.RunFilter{Source: f.conf.Sources[0].Name, Limit: 100})
		if err != nil {
			f.t.Fatal(err)
		}
		done := map[string]bool{}
		for _, r := range runs {
			if r.ID > after && r.Status != store.StatusRunning {
				if r.Status != store.StatusSucceeded {
					f.t.Fatalf("run %d of %s: %s: %s", r.ID, r.Resource, r.Status, r.Error)
				}
				done[r.Resource] = true
			}
		}
		return len(done) == want, fmt.Sprintf("%d of %d done", len(done), want)
	})
}

var metricsRuns atomic.Int64 // -count=N: a fresh source name per run

// TestMetricsAfterDemoSync scrapes the server's /metrics after two full
// syncs and a probe of the demo upstream: every metric of the design is
// there, run and record counts equal what sync_runs says, and asynq's queue
// metrics appear once (the server's), not in the worker's own /metrics.
func TestMetricsAfterDemoSync(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 7, Records: 300})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := demoConfig(t, srv.URL)
	// Process-wide counters: a source name of this test's own keeps other
	// tests' runs out of its sums.
	source := fmt.Sprintf("obs_metrics_%d", metricsRuns.Add(1))
	conf.Sources[0].Name = source
	f := startFleetWith(t, conf, up)
	syncAll(f, 0)
	up.Mutate(demoapi.Mutation{Resource: "ticket_sales", Creates: 3, Updates: 2, Deletes: 1})
	syncAll(f, f.lastRunID()) // a second full read, after a watermark: drift is measured
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: source, Resource: "ticket_sales", Trigger: jobs.TriggerManual}, jobs.ProbeOptions(conf.Sources[0].Resource("ticket_sales"))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	// Handled: counted, and its run row (a changed or failed probe writes
	// one) written and counted.
	// The probe of a resource whose validator no fetch has confirmed yet
	// sees a change: it writes a run row and enqueues a delta fetch. Wait
	// for all of it, so that the counts below are settled.
	waitFor(t, 20*time.Second, "the probe and its fetch handled", func() (bool, string) {
		rows, err := f.store.Runs(context.Background(), store.RunFilter{Source: source, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[tidemark.RunKind]int{}
		for _, r := range rows {
			if r.Status == store.StatusRunning {
				return false, "a run is running"
			}
			kinds[r.Kind]++
		}
		_, s := scrape(t, metrics.Handler())
		n, _ := sum(s, "tidemark_probes_total", map[string]string{"source": source})
		notModified, _ := sum(s, "tidemark_probes_total", map[string]string{"source": source, "result": metrics.ProbeNotModified})
		counted, _ := sum(s, "tidemark_runs_total", map[string]string{"source": source})
		return n == 1 && int(counted) == len(rows) && kinds[tidemark.RunProbe] == int(n-notModified) && kinds[tidemark.RunProbe] == kinds[tidemark.RunDelta],
			fmt.Sprintf("%v probes, %v of %d runs counted, %v", n, counted, len(rows), kinds)
	})

	rdb := redis.NewClient(&redis.Options{Addr: f.redis.(asynq.RedisClientOpt).Addr, DB: f.redis.(asynq.RedisClientOpt).DB})
	t.Cleanup(func() { rdb.Close() })
	hub := events.NewHub(events.HubConfig{}, f.store, rdb, testLogger(t))
	api, err := server.New(server.Config{}, conf, f.store, f.redis, hub, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	body, samples := scrape(t, api.Handler())

	ctx := context.Background()
	runs, err := f.store.Runs(ctx, store.RunFilter{Source: source, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	type runKey struct{ resource, kind, status string }
	want := map[runKey]float64{}
	var created, updated, deleted, requests float64
	for _, r := range runs {
		want[runKey{r.Resource, string(r.Kind), r.Status}]++
		created += float64(r.RecordsCreated)
		updated += float64(r.RecordsUpdated)
		deleted += float64(r.RecordsDeleted)
		requests += float64(r.HTTPRequests)
	}
	for k, n := range want {
		got, _ := sum(samples, "tidemark_runs_total", map[string]string{"source": source, "resource": k.resource, "kind": k.kind, "status": k.status})
		if got != n {
			t.Errorf("tidemark_runs_total{%s/%s %s %s} = %v, sync_runs has %v", source, k.resource, k.kind, k.status, got, n)
		}
	}
	if got, n := sum(samples, "tidemark_runs_total", map[string]string{"source": source}); got != float64(len(runs)) || n != len(want) {
		t.Errorf("tidemark_runs_total: %v runs in %d series, sync_runs has %d runs in %d groups", got, n, len(runs), len(want))
	}
	for op, n := range map[string]float64{"created": created, "updated": updated, "deleted": deleted} {
		if got, _ := sum(samples, "tidemark_records_changed_total", map[string]string{"source": source, "op": op}); got != n {
			t.Errorf("tidemark_records_changed_total{op=%s} = %v, sync_runs says %v", op, got, n)
		}
	}
	if created < 1500 || updated < 2 || deleted < 1 {
		t.Errorf("sync_runs: created %v updated %v deleted %v: want the 5x300 records and the mutation", created, updated, deleted)
	}
	ok200, _ := sum(samples, "tidemark_upstream_requests_total", map[string]string{"source": source, "code": "200"})
	allReq, _ := sum(samples, "tidemark_upstream_requests_total", map[string]string{"source": source})
	if ok200 < requests || requests == 0 {
		t.Errorf("tidemark_upstream_requests_total{code=200} = %v, want at least the %v requests of sync_runs", ok200, requests)
	}
	if n, _ := sum(samples, "tidemark_upstream_request_duration_seconds_count", map[string]string{"source": source}); n != allReq {
		t.Errorf("request duration count %v, requests %v", n, allReq)
	}
	if n, _ := sum(samples, "tidemark_ratelimit_wait_seconds_count", map[string]string{"source": source}); n != allReq {
		t.Errorf("rate-limit waits %v, requests %v: want one wait per request", n, allReq)
	}
	if n, series := sum(samples, "tidemark_probes_total", map[string]string{"source": source, "resource": "ticket_sales"}); n != 1 || series != 1 {
		t.Errorf("tidemark_probes_total{ticket_sales} = %v in %d series, want 1 probe", n, series)
	}
	conf.Each(func(src *config.Source, res *config.Resource) {
		lag, n := sum(samples, "tidemark_freshness_lag_seconds", map[string]string{"source": source, "resource": res.Name})
		if n != 1 || lag < 0 || lag > 60 {
			t.Errorf("tidemark_freshness_lag_seconds{%s}: %v in %d series, want one in [0, 60]", res.Name, lag, n)
		}
		if _, n := sum(samples, "tidemark_drift_records_total", map[string]string{"source": source, "resource": res.Name}); res.Delta != nil && n != 1 {
			t.Errorf("tidemark_drift_records_total{%s}: %d series, want 1", res.Name, n)
		}
	})
	queues, err := f.insp.Queues()
	if err != nil || len(queues) < 2 {
		t.Fatalf("asynq queues %v: %v: want the fetch and probe queues", queues, err)
	}
	for _, q := range queues {
		if c := strings.Count(body, `asynq_queue_size{queue="`+q+`"}`); c != 1 {
			t.Errorf("asynq_queue_size{queue=%q} appears %d times, want once", q, c)
		}
		if _, n := sum(samples, "asynq_tasks_processed_total", map[string]string{"queue": q}); n != 1 {
			t.Errorf("asynq_tasks_processed_total{queue=%q}: %d series, want 1", q, n)
		}
	}
	if worker, _ := scrape(t, metrics.Handler()); strings.Contains(worker, "asynq_") || strings.Contains(worker, "tidemark_freshness_lag_seconds") {
		t.Error("a worker's /metrics carries the fleet-wide queue or freshness metrics: every replica would report them")
	}
	if strings.Contains(body, "127.0.0.1") || strings.Contains(body, "ts_0") {
		t.Error("/metrics carries a URL or a record id")
	}
}

// TestStaleOnceAndRecovered stops the upstream of a resource with
// freshness 5s under two scheduler replicas: it turns stale 5-7 s after it
// was last in step, with exactly one resource.stale event and one webhook,
// its failure streak fires one run.failed; restarting the upstream yields
// one resource.recovered.
func TestStaleOnceAndRecovered(t *testing.T) {
	t.Parallel()
	var (
		mu        sync.Mutex
		delivered = map[string]int{}
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct{ Event string }
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &ev)
		mu.Lock()
		delivered[ev.Event]++
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	deliveries := func(ev tidemark.EventType) int { mu.Lock(); defer mu.Unlock(); return delivered[string(ev)] }

	up := demoapi.New(demoapi.Options{Seed: 3, Records: 50})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := httptest.NewUnstartedServer(up)
	srv.Listener = ln
	srv.Start()
	conf := demoConfig(t, "http://"+addr)
	conf.Sources[0].Name = "obs_stale"
	conf.Sources[0].Resources = conf.Sources[0].Resources[:1] // ticket_sales: etag HEAD probes
	res := &conf.Sources[0].Resources[0]
	res.Freshness = config.Duration(5 * time.Second)
	res.Probe.Every, res.Probe.MaxEvery = config.Duration(time.Second), config.Duration(time.Second)
	conf.Webhooks = []config.Webhook{{URL: hook.URL, Events: []tidemark.EventType{tidemark.EventResourceStale, tidemark.EventResourceRecovered, tidemark.EventRunFailed}}}
	f := startFleetWith(t, conf, up)
	key := store.Key{Source: "obs_stale", Resource: res.Name}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	opt := f.redis.(asynq.RedisClientOpt)
	rdb := redis.NewClient(&redis.Options{Addr: opt.Addr, DB: opt.DB})
	t.Cleanup(func() { rdb.Close() })
	relay := events.NewRelay(events.RelayConfig{PollInterval: 100 * time.Millisecond, Sink: jobs.WebhookSink(f.client, conf)}, f.store, rdb, testLogger(t))
	run := func(fn func(context.Context) error) { wg.Add(1); go func() { defer wg.Done(); fn(ctx) }() }
	run(relay.Run)
	for range 2 { // two replicas: each transition still fires once
		run(scheduler.New(scheduler.Config{Tick: 200 * time.Millisecond}, conf, f.store, f.client, testLogger(t)).Run)
	}

	count := func(event tidemark.EventType) (int, []store.OutboxEvent) {
		rows, err := f.store.OutboxAfter(ctx, store.OutboxFilter{Source: key.Source, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		var out []store.OutboxEvent
		for _, r := range rows {
			if r.Event == event {
				out = append(out, r)
			}
		}
		return len(out), out
	}
	waitFor(t, 30*time.Second, "the resource synced and probed", func() (bool, string) {
		st, err := f.store.State(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return st.LastSuccessAt != nil && st.InSyncAt != nil && time.Since(*st.InSyncAt) < 2*time.Second, fmt.Sprintf("%+v", st.InSyncAt)
	})

	srv.Close() // the upstream goes away
	stopped := time.Now()
	var stale []store.OutboxEvent
	waitFor(t, 10*time.Second, "resource.stale", func() (bool, string) {
		n, rows := count(tidemark.EventResourceStale)
		stale = rows
		return n > 0, ""
	})
	after := time.Since(stopped)
	var payload struct {
		LagSeconds       float64 `json:"lag_seconds"`
		FreshnessSeconds float64 `json:"freshness_seconds"`
	}
	if err := json.Unmarshal(stale[0].Payload, &payload); err != nil {
		t.Fatal(err)
	}
	t.Logf("stale %s after the upstream stopped, lag %.2fs", after.Round(time.Millisecond), payload.LagSeconds)
	if payload.LagSeconds < 5 || payload.LagSeconds > 7 || after > 7*time.Second || payload.FreshnessSeconds != 5 {
		t.Errorf("stale at lag %.2fs (freshness %vs), %s after the stop: want a lag of 5-7s within 7s", payload.LagSeconds, payload.FreshnessSeconds, after)
	}
	waitFor(t, 20*time.Second, "run.failed after 3 failed probes", func() (bool, string) {
		n, _ := count(tidemark.EventRunFailed)
		return n > 0, ""
	})

	// The upstream comes back on the same address.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv = httptest.NewUnstartedServer(up)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	waitFor(t, 30*time.Second, "resource.recovered delivered", func() (bool, string) {
		return deliveries(tidemark.EventResourceRecovered) > 0, ""
	})
	for _, ev := range []tidemark.EventType{tidemark.EventResourceStale, tidemark.EventResourceRecovered, tidemark.EventRunFailed} {
		if n, _ := count(ev); n != 1 {
			t.Errorf("%d %s events, want exactly 1", n, ev)
		}
		if n := deliveries(ev); n != 1 {
			t.Errorf("%d %s webhook deliveries, want exactly 1", n, ev)
		}
	}
	_, failed := count(tidemark.EventRunFailed)
	var fp struct {
		Error               string `json:"error"`
		ConsecutiveFailures int    `json:"consecutive_failures"`
	}
	json.Unmarshal(failed[0].Payload, &fp)
	if fp.Error == "" || fp.ConsecutiveFailures < 3 {
		t.Errorf("run.failed payload %s: want the last error and a streak of at least 3", failed[0].Payload)
	}
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestNoSecretInLogs fetches with a bearer token from an upstream that
// fails and echoes the request headers back: the token appears nowhere in
// the worker's logs, the run rows or the outbox.
func TestNoSecretInLogs(t *testing.T) {
	const token = "tm-secret-7f3a9c1e5b2d4f60"
	t.Setenv("OBS_SECRET_TOKEN", token)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "upstream broke; you sent: %v", r.Header)
	}))
	t.Cleanup(echo.Close)
	conf, err := config.Parse("secret.yaml", []byte(`
sources:
  - name: obs_secret
    base_url: `+echo.URL+`
    allow_private: true
    auth: {type: bearer, token_env: OBS_SECRET_TOKEN}
    resources:
      - name: things
        path: /things
        records: {path: data, id: id}
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	w, err := worker.New(worker.Config{Concurrency: 2}, conf, st, redisOpt, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	client := asynq.NewClient(redisOpt)
	t.Cleanup(func() { cancel(); <-done; client.Close(); st.Close() })
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "obs_secret", Resource: "things", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}, asynq.MaxRetry(1))
	if err == nil {
		_, err = client.Enqueue(task, asynq.Queue("default"))
	}
	if err != nil {
		t.Fatal(err)
	}
	var runs []store.Run
	waitFor(t, 30*time.Second, "a failed run", func() (bool, string) {
		runs, err = st.Runs(ctx, store.RunFilter{Source: "obs_secret"})
		if err != nil {
			t.Fatal(err)
		}
		return len(runs) > 0 && runs[0].Status != store.StatusRunning && strings.Contains(logs.String(), `"task finished"`), ""
	})
	if !strings.Contains(runs[0].Error, "HTTP 500") {
		t.Fatalf("run error %q: want the upstream's HTTP 500", runs[0].Error)
	}
	if !strings.Contains(logs.String(), "you sent") {
		t.Fatalf("the echoed body is not in the logs, so the test proves nothing:\n%s", logs.String())
	}
	if n := strings.Count(logs.String(), token); n != 0 {
		t.Errorf("the token appears %d times in the worker's logs:\n%s", n, logs.String())
	}
	for _, r := range runs {
		if strings.Contains(r.Error, token) {
			t.Errorf("run %d error carries the token: %s", r.ID, r.Error)
		}
	}
	rows, err := st.OutboxAfter(ctx, store.OutboxFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if strings.Contains(string(r.Payload), token) {
			t.Errorf("outbox event %d carries the token", r.ID)
		}
	}
}
