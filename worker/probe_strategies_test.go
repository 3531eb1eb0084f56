package worker_test

import (
	"cmp"
	"context"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// clockedFleet is a fleet on a demo upstream whose clock the test moves,
// with one resource's probe replaced by probe.
func clockedFleet(t *testing.T, records int, name string, probe config.Probe) (*fleet, func(time.Duration)) {
	t.Helper()
	var nowNS atomic.Int64
	nowNS.Store(time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	up := demoapi.New(demoapi.Options{Seed: 11, Records: records, Now: func() time.Time { return time.Unix(0, nowNS.Load()).UTC() }})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := demoConfig(t, srv.URL)
	*conf.Sources[0].Resource(name) = withProbe(*conf.Sources[0].Resource(name), probe)
	return startFleetWith(t, conf, up), func(d time.Duration) { nowNS.Add(int64(d)) }
}

func withProbe(res config.Resource, p config.Probe) config.Resource {
	res.Probe = p
	return res
}

// requests is how many requests the upstream answered for a resource.
func (f *fleet) requests(name string) int64 { return f.upstream.Stats().Resources[name].Requests }

// lastRun is the newest run of a resource.
func (f *fleet) lastRun(name string) store.Run {
	f.t.Helper()
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Resource: name, Limit: 1})
	if err != nil || len(runs) == 0 {
		f.t.Fatalf("runs of %s: %v (%d)", name, err, len(runs))
	}
	return runs[0]
}

// TestDeltaProbe: with probe.strategy delta, the delta read is the probe.
// Quiet, it costs one request and writes no run row (an unchanged probe's
// bookkeeping only); busy, the one request's page is applied as the delta's
// first page (one run, of one request), the watermark advances, and the
// page is not asked again.
func TestDeltaProbe(t *testing.T) {
	t.Parallel()
	const name = "ticket_sales"
	f, advance := clockedFleet(t, 250, name, config.Probe{Strategy: config.ProbeDelta, Method: "GET",
		Every: config.Duration(time.Minute), MaxEvery: config.Duration(time.Minute)})
	f.fetch(name, jobs.ModeFull)
	advance(time.Minute) // past the read's start less clock_skew: the watermark covers everything

	requests, runs, st := f.requests(name), f.runCount(), f.state(name)
	f.probe(name)
	if got := f.requests(name) - requests; got != 1 {
		t.Errorf("unchanged delta probe: %d requests, want 1", got)
	}
	if got := f.runCount() - runs; got != 0 {
		t.Errorf("unchanged delta probe: %d run rows, want none", got)
	}
	if after := f.state(name); after.ProbesNotModified != st.ProbesNotModified+1 || after.Watermark != st.Watermark {
		t.Errorf("unchanged delta probe: not modified %d → %d, watermark %q → %q", st.ProbesNotModified, after.ProbesNotModified, st.Watermark, after.Watermark)
	}

	res, err := f.upstream.Mutate(demoapi.Mutation{Resource: name, Updates: 3})
	if err != nil {
		t.Fatal(err)
	}
	advance(time.Minute)
	requests, runs, st = f.requests(name), f.runCount(), f.state(name)
	f.probe(name)
	if got := f.requests(name) - requests; got != 1 {
		t.Errorf("changed delta probe: %d requests, want 1 (the probe's page applied, not asked again)", got)
	}
	if got := f.runCount() - runs; got != 1 {
		t.Fatalf("changed delta probe: %d run rows, want 1 (the delta it became)", got)
	}
	run := f.lastRun(name)
	if run.Kind != jobs.ModeDelta || run.Trigger != jobs.TriggerProbe || run.Status != store.StatusSucceeded ||
		run.HTTPRequests != 1 || run.RecordsUpdated != 3 {
		t.Errorf("the delta probe's run: %s %s %s, %d requests, %d updated (%s); want delta probe succeeded, 1 request, 3 updated",
			run.Kind, run.Trigger, run.Status, run.HTTPRequests, run.RecordsUpdated, run.Error)
	}
	if after := f.state(name).Watermark; after <= st.Watermark {
		t.Errorf("watermark %q → %q: did not advance", st.Watermark, after)
	}
	if !f.inStep(name, res.Updated) {
		t.Errorf("the updated records %v are not stored as the upstream has them", res.Updated)
	}
}

