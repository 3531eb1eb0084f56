package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
)

func (f *fleet) resource(name string) *config.Resource { return f.conf.Sources[0].Resource(name) }

func (f *fleet) key(name string) store.Key { return store.Key{Source: "demo", Resource: name} }

func (f *fleet) state(name string) store.State {
	f.t.Helper()
	st, err := f.store.State(context.Background(), f.key(name))
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// waitIdle waits until no task is pending, active, scheduled or retrying.
func (f *fleet) waitIdle() {
	f.t.Helper()
	f.waitIdleFor(30 * time.Second)
}

// waitIdleFor is waitIdle with its own deadline (full reads of large
// resources under -race on a loaded machine take a while).
func (f *fleet) waitIdleFor(timeout time.Duration) {
	f.t.Helper()
	waitFor(f.t, timeout, "the queues to drain", func() (bool, string) {
		busy, detail := 0, ""
		queues, err := f.insp.Queues()
		if err != nil {
			f.t.Fatal(err)
		}
		for _, q := range queues {
			info, err := f.insp.GetQueueInfo(q)
			if err != nil {
				// Not idle: an inspection that failed (a Redis timeout on a
				// loaded machine) must not pass for an empty queue.
				return false, fmt.Sprintf("queue %s: %v", q, err)
			}
			n := info.Pending + info.Active + info.Scheduled + info.Retry
			busy += n
			if n > 0 {
				detail += fmt.Sprintf(" %s: %d pending %d active %d scheduled %d retry;", q, info.Pending, info.Active, info.Scheduled, info.Retry)
			}
		}
		return busy == 0, fmt.Sprintf("%d tasks busy:%s", busy, detail)
	})
}

// probe runs one probe of a resource, synchronously, then waits for the
// fetch it may enqueue (the worker's queues running it) to end.
func (f *fleet) probe(name string) {
	f.t.Helper()
	before := f.state(name).ProbesTotal
	if err := f.worker.Probe(f.t, jobs.ProbePayload{Source: "demo", Resource: name, Trigger: jobs.TriggerManual}); err != nil {
		f.t.Fatalf("probe of %s: %v", name, err)
	}
	if n := f.state(name).ProbesTotal; n <= before {
		f.t.Fatalf("the probe of %s is not counted (%d probes before, %d after)", name, before, n)
	}
	f.waitIdle()
}

// fetch runs one fetch of a resource, synchronously, and returns its run,
// which must have succeeded.
func (f *fleet) fetch(name string, mode tidemark.RunKind) store.Run {
	f.t.Helper()
	after := f.lastRunID()
	if err := f.worker.Fetch(f.t, jobs.FetchPayload{Source: "demo", Resource: name, Mode: mode, Trigger: jobs.TriggerManual}); err != nil {
		f.t.Fatalf("%s fetch of %s: %v", mode, name, err)
	}
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Resource: name, Limit: 1})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(runs) == 0 || runs[0].ID <= after {
		f.t.Fatalf("%s fetch of %s made no run", mode, name)
	}
	if run := runs[0]; run.Status != store.StatusSucceeded {
		f.t.Fatalf("%s fetch of %s: %s: %s", mode, name, run.Status, run.Error)
	}
	return runs[0]
}

func (f *fleet) runCount() int64 {
	var n int64
	f.store.DBForTests().Raw(`SELECT count(*) FROM sync_runs`).Scan(&n)
	return n
}

