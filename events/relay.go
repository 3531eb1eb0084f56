package events

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/internal/failpoint"
	"github.com/tidemark/tidemark/store"
)

// Sink receives every event before it is published, for example to enqueue
// webhook deliveries. It must be idempotent per event id: after a crash the
// relay hands the same event again.
type Sink func(ctx context.Context, ev Event) error

// RelayConfig tunes a Relay.
type RelayConfig struct {
	// Listen: the relay wakes at each outbox NOTIFY (store.Listen), on a
	// Postgres connection of its own. Default false: polling only.
	Listen bool
	// Channel is the Redis pub/sub channel. Default Channel.
	Channel string
	// PollInterval is how often the relay looks for events without a
	// notification (a missed NOTIFY, a LISTEN connection being re-made).
	// Default 1s.
	PollInterval time.Duration
	// BatchSize is how many events one claim takes. Default 100.
	BatchSize int
	// Sink, when set, gets every event before it is published.
	Sink Sink
}

// Relay publishes committed outbox events. Any number may run at once: each
// claims rows the others are not holding.
type Relay struct {
	cfg   RelayConfig
	store *store.Store
	rdb   redis.UniversalClient
	log   *slog.Logger
}

// NewRelay returns a relay publishing st's outbox on rdb.
func NewRelay(cfg RelayConfig, st *store.Store, rdb redis.UniversalClient, log *slog.Logger) *Relay {
	cfg.Channel = cmp.Or(cfg.Channel, Channel)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, time.Second)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 100)
	return &Relay{cfg: cfg, store: st, rdb: rdb, log: log}
}

// Run publishes events until ctx is done.
func (r *Relay) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	if r.cfg.Listen {
		go r.listen(ctx, wake)
	}
	tick := time.NewTicker(r.cfg.PollInterval)
	defer tick.Stop()
	for {
		if _, err := r.Drain(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("outbox relay", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// Drain publishes every event committed so far and reports how many.
func (r *Relay) Drain(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := r.store.ClaimOutbox(ctx, r.cfg.BatchSize, func(rows []store.OutboxEvent) error {
			return r.publish(ctx, rows)
		})
		total += n
		if err != nil || n < r.cfg.BatchSize {
			return total, err
		}
	}
}

func (r *Relay) publish(ctx context.Context, rows []store.OutboxEvent) error {
	// Committed, not yet published: a crash here must lose no event.
	failpoint.Hit(failpoint.AfterCommitBeforePublish)
	for _, row := range rows {
		ev, err := FromOutbox(row)
		if err != nil {
			return err
		}
		if r.cfg.Sink != nil {
			if err := r.cfg.Sink(ctx, ev); err != nil {
				return fmt.Errorf("event %d: %w", ev.ID, err)
			}
		}
		if err := r.rdb.Publish(ctx, r.cfg.Channel, []byte(ev.Data)).Err(); err != nil {
			return fmt.Errorf("publish event %d: %w", ev.ID, err)
		}
	}
	return nil
}

// listen wakes the relay on every NOTIFY, reconnecting with backoff.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.store.Listen(ctx, store.OutboxChannel, func() { signal(wake) })
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("outbox listen connection lost; polling meanwhile", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// signal wakes the relay; a wake already pending is enough.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