// TestRollingProbeSeesDeepAmendment: a rolling_hash probe sees an amendment
// of the collection's last record, which leaves no change metadata, within
// pages probes (one request each), and the full read it asks for stores it.
// A one-record hash probe never sees it.
func TestRollingProbeSeesDeepAmendment(t *testing.T) {
	t.Parallel()
	const name = "tax_summaries" // next_url pages of 100: 250 records are 3 pages
	f, advance := clockedFleet(t, 250, name, config.Probe{Strategy: config.ProbeRollingHash, Method: "GET",
		Every: config.Duration(time.Minute), MaxEvery: config.Duration(time.Minute)})
	f.fetch(name, jobs.ModeFull)
	const pages = 3
	var recorded int
	f.store.DBForTests().Raw(`SELECT count(*) FROM probe_pages WHERE source = 'demo' AND resource = ?`, name).Scan(&recorded)
	if recorded != pages {
		t.Fatalf("the full read recorded %d pages, want %d", recorded, pages)
	}
	// A whole rotation of an unchanged collection: one request each, no run.
	runs := f.runCount()
	for range pages {
		requests := f.requests(name)
		f.probe(name)
		if got := f.requests(name) - requests; got != 1 {
			t.Errorf("rolling probe: %d requests, want 1", got)
		}
	}
	if got := f.runCount() - runs; got != 0 {
		t.Fatalf("rolling probes of an unchanged collection wrote %d runs", got)
	}

	ids := slices.Collect(func(yield func(string) bool) {
		for id := range f.upstream.Export(name) {
			if !yield(id) {
				return
			}
		}
	})
	slices.SortFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(len(a), len(b)), cmp.Compare(a, b)) })
	deepest := ids[len(ids)-1]
	if _, err := f.upstream.Mutate(demoapi.Mutation{Resource: name, Updates: 1, Hidden: true, IDs: []string{deepest}}); err != nil {
		t.Fatal(err)
	}
	advance(time.Minute)
	for probes := 1; ; probes++ {
		f.probe(name) // and the full read it asks for, when it sees the change
		if f.inStep(name, []string{deepest}) {
			if run := f.lastRun(name); run.Kind != jobs.ModeFull || run.Trigger != jobs.TriggerProbe || run.RecordsUpdated != 1 {
				t.Errorf("the read that stored it: %s %s, %d updated", run.Kind, run.Trigger, run.RecordsUpdated)
			}
			t.Logf("seen after %d probes", probes)
			return
		}
		if probes == pages {
			t.Fatalf("the amendment of %s was not seen within %d probes (pages × interval)", deepest, pages)
		}
	}
}

// TestDeltaProbeLeavesTheFirstReadToTheFullRead: a delta probe of a
// resource never read, whose first full read the scheduler has due, asks
// for no fetch: one asked for then could take the resource before the
// full read and read the whole collection twice (it did, under a tight
// rate limit: TestTightRateLimitFirstSyncsFinish).
func TestDeltaProbeLeavesTheFirstReadToTheFullRead(t *testing.T) {
	t.Parallel()
	const name = "ticket_sales"
	f, _ := clockedFleet(t, 50, name, config.Probe{Strategy: config.ProbeDelta, Method: "GET",
		Every: config.Duration(time.Minute), MaxEvery: config.Duration(time.Minute)})
	if full := f.resource(name).FullSync.Every.D(); full <= 0 {
		t.Fatalf("demo.yaml's %s has no full sync (every %s): the test needs one due", name, full)
	}
	requests, runs := f.requests(name), f.runCount()
	f.probe(name) // waits for the probe, then for idle queues
	if got := f.requests(name) - requests; got != 0 {
		t.Errorf("the delta probe of a resource never read: %d requests, want none (the scheduled full read is the first)", got)
	}
	if got := f.runCount() - runs; got != 0 {
		t.Errorf("the delta probe of a resource never read: %d run rows, want none", got)
	}
}
