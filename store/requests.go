package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/tidemark/tidemark"
)

// SyncRequest is a fetch asked for and not yet done (table sync_requests):
// what an operator, a probe or a busy resource's follow-up asked, kept in
// Postgres because Redis may lose the task that carries it.
type SyncRequest struct {
	ID             int64            `gorm:"column:id;primaryKey" json:"id"`
	Source         string           `gorm:"column:source" json:"source"`
	Resource       string           `gorm:"column:resource" json:"resource"`
	Mode           tidemark.RunKind `gorm:"column:mode" json:"mode"`
	Trigger        string           `gorm:"column:trigger" json:"trigger"`
	ConfirmDeletes bool             `gorm:"column:confirm_deletes" json:"confirm_deletes"`
	Resume         bool             `gorm:"column:resume" json:"resume"`
	RequestedAt    time.Time        `gorm:"column:requested_at" json:"requested_at"`
	DoneAt         *time.Time       `gorm:"column:done_at" json:"done_at,omitempty"`
	RunID          *int64           `gorm:"column:run_id" json:"run_id,omitempty"`
}

// TableName maps SyncRequest to sync_requests.
func (SyncRequest) TableName() string { return "sync_requests" }

// Request records that a fetch of a resource is asked for and returns the
// request's id. One request per resource, mode and confirmation is
// outstanding at a time: asking again returns it (resume sticks once asked).
func (s *Store) Request(ctx context.Context, r SyncRequest) (int64, error) {
	var id int64
	err := s.db.WithContext(ctx).Raw(`
		INSERT INTO sync_requests AS q (source, resource, mode, trigger, confirm_deletes, resume)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (source, resource, mode, confirm_deletes) WHERE done_at IS NULL
		DO UPDATE SET resume = q.resume OR EXCLUDED.resume
		RETURNING id`, r.Source, r.Resource, r.Mode, r.Trigger, r.ConfirmDeletes, r.Resume).Scan(&id).Error
	if err != nil {
		return 0, fmt.Errorf("request a %s fetch of %s/%s: %w", r.Mode, r.Source, r.Resource, err)
	}
	return id, nil
}

// OutstandingRequests lists the requests no successful fetch has covered.
func (s *Store) OutstandingRequests(ctx context.Context) ([]SyncRequest, error) {
	var out []SyncRequest
	if err := s.db.WithContext(ctx).Where("done_at IS NULL").Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("outstanding sync requests: %w", err)
	}
	return out, nil
}

// coverRequests marks done, in a successful fetch run's transaction, the
// requests it satisfied: made before it started, of its mode or a lesser
// one (a full read covers a delta), and asking to confirm deletions only if
// it did.
func coverRequests(tx *gorm.DB, run Run, confirmed bool) error {
	return tx.Exec(`UPDATE sync_requests SET done_at = now(), run_id = ?
		WHERE source = ? AND resource = ? AND done_at IS NULL AND requested_at <= ?
		AND (mode = 'delta' OR ? = 'full') AND (NOT confirm_deletes OR ?)`,
		run.ID, run.Source, run.Resource, run.StartedAt, run.Kind, confirmed).Error
}

// PruneRequests deletes requests done more than a day ago.
func (s *Store) PruneRequests(ctx context.Context) (int64, error) {
	res := s.db.WithContext(ctx).Exec(`DELETE FROM sync_requests WHERE done_at < now() - interval '1 day'`)
	if res.Error != nil {
		return 0, fmt.Errorf("prune sync requests: %w", res.Error)
	}
	return res.RowsAffected, nil
}