// TestUnchangedProbeIsCheap: once a resource is synced, a probe of an
// unchanged resource costs exactly one request, zero body bytes where the API
// offers validators, and writes no run row and no record.
func TestUnchangedProbeIsCheap(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 250)
	f.fullSync(0)
	// Answered 304 with no body; transactions' delta probe reads its
	// overlap, the hash probes a page.
	validators := map[string]bool{"ticket_sales": true, "inventory_movements": true}
	// Not subtests: the fleet's helpers fail the test that owns the fleet.
	for _, name := range demoapi.Resources {
		func() {
			t := &named{t, name}
			if s := f.resource(name).Probe.Strategy; s != tidemark.ProbeDelta && s != tidemark.ProbeRollingHash {
				// A strategy that keeps a validator sees it for the
				// first time: a change, and a fetch. (A delta probe's
				// memory is the watermark; a rolling one's, the pages
				// the full read recorded.)
				f.probe(name)
				if st := f.state(name); st.Confirmed(kindOf(f.resource(name))) == "" {
					t.Fatalf("no confirmed validator after probe and fetch: %+v", st)
				}
			}
			stats, runs, st := f.upstream.Stats().Resources[name], f.runCount(), f.state(name)
			var records int64
			f.store.DBForTests().Raw(`SELECT count(*) FROM record_changes`).Scan(&records)

			f.probe(name)

			after := f.upstream.Stats().Resources[name]
			if d := after.Requests - stats.Requests; d != 1 {
				t.Errorf("an unchanged probe made %d requests, want 1", d)
			}
			if d := after.BodyBytes - stats.BodyBytes; validators[name] && d != 0 {
				t.Errorf("an unchanged probe read %d body bytes, want 0", d)
			}
			if n := f.runCount(); n != runs {
				t.Errorf("an unchanged probe wrote %d run rows", n-runs)
			}
			var records2 int64
			f.store.DBForTests().Raw(`SELECT count(*) FROM record_changes`).Scan(&records2)
			if records2 != records {
				t.Errorf("an unchanged probe changed %d records", records2-records)
			}
			st2 := f.state(name)
			if st2.ProbesNotModified != st.ProbesNotModified+1 || st2.InSyncAt == nil || (st.InSyncAt != nil && !st2.InSyncAt.After(*st.InSyncAt)) {
				t.Errorf("state after an unchanged probe: not modified %d→%d, in sync at %v→%v",
					st.ProbesNotModified, st2.ProbesNotModified, st.InSyncAt, st2.InSyncAt)
			}
			if st2.ProbeIntervalMS <= st.ProbeIntervalMS && st.ProbeIntervalMS < f.resource(name).Probe.MaxEvery.D().Milliseconds() {
				t.Errorf("probe interval did not grow: %d ms → %d ms", st.ProbeIntervalMS, st2.ProbeIntervalMS)
			}
		}()
	}
}

// named prefixes a test's messages with a resource name.
type named struct {
	*testing.T
	name string
}

func (n *named) Fatalf(format string, args ...any) {
	n.T.Helper()
	n.T.Fatalf(n.name+": "+format, args...)
}

func (n *named) Errorf(format string, args ...any) {
	n.T.Helper()
	n.T.Errorf(n.name+": "+format, args...)
}

func kindOf(res *config.Resource) tidemark.ValidatorKind {
	switch res.Probe.Strategy {
	case tidemark.ProbeETag:
		return tidemark.ValidatorETag
	case tidemark.ProbeLastModified:
		return tidemark.ValidatorLastModified
	}
	return tidemark.ValidatorHash
}

// TestChangesArriveWithinProbeInterval runs the scheduler with 1 s probes:
// a change made upstream is in Postgres within probe.every + 2 s, for every
// resource style.
func TestChangesArriveWithinProbeInterval(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 250)
	for i := range f.conf.Sources[0].Resources {
		r := &f.conf.Sources[0].Resources[i]
		r.Probe.Every, r.Probe.MaxEvery = config.Duration(time.Second), config.Duration(time.Second)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sched := scheduler.New(scheduler.Config{Tick: 200 * time.Millisecond}, f.conf, f.store, f.client, slog.New(slog.DiscardHandler))
	go func() { done <- sched.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, 30*time.Second, "the first full sync of every resource", func() (bool, string) {
		n := 0
		for _, name := range demoapi.Resources {
			if f.state(name).LastFullSyncAt != nil {
				n++
			}
		}
		return n == len(demoapi.Resources), fmt.Sprintf("%d synced", n)
	})

	// What each resource's probe can see: validators cover every record; a
	// hash probe sees its first page and the body around it (settlements'
	// total count), so its changes are made there.
	firstPage := func(name string) []string {
		var ids []string
		f.store.DBForTests().Raw(`SELECT external_id FROM records WHERE resource = ? AND deleted_at IS NULL ORDER BY external_id LIMIT 3`, name).Scan(&ids)
		return ids
	}
	mutations := map[string]demoapi.Mutation{
		"ticket_sales":        {Creates: 1, Updates: 2},
		"inventory_movements": {Creates: 2},
		"transactions":        {Creates: 1, Updates: 2},
		"settlements":         {Creates: 1},
		"tax_summaries":       {Updates: 1, IDs: firstPage("tax_summaries")[:1]},
	}
	for name, m := range mutations {
		func() {
			t := &named{t, name}
			m.Resource = name
			changed, err := f.upstream.Mutate(m)
			if err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			ids := append(changed.Created, changed.Updated...)
			waitFor(t.T, 3*time.Second, "the change in Postgres of "+name, func() (bool, string) {
				return f.inStep(name, ids), ""
			})
			t.Logf("%s: %v in Postgres after %s", name, ids, time.Since(began).Round(10*time.Millisecond))
		}()
	}
}

