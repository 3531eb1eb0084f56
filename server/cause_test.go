package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/store"
)

// fail records a finished run of shop/orders with the given status and
// error, under task taskID.
func (e *env) fail(kind tidemark.RunKind, status, taskID, msg string) store.Run {
	e.t.Helper()
	ctx := context.Background()
	run := store.Run{Source: "shop", Resource: "orders", Kind: kind, Trigger: "schedule", TaskID: taskID}
	if err := e.st.StartRun(ctx, &run); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.FinishRun(ctx, run.ID, store.RunOutcome{Status: status, Error: msg}); err != nil {
		e.t.Fatal(err)
	}
	return run
}

func (e *env) view(resource string) server.ResourceView {
	e.t.Helper()
	resp, body := e.do("GET", "/api/resources", "", nil, "")
	if resp.StatusCode != 200 {
		e.t.Fatalf("GET /api/resources = %d: %s", resp.StatusCode, body)
	}
	var views []server.ResourceView
	if err := json.Unmarshal([]byte(body), &views); err != nil {
		e.t.Fatal(err)
	}
	for _, v := range views {
		if v.Resource == resource {
			return v
		}
	}
	e.t.Fatalf("no %s in %s", resource, body)
	return server.ResourceView{}
}

// TestResourcesShowTheCause: a failing resource's row of /api/resources
// says what failed in plain words (HTTP status, kind, the request without
// its query string), since when (the first failure after the last
// success), how many attempts, and what happens next, from the task queue:
// the next attempt while the task waits for its retry, "dead: run tidemark
// retry" once archived; POST .../retry re-enqueues the dead task.
func TestResourcesShowTheCause(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	ctx := context.Background()
	if err := e.st.FinishRun(ctx, e.runs["orders"], store.RunOutcome{Status: store.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	if v := e.view("orders"); v.Cause != nil {
		t.Fatalf("a resource whose last run succeeded has a cause: %+v", v.Cause)
	}
	// A failure, a successful fetch, then the streak of three: the run of
	// a probe that saw a change, in between, ends no streak (its fetch has
	// yet to bring the resource in step).
	e.fail(tidemark.RunDelta, store.StatusFailed, "old", "GET http://127.0.0.1:1/orders: HTTP 500")
	e.fail(tidemark.RunDelta, store.StatusSucceeded, "ok", "")
	const taskID = "probe-task-1"
	first := e.fail(tidemark.RunProbe, store.StatusFailed, taskID, "HEAD http://127.0.0.1:1/orders?api_key=s3cret: HTTP 503")
	e.fail(tidemark.RunProbe, store.StatusSucceeded, "changed", "")
	e.fail(tidemark.RunProbe, store.StatusFailed, taskID, "HEAD http://127.0.0.1:1/orders?api_key=s3cret: HTTP 503")
	last := e.fail(tidemark.RunProbe, store.StatusFailed, taskID, "HEAD http://127.0.0.1:1/orders?api_key=s3cret: HTTP 503")

	// The task waits for its retry (scheduled, as a retry with its delay is).
	res := e.conf.Source("shop").Resource("orders")
	client := asynq.NewClient(e.redisOpt)
	defer client.Close()
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: "shop", Resource: "orders", Trigger: "schedule"},
		append(jobs.ProbeOptions(res), asynq.TaskID(taskID), asynq.ProcessIn(time.Hour))...)
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.Enqueue(task)
	if err != nil {
		t.Fatal(err)
	}

	c := e.view("orders").Cause
	if c == nil {
		t.Fatal("a failing resource has no cause")
	}
	for _, want := range []string{"the upstream failed", "HTTP 503 Service Unavailable", "HEAD http://127.0.0.1:1/orders"} {
		if !strings.Contains(c.Summary, want) {
			t.Errorf("summary %q lacks %q", c.Summary, want)
		}
	}
	if b, _ := json.Marshal(c); strings.Contains(string(b), "s3cret") {
		t.Errorf("the cause shows the URL's query string: %s", b)
	}
	if c.Kind != "http_server_error" || c.HTTPStatus != 503 || c.Attempts != 3 || c.RunID != last.ID || c.Dead {
		t.Errorf("cause = %+v, want kind http_server_error, status 503, 3 attempts, run %d, not dead", c, last.ID)
	}
	if !c.Since.Equal(first.StartedAt.Truncate(time.Microsecond)) { // Postgres keeps microseconds
		t.Errorf("since %s, want the streak's first failure %s", c.Since, first.StartedAt)
	}
	if c.NextAt == nil || c.NextAt.Unix() != info.NextProcessAt.Unix() || !strings.HasPrefix(c.Next, "next attempt at ") {
		t.Errorf("next %q at %v, want the task's next attempt at %s", c.Next, c.NextAt, info.NextProcessAt)
	}

	// Archived: dead, and the way out named.
	insp := asynq.NewInspector(e.redisOpt)
	defer insp.Close()
	if err := insp.ArchiveTask(info.Queue, taskID); err != nil {
		t.Fatal(err)
	}
	if c := e.view("orders").Cause; !c.Dead || c.Next != "dead: run `tidemark retry "+taskID+"`" {
		t.Errorf("archived task: cause = %+v, want dead with the retry command", c)
	}
	resp, body := e.do("POST", "/api/resources/shop/orders/retry", "", nil, "")
	if resp.StatusCode != 200 || !strings.Contains(body, `"task_id":"`+taskID+`"`) || strings.Contains(body, `"error"`) {
		t.Fatalf("POST .../retry = %d %s, want the dead task retried", resp.StatusCode, body)
	}
	if _, err := insp.GetTaskInfo(info.Queue, taskID); err == nil {
		t.Error("the retried task is still in the archive")
	}
	if c := e.view("orders").Cause; c.Dead {
		t.Errorf("after the retry: cause = %+v, want not dead", c)
	}
	// Nothing dead left: nothing retried.
	if _, body := e.do("POST", "/api/resources/shop/orders/retry", "", nil, ""); !strings.Contains(body, `"retried":[]`) {
		t.Errorf("second retry: %s, want nothing retried", body)
	}
}

