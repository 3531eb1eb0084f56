package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/tidemark/tidemark"
)

// OutboxEvent is one committed change event (table outbox).
type OutboxEvent struct {
	ID          int64              `gorm:"column:id;primaryKey" json:"id"`
	Event       tidemark.EventType `gorm:"column:event" json:"event"`
	Source      string             `gorm:"column:source" json:"source"`
	Resource    string             `gorm:"column:resource" json:"resource"`
	RunID       *int64             `gorm:"column:run_id" json:"run_id"`
	Payload     json.RawMessage    `gorm:"column:payload;type:jsonb" json:"payload"`
	CreatedAt   time.Time          `gorm:"column:created_at" json:"created_at"`
	PublishedAt *time.Time         `gorm:"column:published_at" json:"published_at"`
}

// TableName maps OutboxEvent to outbox.
func (OutboxEvent) TableName() string { return "outbox" }

// OutboxFilter selects events for a replay.
type OutboxFilter struct {
	// AfterID returns only events with a larger id.
	AfterID int64
	// Source and Resource, when set, keep only that source's (resource's) events.
	Source, Resource string
	// Limit caps the rows returned. Default 500.
	Limit int
}

// OutboxAfter lists events after f.AfterID in id order, published or not.
// Outbox ids are handed out in commit order (migration 00002), so reading
// "after the last id I saw" never skips an event that commits later.
func (s *Store) OutboxAfter(ctx context.Context, f OutboxFilter) ([]OutboxEvent, error) {
	q := s.db.WithContext(ctx).Where("id > ?", f.AfterID)
	if f.Source != "" {
		q = q.Where("source = ?", f.Source)
	}
	if f.Resource != "" {
		q = q.Where("resource = ?", f.Resource)
	}
	var out []OutboxEvent
	if err := q.Order("id").Limit(cmpOr(f.Limit, 500)).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list outbox after %d: %w", f.AfterID, err)
	}
	return out, nil
}

// LastOutboxID is the newest event's id, 0 when there is none.
func (s *Store) LastOutboxID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.db.WithContext(ctx).Raw(`SELECT coalesce(max(id), 0) FROM outbox`).Scan(&id).Error; err != nil {
		return 0, fmt.Errorf("last outbox id: %w", err)
	}
	return id, nil
}

// ClaimOutbox hands up to limit unpublished events, oldest first, to publish
// and marks them published when it returns nil, all in one transaction. The
// rows stay locked meanwhile and other claimers skip them (FOR UPDATE SKIP
// LOCKED), so any number of relays can run; if publish fails or the process
// dies, the rows stay unpublished and the next claim hands them out again:
// publication is at-least-once, and consumers deduplicate by id. It returns
// how many events were published.
func (s *Store) ClaimOutbox(ctx context.Context, limit int, publish func([]OutboxEvent) error) (int, error) {
	var n int
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var evs []OutboxEvent
		// FOR UPDATE SKIP LOCKED: a second relay takes the next rows instead
		// of waiting for (and then re-publishing) these.
		if err := tx.Raw(`SELECT * FROM outbox WHERE published_at IS NULL ORDER BY id
			LIMIT ? FOR UPDATE SKIP LOCKED`, cmpOr(limit, 100)).Scan(&evs).Error; err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		if len(evs) == 0 {
			return nil
		}
		if err := publish(evs); err != nil {
			return err
		}
		ids := make([]int64, len(evs))
		for i, e := range evs {
			ids[i] = e.ID
		}
		if err := tx.Exec(`UPDATE outbox SET published_at = now() WHERE id IN ?`, ids).Error; err != nil {
			return fmt.Errorf("mark published: %w", err)
		}
		n = len(evs)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("publish outbox: %w", err)
	}
	return n, nil
}

// UnpublishedOutbox counts events not yet published.
func (s *Store) UnpublishedOutbox(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.WithContext(ctx).Raw(`SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("count unpublished outbox: %w", err)
	}
	return n, nil
}
