package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// Dummy credentials: the fakes refuse requests without them, which proves
// the examples' auth blocks reach the wire.
const (
	githubToken  = "ghp_test_0000000000000000000000000000"
	stripeKey    = "sk_test_0000000000000000"
	cmsKey       = "cms-test-key"
	shopifyToken = "shpat_test_00000000000000000000000000"
)

func TestMain(m *testing.M) {
	// Set before any test runs, so the tests can run in parallel.
	os.Setenv("GITHUB_TOKEN", githubToken)
	os.Setenv("STRIPE_SECRET_KEY", stripeKey)
	os.Setenv("SHOPIFY_ADMIN_TOKEN", shopifyToken)
	os.Exit(m.Run())
}

// pageSize replaces the examples' page sizes (50 to 100) so that seven
// fixture records span three pages.
const pageSize = 3

type exampleCase struct {
	name    string
	file    string                          // the example config
	fixture string                          // records, under testdata/
	key     string                          // where the records array is in the fixture file ("" = the file is the array)
	id      func(rec map[string]any) string // the record's external id, as tidemark stores it
	serve   func(*fixture) http.HandlerFunc
	// mutate changes one record the way the API would after an edit and
	// returns its external id. The record is chosen off the first page
	// wherever the example claims its probe sees any change.
	mutate func(recs []map[string]any) string
	// quiet is the fake's counter an unchanged probe adds exactly one to:
	// "304" (a conditional GET or HEAD answered Not Modified), or "200".
	quiet string
	// add, instead of mutate, makes a new record, to be appended, and
	// returns it: for an API whose deltas see new records only.
	add func(recs []map[string]any) map[string]any
	// walks are the fake's counters the full read must add to: the
	// continuations and windows the example claims to use.
	walks []string
}

var cases = []exampleCase{
	{
		name: "github_issues", file: "github_issues.yaml", fixture: "github/issues.json",
		id:    func(r map[string]any) string { return strconv.FormatFloat(r["id"].(float64), 'f', -1, 64) },
		serve: serveGitHub,
		mutate: func(recs []map[string]any) string {
			// Issue 65029 (updated 2024-03-05: page 2 of a read sorted by
			// updated ascending) is closed: state, closed_at and updated_at change.
			r := byField(recs, "number", 65029)
			r["state"], r["state_reason"] = "closed", "completed"
			r["closed_at"], r["updated_at"] = "2024-06-01T12:00:00Z", "2024-06-01T12:00:00Z"
			return strconv.FormatFloat(r["id"].(float64), 'f', -1, 64)
		},
		quiet: "304",
	},
	{
		name: "stripe_charges", file: "stripe_charges.yaml", fixture: "stripe/charges.json",
		id:    func(r map[string]any) string { return r["id"].(string) },
		serve: serveStripe,
		add: func(recs []map[string]any) map[string]any {
			// A new charge: the newest, on the first page the hash probe
			// reads; the delta (created[gte] the watermark) reads it alone.
			r := map[string]any{}
			b, _ := json.Marshal(byField(recs, "id", "ch_3P6kQ2eZvKYlo2C0a1b2c3d"))
			json.Unmarshal(b, &r)
			// Created a little before the delta: one created in the second
			// the delta begins is past its last window's end (created[lt]
			// is in whole seconds), and the next delta reads it.
			r["id"], r["created"] = "ch_3P9kQ2eZvKYlo2C0new0001", float64(time.Now().Add(-10*time.Second).Unix())
			return r
		},
		quiet: "200", // a hash probe reads the first page
		walks: []string{"starting_after", "window"},
	},
	{
		name: "shopify_graphql", file: "shopify_graphql.yaml", fixture: "shopify/products.json",
		id:    func(r map[string]any) string { return r["id"].(string) },
		serve: serveShopify,
		mutate: func(recs []map[string]any) string {
			// The most recently updated product (first in the probe's
			// page, sorted UPDATED_AT reverse) is renamed.
			r := byField(recs, "id", "gid://shopify/Product/8123456749")
			r["title"], r["updatedAt"] = "Recycled Denim Jeans (slim)", time.Now().UTC().Format(time.RFC3339)
			return r["id"].(string)
		},
		quiet: "200", // a hash probe posts the first page's query
		walks: []string{"after"},
	},
	{
		name: "jsonapi_articles", file: "jsonapi_articles.yaml", fixture: "jsonapi/articles.json",
		id:    func(r map[string]any) string { return r["id"].(string) },
		serve: serveJSONAPI,
		mutate: func(recs []map[string]any) string {
			r := byField(recs, "id", "105") // page 2 of sort=updated-at
			attrs := r["attributes"].(map[string]any)
			attrs["title"], attrs["updated-at"] = "Release notes 5 (corrected)", "2024-06-02T10:00:00Z"
			return "105"
		},
		quiet: "304", // a conditional HEAD
	},
	{
		name: "json_server", file: "json_server.yaml", fixture: "json_server/db.json", key: "posts",
		id:    func(r map[string]any) string { return fmt.Sprint(r["id"]) },
		serve: serveJSONServer,
		mutate: func(recs []map[string]any) string {
			r := byField(recs, "id", 5.0) // page 2 of _page/_limit=3
			r["title"] = "post 5: edited"
			return "5"
		},
		quiet: "304",
	},
}

