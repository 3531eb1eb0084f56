package scheduler_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
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
        probe: {strategy: etag, every: 10s, max_every: 1m}
        full_sync: {every: 1h}
      - name: refunds
        path: /refunds
        records: {id: id}
        probe: {strategy: none, every: 10s}
        full_sync: {every: 1h}
`

// rig parses yaml and gives a scheduler test what it runs against: a fresh
// database with the config's state rows, and a client and inspector on a
// fresh Redis DB. insp is nil for benchmarks, which do not inspect.
func rig(tb testing.TB, yaml string) (*config.Config, *store.Store, *asynq.Client, *asynq.Inspector) {
	tb.Helper()
	c, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(context.Background(), testenv.Database(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if err := st.EnsureStates(context.Background(), store.KeysOf(c)); err != nil {
		tb.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(tb))
	if err != nil {
		tb.Fatal(err)
	}
	client := asynq.NewClient(redisOpt)
	tb.Cleanup(func() { client.Close() })
	insp := asynq.NewInspector(redisOpt)
	tb.Cleanup(func() { insp.Close() })
	return c, st, client, insp
}

// TestReplicasEnqueueEachSlotOnce: two schedulers ticking at the same
// instant, and again later in the same slot, enqueue each slot's tasks once:
// a first full read and a probe (or, with strategy none, a fetch) per
// interval; the next slot gets new ones; a paused resource gets none.
func TestReplicasEnqueueEachSlotOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, st, client, insp := rig(t, conf)

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
	// pending lists "queue type resource" of every pending task.
	pending := func() map[string]int {
		t.Helper()
		out := map[string]int{}
		for _, q := range jobs.AllQueues() {
			tasks, err := insp.ListPendingTasks(q)
			if err != nil {
				continue // the queue does not exist yet
			}
			for _, ti := range tasks {
				res := "orders"
				if strings.Contains(string(ti.Payload), "refunds") {
					res = "refunds"
				}
				out[q+" "+ti.Type+" "+res]++
			}
		}
		return out
	}
	want := func(step string, w map[string]int) {
		t.Helper()
		got := pending()
		for k, n := range w {
			if got[k] != n {
				t.Errorf("%s: %d × %q pending, want %d (all: %v)", step, got[k], k, n, got)
			}
		}
		if len(got) != len(w) {
			t.Errorf("%s: pending %v, want %v", step, got, w)
		}
	}

	tickAll()
	now = now.Add(5 * time.Second) // same 10 s slot
	tickAll()
	want("one slot, two replicas, two ticks", map[string]int{
		"critical fetch orders": 1, "probe_critical probe orders": 1, // the first full read, one probe
		"default fetch refunds": 2, // the first full read, one pure-pull fetch
	})

	now = now.Add(10 * time.Second) // next probe slot, same full-sync slot
	tickAll()
	want("next slot", map[string]int{"critical fetch orders": 1, "probe_critical probe orders": 2, "default fetch refunds": 3})

	if n, err := st.SetPaused(ctx, "shop", "refunds", true); err != nil || n != 1 {
		t.Fatalf("pause: %d rows, %v", n, err)
	}
	now = now.Add(10 * time.Second)
	tickAll()
	want("refunds paused", map[string]int{"critical fetch orders": 1, "probe_critical probe orders": 3, "default fetch refunds": 3})
}

// TestTicksFallOnSlotBoundaries: the next tick is a tenth of the tick
// interval past the next multiple of it since the Unix epoch, where slots
// begin.
func TestTicksFallOnSlotBoundaries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		now  time.Time
		tick time.Duration
		want time.Time
	}{
		{"mid-second", time.Unix(100, 500_000_000), time.Second, time.Unix(101, 100_000_000)},
		{"just before the boundary", time.Unix(100, 999_999_999), time.Second, time.Unix(101, 100_000_000)},
		{"on the boundary", time.Unix(100, 0), time.Second, time.Unix(100, 100_000_000)},
		{"on the tick", time.Unix(100, 100_000_000), time.Second, time.Unix(101, 100_000_000)},
		{"ten seconds", time.Unix(105, 0), 10 * time.Second, time.Unix(111, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := scheduler.NextTick(tc.now, tc.tick); !got.Equal(tc.want) {
				t.Errorf("NextTick(%s, %s) = %s, want %s", tc.now.UTC(), tc.tick, got.UTC(), tc.want.UTC())
			}
		})
	}
}

// TestTicksDoNotResendEnqueuedSlots: a replica that has seen a slot's task
// in Redis does not send it again every tick, until Recheck has passed: a
// task deleted meanwhile comes back then, not at once.
func TestTicksDoNotResendEnqueuedSlots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, st, client, insp := rig(t, conf)

	now := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	s := scheduler.New(scheduler.Config{Now: func() time.Time { return now }, Recheck: 3 * time.Second}, c, st, client, slog.New(slog.DiscardHandler))
	probes := func() int {
		t.Helper()
		tasks, err := insp.ListPendingTasks("probe_critical")
		if err != nil {
			t.Fatal(err)
		}
		return len(tasks)
	}
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := probes(); n != 1 {
		t.Fatalf("%d probes pending after the first tick, want 1", n)
	}
	if _, err := insp.DeleteAllPendingTasks("probe_critical"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second) // same 10 s slot, within Recheck
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := probes(); n != 0 {
		t.Errorf("%d probes pending after a tick within Recheck, want 0: the slot's probe was sent again", n)
	}
	now = now.Add(3 * time.Second) // same slot, Recheck passed
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := probes(); n != 1 {
		t.Errorf("%d probes pending after Recheck, want the deleted probe back", n)
	}
}

// TestProbeCarriesItsBasis: a scheduled probe carries the validator, the
// adaptive interval and head_unsupported the tick read, so that the worker
// needs no read of its own (jobs.ProbeBasis); and nothing else of the
// state (no URL, no credential: the payload is the task's JSON as asynq
// stores it).
func TestProbeCarriesItsBasis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, st, client, insp := rig(t, conf)
	if err := st.DBForTests().Exec(`UPDATE sync_state SET etag = '"v7"', probe_interval_ms = 15000, head_unsupported = true
		WHERE source = 'shop' AND resource = 'orders'`).Error; err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	s := scheduler.New(scheduler.Config{Now: func() time.Time { return now }}, c, st, client, slog.New(slog.DiscardHandler))
	if err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	tasks, err := insp.ListPendingTasks("probe_critical")
	if err != nil || len(tasks) != 1 {
		t.Fatalf("%d probes pending (%v), want 1", len(tasks), err)
	}
	p, err := jobs.ParseProbe(asynq.NewTask(tasks[0].Type, tasks[0].Payload))
	if err != nil {
		t.Fatal(err)
	}
	want := jobs.ProbeBasis{Kind: store.ValidatorETag, Validator: `"v7"`, IntervalMS: 15000, HeadUnsupported: true}
	if p.Basis == nil || *p.Basis != want {
		t.Errorf("basis %+v, want %+v", p.Basis, want)
	}
	if body := string(tasks[0].Payload); strings.Contains(body, "http") {
		t.Errorf("payload %s names a URL", body)
	}
}
