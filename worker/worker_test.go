package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// fleet is one worker against a demo upstream, on the test's own Postgres
// database and Redis DB.
type fleet struct {
	t        *testing.T
	conf     *config.Config
	upstream *demoapi.Server
	store    *store.Store
	client   *asynq.Client
	insp     *asynq.Inspector
	redis    asynq.RedisConnOpt
	worker   *workertest.Worker // runs tasks on the queues, and synchronously with Work
}

func demoConfig(t *testing.T, baseURL string) *config.Config {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	conf, err := config.Load(filepath.Join(filepath.Dir(file), "..", "examples", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conf.Sources[0].BaseURL = baseURL
	conf.Sources[0].RateLimit = nil
	conf.Sources[0].MaxConcurrency = 0 // the limits have their own tests
	return conf
}

func startFleet(t *testing.T, records int) *fleet {
	t.Helper()
	up := demoapi.New(demoapi.Options{Seed: 7, Records: records})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	return startFleetWith(t, demoConfig(t, srv.URL), up)
}

func startFleetWith(t *testing.T, conf *config.Config, up *demoapi.Server) *fleet {
	t.Helper()
	w := workertest.Start(t, conf, worker.Config{Concurrency: 4})
	return &fleet{t: t, conf: conf, upstream: up, store: w.Store, client: w.Client, insp: w.Inspector, redis: w.Redis, worker: w}
}

func testLogger(*testing.T) *slog.Logger { return workertest.Logger() }

// fullSync runs a full fetch of every resource, one after the other, and
// checks that each made a run newer than after that succeeded.
func (f *fleet) fullSync(after int64) {
	f.t.Helper()
	f.conf.Each(func(src *config.Source, res *config.Resource) {
		if err := f.worker.Fetch(f.t, jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}); err != nil {
			f.t.Fatalf("full fetch of %s: %v", res.Name, err)
		}
	})
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Limit: 100})
	if err != nil {
		f.t.Fatal(err)
	}
	done := map[string]store.Run{}
	for _, r := range runs {
		if r.ID > after && r.Status != store.StatusRunning {
			done[r.Resource] = r
		}
	}
	for _, r := range done {
		if r.Status != store.StatusSucceeded {
			f.t.Fatalf("run %d of %s: %s: %s", r.ID, r.Resource, r.Status, r.Error)
		}
	}
	if len(done) != len(demoapi.Resources) {
		f.t.Fatalf("%d of %d resources have a finished run", len(done), len(demoapi.Resources))
	}
}

func (f *fleet) lastRunID() int64 {
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Limit: 1})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(runs) == 0 {
		return 0
	}
	return runs[0].ID
}

