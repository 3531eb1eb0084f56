package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/store"
)

// TestChangedProbeKeepsTheFailureStreak replays what an upstream whose
// HEAD answers a new ETag while every GET answers malformed JSON does: each
// probe sees the change (and records its run), each fetch dies at once.
// The streak counts every failed fetch, starts at the first, and fires
// run.failed at the threshold; only an unchanged probe (the copy is
// current) or a successful fetch ends it.
func TestChangedProbeKeepsTheFailureStreak(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	if err := s.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	var firstFailure time.Time
	for i := range 3 {
		changed := store.ProbeOutcome{Changed: true, Kind: tidemark.ValidatorETag, Validator: `"v2"`, Interval: 5 * time.Second}
		if err := s.RecordProbe(ctx, key, changed); err != nil {
			t.Fatal(err)
		}
		if err := s.FinishRun(ctx, startRun(t, s, tidemark.RunProbe), store.RunOutcome{Status: store.StatusSucceeded, HTTPRequests: 1}); err != nil {
			t.Fatal(err)
		}
		id := startRun(t, s, tidemark.RunDelta)
		if i == 0 {
			r, err := s.Run(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			firstFailure = r.StartedAt
		}
		if err := s.FinishRun(ctx, id, store.RunOutcome{Status: store.StatusFailed, Error: "bad response: malformed JSON"}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.State(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.ConsecutiveFailures != 3 {
		t.Errorf("consecutive_failures = %d after 3 failed fetches each after a changed probe, want 3", st.ConsecutiveFailures)
	}
	streaks, err := s.FailureStreaks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := streaks[key]; got.Attempts != 3 || !got.Since.Equal(firstFailure) {
		t.Errorf("failure streak: %d attempts since %s, want 3 since the first failure %s", got.Attempts, got.Since, firstFailure)
	}
	fired, err := s.CheckFailures(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(fired) != 1 || fired[0].Event != tidemark.EventRunFailed {
		t.Errorf("CheckFailures(3) fired %+v, want one run.failed", fired)
	}
	// The upstream settles back on what the last successful fetch saw.
	unchanged := store.ProbeOutcome{Kind: tidemark.ValidatorETag, Interval: 5 * time.Second}
	if err := s.RecordProbe(ctx, key, unchanged); err != nil {
		t.Fatal(err)
	}
	if st, err = s.State(ctx, key); err != nil {
		t.Fatal(err)
	}
	if st.ConsecutiveFailures != 0 {
		t.Errorf("consecutive_failures = %d after an unchanged probe, want 0", st.ConsecutiveFailures)
	}
}
