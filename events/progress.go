package events

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/store"
)

// ProgressChannelPrefix starts the Redis pub/sub channel of run.progress
// events; the installation completes it (ProgressChannel). They are
// ephemeral: published straight to Redis, never written to the outbox, so
// they cost no writes per page and are not replayed on Last-Event-ID (a
// reconnecting client gets the next one within a second).
const ProgressChannelPrefix = "tidemark:progress:"

// ProgressChannel is the progress channel of an installation (see
// Installation).
func ProgressChannel(installation string) string { return ProgressChannelPrefix + installation }

// Installation names this installation among those that share its Redis
// server: the id its Postgres database was given when it was set up
// (store.InstallationID), and its Redis DB number. Redis pub/sub ignores
// DB numbers, so two installations on one Redis server would otherwise hear
// each other's progress. The database id is what makes an installation (its
// data and its runs), and it holds across Postgres failovers and restarts;
// the DB number keeps apart two installations whose databases were cloned
// from one dump (the same id) and that must use different DB numbers anyway,
// since asynq's queues live there.
func Installation(ctx context.Context, st *store.Store, rdb redis.UniversalClient) (string, error) {
	id, err := st.InstallationID(ctx)
	if err != nil {
		return "", err
	}
	db := 0
	if c, ok := rdb.(*redis.Client); ok { // a cluster has DB 0 only
		db = c.Options().DB
	}
	return fmt.Sprintf("%s:db%d", id, db), nil
}

// Progress is a running fetch's progress so far.
type Progress struct {
	RunID          int64            `json:"run_id"`
	Source         string           `json:"source"`
	Resource       string           `json:"resource"`
	Kind           tidemark.RunKind `json:"kind"`
	Pages          int              `json:"pages"`
	RecordsFetched int64            `json:"records_fetched"`
	Created        int64            `json:"created"`
	Updated        int64            `json:"updated"`
	At             time.Time        `json:"at"`
}

// Event is p as an event without an outbox id (ID 0: not resumable).
func (p Progress) Event() Event {
	fields := struct {
		Event tidemark.EventType `json:"event"`
		Progress
	}{tidemark.EventRunProgress, p}
	data, _ := json.Marshal(fields)
	return Event{Type: tidemark.EventRunProgress, Source: p.Source, Resource: p.Resource, Data: data}
}

// Publisher publishes the progress of an installation's runs on its own
// channel. It learns the installation at its first publish (a worker starts
// without waiting on Postgres).
type Publisher struct {
	st  *store.Store
	rdb redis.UniversalClient

	mu           sync.Mutex
	installation string
}

// NewPublisher returns the progress publisher of the installation of st and
// rdb.
func NewPublisher(st *store.Store, rdb redis.UniversalClient) *Publisher {
	return &Publisher{st: st, rdb: rdb}
}

// progressMessage is a progress event on the wire: the installation it
// belongs to, so that a hub drops what is not its own.
type progressMessage struct {
	Installation string `json:"installation"`
	Progress
}

// Publish sends p now. Progress is best effort: a failed publish is
// returned but changes nothing else.
func (pub *Publisher) Publish(ctx context.Context, p Progress) error {
	pub.mu.Lock()
	inst := pub.installation
	pub.mu.Unlock()
	if inst == "" {
		var err error
		if inst, err = Installation(ctx, pub.st, pub.rdb); err != nil {
			return fmt.Errorf("publish progress of run %d: %w", p.RunID, err)
		}
		pub.mu.Lock()
		pub.installation = inst
		pub.mu.Unlock()
	}
	if p.At.IsZero() {
		p.At = time.Now().UTC()
	}
	body, err := json.Marshal(progressMessage{Installation: inst, Progress: p})
	if err != nil {
		return fmt.Errorf("progress of run %d: %w", p.RunID, err)
	}
	if err := pub.rdb.Publish(ctx, ProgressChannel(inst), body).Err(); err != nil {
		return fmt.Errorf("publish progress of run %d: %w", p.RunID, err)
	}
	return nil
}

// Throttle publishes progress at most once per interval per run.
type Throttle struct {
	pub      *Publisher
	interval time.Duration
	mu       sync.Mutex
	last     time.Time
}

// NewThrottle returns a publisher of one run's progress, at most once per
// interval (default 1s).
func NewThrottle(pub *Publisher, interval time.Duration) *Throttle {
	if interval <= 0 {
		interval = time.Second
	}
	return &Throttle{pub: pub, interval: interval}
}

// Publish sends p unless one was sent less than the interval ago.
func (t *Throttle) Publish(ctx context.Context, p Progress) error {
	t.mu.Lock()
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < t.interval {
		t.mu.Unlock()
		return nil
	}
	t.last = now
	t.mu.Unlock()
	return t.pub.Publish(ctx, p)
}

// parseProgress reads a published progress message of installation; a
// message of another installation is an error.
func parseProgress(payload, installation string) (Event, error) {
	var m progressMessage
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		return Event{}, fmt.Errorf("progress message: %w", err)
	}
	if m.Installation != installation {
		return Event{}, fmt.Errorf("progress message of installation %q, not this one (%q)", m.Installation, installation)
	}
	return m.Progress.Event(), nil
}
