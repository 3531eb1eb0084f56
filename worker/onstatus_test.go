package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// answer404 makes a scripted upstream answer every list request with 404
// while gone is true, as APIs do that report an empty collection (or one
// they no longer find) as not found.
func answer404(gone *bool) func(int, *scripted, http.ResponseWriter, *http.Request) bool {
	return func(_ int, _ *scripted, w http.ResponseWriter, _ *http.Request) bool {
		if *gone {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		}
		return *gone
	}
}

// TestOnStatusEmptyHoldsDeletes: with on_status {404: empty}, a full read
// answered 404 ends normally as an empty collection, but one such answer
// tombstones nothing of a resource with live records: the delete brake
// (max_delete_fraction) holds the deletions until the next full read
// agrees. Without on_status the 404 fails the run.
func TestOnStatusEmptyHoldsDeletes(t *testing.T) {
	t.Parallel()
	gone := false
	api := &scripted{recs: numbered(12, time.Now())}
	api.before = answer404(&gone)
	f := startScripted(t, api, `
pagination: {style: page, page_param: page, limit_param: limit, limit: 5}
full_sync: {detect_deletes: true}
on_status: {404: empty}`)
	f.mustSucceed(f.full())
	api.mu.Lock()
	gone = true
	api.mu.Unlock()

	run := f.mustSucceed(f.full())
	if run.RecordsDeleted != 0 || run.DeletesHeld != 12 || len(f.live()) != 12 {
		t.Fatalf("one 404-as-empty full read: %d deleted, %d held, %d live; want 0, 12, 12", run.RecordsDeleted, run.DeletesHeld, len(f.live()))
	}
	run = f.mustSucceed(f.full())
	if run.RecordsDeleted != 12 || len(f.live()) != 0 {
		t.Fatalf("a second 404-as-empty full read agrees: %d deleted, %d live; want 12 and 0", run.RecordsDeleted, len(f.live()))
	}
	if n := f.count(`SELECT count(*) FROM sync_runs WHERE status <> 'succeeded'`); n != 0 {
		t.Fatalf("%d runs did not succeed", n)
	}
}

// TestOnStatusEmptyEndsPageRead: a page-numbered API that answers 404 for
// the page after the last ends the read there when 404 means empty.
func TestOnStatusEmptyEndsPageRead(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(10, time.Now())}
	api.before = func(_ int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("page") == "3" { // 2 pages of 5, then "not found"
			http.Error(w, `{"error":"no such page"}`, http.StatusNotFound)
			return true
		}
		return false
	}
	f := startScripted(t, api, `
pagination: {style: page, page_param: page, limit_param: limit, limit: 5}
on_status: {404: empty}`)
	if run := f.mustSucceed(f.full()); run.RecordsCreated != 10 {
		t.Fatalf("created %d, want 10", run.RecordsCreated)
	}
}

// TestOnStatusFail: 403 mapped to fail fails the run at once with the
// mapping named in its error, and is not taken for an expired continuation
// (which restarts the read).
func TestOnStatusFail(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(10, time.Now())}
	api.before = func(_ int, _ *scripted, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("page") == "2" {
			http.Error(w, `{"error":"forbidden"}`, http.StatusForbidden)
			return true
		}
		return false
	}
	f := startScripted(t, api, `
pagination: {style: page, page_param: page, limit_param: limit, limit: 5}
on_status: {403: fail}`)
	run := f.full()
	if run.Status == store.StatusSucceeded || !strings.Contains(run.Error, "HTTP 403") || !strings.Contains(run.Error, "on_status 403: fail") {
		t.Fatalf("run %s %q: want a failure naming HTTP 403 and on_status", run.Status, run.Error)
	}
	if strings.Contains(run.Note, "started again") {
		t.Fatalf("a mapped 403 restarted the read as a rejected continuation: %s", run.Note)
	}
}

