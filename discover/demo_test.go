package discover_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/discover"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// counter counts the requests that reach an upstream, by method.
type counter struct {
	mu      sync.Mutex
	methods map[string]int
	next    http.Handler
}

func count(next http.Handler) *counter { return &counter{methods: map[string]int{}, next: next} }

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.methods[r.Method]++
	c.mu.Unlock()
	c.next.ServeHTTP(w, r)
}

func (c *counter) snapshot() (total int, methods map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	methods = map[string]int{}
	for m, n := range c.methods {
		methods[m] = n
		total += n
	}
	return total, methods
}

func (c *counter) reset() {
	c.mu.Lock()
	c.methods = map[string]int{}
	c.mu.Unlock()
}

// assertReadOnly fails unless the upstream saw at most max requests, all GET or HEAD.
func assertReadOnly(t *testing.T, c *counter, max int, res *discover.Result) {
	t.Helper()
	total, methods := c.snapshot()
	if total > max {
		t.Errorf("upstream saw %d requests, budget %d", total, max)
	}
	for m := range methods {
		if m != http.MethodGet && m != http.MethodHead {
			t.Errorf("upstream saw a %s request", m)
		}
	}
	if res != nil && res.Requests != total {
		t.Errorf("discover reports %d requests, upstream saw %d", res.Requests, total)
	}
}