// TestDescribeFailures puts errors as the worker records them in plain words.
func TestDescribeFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, err, kind, words string }{
		{"auth", "GET http://h/x: HTTP 401: {\"error\":\"bad token\"}", "http_auth", "refused tidemark's credentials (HTTP 401 Unauthorized) at GET http://h/x"},
		{"not found", "fetch shop/orders page 2: GET http://h/x: HTTP 404", "http_not_found", "no such path (HTTP 404 Not Found)"},
		{"timeout", "GET http://h/x: timeout after 10s", "timeout", "did not answer in time"},
		{"refused", "GET http://h/x: dial tcp 127.0.0.1:1: connect: connection refused", "connection", "refused the connection"},
		{"bad body", "GET http://h/x: bad response: malformed JSON at offset 17", "bad_response", "unusable: malformed JSON at offset 17"},
		{"other", "something else", "error", "something else"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := server.NewCauseForTest(store.FailureStreak{Attempts: 1, Last: store.Run{Status: store.StatusFailed, Error: tc.err}})
			if string(c.Kind) != tc.kind || !strings.Contains(c.Summary, tc.words) {
				t.Errorf("%q: kind %q, summary %q; want %q containing %q", tc.err, c.Kind, c.Summary, tc.kind, tc.words)
			}
		})
	}
}

