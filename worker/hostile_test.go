package worker_test

import (
	"cmp"
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// hostileCase is one way an upstream misbehaves, and what the failed run's
// error must say about it.
type hostileCase struct {
	name         string
	fault        string
	allowPrivate bool   // false: the source's base_url is on loopback and must be refused
	wantErr      string // the run's error contains this
	// quarantined: a fault in records, not in the page: the run succeeds
	// with this many records set aside (their reason contains wantErr),
	// and the rest of the page is stored. quarantineRows is how many
	// quarantine rows that makes (one per id: two copies of one id are one
	// row); 0 means quarantined.
	quarantined, quarantineRows int
}

var hostileCases = []hostileCase{
	{name: "malformed json", fault: demoapi.FaultMalformed, allowPrivate: true, wantErr: "malformed JSON"},
	{name: "wrong types", fault: demoapi.FaultWrongTypes, allowPrivate: true, wantErr: `records path "data" is a object, not an array`},
	{name: "missing id", fault: demoapi.FaultMissingID, allowPrivate: true, wantErr: `record 1: id "id" is missing`, quarantined: 1},
	{name: "non-scalar id", fault: demoapi.FaultNonScalarID, allowPrivate: true, wantErr: `record 1: id "id" is a object, not a string or number`, quarantined: 1},
	{name: "duplicate ids in a page", fault: demoapi.FaultDuplicateIDs, allowPrivate: true, wantErr: "with different content", quarantined: 2, quarantineRows: 1},
	{name: "truncated body", fault: demoapi.FaultTruncate, allowPrivate: true, wantErr: "unexpected EOF"},
	{name: "connection reset", fault: demoapi.FaultReset, allowPrivate: true, wantErr: "connection reset by peer"},
	{name: "http 500", fault: demoapi.FaultError500, allowPrivate: true, wantErr: "HTTP 500"},
	{name: "endless body", fault: demoapi.FaultEndless, allowPrivate: true, wantErr: "exceeds max_body (1048576 bytes)"},
	{name: "gzip bomb", fault: demoapi.FaultGzipBomb, allowPrivate: true, wantErr: "exceeds max_body (1048576 bytes, after gzip decompression)"},
	{name: "trickle", fault: demoapi.FaultTrickle, allowPrivate: true, wantErr: "no complete response within the source's timeout (2s)"},
	{name: "redirect loop", fault: demoapi.FaultRedirectLoop, allowPrivate: true, wantErr: "stopped after 5 redirects"},
	{name: "loopback without allow_private", fault: demoapi.FaultRedirectLoopback, allowPrivate: false, wantErr: "loopback address (set allow_private: true to allow)"},
}

// hostileSource names the source of a case.
func hostileSource(i int) string { return fmt.Sprintf("up%02d", i) }

// TestHostileUpstreams runs one worker over one source per hostile mode,
// each its own demo upstream of 3 pages of 10 records. The fault hits page 2
// (page 1 for the loopback source, which is never reached). Each run must
// fail naming the cause, commit page 1 and nothing of page 2, and the next
// good run must complete the resource, while the other sources, broken at
// the same time in other ways, do not disturb each other. A fault in one
// record of the page (no id, one id twice) fails nothing: the record is
// quarantined with the cause, and the rest of the resource is stored.
func TestHostileUpstreams(t *testing.T) {
	t.Parallel()
	ups := make([]*demoapi.Server, len(hostileCases))
	var yaml strings.Builder
	yaml.WriteString("sources:\n")
	for i, hc := range hostileCases {
		ups[i] = demoapi.New(demoapi.Options{Seed: int64(i + 1), Records: 30})
		srv := httptest.NewServer(ups[i])
		t.Cleanup(srv.Close)
		base := srv.URL
		if !hc.allowPrivate {
			u, _ := url.Parse(srv.URL)
			base = "http://localhost:" + u.Port() // a name: the guard checks the resolved address
		}
		fmt.Fprintf(&yaml, `  - name: %s
    base_url: %s
    allow_private: %t
    timeout: 2s
    max_body: 1MiB
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 10}
`, hostileSource(i), base, hc.allowPrivate)
	}
	conf, err := config.Parse("hostile.yaml", []byte(yaml.String()))
	if err != nil {
		t.Fatal(err)
	}
	h := startHostileWorker(t, conf)

	for i, hc := range hostileCases {
		t.Run(hc.name, func(t *testing.T) {
			t.Parallel()
			src, up := hostileSource(i), ups[i]
			after := 1 // page 2
			if !hc.allowPrivate {
				after = 0
			}
			spec := demoapi.FaultSpec{Mode: hc.fault, After: after}
			if hc.quarantined > 0 {
				spec.Count = 1 // page 2 only
			}
			if err := up.SetFault(spec); err != nil {
				t.Fatal(err)
			}
			bad := h.fullFetch(t, src)
			committed := h.recordIDs(t, src)
			if hc.quarantined > 0 {
				h.assertQuarantined(t, src, bad, hc, len(committed))
				if err := up.SetFault(demoapi.FaultSpec{}); err != nil {
					t.Fatal(err)
				}
				h.mustSucceed(t, h.fullFetch(t, src))
				h.assertMirrors(t, src, up)
				var left int64
				h.store.DBForTests().Raw(`SELECT count(*) FROM record_quarantine WHERE source = ?`, src).Scan(&left)
				if left != 0 {
					t.Errorf("%d records still quarantined once the upstream stopped sending them", left)
				}
				return
			}
			if bad.Status != store.StatusFailed && bad.Status != store.StatusDead {
				t.Fatalf("run %d: status %s, want failed or dead", bad.ID, bad.Status)
			}
			if !strings.Contains(bad.Error, hc.wantErr) {
				t.Errorf("run %d error %q does not name the cause %q", bad.ID, bad.Error, hc.wantErr)
			}
			// Page 1 (ids 1..10) is applied with its checkpoint; nothing of
			// the broken page is.
			wantCommitted := 10
			if !hc.allowPrivate {
				wantCommitted = 0
			}
			if len(committed) != wantCommitted {
				t.Errorf("after the failed run: %d records, want %d (page 1 only)", len(committed), wantCommitted)
			}
			for _, id := range committed {
				if id > "ts_000010" {
					t.Errorf("record %s of the broken page was committed", id)
				}
			}

			if err := up.SetFault(demoapi.FaultSpec{}); err != nil {
				t.Fatal(err)
			}
			if !hc.allowPrivate {
				// Nothing the worker can do reaches loopback: the run stays failed.
				again := h.fullFetch(t, src)
				if again.Status == store.StatusSucceeded || !strings.Contains(again.Error, hc.wantErr) {
					t.Errorf("a loopback source synced without allow_private: %s %q", again.Status, again.Error)
				}
				if st := up.Stats(); st.Requests != 0 {
					t.Errorf("the loopback upstream served %d requests, want 0", st.Requests)
				}
				return
			}
			good := h.mustSucceed(t, h.fullFetch(t, src))
			h.assertMirrors(t, src, up)
			t.Logf("bad run %d %s: %s; good run %d", bad.ID, bad.Status, bad.Error, good.ID)
		})
	}
}

// assertQuarantined checks a run that met bad records in a good page: it
// succeeded, set them aside with the cause, and stored the rest.
func (h *hostileWorker) assertQuarantined(t *testing.T, src string, run store.Run, hc hostileCase, stored int) {
	t.Helper()
	if run.Status != store.StatusSucceeded || run.RecordsQuarantined != int64(hc.quarantined) {
		t.Fatalf("run %d: %s with %d quarantined (%q), want succeeded with %d", run.ID, run.Status, run.RecordsQuarantined, run.Error, hc.quarantined)
	}
	var reasons []string
	h.store.DBForTests().Raw(`SELECT reason FROM record_quarantine WHERE source = ?`, src).Scan(&reasons)
	if want := cmp.Or(hc.quarantineRows, hc.quarantined); len(reasons) != want {
		t.Errorf("quarantine holds %d records, want %d: %q", len(reasons), want, reasons)
	}
	for _, r := range reasons {
		if !strings.Contains(r, hc.wantErr) {
			t.Errorf("quarantine reason %q does not name the cause %q", r, hc.wantErr)
		}
	}
	if want := 30 - hc.quarantined; stored != want {
		t.Errorf("%d records stored, want the other %d", stored, want)
	}
}

// hostileWorker is one worker on the test's own database and Redis DB (the
// pattern of worker_test.go's fleet).
type hostileWorker struct {
	conf   *config.Config
	store  *store.Store
	worker *workertest.Worker
}

func startHostileWorker(t *testing.T, conf *config.Config) *hostileWorker {
	t.Helper()
	w := workertest.New(t, conf, worker.Config{Concurrency: len(conf.Sources) + 2})
	return &hostileWorker{conf: conf, store: w.Store, worker: w}
}

// fullFetch runs a full fetch of source's ticket_sales synchronously and
// returns its run (its status says how the fetch went).
func (h *hostileWorker) fullFetch(t *testing.T, source string) store.Run {
	t.Helper()
	last := func() (store.Run, bool) {
		runs, err := h.store.Runs(context.Background(), store.RunFilter{Source: source, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) == 0 {
			return store.Run{}, false
		}
		return runs[0], true
	}
	before, _ := last()
	ferr := h.worker.Fetch(t, jobs.FetchPayload{Source: source, Resource: "ticket_sales", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual})
	run, ok := last()
	if !ok || run.ID <= before.ID || run.Status == store.StatusRunning {
		t.Fatalf("the full fetch of %s (handler error %v) left no ended run: %+v", source, ferr, run)
	}
	return run
}

// mustSucceed fails the test unless run succeeded.
func (h *hostileWorker) mustSucceed(t *testing.T, run store.Run) store.Run {
	t.Helper()
	if run.Status != store.StatusSucceeded {
		t.Fatalf("run %d of %s: %s: %s; want it succeeded", run.ID, run.Source, run.Status, run.Error)
	}
	return run
}

func (h *hostileWorker) recordIDs(t *testing.T, source string) []string {
	t.Helper()
	var ids []string
	if err := h.store.DBForTests().Raw(`SELECT external_id FROM records WHERE source = ? AND deleted_at IS NULL ORDER BY external_id`, source).Scan(&ids).Error; err != nil {
		t.Fatal(err)
	}
	return ids
}

// assertMirrors checks the source's records against what its upstream
// serves: the same ids, the same content hashes, each key once.
func (h *hostileWorker) assertMirrors(t *testing.T, source string, up *demoapi.Server) {
	t.Helper()
	ex := extract.New(h.conf.Source(source).Resource("ticket_sales"))
	want := map[string]string{}
	for id, raw := range up.Export("ticket_sales") {
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
	var rows []struct {
		ExternalID  string
		ContentHash string
		Version     int
	}
	if err := h.store.DBForTests().Raw(`SELECT external_id, content_hash, version FROM records WHERE source = ? AND deleted_at IS NULL`, source).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want) {
		t.Errorf("%d records in Postgres, upstream serves %d", len(rows), len(want))
	}
	for _, r := range rows {
		if want[r.ExternalID] != r.ContentHash {
			t.Errorf("record %s differs from upstream", r.ExternalID)
		}
		if r.Version != 1 {
			t.Errorf("record %s has version %d, want 1 (the failed run must not count a change)", r.ExternalID, r.Version)
		}
	}
}
