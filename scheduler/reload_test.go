package scheduler_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
)

// TestTickFollowsReload: the tick after a reload creates the sync state of
// an added resource and enqueues its first full read and probe at once; a
// removed resource gets nothing more.
func TestTickFollowsReload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ordersOnly := strings.Split(conf, "      - name: refunds")[0]
	c, st, client, insp := rig(t, ordersOnly)
	live := config.NewLive(c)
	now := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	s := scheduler.New(scheduler.Config{Now: func() time.Time { return now }}, live, st, client, slog.New(slog.DiscardHandler))
	pending := func() map[string]int {
		t.Helper()
		out := map[string]int{}
		for _, q := range jobs.AllQueues() {
			tasks, _ := insp.ListPendingTasks(q)
			for _, ti := range tasks {
				res := "orders"
				if strings.Contains(string(ti.Payload), "refunds") {
					res = "refunds"
				}
				out[ti.Type+" "+res]++
			}
		}
		return out
	}
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}

	both, err := config.Parse("test.yaml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	both.Sources[0].Resources = both.Sources[0].Resources[1:] // refunds in, orders out
	live.Store(both)
	now = now.Add(10 * time.Second) // the next probe slot
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.State(ctx, store.Key{Source: "shop", Resource: "refunds"}); err != nil {
		t.Errorf("the added resource's sync state after the tick: %v", err)
	}
	got := pending()
	want := map[string]int{"fetch orders": 1, "probe orders": 1, "fetch refunds": 2} // refunds: its first full read and a pure-pull fetch
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%d × %q pending, want %d (all: %v)", got[k], k, n, got)
		}
	}
}
