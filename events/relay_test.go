package events_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

func emit(t *testing.T, st *store.Store, runID int64, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		rec := store.Record{ExternalID: strconv.Itoa(i), Payload: json.RawMessage(`{}`), Hash: "h"}
		if _, err := st.ApplyPage(context.Background(), store.Page{Key: store.Key{Source: "s", Resource: "r"}, RunID: runID, Records: []store.Record{rec}}); err != nil {
			t.Fatal(err)
		}
	}
}

// Events committed while no relay runs (a server killed between commit and
// publish) are all published once relays run again; several relays at once
// hand each event to the sink once and publish it on Redis.
func TestRelayPublishesEveryEventOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbURL := testenv.Database(t)
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ropt, _ := redis.ParseURL(testenv.Redis(t))
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	st.EnsureStates(ctx, []store.Key{{Source: "s", Resource: "r"}})
	run := store.Run{Source: "s", Resource: "r", Kind: store.KindFull, Trigger: "manual"}
	st.StartRun(ctx, &run)

	emit(t, st, run.ID, 0, 50) // committed, nobody publishing
	ps := rdb.Subscribe(ctx, events.Channel)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	seen := map[int64]int{}
	sink := func(_ context.Context, ev events.Event) error {
		mu.Lock()
		defer mu.Unlock()
		seen[ev.ID]++
		return nil
	}
	var wg sync.WaitGroup
	for range 3 {
		// PollInterval of an hour: after the first drain only NOTIFY wakes them.
		r := events.NewRelay(events.RelayConfig{Listen: true, PollInterval: time.Hour, BatchSize: 7, Sink: sink}, st, rdb, slog.New(slog.DiscardHandler))
		wg.Go(func() { r.Run(ctx) })
	}
	defer wg.Wait()
	defer cancel()
	waitFor(t, func() bool { n, _ := st.UnpublishedOutbox(ctx); return n == 0 })
	emit(t, st, run.ID, 50, 50)

	msgs := ps.Channel()
	got := map[int64]bool{}
	deadline := time.After(15 * time.Second)
	for len(got) < 100 {
		select {
		case m := <-msgs:
			var d struct{ ID int64 }
			json.Unmarshal([]byte(m.Payload), &d)
			got[d.ID] = true
		case <-deadline:
			t.Fatalf("published %d of 100 events on Redis", len(got))
		}
	}
	waitFor(t, func() bool { n, _ := st.UnpublishedOutbox(ctx); return n == 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 100 {
		t.Fatalf("sink saw %d events; want 100", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %d handed to the sink %d times; want once", id, n)
		}
	}
}

// A failing sink leaves the events unpublished, and they are handed again.
func TestRelayRetriesAfterSinkFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ropt, _ := redis.ParseURL(testenv.Redis(t))
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	st.EnsureStates(ctx, []store.Key{{Source: "s", Resource: "r"}})
	run := store.Run{Source: "s", Resource: "r", Kind: store.KindFull, Trigger: "manual"}
	st.StartRun(ctx, &run)
	emit(t, st, run.ID, 0, 3)
	fail := true
	calls := 0
	r := events.NewRelay(events.RelayConfig{Sink: func(context.Context, events.Event) error {
		calls++
		if fail {
			return context.DeadlineExceeded
		}
		return nil
	}}, st, rdb, slog.New(slog.DiscardHandler))
	if _, err := r.Drain(ctx); err == nil {
		t.Fatal("drain with a failing sink succeeded")
	}
	if n, _ := st.UnpublishedOutbox(ctx); n != 3 {
		t.Fatalf("%d unpublished after a failed publish; want 3", n)
	}
	fail = false
	if n, err := r.Drain(ctx); err != nil || n != 3 {
		t.Fatalf("drain = %d, %v; want 3", n, err)
	}
	if calls != 4 {
		t.Fatalf("sink called %d times; want 1 failed + 3", calls)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}