// assertInStep compares Postgres with what the upstream serves, record by
// record: the same live ids, and the same content hash for each.
func (f *fleet) assertInStep() {
	f.t.Helper()
	src := &f.conf.Sources[0]
	for _, name := range demoapi.Resources {
		res := src.Resource(name)
		ex := extract.New(res)
		want := map[string]string{}
		for id, raw := range f.upstream.Export(name) {
			doc, err := extract.Decode(raw)
			if err != nil {
				f.t.Fatal(err)
			}
			r, err := ex.Record(doc)
			if err != nil {
				f.t.Fatal(err)
			}
			if r.ID != id {
				f.t.Fatalf("%s: export id %q, extracted id %q", name, id, r.ID)
			}
			want[id] = r.Hash
		}
		var rows []struct {
			ExternalID  string
			ContentHash string
		}
		if err := f.store.DBForTests().Raw(`SELECT external_id, content_hash FROM records
			WHERE source = ? AND resource = ? AND deleted_at IS NULL`, src.Name, name).Scan(&rows).Error; err != nil {
			f.t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range rows {
			got[r.ExternalID] = r.ContentHash
		}
		if len(want) == 0 {
			f.t.Fatalf("%s: upstream serves no records", name)
		}
		for id, h := range want {
			switch g, ok := got[id]; {
			case !ok:
				f.t.Errorf("%s: %s missing in Postgres", name, id)
			case g != h:
				f.t.Errorf("%s: %s differs from upstream", name, id)
			}
		}
		for id := range got {
			if _, ok := want[id]; !ok {
				f.t.Errorf("%s: %s is live in Postgres but gone upstream", name, id)
			}
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (%s)", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of the condition, not a wait for an event
	}
}

// TestFullSyncMirrorsUpstream syncs all five resources (cursor, Link, page,
// offset and next_url pagination; root, nested and enveloped arrays; string,
// integer and nested ids), then mutates every resource and syncs again.
func TestFullSyncMirrorsUpstream(t *testing.T) {
	t.Parallel()
	// The upstream's clock (its Date and Last-Modified) moves on by hand:
	// a full read that begins in the second of the last change cannot tell
	// it came before, and holds its deletions.
	var ahead atomic.Int64
	up := demoapi.New(demoapi.Options{Seed: 7, Records: 345, // several pages of 100, with a short last page
		Now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	f := startFleetWith(t, demoConfig(t, srv.URL), up)

	f.fullSync(0)
	f.assertInStep()

	for _, name := range demoapi.Resources {
		if _, err := f.upstream.Mutate(demoapi.Mutation{Resource: name, Creates: 3, Updates: 5, Deletes: 2}); err != nil {
			t.Fatal(err)
		}
	}
	ahead.Add(int64(2 * time.Second))
	before := f.lastRunID()
	f.fullSync(before)
	// Deletions wait for a second full read to agree where the upstream's
	// pagination shifts under deletes (delete_after_reads).
	f.fullSync(f.lastRunID())
	f.assertInStep()

	runs, err := f.store.Runs(context.Background(), store.RunFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string][3]int64{}
	for _, r := range runs {
		s := sums[r.Resource]
		s[0], s[1], s[2] = s[0]+r.RecordsCreated, s[1]+r.RecordsUpdated, s[2]+r.RecordsDeleted
		sums[r.Resource] = s
		// A page or offset read asks once more than its pages when its last
		// page is full (the empty page after it ends the read).
		if r.Pages < 4 || r.HTTPRequests < r.Pages || r.HTTPRequests > r.Pages+1 || r.VersionHash == "" {
			t.Errorf("%s run %d: pages %d requests %d version %q", r.Resource, r.ID, r.Pages, r.HTTPRequests, r.VersionHash)
		}
	}
	for name, s := range sums {
		// ticket_sales' volatile meta.request_id must not count as a change.
		if s != [3]int64{3, 5, 2} {
			t.Errorf("%s: the two syncs created %d updated %d deleted %d, want 3/5/2", name, s[0], s[1], s[2])
		}
	}
	var changes int64
	f.store.DBForTests().Raw(`SELECT count(*) FROM record_changes WHERE run_id > ?`, before).Scan(&changes)
	if want := int64(len(demoapi.Resources) * 10); changes != want {
		t.Errorf("record_changes rows of the second sync = %d, want %d", changes, want)
	}
}

// TestBadRecordIsQuarantined: a page with a record that has no id does not
// fail: the record is set aside in the quarantine, naming its index, and the
// rest of the page is stored. When the upstream stops sending it, a full
// read takes it out of the quarantine.
func TestBadRecordIsQuarantined(t *testing.T) {
	t.Parallel()
	var good atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if good.Load() {
			fmt.Fprint(w, `{"data":[{"id":"a"},{"id":"b"}]}`)
			return
		}
		fmt.Fprint(w, `{"data":[{"id":"a"},{"name":"no id"}]}`)
	}))
	t.Cleanup(srv.Close)
	conf, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`
sources:
  - name: shop
    base_url: %s
    allow_private: true
    resources:
      - name: items
        path: /items
        records: {path: data, id: id}
`, srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	f := startFleetWith(t, conf, nil)
	fetch := func() store.Run {
		t.Helper()
		if err := f.worker.Fetch(t, jobs.FetchPayload{Source: "shop", Resource: "items", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}); err != nil {
			t.Fatalf("fetch: %v", err)
		}
		runs, err := f.store.Runs(context.Background(), store.RunFilter{Limit: 1})
		if err != nil || len(runs) == 0 {
			t.Fatalf("the fetch's run: %v (%d runs)", err, len(runs))
		}
		return runs[0]
	}
	count := func(q string) int64 {
		var n int64
		if err := f.store.DBForTests().Raw(q).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := fetch()
	if first.Status != store.StatusSucceeded || first.RecordsQuarantined != 1 {
		t.Fatalf("run with an id-less record: %s, %d quarantined (%q); want succeeded with 1 quarantined", first.Status, first.RecordsQuarantined, first.Error)
	}
	if n := count(`SELECT count(*) FROM records`); n != 1 {
		t.Fatalf("%d records stored, want record a", n)
	}
	if n := count(`SELECT count(*) FROM record_quarantine WHERE external_id IS NULL AND reason LIKE '%record 1: id "id" is missing%'`); n != 1 {
		t.Fatalf("%d quarantined records naming record 1's missing id, want 1", n)
	}

	good.Store(true)
	if r := fetch(); r.ID == first.ID || r.Status != store.StatusSucceeded {
		t.Fatalf("the good run: run %d %s (%q), want a new run that succeeded", r.ID, r.Status, r.Error)
	}
	if n := count(`SELECT count(*) FROM records`); n != 2 {
		t.Fatalf("after the good run: %d records, want 2", n)
	}
	if n := count(`SELECT count(*) FROM record_quarantine`); n != 0 {
		t.Fatalf("%d records still quarantined after a full read no longer saw the id-less one", n)
	}
}
