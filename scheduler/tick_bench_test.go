package scheduler_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/scheduler"
)

// largeConfig is 10,000 resources in 100 sources, probed every 10 s.
func largeConfig() string {
	var y strings.Builder
	y.WriteString("sources:\n")
	for i := range 100 {
		fmt.Fprintf(&y, "  - name: s%d\n    base_url: http://127.0.0.1:9\n    allow_private: true\n    resources:\n", i)
		for j := range 100 {
			fmt.Fprintf(&y, "      - {name: r%d, path: /r, records: {id: id}, probe: {strategy: etag, every: 10s}, full_sync: {every: 24h}}\n", j)
		}
	}
	return y.String()
}

// BenchmarkSlot10k is the tick that begins a probe slot over 10,000
// resources: it enqueues 10,000 probes, which must be done well within the
// slot (10 s) for every resource to be probed once an interval; the figure
// that matters is the wall time (tasks/s).
func BenchmarkSlot10k(b *testing.B) {
	ctx := context.Background()
	s, now := probesOnlyScheduler(b)
	b.ResetTimer()
	for b.Loop() {
		*now = now.Add(10 * time.Second) // the next slot: every probe due again
		if err := s.Tick(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*10_000/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkTick10k is one scheduler tick (and its alert check) over 10,000
// resources probed every 10 s, within a slot whose probes are already
// enqueued: the cost of every tick but one per slot.
func BenchmarkTick10k(b *testing.B) {
	ctx := context.Background()
	s, _ := probesOnlyScheduler(b)
	if err := s.Tick(ctx); err != nil { // enqueues the slot's probes
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.Tick(ctx); err != nil {
			b.Fatal(err)
		}
		if err := s.CheckAlerts(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// probesOnlyScheduler is a scheduler over largeConfig's 10,000 resources
// whose full syncs are done (only probes are due), on a clock the
// benchmark moves.
func probesOnlyScheduler(b *testing.B) (*scheduler.Scheduler, *time.Time) {
	b.Helper()
	c, st, client, _ := rig(b, largeConfig())
	if err := st.DBForTests().Exec(`UPDATE sync_state SET last_full_sync_at = now()`).Error; err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	return scheduler.New(scheduler.Config{Now: func() time.Time { return now }}, c, st, client, slog.New(slog.DiscardHandler)), &now
}
