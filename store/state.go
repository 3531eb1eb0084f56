package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// State is a resource's sync memory (table sync_state).
type State struct {
	Source              string          `gorm:"column:source;primaryKey" json:"source"`
	Resource            string          `gorm:"column:resource;primaryKey" json:"resource"`
	ETag                string          `gorm:"column:etag" json:"etag"`
	LastModified        string          `gorm:"column:last_modified" json:"last_modified"`
	ProbeHash           string          `gorm:"column:probe_hash" json:"probe_hash"`
	Watermark           string          `gorm:"column:watermark" json:"watermark"`
	Checkpoint          json.RawMessage `gorm:"column:checkpoint;type:jsonb" json:"checkpoint,omitempty"`
	LastSuccessAt       *time.Time      `gorm:"column:last_success_at" json:"last_success_at"`
	LastChangeAt        *time.Time      `gorm:"column:last_change_at" json:"last_change_at"`
	LastFullSyncAt      *time.Time      `gorm:"column:last_full_sync_at" json:"last_full_sync_at"`
	NextProbeAt         *time.Time      `gorm:"column:next_probe_at" json:"next_probe_at"`
	ProbeIntervalMS     int64           `gorm:"column:probe_interval_ms" json:"probe_interval_ms"`
	Paused              bool            `gorm:"column:paused" json:"paused"`
	ConsecutiveFailures int             `gorm:"column:consecutive_failures" json:"consecutive_failures"`
	ProbesTotal         int64           `gorm:"column:probes_total" json:"probes_total"`
	ProbesNotModified   int64           `gorm:"column:probes_not_modified" json:"probes_not_modified"`
	UpdatedAt           time.Time       `gorm:"column:updated_at" json:"updated_at"`
}

// TableName maps State to sync_state.
func (State) TableName() string { return "sync_state" }

// EnsureStates creates the state rows of resources that have none yet. Rows of
// resources no longer configured are left alone (their history stays).
func (s *Store) EnsureStates(ctx context.Context, keys []Key) error {
	if len(keys) == 0 {
		return nil
	}
	rows := make([]State, len(keys))
	now := time.Now().UTC()
	for i, k := range keys {
		rows[i] = State{Source: k.Source, Resource: k.Resource, UpdatedAt: now}
	}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).
		Select("source", "resource", "updated_at").Create(&rows).Error
	if err != nil {
		return fmt.Errorf("ensure sync state rows: %w", err)
	}
	return nil
}

// State returns the state of one resource.
func (s *Store) State(ctx context.Context, k Key) (State, error) {
	var st State
	err := s.db.WithContext(ctx).Where("source = ? AND resource = ?", k.Source, k.Resource).Take(&st).Error
	if err != nil {
		return st, fmt.Errorf("sync state %s: %w", k, notFound(err))
	}
	return st, nil
}

// States returns every resource's state, ordered by source and resource.
func (s *Store) States(ctx context.Context) ([]State, error) {
	var out []State
	if err := s.db.WithContext(ctx).Order("source, resource").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list sync state: %w", err)
	}
	return out, nil
}

// SetPaused pauses or resumes scheduling of the given resources. It reports
// how many state rows it changed, so a caller can say when nothing matched.
func (s *Store) SetPaused(ctx context.Context, source, resource string, paused bool) (int64, error) {
	q := s.db.WithContext(ctx).Model(&State{}).Where("source = ?", source)
	if resource != "" {
		q = q.Where("resource = ?", resource)
	}
	res := q.Updates(map[string]any{"paused": paused, "updated_at": time.Now().UTC()})
	if res.Error != nil {
		return 0, fmt.Errorf("set paused %s/%s: %w", source, resource, res.Error)
	}
	return res.RowsAffected, nil
}

// LastRuns returns the newest fetch run (delta or full) of every resource.
func (s *Store) LastRuns(ctx context.Context) (map[Key]Run, error) {
	var runs []Run
	err := s.db.WithContext(ctx).Raw(`
		SELECT DISTINCT ON (source, resource) *
		FROM sync_runs
		WHERE kind IN ('delta', 'full')
		ORDER BY source, resource, id DESC`).Scan(&runs).Error
	if err != nil {
		return nil, fmt.Errorf("last runs: %w", err)
	}
	out := make(map[Key]Run, len(runs))
	for _, r := range runs {
		out[Key{r.Source, r.Resource}] = r
	}
	return out, nil
}

// LiveRecords counts the present (not tombstoned) records of every resource.
func (s *Store) LiveRecords(ctx context.Context) (map[Key]int64, error) {
	var rows []struct {
		Source, Resource string
		N                int64
	}
	err := s.db.WithContext(ctx).Raw(`
		SELECT source, resource, count(*) AS n FROM records
		WHERE deleted_at IS NULL GROUP BY source, resource`).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("count records: %w", err)
	}
	out := make(map[Key]int64, len(rows))
	for _, r := range rows {
		out[Key{r.Source, r.Resource}] = r.N
	}
	return out, nil
}