// TestExamplesSyncTheirFixtures runs each real-API example, unedited but for
// its base URL, page size and credentials, through a real worker against a
// fake of its API: a full read walks every page to the end; an unchanged
// probe finds nothing (a 304 where the API offers validators); an edit
// upstream is seen by the next probe and its fetch changes exactly that
// record.
func TestExamplesSyncTheirFixtures(t *testing.T) {
	t.Parallel()
	conf := &config.Config{}
	fixtures := make([]*fixture, len(cases))
	for i, c := range cases {
		fx := loadFixture(t, c)
		fixtures[i] = fx
		srv := httptest.NewServer(c.serve(fx))
		t.Cleanup(srv.Close)
		ex, err := config.Load(c.file)
		if err != nil {
			t.Fatal(err)
		}
		src := ex.Sources[0]
		src.BaseURL, src.AllowPrivate = srv.URL, true
		src.RateLimit = nil // the limits have their own tests; these would only slow this one
		if src.Auth != nil && src.Auth.TokenFile != "" {
			path := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(path, []byte(cmsKey+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			src.Auth.TokenFile = path
		}
		src.Resources[0].Pagination.Limit = pageSize
		conf.Sources = append(conf.Sources, src)
	}
	f := startFleet(t, conf)

	for i, c := range cases {
		src, fx := &conf.Sources[i], fixtures[i]
		res := &src.Resources[0]
		key := store.Key{Source: src.Name, Resource: res.Name}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// Pagination to the end: every fixture record, in three pages.
			run := f.fetch(t, key, tidemark.RunFull)
			if want := (len(fx.records) + pageSize - 1) / pageSize; run.Pages < want {
				t.Errorf("full read: %d pages, want at least %d", run.Pages, want)
			}
			f.assertInStep(t, key, res, c, fx)
			for _, w := range c.walks {
				if fx.count(w) == 0 {
					t.Errorf("full read: the upstream saw no request with %s", w)
				}
			}

			// The first probe learns the validator (a change, and a fetch
			// that confirms it); the second finds nothing new.
			f.probe(t, key)
			st := f.state(t, key)
			changes := f.changes(t, key)
			quiet := fx.count(c.quiet)
			f.probe(t, key)
			st2 := f.state(t, key)
			if st2.ProbesNotModified != st.ProbesNotModified+1 {
				t.Errorf("an unchanged probe: probes_not_modified %d → %d, want +1", st.ProbesNotModified, st2.ProbesNotModified)
			}
			if n := fx.count(c.quiet) - quiet; n != 1 {
				t.Errorf("an unchanged probe: upstream counted %d × %s, want 1", n, c.quiet)
			}
			if n := f.changes(t, key); n != changes {
				t.Errorf("an unchanged probe changed %d records", n-changes)
			}

			// An edit upstream: the next probe sees it, the fetch it
			// enqueues changes exactly that record.
			fx.mu.Lock()
			id, op, version := "", "updated", 2
			if c.add != nil {
				rec := c.add(fx.records)
				fx.records = append(fx.records, rec)
				id, op, version = c.id(rec), "created", 1
			} else {
				id = c.mutate(fx.records)
			}
			fx.mu.Unlock()
			f.probe(t, key)
			if st3 := f.state(t, key); st3.ProbesNotModified != st2.ProbesNotModified {
				t.Fatalf("the probe after an edit of record %s found nothing new", id)
			}
			if res.Delta != nil {
				// The fetch was a delta: the API's filter (since,
				// filter[updated-since]) left out what had not changed.
				run := f.lastRun(t, key)
				if run.Kind != tidemark.RunDelta || run.RecordsFetched >= int64(len(fx.records)) {
					t.Errorf("fetch after the edit: %s run read %d of %d records, want a delta reading fewer", run.Kind, run.RecordsFetched, len(fx.records))
				}
			}
			var rows []struct{ ExternalID, Op string }
			if err := f.store.DBForTests().Raw(`SELECT external_id, op FROM record_changes
				WHERE source = ? AND resource = ? ORDER BY id OFFSET ?`, key.Source, key.Resource, changes).Scan(&rows).Error; err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 || rows[0].ExternalID != id || rows[0].Op != op {
				t.Errorf("changes after editing record %s: %+v, want exactly that record %s", id, rows, op)
			}
			var got int
			f.store.DBForTests().Raw(`SELECT version FROM records WHERE source = ? AND resource = ? AND external_id = ?`,
				key.Source, key.Resource, id).Scan(&got)
			if got != version {
				t.Errorf("record %s: version %d after one edit, want %d", id, got, version)
			}
			f.assertInStep(t, key, res, c, fx)

			// And quiet again.
			st4, quiet := f.state(t, key), fx.count(c.quiet)
			f.probe(t, key)
			if st5 := f.state(t, key); st5.ProbesNotModified != st4.ProbesNotModified+1 {
				t.Errorf("a probe after the edit was fetched: probes_not_modified %d → %d, want +1", st4.ProbesNotModified, st5.ProbesNotModified)
			}
			if n := fx.count(c.quiet) - quiet; n != 1 {
				t.Errorf("a probe after the edit was fetched: upstream counted %d × %s, want 1", n, c.quiet)
			}
			for _, p := range fx.problemsSeen() {
				t.Errorf("upstream: %s", p)
			}
		})
	}
}

