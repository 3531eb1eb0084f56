package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/store"
)

func finishRun(t *testing.T, s *store.Store, kind tidemark.RunKind, status string, requests int) int64 {
	t.Helper()
	id := startRun(t, s, kind)
	if err := s.FinishRun(context.Background(), id, store.RunOutcome{Status: status, Error: status, HTTPRequests: requests}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestFailureStreaks: the streak is the failures since the last success,
// interrupted runs count for neither, and a success ends it.
func TestFailureStreaks(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	if err := s.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	finishRun(t, s, tidemark.RunDelta, store.StatusFailed, 1)
	finishRun(t, s, tidemark.RunDelta, store.StatusSucceeded, 1)
	first := finishRun(t, s, tidemark.RunProbe, store.StatusFailed, 1)
	finishRun(t, s, tidemark.RunDelta, store.StatusInterrupted, 1)
	last := finishRun(t, s, tidemark.RunDelta, store.StatusDead, 1)

	streaks, err := s.FailureStreaks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := streaks[key]
	firstRun, _ := s.Run(ctx, first)
	if !ok || got.Attempts != 2 || got.Last.ID != last || got.Last.Status != store.StatusDead || !got.Since.Equal(firstRun.StartedAt) {
		t.Fatalf("streak = %+v (found %v), want 2 attempts since run %d (%s), last run %d dead", got, ok, first, firstRun.StartedAt, last)
	}
	finishRun(t, s, tidemark.RunDelta, store.StatusSucceeded, 1)
	if streaks, err = s.FailureStreaks(ctx); err != nil || len(streaks) != 0 {
		t.Fatalf("after a success: %+v, %v; want no streak", streaks, err)
	}
}

// TestProbeHistory: unchanged probes, written at once or through the
// batcher, are counted per hour beside the requests of probe and fetch
// runs, and are moments the resource was in step.
func TestProbeHistory(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	if err := s.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-2 * time.Hour)
	unchanged := store.ProbeOutcome{Interval: time.Second}
	if err := s.RecordProbe(ctx, key, unchanged); err != nil { // written at once
		t.Fatal(err)
	}
	b := s.NewProbeBatcher(time.Hour, func(err error) { t.Error(err) }) // no periodic flush
	stop := runBatcher(t, b)
	waitOpen(t, s, b)
	for range 3 { // tallied, written by the flush on stop
		if err := b.Record(ctx, key, unchanged); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	finishRun(t, s, tidemark.RunProbe, store.StatusFailed, 2)
	finishRun(t, s, tidemark.RunDelta, store.StatusSucceeded, 5)

	hours, err := s.RequestsPerHour(ctx, key, since)
	if err != nil {
		t.Fatal(err)
	}
	if len(hours) != 3 {
		t.Fatalf("hours = %+v, want 3 (two hours ago to now)", hours)
	}
	var total store.HourRequests
	for _, h := range hours {
		total.Probe += h.Probe
		total.Unchanged += h.Unchanged
		total.Fetch += h.Fetch
	}
	if total.Unchanged != 4 || total.Probe != 6 || total.Fetch != 5 {
		t.Errorf("totals %+v, want 4 unchanged of 6 probe requests, 5 fetch requests", total)
	}
	moments, err := s.InSyncMoments(ctx, key, since)
	if err != nil {
		t.Fatal(err)
	}
	// The probes' minute (two, if a minute began among them) and the fetch,
	// which knew when it finished that it was in step as of its start.
	if n := len(moments); n < 2 || n > 3 {
		t.Errorf("moments = %+v, want the probes' minute(s) and the fetch", moments)
	}
	fetches := 0
	for _, m := range moments {
		if m.At.Before(m.Known) {
			fetches++
		}
	}
	if fetches != 1 {
		t.Errorf("moments = %+v, want one learnt after it (the fetch)", moments)
	}
	if n, err := s.PruneProbeMinutes(ctx); err != nil || n != 0 {
		t.Errorf("prune: %d, %v; want nothing as old as two days", n, err)
	}
}
