package events_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	th := events.NewThrottle(rdb, time.Second)
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
		if ev.ID != 0 || ev.Type != events.EventRunProgress || p.RecordsFetched != 100 || p.RunID != 7 {
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