// fixture is one fake API's data: its records, in order, and what it saw.
type fixture struct {
	mu       sync.Mutex
	records  []map[string]any
	counts   map[string]int
	problems []string
}

func loadFixture(t *testing.T, c exampleCase) *fixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", c.fixture))
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	if c.key == "" {
		err = json.Unmarshal(b, &recs)
	} else {
		var doc map[string]json.RawMessage
		if err = json.Unmarshal(b, &doc); err == nil {
			err = json.Unmarshal(doc[c.key], &recs)
		}
	}
	if err != nil || len(recs) <= 2*pageSize {
		t.Fatalf("%s: %d records (want more than two pages of %d): %v", c.fixture, len(recs), pageSize, err)
	}
	return &fixture{records: recs, counts: map[string]int{}}
}

// count reads a counter: "304" is the number of Not Modified answers.
func (fx *fixture) count(k string) int {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return fx.counts[k]
}

// problem notes a request the real API would not answer as the example
// expects; called with mu held.
func (fx *fixture) problem(format string, args ...any) {
	fx.problems = append(fx.problems, fmt.Sprintf(format, args...))
}

func (fx *fixture) problemsSeen() []string {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]string(nil), fx.problems...)
}

func byField(recs []map[string]any, field string, v any) map[string]any {
	for _, r := range recs {
		if fmt.Sprint(r[field]) == fmt.Sprint(v) {
			return r
		}
	}
	panic(fmt.Sprintf("fixture has no record with %s = %v", field, v))
}

// fleet is one worker syncing every example, on the test's own Postgres
// database and Redis DB.
type fleet struct {
	store     *store.Store
	client    *asynq.Client
	inspector *asynq.Inspector
	worker    *workertest.Worker // runs tasks on the queues, and synchronously with Work
}

func startFleet(t *testing.T, conf *config.Config) *fleet {
	t.Helper()
	w := workertest.Start(t, conf, worker.Config{Concurrency: 4})
	return &fleet{store: w.Store, client: w.Client, inspector: w.Inspector, worker: w}
}