// inStep reports whether the given records match the upstream in Postgres.
func (f *fleet) inStep(name string, ids []string) bool {
	ex := extract.New(f.resource(name))
	up := f.upstream.Export(name)
	for _, id := range ids {
		doc, err := extract.Decode(up[id])
		if err != nil {
			f.t.Fatal(err)
		}
		want, err := ex.Record(doc)
		if err != nil {
			f.t.Fatal(err)
		}
		var got string
		f.store.DBForTests().Raw(`SELECT content_hash FROM records WHERE resource = ? AND external_id = ? AND deleted_at IS NULL`, name, id).Scan(&got)
		if got != want.Hash {
			return false
		}
	}
	return true
}

// TestEqualTimestampAtWatermark: a record written after a delta with the
// same updated_at as the watermark is picked up by the next delta, even with
// no overlap.
func TestEqualTimestampAtWatermark(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	up := demoapi.New(demoapi.Options{Seed: 3, Records: 150, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := demoConfig(t, srv.URL)
	conf.Sources[0].Resource("ticket_sales").Delta.Overlap = 0
	f := startFleetWith(t, conf, up)

	f.fetch("ticket_sales", tidemark.RunFull)
	a, err := up.Mutate(demoapi.Mutation{Resource: "ticket_sales", Updates: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.fetch("ticket_sales", tidemark.RunDelta)
	wm := f.state("ticket_sales").Watermark
	// The watermark stays delta.clock_skew behind the read's start (the
	// upstream's Date, the frozen instant).
	if w, err := time.Parse(time.RFC3339Nano, wm); err != nil || w.After(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)) ||
		w.Before(time.Date(2030, 1, 1, 11, 59, 55, 0, time.UTC)) {
		t.Fatalf("watermark after the delta = %q, want within delta.clock_skew before the frozen clock's instant", wm)
	}
	// Written later, same updated_at as the watermark.
	b, err := up.Mutate(demoapi.Mutation{Resource: "ticket_sales", Updates: 1})
	if err != nil {
		t.Fatal(err)
	}
	run := f.fetch("ticket_sales", tidemark.RunDelta)
	if !f.inStep("ticket_sales", append(a.Updated, b.Updated...)) {
		t.Fatalf("the record written at the watermark's instant was lost (delta run %+v)", run)
	}
	if run.RecordsUpdated != 1 {
		t.Errorf("second delta: %d updated, want 1", run.RecordsUpdated)
	}
}

// TestFullSyncRepairsDrift: a change the upstream hides from the delta
// filter is repaired by the next full sync and reported as drift; a change
// the deltas simply had not fetched yet is not drift.
func TestFullSyncRepairsDrift(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 200)
	first := f.fetch("ticket_sales", tidemark.RunFull)
	if first.Drift != nil {
		t.Errorf("first full sync drift = %d, want none (no delta ran yet)", *first.Drift)
	}
	if _, err := f.upstream.Mutate(demoapi.Mutation{Resource: "ticket_sales", Updates: 1}); err != nil {
		t.Fatal(err)
	}
	f.fetch("ticket_sales", tidemark.RunDelta)
	hidden, err := f.upstream.Mutate(demoapi.Mutation{Resource: "ticket_sales", Updates: 1, Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := f.fetch("ticket_sales", tidemark.RunDelta); d.RecordsUpdated != 0 || f.inStep("ticket_sales", hidden.Updated) {
		t.Fatalf("the delta saw the hidden change (updated %d): the test cannot show drift", d.RecordsUpdated)
	}
	// A normal change after the last delta: new, not missed.
	if _, err := f.upstream.Mutate(demoapi.Mutation{Resource: "ticket_sales", Updates: 1}); err != nil {
		t.Fatal(err)
	}
	full := f.fetch("ticket_sales", tidemark.RunFull)
	if full.RecordsUpdated != 2 || full.Drift == nil || *full.Drift != 1 {
		t.Fatalf("full sync: updated %d, drift %v; want 2 updated, drift 1", full.RecordsUpdated, full.Drift)
	}
	if !f.inStep("ticket_sales", hidden.Updated) {
		t.Fatal("the full sync did not repair the hidden change")
	}
	if st := f.state("ticket_sales"); st.LastDrift == nil || *st.LastDrift != 1 {
		t.Errorf("sync_state.last_drift = %v, want 1", st.LastDrift)
	}
}

// TestOffsetPaginationUnderChange: records inserted and deleted while an
// offset-paginated full read runs are right after three runs, with no
// duplicate keys: the read during the change saw records shift and deletes
// nothing; the deletion then waits for two reads to agree (offset
// positions shift under deletes: delete_after_reads).
func TestOffsetPaginationUnderChange(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 5, Records: 350})
	var pages atomic.Int32
	var once sync.Once
	var changed demoapi.MutationResult
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/settlements" && pages.Add(1) == 2 {
			// Between page 1 and 2: one record of page 1 goes, one is added.
			once.Do(func() {
				ids := make([]string, 0, 1)
				for id := range up.Export("settlements") {
					if len(ids) == 0 || id < ids[0] {
						ids = append(ids[:0], id)
					}
				}
				var err error
				changed, err = up.Mutate(demoapi.Mutation{Resource: "settlements", Creates: 1, Deletes: 1, IDs: ids})
				if err != nil {
					panic(err)
				}
			})
		}
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f := startFleetWith(t, demoConfig(t, srv.URL), up)
	first := f.fetch("settlements", tidemark.RunFull)
	if len(changed.Created) != 1 || len(changed.Deleted) != 1 {
		t.Fatalf("mutation during the read: %+v", changed)
	}
	if first.RecordsDeleted != 0 || !strings.Contains(first.Note, "moved") {
		t.Fatalf("the read during the change deleted %d (note %q): want nothing, and why", first.RecordsDeleted, first.Note)
	}
	if run := f.fetch("settlements", tidemark.RunFull); run.RecordsDeleted != 0 || run.DeletesHeld != 1 {
		t.Fatalf("the second read deleted %d, held %d: want the deletion held for a second read", run.RecordsDeleted, run.DeletesHeld)
	}
	f.fetch("settlements", tidemark.RunFull)

	var live, distinct int64
	f.store.DBForTests().Raw(`SELECT count(*), count(DISTINCT external_id) FROM records WHERE resource = 'settlements' AND deleted_at IS NULL`).Row().Scan(&live, &distinct)
	if want := int64(len(up.Export("settlements"))); live != want || distinct != live {
		t.Fatalf("after two runs: %d live records (%d distinct), upstream has %d", live, distinct, want)
	}
	if !f.inStep("settlements", changed.Created) {
		t.Fatal("the record created during the read is missing")
	}
	var gone int64
	f.store.DBForTests().Raw(`SELECT count(*) FROM records WHERE resource = 'settlements' AND external_id = ? AND deleted_at IS NOT NULL`, changed.Deleted[0]).Scan(&gone)
	if gone != 1 {
		t.Fatal("the record deleted during the read is not tombstoned")
	}
}
