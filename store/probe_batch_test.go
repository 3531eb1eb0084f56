package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark/store"
)

// runBatcher runs b until the test ends or the returned stop is called;
// stop returns once Run has made its final flush.
func runBatcher(t *testing.T, b *store.ProbeBatcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func mustState(t *testing.T, s *store.Store, k store.Key) store.State {
	t.Helper()
	st, err := s.State(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitOpen waits until b holds unchanged probes back rather than writing
// them (Run has started), using a key no assertion looks at.
func waitOpen(t *testing.T, s *store.Store, b *store.ProbeBatcher) {
	t.Helper()
	probe := store.Key{Source: "shop", Resource: "canary"}
	if err := s.EnsureStates(context.Background(), []store.Key{probe}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := mustState(t, s, probe).ProbesTotal
		if err := b.Record(context.Background(), probe, store.ProbeOutcome{Interval: time.Second}); err != nil {
			t.Fatal(err)
		}
		if mustState(t, s, probe).ProbesTotal == before {
			return // held back: Run is running
		}
		if time.Now().After(deadline) {
			t.Fatal("the batcher never started holding probes back")
		}
		time.Sleep(5 * time.Millisecond) // polling interval of the condition
	}
}

// TestProbeBatcherCoalescesAndFlushesOnStop: unchanged probes are summed in
// memory (their interval visible to the next probe through State) and land
// in Postgres, all of them, when Run stops.
func TestProbeBatcherCoalescesAndFlushesOnStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	a, b := store.Key{Source: "shop", Resource: "a"}, store.Key{Source: "shop", Resource: "b"}
	if err := s.EnsureStates(ctx, []store.Key{a, b}); err != nil {
		t.Fatal(err)
	}
	bt := s.NewProbeBatcher(time.Hour, func(err error) { t.Error(err) }) // no periodic flush
	stop := runBatcher(t, bt)
	waitOpen(t, s, bt)
	began := time.Now().UTC()
	intervals := []time.Duration{time.Second, 1500 * time.Millisecond, 2250 * time.Millisecond}
	for _, iv := range intervals {
		if err := bt.Record(ctx, a, store.ProbeOutcome{Interval: iv}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bt.Record(ctx, b, store.ProbeOutcome{Interval: time.Second, HeadUnsupported: true}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, s, a); st.ProbesTotal != 0 || st.InSyncAt != nil {
		t.Fatalf("before a flush: probes %d, in sync at %v: want nothing written yet", st.ProbesTotal, st.InSyncAt)
	}
	st, err := bt.State(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if st.ProbeIntervalMS != 2250 {
		t.Errorf("State before the flush: interval %d ms, want the newest probe's 2250", st.ProbeIntervalMS)
	}
	stop()
	got := mustState(t, s, a)
	if got.ProbesTotal != 3 || got.ProbesNotModified != 3 || got.ProbeIntervalMS != 2250 || got.ConsecutiveFailures != 0 {
		t.Errorf("after stop: total %d, not modified %d, interval %d ms, failures %d; want 3, 3, 2250, 0",
			got.ProbesTotal, got.ProbesNotModified, got.ProbeIntervalMS, got.ConsecutiveFailures)
	}
	if got.InSyncAt == nil || got.InSyncAt.Before(began.Add(-time.Millisecond)) {
		t.Errorf("in_sync_at %v, want the last probe's time (after %v)", got.InSyncAt, began)
	} else if got.NextProbeAt == nil || got.NextProbeAt.Sub(*got.InSyncAt) != 2250*time.Millisecond {
		t.Errorf("next_probe_at %v, want in_sync_at %v + 2.25s", got.NextProbeAt, got.InSyncAt)
	}
	if gb := mustState(t, s, b); gb.ProbesTotal != 1 || !gb.HeadUnsupported {
		t.Errorf("b after stop: total %d, head unsupported %v; want 1, true", gb.ProbesTotal, gb.HeadUnsupported)
	}
	// Once Run has returned, a record is written at once.
	if err := bt.Record(ctx, a, store.ProbeOutcome{Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	if got := mustState(t, s, a); got.ProbesTotal != 4 || got.ProbeIntervalMS != 1000 {
		t.Errorf("a record after Run: total %d, interval %d ms; want 4, 1000", got.ProbesTotal, got.ProbeIntervalMS)
	}
}

// TestProbeBatcherFlushesPeriodically: with a short flush interval the
// counters reach Postgres while Run goes on.
func TestProbeBatcherFlushesPeriodically(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	k := store.Key{Source: "shop", Resource: "ticking"}
	if err := s.EnsureStates(ctx, []store.Key{k}); err != nil {
		t.Fatal(err)
	}
	bt := s.NewProbeBatcher(20*time.Millisecond, func(err error) { t.Error(err) })
	runBatcher(t, bt)
	for range 5 {
		if err := bt.Record(ctx, k, store.ProbeOutcome{Interval: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for mustState(t, s, k).ProbesNotModified != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("probes_not_modified %d after 10s, want 5", mustState(t, s, k).ProbesNotModified)
		}
		time.Sleep(10 * time.Millisecond) // polling interval of the condition
	}
}

// TestProbeBatcherOrdersDirectWrites: a changed probe after unchanged ones
// still pending is written after them (its interval and candidate win);
// a write by someone else after the pending probes (a failed run) keeps its
// consecutive failures and interval, while the counters still add up.
func TestProbeBatcherOrdersDirectWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	changed, failed := store.Key{Source: "shop", Resource: "changed"}, store.Key{Source: "shop", Resource: "failed"}
	if err := s.EnsureStates(ctx, []store.Key{changed, failed}); err != nil {
		t.Fatal(err)
	}
	bt := s.NewProbeBatcher(time.Hour, func(err error) { t.Error(err) })
	stop := runBatcher(t, bt)
	waitOpen(t, s, bt)

	for range 2 {
		if err := bt.Record(ctx, changed, store.ProbeOutcome{Interval: 4 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	out := store.ProbeOutcome{Changed: true, Kind: store.ValidatorETag, Validator: `"v2"`, Interval: time.Second}
	if err := bt.Record(ctx, changed, out); err != nil {
		t.Fatal(err)
	}
	got := mustState(t, s, changed)
	if got.ProbesTotal != 3 || got.ProbesNotModified != 2 || got.ProbeIntervalMS != 1000 || got.CandidateValidator != `"v2"` {
		t.Errorf("after a change: total %d, not modified %d, interval %d ms, candidate %q; want 3, 2, 1000, \"v2\"",
			got.ProbesTotal, got.ProbesNotModified, got.ProbeIntervalMS, got.CandidateValidator)
	}

	if err := bt.Record(ctx, failed, store.ProbeOutcome{Interval: 4 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// The failure comes after the probe (two round trips later).
	r := store.Run{Source: failed.Source, Resource: failed.Resource, Kind: store.KindProbe, Trigger: "manual"}
	if err := s.StartRun(ctx, &r); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishRun(ctx, r.ID, store.RunOutcome{Status: store.StatusFailed, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	stop()
	got = mustState(t, s, failed)
	if got.ProbesTotal != 1 || got.ConsecutiveFailures != 1 || got.ProbeIntervalMS != 0 || got.InSyncAt == nil {
		t.Errorf("a probe flushed after a later failure: total %d, failures %d, interval %d ms, in sync at %v; want 1, 1, 0 (untouched), set",
			got.ProbesTotal, got.ConsecutiveFailures, got.ProbeIntervalMS, got.InSyncAt)
	}
}

// TestProbeBatcherChecksTheValidator: an unchanged probe's tally is written
// only where the validator it matched is still the confirmed one and the
// resource is not paused; otherwise it is not counted and the Stale hook
// hears of it, so that the resource is probed again against its stored
// state. The Applied hook hears of what was written.
func TestProbeBatcherChecksTheValidator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	current, old, paused := store.Key{Source: "shop", Resource: "current"}, store.Key{Source: "shop", Resource: "old"}, store.Key{Source: "shop", Resource: "paused"}
	keys := []store.Key{current, old, paused}
	if err := s.EnsureStates(ctx, keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := s.DBForTests().Exec(`UPDATE sync_state SET etag = '"v2"' WHERE source = ? AND resource = ?`, k.Source, k.Resource).Error; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetPaused(ctx, paused.Source, paused.Resource, true); err != nil {
		t.Fatal(err)
	}
	bt := s.NewProbeBatcher(time.Hour, func(err error) { t.Error(err) })
	var mu sync.Mutex
	applied, stale := map[store.Key]int64{}, map[store.Key]int64{}
	bt.SetHooks(store.ProbeHooks{
		Applied: func(k store.Key, n int64) { mu.Lock(); applied[k] += n; mu.Unlock() },
		Stale:   func(k store.Key, n int64) { mu.Lock(); stale[k] += n; mu.Unlock() },
	})
	stop := runBatcher(t, bt)
	waitOpen(t, s, bt)
	record := func(k store.Key, validator string) {
		out := store.ProbeOutcome{Kind: store.ValidatorETag, Validator: validator, Interval: time.Second}
		if err := bt.Record(ctx, k, out); err != nil {
			t.Fatal(err)
		}
	}
	record(current, `"v2"`)
	record(current, `"v1"`) // a basis read before "v2" was confirmed
	record(current, `"v2"`)
	record(old, `"v1"`)
	record(paused, `"v2"`)
	stop()
	if got := mustState(t, s, current); got.ProbesTotal != 2 || got.ProbesNotModified != 2 || got.InSyncAt == nil {
		t.Errorf("current: total %d, not modified %d, in sync at %v; want the two that matched \"v2\" counted", got.ProbesTotal, got.ProbesNotModified, got.InSyncAt)
	}
	for _, k := range []store.Key{old, paused} {
		if got := mustState(t, s, k); got.ProbesTotal != 0 || got.InSyncAt != nil {
			t.Errorf("%s: total %d, in sync at %v; want nothing written", k, got.ProbesTotal, got.InSyncAt)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[store.Key][2]int64{current: {2, 1}, old: {0, 1}, paused: {0, 1}}
	for k, w := range want {
		if applied[k] != w[0] || stale[k] != w[1] {
			t.Errorf("%s: hooks heard %d applied, %d stale; want %d, %d", k, applied[k], stale[k], w[0], w[1])
		}
	}
}