// TestResourcePageAPI: the resource page's data: one resource with its
// settings and dead tasks, and its last hours for the charts.
func TestResourcePageAPI(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	ctx := context.Background()
	k := store.Key{Source: "shop", Resource: "orders"}
	if err := e.st.FinishRun(ctx, e.runs["orders"], store.RunOutcome{Status: store.StatusSucceeded, HTTPRequests: 3}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.RecordProbe(ctx, k, store.ProbeOutcome{Interval: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}

	resp, body := e.do("GET", "/api/resources/shop/orders", "", nil, "")
	var d server.ResourceDetail
	if err := json.Unmarshal([]byte(body), &d); resp.StatusCode != 200 || err != nil {
		t.Fatalf("GET /api/resources/shop/orders = %d %s (%v)", resp.StatusCode, body, err)
	}
	if d.Source != "shop" || d.Resource != "orders" || d.Health != server.HealthFresh || d.ProbeNowSeconds != 5 || d.DeadTasks == nil {
		t.Errorf("detail = %s, want shop/orders, fresh, probing every 5s now, no dead tasks", body)
	}
	if resp, body := e.do("GET", "/api/resources/shop/nope", "", nil, ""); resp.StatusCode != 404 {
		t.Errorf("unknown resource = %d %s, want 404", resp.StatusCode, body)
	}

	resp, body = e.do("GET", "/api/resources/shop/orders/history", "", nil, "")
	var h server.History
	if err := json.Unmarshal([]byte(body), &h); resp.StatusCode != 200 || err != nil {
		t.Fatalf("history = %d %.300s (%v)", resp.StatusCode, body, err)
	}
	// A sample each whole minute from a day ago, and one now.
	if len(h.Times) < 24*60+1 || len(h.Times) > 24*60+2 || len(h.LagSeconds) != len(h.Times) || len(h.Requests) < 24 || h.TargetSeconds != 60 {
		t.Fatalf("history has %d times, %d lags, %d hours, target %v; want a day of minutes and hours, target 60",
			len(h.Times), len(h.LagSeconds), len(h.Requests), h.TargetSeconds)
	}
	if l := h.LagSeconds[len(h.LagSeconds)-1]; l == nil || *l < 0 || *l > 5 {
		t.Errorf("lag now = %v, want the few seconds since the probe", l)
	}
	if h.LagSeconds[0] != nil {
		t.Errorf("lag a day ago = %v, want none (never in step then)", *h.LagSeconds[0])
	}
	var probes, unchanged, fetch int64
	for _, r := range h.Requests {
		probes, unchanged, fetch = probes+r.Probe, unchanged+r.Unchanged, fetch+r.Fetch
	}
	if probes != 1 || unchanged != 1 || fetch != 3 || len(h.Runs) != 1 || h.Runs[0].Kind != tidemark.RunFull {
		t.Errorf("history: %d probes (%d unchanged), %d fetch requests, runs %+v; want 1 (1), 3, the full run", probes, unchanged, fetch, h.Runs)
	}
	if resp, body := e.do("GET", "/api/resources/shop/orders/history?hours=0", "", nil, ""); resp.StatusCode != 400 || !strings.Contains(body, "want a whole number from 1 to 48") {
		t.Errorf("hours=0 = %d %s, want 400 saying what is wanted", resp.StatusCode, body)
	}
}

// TestLagSeries: the lag each minute is the time since the newest moment in
// step known by then; a fetch's moment counts from when it finished.
func TestLagSeries(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(m float64) time.Time { return t0.Add(time.Duration(m * float64(time.Minute))) }
	moments := []store.InSyncMoment{
		{At: at(0.5), Known: at(0.5)}, // a probe
		{At: at(2), Known: at(3.5)},   // a fetch that started at 2, finished at 3.5
	}
	times, lags := server.LagSeriesForTest(moments, t0, at(5), time.Minute)
	// Until the fetch finishes the lag grows from the probe's 0.5; from
	// then on it counts from the fetch's start.
	want := []any{nil, 30.0, 90.0, 150.0, 120.0, 180.0}
	if len(times) != len(want) {
		t.Fatalf("%d samples, want %d", len(times), len(want))
	}
	for i, w := range want {
		got := lags[i]
		if w == nil && got != nil || w != nil && (got == nil || *got != w.(float64)) {
			t.Errorf("sample %d (%s): lag %v, want %v", i, time.Unix(times[i], 0).UTC().Format(time.TimeOnly), deref(got), w)
		}
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestCauseCountsRetries: a task waiting for its first retry says "retry 1
// of N" (asynq counts a retry when it schedules it), never one past its
// budget.
func TestCauseCountsRetries(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	const taskID = "probe-task-retried"
	e.fail(tidemark.RunProbe, store.StatusFailed, taskID, "HEAD http://127.0.0.1:1/orders: HTTP 503")

	res := e.conf.Source("shop").Resource("orders")
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: "shop", Resource: "orders", Trigger: "schedule"},
		append(jobs.ProbeOptions(res), asynq.TaskID(taskID), asynq.MaxRetry(2))...)
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(e.redisOpt)
	defer client.Close()
	if _, err := client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	// A worker whose attempt fails once: the task waits an hour for retry 1.
	srv := asynq.NewServer(e.redisOpt, asynq.Config{
		Queues:         map[string]int{jobs.ProbeQueue(res): 1},
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
		LogLevel:       asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return errors.New("503") })); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(e.redisOpt)
	defer insp.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := insp.GetTaskInfo(jobs.ProbeQueue(res), taskID)
		if err == nil && info.State == asynq.TaskStateRetry {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task never waited for its retry: %v %v", info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.Shutdown()
	c := e.view("orders").Cause
	if c == nil || !strings.HasSuffix(c.Next, "(retry 1 of 2)") {
		t.Fatalf("cause = %+v, want the next attempt as retry 1 of 2", c)
	}
}
