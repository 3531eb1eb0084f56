package events

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/store"
)

// HubConfig tunes a Hub.
type HubConfig struct {
	// Channel is the Redis pub/sub channel that signals new events. Default Channel.
	Channel string
	// PollInterval is how often the hub reads the outbox without a signal
	// (pub/sub is fire-and-forget). Default HubPollIntervalDefault (2s).
	PollInterval time.Duration
	// Buffer is how many events a subscriber may fall behind before it is
	// dropped (it then resumes from the outbox by id). Default
	// HubBufferDefault (1024).
	Buffer int
}

// HubConfig's defaults, filled in by NewHub.
const (
	// HubPollIntervalDefault is HubConfig.PollInterval's default.
	HubPollIntervalDefault = 2 * time.Second
	// HubBufferDefault is HubConfig.Buffer's default.
	HubBufferDefault = 1024
)

// Hub fans events out to this process's subscribers. A pub/sub message only
// wakes it: it reads the events themselves from the outbox, after the last
// id it delivered, so subscribers get them in id (= commit) order, each once.
type Hub struct {
	cfg   HubConfig
	store *store.Store
	rdb   redis.UniversalClient
	log   *slog.Logger

	ready chan struct{}
	mu    sync.Mutex
	pos   int64
	subs  map[*Subscription]struct{}
}

// NewHub returns a hub reading st's outbox, woken through rdb.
func NewHub(cfg HubConfig, st *store.Store, rdb redis.UniversalClient, log *slog.Logger) *Hub {
	cfg.Channel = cmp.Or(cfg.Channel, Channel)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, HubPollIntervalDefault)
	cfg.Buffer = cmp.Or(cfg.Buffer, HubBufferDefault)
	return &Hub{cfg: cfg, store: st, rdb: rdb, log: log, ready: make(chan struct{}), subs: map[*Subscription]struct{}{}}
}

// Subscription receives the events matching its filter on C, from the
// moment it was made. C is closed when the subscription is closed or fell
// too far behind (then Lagged is true).
type Subscription struct {
	C      <-chan Event
	c      chan Event
	filter Filter
	hub    *Hub
	lagged bool
	closed bool
}

// Lagged reports whether the hub dropped the subscription for not keeping up.
func (s *Subscription) Lagged() bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.lagged
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.drop(s)
}

func (h *Hub) drop(s *Subscription) {
	if s.closed {
		return
	}
	s.closed = true
	delete(h.subs, s)
	close(s.c)
}

// Subscribe starts a subscription. It waits until the hub runs (ctx bounds
// the wait), so that every event committed after it returns is delivered.
func (h *Hub) Subscribe(ctx context.Context, f Filter) (*Subscription, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("event hub not running: %w", ctx.Err())
	}
	c := make(chan Event, h.cfg.Buffer)
	s := &Subscription{C: c, c: c, filter: f, hub: h}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s, nil
}

// Run delivers events until ctx is done.
func (h *Hub) Run(ctx context.Context) error {
	pos, err := h.store.LastOutboxID(ctx)
	if err != nil {
		return fmt.Errorf("event hub: %w", err)
	}
	h.pos = pos
	installation, err := Installation(ctx, h.store, h.rdb)
	if err != nil {
		return fmt.Errorf("event hub: %w", err)
	}
	progress := ProgressChannel(installation)
	ps := h.rdb.Subscribe(ctx, h.cfg.Channel, progress)
	defer ps.Close()
	close(h.ready)
	defer func() {
		h.mu.Lock()
		for s := range h.subs {
			h.drop(s)
		}
		h.mu.Unlock()
	}()
	msgs := ps.Channel()
	tick := time.NewTicker(h.cfg.PollInterval)
	defer tick.Stop()
	for {
		if err := h.catchUp(ctx); err != nil && ctx.Err() == nil {
			h.log.Error("event hub", "error", err)
		}
	wait:
		select {
		case <-ctx.Done():
			return nil
		case msg := <-msgs:
			if msg != nil && msg.Channel == progress {
				// Ephemeral: delivered as is, no outbox read. Only this
				// installation's: another's on the same Redis server
				// would paint its runs on our rows.
				if ev, err := parseProgress(msg.Payload, installation); err == nil {
					h.deliver(ev)
				} else {
					h.log.Debug("event hub: progress message dropped", "error", err)
				}
				goto wait
			}
		case <-tick.C:
		}
	}
}

func (h *Hub) catchUp(ctx context.Context) error {
	for {
		rows, err := h.store.OutboxAfter(ctx, store.OutboxFilter{AfterID: h.pos, Limit: 500})
		if err != nil {
			return err
		}
		for _, row := range rows {
			ev, err := FromOutbox(row)
			if err != nil {
				h.log.Error("event hub: skipping event", "id", row.ID, "error", err)
			} else {
				h.deliver(ev)
			}
			h.pos = row.ID
		}
		if len(rows) < 500 {
			return nil
		}
	}
}

func (h *Hub) deliver(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.filter.Match(ev) {
			continue
		}
		select {
		case s.c <- ev:
		default:
			s.lagged = true
			h.drop(s)
		}
	}
}