func (f *fleet) state(t *testing.T, key store.Key) store.State {
	t.Helper()
	st, err := f.store.State(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (f *fleet) lastRun(t *testing.T, key store.Key) store.Run {
	t.Helper()
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Source: key.Source, Resource: key.Resource, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 {
		return store.Run{}
	}
	return runs[0]
}

func (f *fleet) changes(t *testing.T, key store.Key) int {
	t.Helper()
	var n int
	if err := f.store.DBForTests().Raw(`SELECT count(*) FROM record_changes WHERE source = ? AND resource = ?`,
		key.Source, key.Resource).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// fetch runs one fetch synchronously and returns its run, which must have
// succeeded.
func (f *fleet) fetch(t *testing.T, key store.Key, mode tidemark.RunKind) store.Run {
	t.Helper()
	after := f.lastRun(t, key).ID
	if err := f.worker.Fetch(t, jobs.FetchPayload{Source: key.Source, Resource: key.Resource, Mode: mode, Trigger: jobs.TriggerManual}); err != nil {
		t.Fatalf("%s fetch: %v", mode, err)
	}
	run := f.lastRun(t, key)
	if run.ID <= after {
		t.Fatalf("%s fetch made no run", mode)
	}
	if run.Status != store.StatusSucceeded {
		t.Fatalf("%s fetch: %s: %s", mode, run.Status, run.Error)
	}
	return run
}

// probe runs one probe synchronously and, when it saw a change, waits for
// the fetch it enqueued (run by the queues) to confirm the new validator.
func (f *fleet) probe(t *testing.T, key store.Key) {
	t.Helper()
	before := f.state(t, key).ProbesTotal
	if err := f.worker.Probe(t, jobs.ProbePayload{Source: key.Source, Resource: key.Resource, Trigger: jobs.TriggerManual}); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if n := f.state(t, key).ProbesTotal; n <= before {
		t.Fatalf("the probe is not counted (%d probes before, %d after)", before, n)
	}
	waitFor(t, 30*time.Second, "the fetch the probe enqueued", func() (bool, string) {
		if f.state(t, key).CandidateAt != nil {
			r := f.lastRun(t, key)
			if r.Kind != tidemark.RunProbe && (r.Status == store.StatusFailed || r.Status == store.StatusDead) {
				t.Fatalf("fetch after probe: %s: %s", r.Status, r.Error)
			}
			return false, fmt.Sprintf("fetch pending; last run %d %s %s %s", r.ID, r.Kind, r.Status, r.Error)
		}
		return true, ""
	})
}

// assertInStep compares Postgres with the fixture: the same live ids, and
// the same content hash for each.
func (f *fleet) assertInStep(t *testing.T, key store.Key, res *config.Resource, c exampleCase, fx *fixture) {
	t.Helper()
	ex := extract.New(res)
	want := map[string]string{}
	fx.mu.Lock()
	for _, rec := range fx.records {
		b, _ := json.Marshal(rec)
		doc, err := extract.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ex.Record(doc)
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != c.id(rec) {
			t.Fatalf("fixture id %q, extracted id %q", c.id(rec), r.ID)
		}
		want[r.ID] = r.Hash
	}
	fx.mu.Unlock()
	var rows []struct{ ExternalID, ContentHash string }
	if err := f.store.DBForTests().Raw(`SELECT external_id, content_hash FROM records
		WHERE source = ? AND resource = ? AND deleted_at IS NULL`, key.Source, key.Resource).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[r.ExternalID] = r.ContentHash
	}
	var missing, differ, extra []string
	for id, h := range want {
		switch g, ok := got[id]; {
		case !ok:
			missing = append(missing, id)
		case g != h:
			differ = append(differ, id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			extra = append(extra, id)
		}
	}
	sort.Strings(missing)
	sort.Strings(differ)
	sort.Strings(extra)
	if len(missing)+len(differ)+len(extra) > 0 {
		t.Errorf("Postgres vs fixture: missing %v, different %v, not upstream %v", missing, differ, extra)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (%s)", timeout, what, detail)
		}
		time.Sleep(25 * time.Millisecond) // polling interval of the condition, not a wait for an event
	}
}
