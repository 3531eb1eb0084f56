package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// scripted is an upstream for the regression tests of one defect each: a
// list of records in id order, served as the test's config asks (page,
// offset or cursor pagination, an updated_since filter), with a hook before
// every list request to change the data or the answer mid-read.
type scripted struct {
	mu   sync.Mutex
	recs []scriptedRec
	// cap is the largest page served, whatever was asked (0: none).
	cap int
	// before runs before each list request (n counts them from 1); it may
	// change the records, or answer the request itself (handled true).
	before func(n int, s *scripted, w http.ResponseWriter, r *http.Request) (handled bool)
	// date, when set, is the Date header sent (the upstream's clock).
	date     func() time.Time
	requests int
}

// scriptedRec is a record: its id as JSON, the rest of its fields as JSON
// object members, and its updated_at (zero: written as null).
type scriptedRec struct {
	ID     string
	Fields string
	Stamp  time.Time
}

func (r scriptedRec) json() string {
	stamp := "null"
	if !r.Stamp.IsZero() {
		stamp = `"` + r.Stamp.UTC().Format(time.RFC3339Nano) + `"`
	}
	fields := ""
	if r.Fields != "" {
		fields = "," + r.Fields
	}
	return fmt.Sprintf(`{"id":%s%s,"updated_at":%s}`, r.ID, fields, stamp)
}

// numbered makes records 1..n with a name field and the given stamp.
func numbered(n int, stamp time.Time) []scriptedRec {
	out := make([]scriptedRec, n)
	for i := range out {
		out[i] = scriptedRec{ID: strconv.Itoa(i + 1), Fields: fmt.Sprintf(`"name":"r%d"`, i+1), Stamp: stamp}
	}
	return out
}

// set replaces (or appends) the record with id.
func (s *scripted) set(r scriptedRec) {
	for i := range s.recs {
		if s.recs[i].ID == r.ID {
			s.recs[i] = r
			return
		}
	}
	s.recs = append(s.recs, r)
}

func (s *scripted) remove(id string) {
	for i := range s.recs {
		if s.recs[i].ID == id {
			s.recs = append(s.recs[:i], s.recs[i+1:]...)
			return
		}
	}
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.date != nil {
		w.Header().Set("Date", s.date().UTC().Format(http.TimeFormat))
	}
	if s.before != nil && s.before(s.requests, s, w, r) {
		return
	}
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		s.serveGraphQL(w, r)
		return
	}
	recs, ok := s.between(w, q.Get("updated_since"), q.Get("updated_before"))
	if !ok {
		return
	}
	if id := q.Get("starting_after"); id != "" {
		s.serveAfter(w, recs, id, q.Get("limit"))
		return
	}
	size := len(recs)
	if l, err := strconv.Atoi(q.Get("limit")); err == nil {
		size = l
	}
	if s.cap > 0 {
		size = min(size, s.cap)
	}
	from := 0
	switch {
	case q.Has("page"):
		p, _ := strconv.Atoi(q.Get("page"))
		from = (p - 1) * size
	case q.Has("offset"):
		from, _ = strconv.Atoi(q.Get("offset"))
	case q.Has("cursor"):
		from, _ = strconv.Atoi(strings.TrimPrefix(q.Get("cursor"), "c"))
	}
	from = min(max(from, 0), len(recs))
	to := min(from+size, len(recs))
	parts := make([]string, 0, to-from)
	for _, rec := range recs[from:to] {
		parts = append(parts, rec.json())
	}
	next := "null"
	if to < len(recs) && to > from {
		next = fmt.Sprintf(`"c%d"`, to)
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"data":[%s],"total":%d,"next_cursor":%s}`, strings.Join(parts, ","), len(recs), next)
}

// scriptedFleet is one worker syncing one scripted upstream as source
// "api", resource "items".
type scriptedFleet struct {
	t      *testing.T
	api    *scripted
	conf   *config.Config
	store  *store.Store
	client *asynq.Client
	insp   *asynq.Inspector
	worker *workertest.Worker
}

// startScripted starts api and a worker for it that runs the test's
// fetches synchronously (fetch) and nothing from its queues; resourceYAML
// is YAML under the resource (pagination: ..., delta: ..., full_sync: ...).
func startScripted(t *testing.T, api *scripted, resourceYAML string) *scriptedFleet {
	t.Helper()
	conf := scriptedConfig(t, api, resourceYAML)
	return newScriptedFleet(t, api, conf, workertest.New(t, conf, worker.Config{Concurrency: 2}))
}

// startScriptedOnQueues is startScripted with the worker running its
// queues, for a test of what the queues do with a task.
func startScriptedOnQueues(t *testing.T, api *scripted, resourceYAML string, cfg worker.Config) *scriptedFleet {
	t.Helper()
	conf := scriptedConfig(t, api, resourceYAML)
	return newScriptedFleet(t, api, conf, workertest.Start(t, conf, cfg))
}

// newScriptedFleet is the fleet of api, conf and its worker w.
func newScriptedFleet(t *testing.T, api *scripted, conf *config.Config, w *workertest.Worker) *scriptedFleet {
	return &scriptedFleet{t: t, api: api, conf: conf, store: w.Store, client: w.Client, insp: w.Inspector, worker: w}
}

// scriptedConfig serves api and returns the config of source "api" with
// resource "items" on it.
func scriptedConfig(t *testing.T, api *scripted, resourceYAML string) *config.Config {
	t.Helper()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	records := "records: {path: data, id: id}\n" // unless the test's config says
	if strings.Contains(resourceYAML, "records:") {
		records = ""
	}
	yaml := fmt.Sprintf(`sources:
  - name: api
    base_url: %s
    allow_private: true
    timeout: 5s
    resources:
      - name: items
        path: /items
