package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/failpoint"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// pagedUpstream serves /items as cursor pages of two records; page fail
// (1-based) and every later one answer as broken says, until healed.
type pagedUpstream struct {
	fail     int
	broken   func(w http.ResponseWriter)
	healed   atomic.Bool
	requests atomic.Int64
}

func (u *pagedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	page := 1
	if c := r.URL.Query().Get("after"); c != "" {
		page, _ = strconv.Atoi(c)
	}
	if page >= u.fail && !u.healed.Load() {
		u.broken(w)
		return
	}
	next := ""
	if page < 5 {
		next = strconv.Itoa(page + 1)
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"data":[{"id":"p%d_a"},{"id":"p%d_b"}],"next":%q}`, page, page, next)
}

func pagedConfig(t *testing.T, baseURL string) *config.Config {
	t.Helper()
	conf, err := config.Parse("paged.yaml", []byte(`
sources:
  - name: paged
    base_url: `+baseURL+`
    allow_private: true
    timeout: 5s
    resources:
      - name: items
        path: /items
        records: {path: data, id: id}
        pagination: {style: cursor, cursor_param: after, next_field: next}
`))
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// TestFailedFetchCountsItsRequests fails full reads after some requests:
// an upstream error and a body that does not parse at the third page, a
// body that does not parse at the first, and a page whose commit fails
// while the next one was already read ahead. The failed run's row counts
// every request the run made (it said 0 for a first page that did not
// parse, and left out the failing page and the page read ahead).
func TestFailedFetchCountsItsRequests(t *testing.T) {
	t.Parallel()
	internalError := func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusInternalServerError) }
	malformed := func(w http.ResponseWriter) { w.Write([]byte(`{"data":[{"id":`)) }
	for _, tc := range []struct {
		name   string
		failAt int // the first page the upstream breaks (0: none)
		broken func(w http.ResponseWriter)
		// commitFails: the second page's commit fails once the upstream
		// has served the third (read ahead).
		commitFails bool
		want        int
	}{
		{name: "http 500 at page 3", failAt: 3, broken: internalError, want: 3},
		{name: "malformed page 3", failAt: 3, broken: malformed, want: 3},
		{name: "malformed page 1", failAt: 1, broken: malformed, want: 1},
		{name: "commit of page 2 fails", commitFails: true, want: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := &pagedUpstream{fail: tc.failAt, broken: tc.broken}
			if tc.failAt == 0 {
				up.fail = 1 << 30
			}
			srv := httptest.NewServer(up)
			t.Cleanup(srv.Close)
			conf := pagedConfig(t, srv.URL)
			cfg := worker.Config{Concurrency: 2}
			if tc.commitFails {
				var commits atomic.Int64
				cfg.CrashHook = func(point string) error {
					if point != failpoint.BeforePageCommit || commits.Add(1) != 2 {
						return nil
					}
					deadline := time.Now().Add(10 * time.Second)
					for up.requests.Load() < 3 && time.Now().Before(deadline) {
						time.Sleep(10 * time.Millisecond) // polling for the read-ahead request
					}
					return errors.New("page commit failed")
				}
			}
			w := workertest.New(t, conf, cfg)
			ferr := w.Fetch(t, jobs.FetchPayload{Source: "paged", Resource: "items", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual})
			runs, err := w.Store.Runs(context.Background(), store.RunFilter{Source: "paged", Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if ferr == nil || len(runs) != 1 || (runs[0].Status != store.StatusFailed && runs[0].Status != store.StatusDead) {
				t.Fatalf("fetch: handler error %v, runs %+v; want an error and one failed run", ferr, runs)
			}
			run := runs[0]
			if run.HTTPRequests != tc.want {
				t.Errorf("failed run %d (%s: %s) counts %d requests, want %d", run.ID, run.Status, run.Error, run.HTTPRequests, tc.want)
			}
		})
	}
}

// TestProbeSaysWhatItSaw probes a body that breaks off at offset 1771,
// with strategy hash and with a conditional GET that got no ETag: the
// failed probe's run says where the JSON broke, and gives no advice about
// another strategy.
func TestProbeSaysWhatItSaw(t *testing.T) {
	t.Parallel()
	body := `{"data":["` + strings.Repeat("a", 1759) + `",}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	conf, err := config.Parse("probe.yaml", []byte(`
sources:
  - name: saw
    base_url: `+srv.URL+`
    allow_private: true
    resources:
      - name: hashed
        path: /items
        records: {path: data, id: id}
        probe: {strategy: hash, method: GET, every: 1h}
      - name: tagged
        path: /items
        records: {path: data, id: id}
        probe: {strategy: etag, method: GET, every: 1h}
`))
	if err != nil {
		t.Fatal(err)
	}
	w := workertest.New(t, conf, worker.Config{Concurrency: 2})
	for _, res := range conf.Sources[0].Resources {
		// Failed either way; whether asynq retries it is the queue's
		// business, not this test's.
		_ = w.Probe(t, jobs.ProbePayload{Source: "saw", Resource: res.Name, Trigger: jobs.TriggerManual})
	}
	runs, err := w.Store.Runs(context.Background(), store.RunFilter{Source: "saw", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	errs := map[string]string{}
	for _, r := range runs {
		if r.Kind == tidemark.RunProbe && r.Error != "" {
			errs[r.Resource] = r.Error
			if r.HTTPRequests != 1 {
				t.Errorf("failed probe run %d counts %d requests, want 1", r.ID, r.HTTPRequests)
			}
		}
	}
	if len(errs) != 2 {
		t.Fatalf("failed probe runs of %v, want one of each resource", errs)
	}
	for res, msg := range errs {
		t.Logf("%s: %s", res, msg)
		if want := "malformed JSON: invalid character '}' looking for beginning of value at offset 1771"; !strings.Contains(msg, want) {
			t.Errorf("%s: probe error %q does not say %q", res, msg, want)
		}
		if strings.Contains(msg, "strategy") {
			t.Errorf("%s: probe error %q gives advice about a strategy instead of what it saw", res, msg)
		}
	}
}

// TestProbeBlipLeavesNoDeadTasks runs the scheduler and a worker against an
// upstream that answers 503 for a while (a blip, no Retry-After): probes
// fail and none is archived; once the upstream is back, the next probe
// brings the resource back in step. With a backoff shorter than the probe
// interval a probe is retried until its budget runs out (and then ends,
// not dead); with the real backoff (2 s first) a 1 s probe is not retried
// at all: the next scheduled probe is its retry.
func TestProbeBlipLeavesNoDeadTasks(t *testing.T) {
	t.Parallel()
	fast := func(n int, err error, task *asynq.Task) time.Duration {
		if d, ok := jobs.HandBack(err); ok {
			return d
		}
		return 100 * time.Millisecond
	}
	for _, tc := range []struct {
		name       string
		retryDelay func(int, error, *asynq.Task) time.Duration
		maxAttempt int // the highest attempt a failed probe run may have
	}{
		{"backoff within the interval", fast, 3},
		{"backoff beyond the interval", jobs.RetryDelay, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			probeBlip(t, tc.retryDelay, tc.maxAttempt)
		})
	}
}

// runScheduler runs a scheduler ticking every 100 ms for w until the test
// ends.
func runScheduler(t *testing.T, conf config.Provider, w *workertest.Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sched := scheduler.New(scheduler.Config{Tick: 100 * time.Millisecond}, conf, w.Store, w.Client, workertest.Logger())
	done := make(chan error, 1)
	go func() { done <- sched.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("scheduler: %v", err)
		}
	})
}

func probeBlip(t *testing.T, retryDelay func(int, error, *asynq.Task) time.Duration, maxAttempt int) {
	var down atomic.Bool
	down.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "upstream restarting", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"data":[{"id":"a"},{"id":"b"}]}`))
	}))
	t.Cleanup(srv.Close)
	conf, err := config.Parse("blip.yaml", []byte(`
sources:
  - name: blip
    base_url: `+srv.URL+`
    allow_private: true
    resources:
      - name: items
        path: /items
        freshness: 1m
        records: {path: data, id: id}
        probe: {strategy: etag, method: GET, every: 1s, max_every: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2, RetryDelay: retryDelay})
	runScheduler(t, conf, w)
	runs := func() []store.Run {
		t.Helper()
		rs, err := w.Store.Runs(context.Background(), store.RunFilter{Source: "blip", Limit: 200})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	archived := func() int {
		t.Helper()
		queues, err := w.Inspector.Queues() // those that exist
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, q := range queues {
			if _, probe := jobs.ProbeQueues[q]; !probe {
				continue
			}
			info, err := w.Inspector.GetQueueInfo(q)
			if err != nil {
				t.Fatal(err)
			}
			n += info.Archived
		}
		return n
	}
	// Four probe slots (over 2 s: a retry after the real backoff would
	// show) of failed attempts, retries used up.
	waitFor(t, 30*time.Second, "failed probes", func() (bool, string) {
		failed, lastAttempts := 0, 0
		for _, r := range runs() {
			if r.Kind == tidemark.RunProbe && r.Status == store.StatusFailed {
				failed++
				if r.Attempt == maxAttempt {
					lastAttempts++
				}
			}
			if r.Status == store.StatusDead {
				t.Fatalf("run %d of a probe is dead: %s", r.ID, r.Error)
			}
			if r.Attempt > maxAttempt {
				t.Fatalf("probe run %d is attempt %d, want at most %d", r.ID, r.Attempt, maxAttempt)
			}
		}
		return lastAttempts >= 4, fmt.Sprintf("%d failed probe runs, %d of them attempt %d", failed, lastAttempts, maxAttempt)
	})
	if n := archived(); n != 0 {
		t.Fatalf("%d probe tasks archived (dead) after a blip", n)
	}
	down.Store(false)
	healed := time.Now()
	waitFor(t, 10*time.Second, "the resource back in step", func() (bool, string) {
		st, err := w.Store.State(context.Background(), store.Key{Source: "blip", Resource: "items"})
		if err != nil {
			t.Fatal(err)
		}
		fetched := false
		for _, r := range runs() {
			fetched = fetched || (r.Kind != tidemark.RunProbe && r.Status == store.StatusSucceeded)
		}
		return fetched && st.ConsecutiveFailures == 0, fmt.Sprintf("fetched %t, %d consecutive failures", fetched, st.ConsecutiveFailures)
	})
	t.Logf("in step %s after the upstream came back", time.Since(healed).Round(time.Millisecond))
	if n := archived(); n != 0 {
		t.Errorf("%d probe tasks archived (dead) after a blip", n)
	}
}

// unavailableSource is a config with one source, name, whose one resource,
// items, is probed by etag every interval, at an upstream that answers
// every request 503.
func unavailableSource(t *testing.T, name, every string) *config.Config {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream restarting", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	conf, err := config.Parse(name+".yaml", []byte(`
sources:
  - name: `+name+`
    base_url: `+srv.URL+`
    allow_private: true
    resources:
      - name: items
        path: /items
        records: {path: data, id: id}
        probe: {strategy: etag, method: GET, every: `+every+`, max_every: `+every+`}
`))
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// TestUnscheduledProbeRetriesBeforeTheNextProbe: a probe that carries no
// slot (an operator's, a hook's) is retried only while the sum of its
// delays so far and the next one stays within the probe interval: with
// 0.4 s, then 0.8 s against 1 s, once.
func TestUnscheduledProbeRetriesBeforeTheNextProbe(t *testing.T) {
	t.Parallel()
	conf := unavailableSource(t, "manual", "1s")
	doubling := func(n int, err error, task *asynq.Task) time.Duration {
		if d, ok := jobs.HandBack(err); ok {
			return d
		}
		return 400 * time.Millisecond << n
	}
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2, RetryDelay: doubling})
	res := conf.Source("manual").Resource("items")
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: "manual", Resource: "items", Trigger: jobs.TriggerManual},
		append(jobs.ProbeOptions(res), asynq.TaskID("manual-probe"))...)
	if err != nil {
		t.Fatal(err)
	}
	info, err := w.Client.Enqueue(task)
	if err != nil {
		t.Fatal(err)
	}
	attempts := func() []int {
		t.Helper()
		runs, err := w.Store.Runs(context.Background(), store.RunFilter{Source: "manual"})
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for _, r := range runs {
			out = append(out, r.Attempt)
		}
		return out
	}
	// The task ends (leaves its queue) after its last attempt.
	waitFor(t, 15*time.Second, "the probe task to end", func() (bool, string) {
		_, err := w.Inspector.GetTaskInfo(info.Queue, info.ID)
		return errors.Is(err, asynq.ErrTaskNotFound), fmt.Sprint(err)
	})
	if got := attempts(); len(got) != 2 || got[0] != 2 {
		t.Errorf("probe runs' attempts (newest first) %v, want [2 1]: one retry, the second would pass the next probe", got)
	}
}

// TestProbeRetryNeverPassesTheNextProbe runs the scheduler and a worker with
// the real backoff (2 s, then 4 s) and a 5 s probe interval against an
// upstream that answers 503: a probe is retried after 2 s, but not after 4
// s more, which would run after the next slot's probe (and count one
// failure twice). Every attempt of a slot's probe starts before the next
// slot.
func TestProbeRetryNeverPassesTheNextProbe(t *testing.T) {
	t.Parallel()
	conf := unavailableSource(t, "slots", "5s")
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2})
	runScheduler(t, conf, w)
	ctx := context.Background()
	// slotEnd is when the next probe after the one of task id is due: its
	// id ends in its slot's number, of 5 s slots.
	slotEnd := func(id string) time.Time {
		n, err := strconv.ParseInt(id[strings.LastIndex(id, ":")+1:], 10, 64)
		if err != nil {
			t.Fatalf("probe task id %q: %v", id, err)
		}
		return time.Unix(0, (n+1)*int64(5*time.Second))
	}
	// A retried probe whose slot is over and the next slot's retried too:
	// by then a retry after 4 s more (at 6 s or later) would have run.
	var runs []store.Run
	waitFor(t, 40*time.Second, "two slots' probes retried", func() (bool, string) {
		var err error
		runs, err = w.Store.Runs(ctx, store.RunFilter{Source: "slots", Kind: tidemark.RunProbe, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		retriedSlots := map[string]bool{}
		for _, r := range runs {
			if r.Attempt > 1 {
				retriedSlots[r.TaskID] = true
			}
		}
		return len(retriedSlots) >= 2, fmt.Sprintf("%d probe runs, %d slots retried", len(runs), len(retriedSlots))
	})
	for _, r := range runs {
		t.Logf("probe %s attempt %d at %s", r.TaskID, r.Attempt, r.StartedAt.Format("15:04:05.000"))
		if end := slotEnd(r.TaskID); !r.StartedAt.Before(end) {
			t.Errorf("probe %s attempt %d ran at %s, after the next probe was due (%s)", r.TaskID, r.Attempt,
				r.StartedAt.Format("15:04:05.000"), end.Format("15:04:05.000"))
		}
	}
}

// TestFetchDiesOnlyOnItsLastAttempt: a fetch that fails for a reason a
// retry may cure is recorded failed while its task has retries left, and
// dead on its last attempt. The budget is the running task's (what asynq,
// or Work, says of it), so a task run synchronously is judged as one run
// by asynq would be.
func TestFetchDiesOnlyOnItsLastAttempt(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&pagedUpstream{fail: 1 << 30})
	t.Cleanup(srv.Close)
	conf := pagedConfig(t, srv.URL)
	w := workertest.New(t, conf, worker.Config{CrashHook: func(point string) error {
		if point == failpoint.BeforePageCommit {
			return errors.New("page commit failed")
		}
		return nil
	}})
	opts := jobs.FetchOptions(conf.Sources[0].Resource("items"))
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "paged", Resource: "items", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	info := w.TaskInfo(opts...)
	for _, attempt := range []struct {
		retried int
		want    string
	}{{0, store.StatusFailed}, {info.MaxRetry, store.StatusDead}} {
		info.Retried = attempt.retried
		if err := w.WorkAs(t, task, info); err == nil {
			t.Fatalf("attempt %d: the fetch succeeded, want it to fail", attempt.retried+1)
		}
		runs, err := w.Store.Runs(context.Background(), store.RunFilter{Source: "paged", Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != 1 || runs[0].Status != attempt.want {
			t.Errorf("attempt %d of %d: runs %+v, want the newest %s", attempt.retried+1, info.MaxRetry+1, runs, attempt.want)
		}
	}
}
