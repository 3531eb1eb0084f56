package events

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ProgressChannel is the Redis pub/sub channel of run.progress events. They
// are ephemeral: published straight to Redis, never written to the outbox,
// so they cost no writes per page and are not replayed on Last-Event-ID (a
// reconnecting client gets the next one within a second).
const ProgressChannel = "tidemark:progress"

// EventRunProgress is the type of progress events.
const EventRunProgress = "run.progress"

// Progress is a running fetch's progress so far.
type Progress struct {
	RunID          int64     `json:"run_id"`
	Source         string    `json:"source"`
	Resource       string    `json:"resource"`
	Kind           string    `json:"kind"`
	Pages          int       `json:"pages"`
	RecordsFetched int64     `json:"records_fetched"`
	Created        int64     `json:"created"`
	Updated        int64     `json:"updated"`
	At             time.Time `json:"at"`
}

// Event is p as an event without an outbox id (ID 0: not resumable).
func (p Progress) Event() Event {
	fields := struct {
		Event string `json:"event"`
		Progress
	}{EventRunProgress, p}
	data, _ := json.Marshal(fields)
	return Event{Type: EventRunProgress, Source: p.Source, Resource: p.Resource, Data: data}
}

// Throttle publishes progress at most once per interval per run.
type Throttle struct {
	rdb      redis.UniversalClient
	interval time.Duration
	mu       sync.Mutex
	last     time.Time
}

// NewThrottle returns a publisher of one run's progress, at most once per
// interval (default 1s).
func NewThrottle(rdb redis.UniversalClient, interval time.Duration) *Throttle {
	if interval <= 0 {
		interval = time.Second
	}
	return &Throttle{rdb: rdb, interval: interval}
}

// Publish sends p unless one was sent less than the interval ago. Progress
// is best effort: a failed publish is returned but changes nothing else.
func (t *Throttle) Publish(ctx context.Context, p Progress) error {
	t.mu.Lock()
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < t.interval {
		t.mu.Unlock()
		return nil
	}
	t.last = now
	t.mu.Unlock()
	if p.At.IsZero() {
		p.At = now.UTC()
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("progress of run %d: %w", p.RunID, err)
	}
	if err := t.rdb.Publish(ctx, ProgressChannel, body).Err(); err != nil {
		return fmt.Errorf("publish progress of run %d: %w", p.RunID, err)
	}
	return nil
}

// parseProgress reads a published progress message.
func parseProgress(payload string) (Event, error) {
	var p Progress
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		return Event{}, fmt.Errorf("progress message: %w", err)
	}
	return p.Event(), nil
}