// TestDemoResources discovers each demo resource, checks what it detected,
// then syncs all five with the proposals (no edits) through a real worker and
// compares every id with the upstream's.
func TestDemoResources(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 11, Records: 345})
	c := count(up)
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)

	tests := []struct {
		resource   string
		path       string
		style      string
		strategy   tidemark.ProbeStrategy
		delta      string
		id         string
		ignore     []string
		limitParam string
	}{
		{"ticket_sales", "/v1/ticket_sales", config.PaginationCursor, tidemark.ProbeETag, "updated_since", "id", []string{"meta.request_id"}, "limit"},
		{"inventory_movements", "/v1/inventory_movements", config.PaginationLink, tidemark.ProbeETag, "", "id", nil, "limit"},
		{"transactions", "/api/transactions", config.PaginationPage, tidemark.ProbeLastModified, "updated_since", "txn_id", nil, "per_page"},
		{"settlements", "/settlements", config.PaginationOffset, tidemark.ProbeHash, "", "settlement.id", nil, "limit"},
		{"tax_summaries", "/v2/tax/summaries", config.PaginationNextURL, tidemark.ProbeHash, "", "id", nil, ""},
	}
	merged := &config.Config{}
	for _, tt := range tests {
		// Sequential: the request counts are per discovery.
		c.reset()
		res, err := discover.Discover(context.Background(), srv.URL+tt.path, discover.Options{Source: "demo", Resource: tt.resource})
		if err != nil {
			t.Fatalf("%s: %v", tt.resource, err)
		}
		assertReadOnly(t, c, 12, res)
		yaml := res.YAML()
		conf, err := config.Parse(tt.resource+".yaml", yaml)
		if err != nil {
			t.Fatalf("%s: proposal does not parse: %v\n%s", tt.resource, err, yaml)
		}
		r := conf.Sources[0].Resources[0]
		if r.Pagination.Style != tt.style {
			t.Errorf("%s: pagination %s, want %s", tt.resource, r.Pagination.Style, tt.style)
		}
		if r.Probe.Strategy != tt.strategy {
			t.Errorf("%s: probe %s, want %s", tt.resource, r.Probe.Strategy, tt.strategy)
		}
		gotDelta := ""
		if r.Delta != nil {
			gotDelta = r.Delta.Param
		}
		if gotDelta != tt.delta {
			t.Errorf("%s: delta param %q, want %q", tt.resource, gotDelta, tt.delta)
		}
		if r.Records.ID != tt.id {
			t.Errorf("%s: id %q, want %q", tt.resource, r.Records.ID, tt.id)
		}
		if fmt.Sprint(r.IgnoreFields) != fmt.Sprint(tt.ignore) {
			t.Errorf("%s: ignore_fields %v, want %v", tt.resource, r.IgnoreFields, tt.ignore)
		}
		if r.Pagination.LimitParam != tt.limitParam {
			t.Errorf("%s: limit_param %q, want %q", tt.resource, r.Pagination.LimitParam, tt.limitParam)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("%s (%d requests):\n%s", tt.resource, res.Requests, yaml)
		}
		if len(merged.Sources) == 0 {
			merged.Sources = conf.Sources
		} else {
			merged.Sources[0].Resources = append(merged.Sources[0].Resources, r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	fl := syncAll(t, merged, up)
	detectChanges(t, fl, merged, up)
}

// demoFleet is the worker syncing the proposals, seen through its store.
type demoFleet struct {
	st     *store.Store
	worker *workertest.Worker // runs tasks on the queues, and synchronously with Work
}

// syncAll runs a worker with conf, full-syncs every resource and compares
// the live ids in Postgres with the upstream's.
func syncAll(t *testing.T, conf *config.Config, up *demoapi.Server) *demoFleet {
	t.Helper()
	w := workertest.Start(t, conf, worker.Config{Concurrency: 5})
	ctx, st := context.Background(), w.Store
	src := &conf.Sources[0]
	for i := range src.Resources {
		res := &src.Resources[i]
		if err := w.Fetch(t, jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}); err != nil {
			t.Fatalf("full fetch of %s: %v", res.Name, err)
		}
	}
	runs, err := st.Runs(ctx, store.RunFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	finished := 0
	for _, r := range runs {
		if r.Status != store.StatusSucceeded {
			t.Fatalf("run of %s: %s: %s", r.Resource, r.Status, r.Error)
		}
		finished++
	}
	if finished != len(src.Resources) {
		t.Fatalf("%d full syncs finished, want %d", finished, len(src.Resources))
	}
	for _, res := range src.Resources {
		var got []string
		if err := st.DBForTests().Raw(`SELECT external_id FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`,
			src.Name, res.Name).Scan(&got).Error; err != nil {
			t.Fatal(err)
		}
		var want []string
		for id := range up.Export(res.Name) {
			want = append(want, id)
		}
		sort.Strings(got)
		sort.Strings(want)
		if len(want) == 0 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: synced %d records, upstream has %d", res.Name, len(got), len(want))
		}
	}
	return &demoFleet{st: st, worker: w}
}

// detectChanges probes each synced resource with its proposed config, no
// edits: once to learn the validator, then unchanged (not modified), then
// after an upstream change that the proposed probe can see (an update for
// validator-probed resources, which change the whole collection's ETag or
// Last-Modified; for hash-probed ones, a create that changes settlements'
// envelope count, an update of tax_summaries' first record), which it must
// report, and whose fetch must bring Postgres in step with the upstream.
func detectChanges(t *testing.T, fl *demoFleet, conf *config.Config, up *demoapi.Server) {
	t.Helper()
	src := &conf.Sources[0]
	for i := range src.Resources {
		res := &src.Resources[i]
		key := store.Key{Source: src.Name, Resource: res.Name}
		fl.probe(t, key) // learns the validator: a change, and a fetch that confirms it
		st := fl.state(t, key)
		kind := map[tidemark.ProbeStrategy]tidemark.ValidatorKind{tidemark.ProbeETag: tidemark.ValidatorETag, tidemark.ProbeLastModified: tidemark.ValidatorLastModified, tidemark.ProbeHash: tidemark.ValidatorHash}[res.Probe.Strategy]
		if st.Confirmed(kind) == "" {
			t.Errorf("%s: no confirmed %s validator after a probe and its fetch: %+v", res.Name, kind, st)
			continue
		}
		fl.probe(t, key)
		st2 := fl.state(t, key)
		if st2.ProbesNotModified != st.ProbesNotModified+1 {
			t.Errorf("%s: an unchanged probe reported a change (probes_not_modified %d → %d)", res.Name, st.ProbesNotModified, st2.ProbesNotModified)
			continue
		}
		m := demoapi.Mutation{Resource: res.Name, Updates: 1}
		switch res.Name {
		case "settlements":
			m = demoapi.Mutation{Resource: res.Name, Creates: 1}
		case "tax_summaries":
			ids := slices.Sorted(maps.Keys(up.Export(res.Name)))
			m.IDs = ids[:1]
		}
		if _, err := up.Mutate(m); err != nil {
			t.Fatal(err)
		}
		fl.probe(t, key)
		if st3 := fl.state(t, key); st3.ProbesNotModified != st2.ProbesNotModified {
			t.Errorf("%s: the probe after %+v reported no change", res.Name, m)
			continue
		}
		assertInStep(t, fl.st, src, res, up)
	}
}

func (fl *demoFleet) state(t *testing.T, key store.Key) store.State {
	t.Helper()
	st, err := fl.st.State(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// probe runs one probe synchronously and, when it saw a change, waits for
// the fetch it enqueued (run by the queues) to confirm the new validator.
func (fl *demoFleet) probe(t *testing.T, key store.Key) {
	t.Helper()
	before := fl.state(t, key).ProbesTotal
	if err := fl.worker.Probe(t, jobs.ProbePayload{Source: key.Source, Resource: key.Resource, Trigger: jobs.TriggerManual}); err != nil {
		t.Fatalf("%s: probe: %v", key.Resource, err)
	}
	if n := fl.state(t, key).ProbesTotal; n <= before {
		t.Fatalf("%s: the probe is not counted (%d probes before, %d after)", key.Resource, before, n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := fl.state(t, key)
		if st.CandidateAt == nil {
			return
		}
		runs, err := fl.st.Runs(context.Background(), store.RunFilter{Source: key.Source, Resource: key.Resource, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) > 0 && (runs[0].Status == store.StatusFailed || runs[0].Status == store.StatusDead) {
			t.Fatalf("%s: %s run %d: %s: %s", key.Resource, runs[0].Kind, runs[0].ID, runs[0].Status, runs[0].Error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out waiting for the fetch the probe enqueued (candidate %q)", key.Resource, st.CandidateValidator)
		}
		time.Sleep(25 * time.Millisecond) // polling interval of the condition
	}
}

// assertInStep compares Postgres with the upstream's export: the same live
// ids, and the same content hash for each.
func assertInStep(t *testing.T, st *store.Store, src *config.Source, res *config.Resource, up *demoapi.Server) {
	t.Helper()
	ex := extract.New(res)
	want := map[string]string{}
	for id, raw := range up.Export(res.Name) {
		doc, err := extract.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ex.Record(doc)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = r.Hash
	}
	var rows []struct{ ExternalID, ContentHash string }
	if err := st.DBForTests().Raw(`SELECT external_id, content_hash FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`,
		src.Name, res.Name).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	differ := 0
	for _, r := range rows {
		if want[r.ExternalID] != r.ContentHash {
			differ++
		}
	}
	if len(rows) != len(want) || differ > 0 {
		t.Errorf("%s: Postgres has %d live records (%d differ from upstream), upstream %d", res.Name, len(rows), differ, len(want))
	}
}
