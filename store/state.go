package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// State is a resource's sync memory (table sync_state).
type State struct {
	Source       string `gorm:"column:source;primaryKey" json:"source"`
	Resource     string `gorm:"column:resource;primaryKey" json:"resource"`
	ETag         string `gorm:"column:etag" json:"etag"`
	LastModified string `gorm:"column:last_modified" json:"last_modified"`
	ProbeHash    string `gorm:"column:probe_hash" json:"probe_hash"`
	Watermark    string `gorm:"column:watermark" json:"watermark"`
	// Checkpoint is where an interrupted delta resumes; FullCheckpoint an
	// interrupted full read. Each mode keeps its own, so that a delta run
	// between a full read and its retry does not throw the full read away.
	Checkpoint     json.RawMessage `gorm:"column:checkpoint;type:jsonb" json:"checkpoint,omitempty"`
	FullCheckpoint json.RawMessage `gorm:"column:full_checkpoint;type:jsonb" json:"full_checkpoint,omitempty"`
	// Basis is what the watermark and the stored ids were made under.
	Basis               json.RawMessage `gorm:"column:basis;type:jsonb" json:"basis,omitempty"`
	LastSuccessAt       *time.Time      `gorm:"column:last_success_at" json:"last_success_at"`
	LastChangeAt        *time.Time      `gorm:"column:last_change_at" json:"last_change_at"`
	LastFullSyncAt      *time.Time      `gorm:"column:last_full_sync_at" json:"last_full_sync_at"`
	NextProbeAt         *time.Time      `gorm:"column:next_probe_at" json:"next_probe_at"`
	ProbeIntervalMS     int64           `gorm:"column:probe_interval_ms" json:"probe_interval_ms"`
	Paused              bool            `gorm:"column:paused" json:"paused"`
	ConsecutiveFailures int             `gorm:"column:consecutive_failures" json:"consecutive_failures"`
	ProbesTotal         int64           `gorm:"column:probes_total" json:"probes_total"`
	ProbesNotModified   int64           `gorm:"column:probes_not_modified" json:"probes_not_modified"`
	CandidateKind       string          `gorm:"column:candidate_kind" json:"candidate_kind,omitempty"`
	CandidateValidator  string          `gorm:"column:candidate_validator" json:"candidate_validator,omitempty"`
	CandidateAt         *time.Time      `gorm:"column:candidate_at" json:"candidate_at,omitempty"`
	HeadUnsupported     bool            `gorm:"column:head_unsupported" json:"head_unsupported"`
	InSyncAt            *time.Time      `gorm:"column:in_sync_at" json:"in_sync_at"`
	LastDrift           *int64          `gorm:"column:last_drift" json:"last_drift"`
	Stale               bool            `gorm:"column:stale" json:"stale"`
	StaleSince          *time.Time      `gorm:"column:stale_since" json:"stale_since,omitempty"`
	FailureAlerted      bool            `gorm:"column:failure_alerted" json:"failure_alerted"`
	// Quarantined counts the records set aside (record_quarantine).
	Quarantined int64 `gorm:"column:quarantined" json:"quarantined"`
	// DeletesHeld counts deletions waiting for the next full read to agree;
	// DeletesHeldMass says the max_delete_fraction brake held them.
	DeletesHeld     int64 `gorm:"column:deletes_held" json:"deletes_held"`
	DeletesHeldMass bool  `gorm:"column:deletes_held_mass" json:"deletes_held_mass"`
	// ResumedAt is when the resource was last resumed (SetPaused).
	ResumedAt *time.Time `gorm:"column:resumed_at" json:"resumed_at,omitempty"`
	// CreatedAt is when the resource was first configured: a resource
	// never synced counts its lag from then (Freshness).
	CreatedAt time.Time `gorm:"column:created_at" json:"created_at"`
	UpdatedAt time.Time `gorm:"column:updated_at" json:"updated_at"`
}

// Validator kinds, one per probe strategy that keeps one.
const (
	ValidatorETag         = "etag"
	ValidatorLastModified = "last_modified"
	ValidatorHash         = "hash"
)

// ValidatorKind is the kind of validator a probe strategy keeps: the
// strategies etag, last_modified and hash keep one of their own name; any
// other keeps none (""). The names are config's probe strategies.
func ValidatorKind(strategy string) string {
	switch strategy {
	case ValidatorETag, ValidatorLastModified, ValidatorHash:
		return strategy
	}
	return ""
}

// Confirmed is the validator of the given kind that the last successful
// fetch confirmed.
func (st State) Confirmed(kind string) string {
	switch kind {
	case ValidatorETag:
		return st.ETag
	case ValidatorLastModified:
		return st.LastModified
	case ValidatorHash:
		return st.ProbeHash
	}
	return ""
}

// ProbeInterval is the resource's current (adaptive) probe interval, or def
// when none is recorded yet.
func (st State) ProbeInterval(def time.Duration) time.Duration {
	if st.ProbeIntervalMS > 0 {
		return time.Duration(st.ProbeIntervalMS) * time.Millisecond
	}
	return def
}

// TableName maps State to sync_state.
func (State) TableName() string { return "sync_state" }

// ensureStatesBatch is how many state rows EnsureStates inserts a statement.
const ensureStatesBatch = 5000

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
	// In batches: Postgres takes at most 65,535 parameters a statement,
	// three a row here, and a config may have 100,000 resources.
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).
		Select("source", "resource", "updated_at").CreateInBatches(&rows, ensureStatesBatch).Error
	if err != nil {
		return fmt.Errorf("ensure sync state rows: %w", err)
	}
	return nil
}