// TestProbeOnStatusEmpty: a probe answered with a status on_status maps to
// empty sees a stable empty collection, for every strategy: the first probe
// finds a change (to empty), the next finds none, and no probe fails.
func TestProbeOnStatusEmpty(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	conf, err := config.Parse("probe404.yaml", []byte(`
sources:
  - name: p404
    base_url: `+srv.URL+`
    allow_private: true
    resources:
      - name: hashed
        path: /items
        records: {path: data, id: id}
        probe: {strategy: hash, method: GET, every: 1h}
        on_status: {404: empty}
      - name: tagged
        path: /items
        records: {path: data, id: id}
        probe: {strategy: etag, method: HEAD, every: 1h}
        on_status: {404: empty}
      - name: dated
        path: /items
        records: {path: data, id: id}
        probe: {strategy: last_modified, method: GET, every: 1h}
        on_status: {404: empty}
`))
	if err != nil {
		t.Fatal(err)
	}
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2})
	ctx := context.Background()
	for _, res := range conf.Sources[0].Resources {
		key := store.Key{Source: "p404", Resource: res.Name}
		for i := 1; i <= 2; i++ {
			if err := w.Probe(t, jobs.ProbePayload{Source: "p404", Resource: res.Name, Trigger: jobs.TriggerManual}); err != nil {
				t.Errorf("probe %d of %s: %v", i, res.Name, err)
			}
			st, err := w.Store.State(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if st.ProbesTotal < int64(i) {
				t.Fatalf("probe %d of %s: %d probes counted", i, res.Name, st.ProbesTotal)
			}
			(&fleet{t: t, insp: w.Inspector}).waitIdle() // the fetch the first probe enqueues confirms its validator
		}
		st, err := w.Store.State(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if st.ProbesNotModified != 1 || st.ConsecutiveFailures != 0 {
			t.Errorf("%s: %d of 2 probes unchanged, %d consecutive failures; want 1 and 0", res.Name, st.ProbesNotModified, st.ConsecutiveFailures)
		}
	}
	runs, err := w.Store.Runs(ctx, store.RunFilter{Source: "p404", Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.Error != "" {
			t.Errorf("%s run of %s failed: %s", r.Kind, r.Resource, r.Error)
		}
	}
}

// TestEmptyStatusDatesTheRead: a read answered with a status mapped to
// empty is dated by that answer's Date, like any page, so that a
// Last-Modified a probe saw in the same second is not confirmed (a change
// later in that second would never be reported by If-Modified-Since). The
// upstream's clock runs an hour behind tidemark's: only its own Date shows
// the race.
func TestEmptyStatusDatesTheRead(t *testing.T) {
	t.Parallel()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", at.Format(http.TimeFormat))
		w.Header().Set("Last-Modified", at.Format(http.TimeFormat))
		if r.URL.Query().Has("since") { // nothing changed since: "not found"
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":[{"id":1,"updated_at":%q}]}`, at.Add(-time.Minute).Format(time.RFC3339))
	}))
	t.Cleanup(srv.Close)
	conf, err := config.Parse("dated.yaml", []byte(`
sources:
  - name: dated
    base_url: `+srv.URL+`
    allow_private: true
    resources:
      - name: items
        path: /items
        records: {path: data, id: id}
        probe: {strategy: last_modified, method: HEAD, every: 1h}
        delta: {param: since, field: updated_at}
        on_status: {404: empty}
`))
	if err != nil {
		t.Fatal(err)
	}
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2})
	f := &fleet{t: t, conf: conf, store: w.Store, client: w.Client, insp: w.Inspector}
	ctx := context.Background()
	key := store.Key{Source: "dated", Resource: "items"}
	if err := w.Fetch(t, jobs.FetchPayload{Source: "dated", Resource: "items", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}); err != nil {
		t.Fatalf("full fetch: %v", err)
	}
	if err := w.Probe(t, jobs.ProbePayload{Source: "dated", Resource: "items", Trigger: jobs.TriggerManual}); err != nil {
		t.Fatalf("probe: %v", err)
	}
	f.waitIdle() // the delta fetch the probe started, on the queues
	runs, err := w.Store.Runs(ctx, store.RunFilter{Source: "dated", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	delta := slices.IndexFunc(runs, func(r store.Run) bool { return r.Kind == tidemark.RunDelta })
	if delta < 0 || runs[delta].Status != store.StatusSucceeded {
		t.Fatalf("the delta the probe starts: %+v; want it succeeded", runs)
	}
	st, err := w.Store.State(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastModified != "" {
		t.Fatalf("the Last-Modified of the read's own second was confirmed (%q): a change later in that second would go unseen", st.LastModified)
	}
}
