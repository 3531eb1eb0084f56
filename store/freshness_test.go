package store_test

import (
	"testing"
	"time"

	"github.com/tidemark/tidemark/store"
)

// TestFreshnessRule is the one rule of staleness, case by case.
func TestFreshnessRule(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	for _, tc := range []struct {
		name   string
		st     store.State
		target time.Duration
		lag    time.Duration
		synced bool
		stale  bool
	}{
		{"in step lately", store.State{InSyncAt: ago(10 * time.Second)}, time.Minute, 10 * time.Second, true, false},
		{"behind its target", store.State{InSyncAt: ago(10 * time.Minute)}, time.Minute, 10 * time.Minute, true, true},
		{"only a fetch so far", store.State{LastSuccessAt: ago(2 * time.Minute)}, time.Minute, 2 * time.Minute, true, true},
		{"never synced, inside its target", store.State{CreatedAt: now.Add(-30 * time.Second)}, time.Hour, 30 * time.Second, false, false},
		{"never synced, beyond its target", store.State{CreatedAt: now.Add(-2 * time.Minute)}, time.Minute, 2 * time.Minute, false, true},
		{"paused", store.State{InSyncAt: ago(time.Hour), Paused: true}, time.Minute, time.Hour, true, false},
		{"just resumed", store.State{InSyncAt: ago(time.Hour), ResumedAt: ago(time.Second)}, time.Minute, time.Hour, true, false},
		{"resumed a target ago", store.State{InSyncAt: ago(time.Hour), ResumedAt: ago(2 * time.Minute)}, time.Minute, time.Hour, true, true},
		{"just resumed, stale already", store.State{InSyncAt: ago(time.Hour), ResumedAt: ago(time.Second), Stale: true}, time.Minute, time.Hour, true, true},
		{"no target", store.State{InSyncAt: ago(time.Hour)}, 0, time.Hour, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.st.Freshness(tc.target, now)
			if f.Lag != tc.lag || f.Synced != tc.synced || f.Stale != tc.stale {
				t.Errorf("Freshness = %+v, want lag %s, synced %t, stale %t", f, tc.lag, tc.synced, tc.stale)
			}
		})
	}
}
