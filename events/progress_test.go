package events_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

// TestProgressThroughHub publishes run.progress twice within a second: the
// throttle drops the second, the hub delivers the first to a matching
// subscriber as an event without an outbox id.
func TestProgressThroughHub(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	hub := events.NewHub(events.HubConfig{}, st, rdb, slog.New(slog.DiscardHandler))
	go hub.Run(ctx)
	// Pub/sub spans Redis DBs: a source of this test's own.
	sub, err := hub.Subscribe(ctx, events.Filter{Source: "progress_hub_test"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	th := events.NewThrottle(events.NewPublisher(st, rdb), time.Second)
	for _, n := range []int64{100, 200} {
		if err := th.Publish(ctx, events.Progress{RunID: 7, Source: "progress_hub_test", Resource: "r", Kind: "full", Pages: int(n / 100), RecordsFetched: n}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ev := <-sub.C:
		var p events.Progress
		if err := json.Unmarshal(ev.Data, &p); err != nil {
			t.Fatal(err)
		}
		if ev.ID != 0 || ev.Type != tidemark.EventRunProgress || p.RecordsFetched != 100 || p.RunID != 7 {
			t.Errorf("got event id %d type %s %+v: want the first progress, without an id", ev.ID, ev.Type, p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no run.progress event within 5s")
	}
	select {
	case ev := <-sub.C:
		t.Errorf("a second event within the second: %s", ev.Data)
	case <-time.After(300 * time.Millisecond): // the throttle dropped it: nothing should come
	}
}

// installation is one tidemark installation's hub and progress publisher:
// its own database and Redis DB number, on the Redis server every test
// shares.
type installation struct {
	store *store.Store
	rdb   *redis.Client
	pub   *events.Publisher
	sub   *events.Subscription
}

func startInstallation(ctx context.Context, t *testing.T) installation {
	t.Helper()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	hub := events.NewHub(events.HubConfig{}, st, rdb, slog.New(slog.DiscardHandler))
	go hub.Run(ctx)
	sub, err := hub.Subscribe(ctx, events.Filter{Source: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return installation{store: st, rdb: rdb, pub: events.NewPublisher(st, rdb), sub: sub}
}

// runOf is the run id of a progress event.
func runOf(t *testing.T, ev events.Event) int64 {
	t.Helper()
	var p events.Progress
	if err := json.Unmarshal(ev.Data, &p); err != nil {
		t.Fatal(err)
	}
	return p.RunID
}

// nextRun is the run id of the next progress event on sub.
func nextRun(t *testing.T, sub *events.Subscription) int64 {
	t.Helper()
	select {
	case ev, ok := <-sub.C:
		if !ok {
			t.Fatal("subscription closed")
		}
		return runOf(t, ev)
	case <-time.After(5 * time.Second):
		t.Fatal("no run.progress event within 5s")
	}
	return 0
}

// TestProgressStaysInItsInstallation runs two installations on one Redis
// server (two databases, two Redis DB numbers) whose runs have the same
// source and resource names. Neither hub delivers the other's progress.
// Redis hands a subscriber messages in the order they were published, so
// a foreign message published before one of our own would arrive first:
// reading up to our own proves the foreign one was dropped.
func TestProgressStaysInItsInstallation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := startInstallation(ctx, t), startInstallation(ctx, t)
	publish := func(in installation, run int64) {
		t.Helper()
		if err := in.pub.Publish(ctx, events.Progress{RunID: run, Source: "shared", Resource: "r", Kind: "full"}); err != nil {
			t.Fatal(err)
		}
	}
	// Each hub hears its own installation (its subscription is live):
	// runs 1xx are a's, 2xx b's.
	for _, w := range []struct {
		in  installation
		run int64
	}{{a, 100}, {b, 200}} {
		tick := time.NewTicker(100 * time.Millisecond)
		deadline := time.After(5 * time.Second)
	warm:
		for {
			publish(w.in, w.run)
			select {
			case ev := <-w.in.sub.C:
				if run := runOf(t, ev); run != w.run {
					t.Fatalf("first event: run %d, want %d", run, w.run)
				}
				break warm
			case <-tick.C: // published before the hub subscribed: again
			case <-deadline:
				t.Fatalf("the hub did not hear run %d within 5s", w.run)
			}
		}
		tick.Stop()
	}
	publish(b, 201)
	publish(a, 101)
	publish(b, 202)
	for _, w := range []struct {
		name  string
		in    installation
		last  int64 // its own last run
		other int64 // the other's runs: other*100 + n
	}{
		{"a", a, 101, 2},
		{"b", b, 202, 1},
	} {
		for {
			run := nextRun(t, w.in.sub)
			if run/100 == w.other {
				t.Fatalf("installation %s's hub delivered run %d of the other installation", w.name, run)
			}
			if run == w.last {
				break
			}
		}
	}
	// A message on a's channel that names another installation (a
	// channel name chosen by hand, a release publishing elsewhere) is
	// dropped too.
	inst, err := events.Installation(ctx, a.store, a.rdb)
	if err != nil {
		t.Fatal(err)
	}
	foreign := `{"installation":"someone-else:db0","run_id":999,"source":"shared","resource":"r","kind":"full"}`
	if err := a.rdb.Publish(ctx, events.ProgressChannel(inst), foreign).Err(); err != nil {
		t.Fatal(err)
	}
	publish(a, 102)
	for run := nextRun(t, a.sub); run != 102; run = nextRun(t, a.sub) {
		if run == 999 {
			t.Fatal("the hub delivered a message naming another installation")
		}
	}
}