// SetPaused pauses or resumes scheduling of the given resources. It reports
// how many state rows it changed, so a caller can say when nothing matched.
func (s *Store) SetPaused(ctx context.Context, source, resource string, paused bool) (int64, error) {
	q := s.db.WithContext(ctx).Model(&State{}).Where("source = ?", source)
	if resource != "" {
		q = q.Where("resource = ?", resource)
	}
	upd := map[string]any{"paused": paused, "updated_at": time.Now().UTC()}
	if !paused {
		// Resumed now (if it was paused): CheckFreshness gives it one
		// freshness target to come back in step before it is stale.
		upd["resumed_at"] = gorm.Expr("CASE WHEN paused THEN now() ELSE resumed_at END")
	}
	res := q.Updates(upd)
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

// ProbeOutcome is what a probe saw.
type ProbeOutcome struct {
	// Changed is true when the validator differs from the confirmed one.
	Changed bool
	// Kind and Validator are what the probe saw (recorded as the candidate
	// when Changed).
	Kind, Validator string
	// Interval is the probe interval from now on.
	Interval time.Duration
	// Known marks a change seen before, whose fetch is already on its way:
	// the candidate and its time stay as they are.
	Known bool
	// HeadUnsupported records that the upstream refused HEAD.
	HeadUnsupported bool
}

// RecordProbe updates a resource's state after a probe. An unchanged probe
// writes nothing else: no run row, no record. It marks the resource in sync
// now, since its data equals what the last successful fetch saw, and so
// ends its failure streak; a changed one leaves the streak as it is.
func (s *Store) RecordProbe(ctx context.Context, k Key, out ProbeOutcome) error {
	now := time.Now().UTC()
	upd := map[string]any{
		"probes_total":      gorm.Expr("probes_total + 1"),
		"probe_interval_ms": out.Interval.Milliseconds(),
		"next_probe_at":     now.Add(out.Interval),
		"updated_at":        now,
	}
	if out.HeadUnsupported {
		upd["head_unsupported"] = true
	}
	switch {
	case out.Known:
	case out.Changed:
		upd["candidate_kind"] = out.Kind
		upd["candidate_validator"] = out.Validator
		upd["candidate_at"] = now
	default:
		upd["probes_not_modified"] = gorm.Expr("probes_not_modified + 1")
		upd["in_sync_at"] = now
		// The copy is current: only this ends a failure streak, not any
		// probe that answered. A probe that saw a change leaves the streak
		// to its fetch, which has yet to bring the resource in step (a
		// fetch that dies every time must not look like one failure).
		upd["consecutive_failures"] = 0
	}
	err := s.db.WithContext(ctx).Model(&State{}).Where("source = ? AND resource = ?", k.Source, k.Resource).Updates(upd).Error
	if err == nil && !out.Changed && !out.Known {
		err = s.db.WithContext(ctx).Exec(`INSERT INTO probe_minutes AS m (source, resource, minute, unchanged, last_at)
			VALUES (?, ?, date_trunc('minute', ?::timestamptz), 1, ?)
			ON CONFLICT (source, resource, minute) DO UPDATE SET unchanged = m.unchanged + 1, last_at = greatest(m.last_at, EXCLUDED.last_at)`,
			k.Source, k.Resource, now, now).Error
	}
	if err != nil {
		return fmt.Errorf("record probe %s: %w", k, err)
	}
	return nil
}

// Reset says which pieces of a resource's sync state to forget.
type Reset struct {
	// Checkpoint: interrupted reads (delta and full) start over.
	Checkpoint bool
	// Watermark: the next delta reads everything (as a full read, without
	// deleting), and the watermark starts again from what it reads.
	Watermark bool
	// Validators: the next probe sees a change, and its fetch confirms the
	// validators anew (an HEAD the upstream now allows is tried again).
	Validators bool
}

// ResetState forgets pieces of a resource's sync state (tidemark reset). It
// reports ErrNotFound for a resource with no state row. A fetch running
// meanwhile writes its own checkpoint with its next page: reset a running
// resource after pausing it.
func (s *Store) ResetState(ctx context.Context, k Key, r Reset) error {
	upd := map[string]any{"updated_at": time.Now().UTC()}
	if r.Checkpoint {
		upd["checkpoint"] = nil
		upd["full_checkpoint"] = nil
	}
	if r.Watermark {
		upd["watermark"] = ""
		upd["basis"] = nil
	}
	if r.Validators {
		for _, c := range []string{"etag", "last_modified", "probe_hash", "candidate_kind", "candidate_validator"} {
			upd[c] = ""
		}
		upd["candidate_at"] = nil
		upd["head_unsupported"] = false
	}
	res := s.db.WithContext(ctx).Model(&State{}).Where("source = ? AND resource = ?", k.Source, k.Resource).Updates(upd)
	if res.Error != nil {
		return fmt.Errorf("reset %s: %w", k, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("reset %s: %w", k, ErrNotFound)
	}
	if err := s.resetPartitions(ctx, k, r); err != nil {
		return err
	}
	if r.Validators {
		if err := s.ForgetProbePages(ctx, k); err != nil {
			return err
		}
	}
	if r.Checkpoint {
		if _, err := s.CollectSeen(ctx); err != nil {
			return err
		}
	}
	return nil
}