%s`, srv.URL, indent(records+resourceYAML, "        "))
	conf, err := config.Parse("scripted.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func (f *scriptedFleet) key() store.Key { return store.Key{Source: "api", Resource: "items"} }

// fetch runs a fetch synchronously, on its one and only attempt, and
// returns its run.
func (f *scriptedFleet) fetch(p jobs.FetchPayload) store.Run {
	f.t.Helper()
	p.Source, p.Resource = "api", "items"
	if p.Trigger == "" {
		p.Trigger = jobs.TriggerSchedule
	}
	res := f.conf.Sources[0].Resource("items")
	opts := append(jobs.FetchOptions(res), asynq.MaxRetry(0))
	task, err := jobs.NewFetch(p, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	after := f.lastRunID()
	err = f.worker.Work(f.t, task, opts...)
	runs, rerr := f.store.Runs(context.Background(), store.RunFilter{Source: "api", Limit: 1})
	if rerr != nil || len(runs) == 0 || runs[0].ID <= after || runs[0].Status == store.StatusRunning {
		f.t.Fatalf("the fetch (handler error %v) left no ended run: %v %v", err, runs, rerr)
	}
	// The handler's error and the run's status tell the same story.
	if run := runs[0]; (err == nil) != (run.Status == store.StatusSucceeded) {
		f.t.Fatalf("the fetch's handler returned %v, its run %d is %s (%q)", err, run.ID, run.Status, run.Error)
	}
	return runs[0]
}

func (f *scriptedFleet) full() store.Run  { return f.fetch(jobs.FetchPayload{Mode: tidemark.RunFull}) }
func (f *scriptedFleet) delta() store.Run { return f.fetch(jobs.FetchPayload{Mode: tidemark.RunDelta}) }

// mustSucceed fails the test unless run succeeded.
func (f *scriptedFleet) mustSucceed(run store.Run) store.Run {
	f.t.Helper()
	if run.Status != store.StatusSucceeded {
		f.t.Fatalf("run %d (%s): %s: %s", run.ID, run.Kind, run.Status, run.Error)
	}
	return run
}

func (f *scriptedFleet) lastRunID() int64 {
	var id int64
	f.store.DBForTests().Raw(`SELECT coalesce(max(id), 0) FROM sync_runs`).Scan(&id)
	return id
}

func (f *scriptedFleet) state() store.State {
	f.t.Helper()
	st, err := f.store.State(context.Background(), f.key())
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// live returns the live records' payloads by id.
func (f *scriptedFleet) live() map[string]map[string]any {
	f.t.Helper()
	var rows []struct {
		ExternalID string
		Payload    string
	}
	if err := f.store.DBForTests().Raw(`SELECT external_id, payload::text AS payload FROM records
		WHERE source = 'api' AND deleted_at IS NULL`).Scan(&rows).Error; err != nil {
		f.t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, r := range rows {
		var v map[string]any
		if err := json.Unmarshal([]byte(r.Payload), &v); err != nil {
			f.t.Fatal(err)
		}
		out[r.ExternalID] = v
	}
	return out
}

// count runs a count(*) query with args.
func (f *scriptedFleet) count(query string, args ...any) int64 {
	f.t.Helper()
	var n int64
	if err := f.store.DBForTests().Raw(query, args...).Scan(&n).Error; err != nil {
		f.t.Fatal(err)
	}
	return n
}
