package scheduler_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
)

const conf = `
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - name: orders
        path: /orders
        priority: critical
        records: {id: id}
        probe: {every: 10s}
      - name: refunds
        path: /refunds
        records: {id: id}
        probe: {every: 10s}
`

// TestReplicasEnqueueEachSlotOnce: two schedulers ticking at the same
// instant, and again later in the same slot, enqueue one task per resource;
// the next slot gets a new one; a paused resource gets none.
func TestReplicasEnqueueEachSlotOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := config.Parse("test.yaml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()

	now := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	clock := func() time.Time { return now }
	replicas := []*scheduler.Scheduler{
		scheduler.New(scheduler.Config{Now: clock}, c, st, client, slog.New(slog.DiscardHandler)),
		scheduler.New(scheduler.Config{Now: clock}, c, st, client, slog.New(slog.DiscardHandler)),
	}
	tickAll := func() {
		t.Helper()
		for _, s := range replicas {
			if err := s.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	pending := func(queue string) int {
		t.Helper()
		tasks, err := insp.ListPendingTasks(queue)
		if err != nil {
			return 0 // the queue does not exist yet
		}
		return len(tasks)
	}

	tickAll()
	now = now.Add(5 * time.Second) // same 10 s slot
	tickAll()
	if got := pending("critical") + pending("default"); got != 2 {
		t.Fatalf("after two replicas ticked twice in one slot: %d tasks, want 2", got)
	}
	if pending("critical") != 1 {
		t.Fatalf("orders (priority critical) not in the critical queue")
	}

	now = now.Add(10 * time.Second) // next slot
	tickAll()
	if got := pending("critical") + pending("default"); got != 4 {
		t.Fatalf("after the next slot: %d tasks, want 4", got)
	}

	st.EnsureStates(ctx, []store.Key{{Source: "shop", Resource: "orders"}, {Source: "shop", Resource: "refunds"}})
	if n, err := st.SetPaused(ctx, "shop", "refunds", true); err != nil || n != 1 {
		t.Fatalf("pause: %d rows, %v", n, err)
	}
	now = now.Add(10 * time.Second)
	tickAll()
	if got := pending("default"); got != 2 {
		t.Fatalf("a paused resource was scheduled: %d default tasks, want still 2", got)
	}
}
