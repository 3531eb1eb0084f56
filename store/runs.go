package store

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/tidemark/tidemark"
)

// Run statuses.
const (
	StatusRunning     = "running"
	StatusSucceeded   = "succeeded"
	StatusNotModified = "not_modified"
	StatusFailed      = "failed" // will be retried
	StatusDead        = "dead"   // will not be retried
	// StatusInterrupted is a run that stopped without failing: handed back
	// to its queue (the source's rate limit, a 429), or interrupted by a
	// graceful shutdown. Its task resumes from the checkpoint; it does not
	// count towards the failure streak and raises no alert.
	StatusInterrupted = "interrupted"
)

// Run is one execution of a probe or fetch task (table sync_runs).
type Run struct {
	ID               int64            `gorm:"column:id;primaryKey" json:"id"`
	Source           string           `gorm:"column:source" json:"source"`
	Resource         string           `gorm:"column:resource" json:"resource"`
	Kind             tidemark.RunKind `gorm:"column:kind" json:"kind"`
	Trigger          string           `gorm:"column:trigger" json:"trigger"`
	TaskID           string           `gorm:"column:task_id" json:"task_id"`
	Attempt          int              `gorm:"column:attempt" json:"attempt"`
	Status           string           `gorm:"column:status" json:"status"`
	StartedAt        time.Time        `gorm:"column:started_at" json:"started_at"`
	FinishedAt       *time.Time       `gorm:"column:finished_at" json:"finished_at"`
	HTTPRequests     int              `gorm:"column:http_requests" json:"http_requests"`
	Pages            int              `gorm:"column:pages" json:"pages"`
	RecordsFetched   int64            `gorm:"column:records_fetched" json:"records_fetched"`
	RecordsCreated   int64            `gorm:"column:records_created" json:"records_created"`
	RecordsUpdated   int64            `gorm:"column:records_updated" json:"records_updated"`
	RecordsDeleted   int64            `gorm:"column:records_deleted" json:"records_deleted"`
	RecordsUnchanged int64            `gorm:"column:records_unchanged" json:"records_unchanged"`
	Drift            *int64           `gorm:"column:drift" json:"drift"`
	VersionHash      string           `gorm:"column:version_hash" json:"version_hash"`
	Error            string           `gorm:"column:error" json:"error"`
	// RecordsQuarantined counts the records set aside (record_quarantine);
	// DeletesHeld the deletions a full read left for the next to agree on.
	RecordsQuarantined int64 `gorm:"column:records_quarantined" json:"records_quarantined"`
	DeletesHeld        int64 `gorm:"column:deletes_held" json:"deletes_held"`
	// Note says what is worth knowing and not an error: a read restarted
	// from its first page, deletions held, cursors in the future.
	Note string `gorm:"column:note" json:"note,omitempty"`
	// ReadStartedAt is the upstream's time (its Date header) when the read
	// began.
	ReadStartedAt *time.Time `gorm:"column:read_started_at" json:"read_started_at,omitempty"`
	// TakenOverBy is the run that took this one over when its worker was
	// gone.
	TakenOverBy *int64 `gorm:"column:taken_over_by" json:"taken_over_by,omitempty"`
}

// TableName maps Run to sync_runs.
func (Run) TableName() string { return "sync_runs" }

// Duration is how long the run took (so far, while running).
func (r Run) Duration() time.Duration {
	if r.FinishedAt == nil {
		return time.Since(r.StartedAt)
	}
	return r.FinishedAt.Sub(r.StartedAt)
}

// StartRun records a run as running and fills in its ID.
func (s *Store) StartRun(ctx context.Context, r *Run) error {
	r.Status = StatusRunning
	if r.StartedAt.IsZero() {
		r.StartedAt = time.Now().UTC()
	}
	if err := s.db.WithContext(ctx).Create(r).Error; err != nil {
		return fmt.Errorf("start run %s/%s: %w", r.Source, r.Resource, err)
	}
	return nil
}

// RunOutcome is how a run ended.
type RunOutcome struct {
	Status      string // succeeded | not_modified | failed | dead | interrupted
	Error       string
	Note        string
	VersionHash string
	Drift       *int64
	// HTTPRequests made since the last applied page (not yet counted).
	HTTPRequests int
	// Watermark, when set on a success, is the resource's new watermark.
	// ForgetWatermark clears the stored one when Watermark is empty (it was
	// made under another delta field or format).
	Watermark       string
	ForgetWatermark bool
	// Basis, when set on a success, is what the watermark and the ids were
	// made under (sync_state.basis).
	Basis []byte
	// ReadStartedAt is the upstream's time when the read began.
	ReadStartedAt *time.Time
	// ConfirmedDeletes: the run's deletions were confirmed (--confirm-deletes):
	// a success covers requests that asked for it (sync_requests).
	ConfirmedDeletes bool
}

// FinishRun closes a run and updates the resource's sync state in one
// transaction: a fetch's success clears the checkpoint of its kind and the
// failure streak (a probe's, which only saw a change, does not); a failure
// keeps the checkpoint so the retry resumes from it. Only a run still
// running can be finished: one that another took over from
// (AbandonRunning) gets ErrSuperseded, so its late outcome never overwrites
// what the run that took over recorded.
func (s *Store) FinishRun(ctx context.Context, runID int64, out RunOutcome) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var run Run
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).First(&run, runID).Error; err != nil {
			return fmt.Errorf("finish run %d: %w", runID, notFound(err))
		}
		if run.Status != StatusRunning {
			return fmt.Errorf("finish run %d: %w", runID, ErrSuperseded)
		}
		now := time.Now().UTC()
		if err := tx.Model(&Run{}).Where("id = ?", runID).Updates(map[string]any{
			"status":          out.Status,
			"error":           out.Error,
			"note":            out.Note,
			"version_hash":    out.VersionHash,
			"drift":           out.Drift,
			"finished_at":     now,
			"http_requests":   gorm.Expr("http_requests + ?", out.HTTPRequests),
			"read_started_at": out.ReadStartedAt,
		}).Error; err != nil {
			return fmt.Errorf("finish run %d: %w", runID, err)
		}
		run.ReadStartedAt = out.ReadStartedAt
		state := tx.Model(&State{}).Where("source = ? AND resource = ?", run.Source, run.Resource)
		var err error
		switch out.Status {
		case StatusSucceeded:
			upd := map[string]any{
				"last_success_at":      now,
				"consecutive_failures": 0,
				"updated_at":           now,
				// The data is known in step as of the run's start at least.
				"in_sync_at": gorm.Expr("greatest(in_sync_at, ?)", run.StartedAt),
			}
			if run.Kind == tidemark.RunProbe {
				// A probe's run row documents the change it saw; the
				// resource is in step only once the fetch succeeds, so
				// the failure streak stands until then.
				err = state.Updates(map[string]any{"updated_at": now}).Error
				break
			}
			if run.Kind == tidemark.RunFull {
				upd["full_checkpoint"] = nil
				upd["last_full_sync_at"] = now
				upd["last_drift"] = out.Drift
			} else {
				upd["checkpoint"] = nil
			}
			if out.Watermark != "" || out.ForgetWatermark {
				upd["watermark"] = out.Watermark
			}
			if out.Basis != nil {
				upd["basis"] = string(out.Basis)
			}
			if run.RecordsCreated+run.RecordsUpdated+run.RecordsDeleted > 0 {
				upd["last_change_at"] = now
			}
			if err = state.Updates(upd).Error; err != nil {
				break
			}
			if err = coverRequests(tx, run, out.ConfirmedDeletes); err != nil {
				break
			}
			err = promoteCandidate(tx, run)
		case StatusInterrupted:
			// Not a failure: the streak stands as it was.
		case StatusFailed, StatusDead:
			err = state.Updates(map[string]any{
				"consecutive_failures": gorm.Expr("consecutive_failures + 1"),
				"updated_at":           now,
			}).Error
		}
		if err != nil {
			return fmt.Errorf("finish run %d: update state: %w", runID, err)
		}
		return nil
	})
}

// Run returns one run by id.
func (s *Store) Run(ctx context.Context, id int64) (Run, error) {
	var r Run
	err := s.db.WithContext(ctx).First(&r, id).Error
	return r, notFound(err)
}

// RunFilter selects runs; zero fields do not filter.
type RunFilter struct {
	Source   string
	Resource string
	Status   string
	Kind     tidemark.RunKind
	BeforeID int64 // paging: runs with a smaller id
	Limit    int   // default 50, at most 1000
}

// Runs lists runs, newest first.
func (s *Store) Runs(ctx context.Context, f RunFilter) ([]Run, error) {
	q := s.db.WithContext(ctx).Model(&Run{}).Order("id DESC")
	if f.Source != "" {
		q = q.Where("source = ?", f.Source)
	}
	if f.Resource != "" {
		q = q.Where("resource = ?", f.Resource)
	}
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.Kind != "" {
		q = q.Where("kind = ?", f.Kind)
	}
	if f.BeforeID > 0 {
		q = q.Where("id < ?", f.BeforeID)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	var runs []Run
	if err := q.Limit(min(limit, 1000)).Find(&runs).Error; err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return runs, nil
}

// AbandonRunning closes the fetch runs of a resource still marked running,
// other than current: their worker is gone (it died, or stalled and lost
// its fetch lock). Only the holder of the resource's fetch lock may call
// it, so none of them can still be writing: their pages and final status
// are fenced by the status this sets. They end interrupted, not failed:
// current takes over from their checkpoint.
func (s *Store) AbandonRunning(ctx context.Context, k Key, current int64) error {
	err := s.db.WithContext(ctx).Model(&Run{}).
		Where("source = ? AND resource = ? AND status = ? AND kind IN ? AND id <> ?", k.Source, k.Resource, StatusRunning, []tidemark.RunKind{tidemark.RunDelta, tidemark.RunFull}, current).
		Updates(map[string]any{
			"status":        StatusInterrupted,
			"error":         fmt.Sprintf("abandoned: its worker stopped renewing the fetch lock (it died or stalled) without finishing; run %d took over from the last checkpoint", current),
			"finished_at":   time.Now().UTC(),
			"taken_over_by": current,
		}).Error
	if err != nil {
		return fmt.Errorf("close abandoned runs of %s: %w", k, err)
	}
	return nil
}

// TakenOver reports the run that took over a run of task taskID, if any:
// the task's work is done by another, and a later attempt of it (asynq
// recovering a dead worker's task) has nothing left to do.
func (s *Store) TakenOver(ctx context.Context, taskID string) (int64, bool, error) {
	var by []int64
	err := s.db.WithContext(ctx).Raw(`SELECT taken_over_by FROM sync_runs WHERE task_id = ? AND taken_over_by IS NOT NULL LIMIT 1`, taskID).Scan(&by).Error
	if err != nil {
		return 0, false, fmt.Errorf("runs of task %s: %w", taskID, err)
	}
	if len(by) == 0 {
		return 0, false, nil
	}
	return by[0], true, nil
}

// RunningFetch is a fetch run still marked running.
type RunningFetch struct {
	ID               int64
	Source, Resource string
	Kind             tidemark.RunKind
}

// RunningFetches lists the fetch runs marked running (the takeover check
// asks the fetch lock of each whether its worker is still there).
func (s *Store) RunningFetches(ctx context.Context) ([]RunningFetch, error) {
	var out []RunningFetch
	err := s.db.WithContext(ctx).Raw(`SELECT id, source, resource, kind FROM sync_runs
		WHERE status = 'running' AND kind IN ('delta', 'full') ORDER BY id`).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("running fetches: %w", err)
	}
	return out, nil
}

// promoteCandidate confirms the validator a probe saw before this fetch
// started: the fetch read data at least that new. A validator seen after the
// start waits for the follow-up fetch.
//
// A Last-Modified has one-second resolution, so a fetch that started in the
// same second as the last modification may have missed a change made later
// in that second, which If-Modified-Since would then never report. Such a
// candidate is dropped, not confirmed: the next probe sees the date as new
// again and its fetch, starting a second later, confirms it.
func promoteCandidate(tx *gorm.DB, run Run) error {
	var cand struct {
		Kind      tidemark.ValidatorKind
		Validator string
		At        *time.Time
	}
	if err := tx.Raw(`SELECT candidate_kind AS kind, candidate_validator AS validator, candidate_at AS at
		FROM sync_state WHERE source = ? AND resource = ? FOR UPDATE`, run.Source, run.Resource).Scan(&cand).Error; err != nil {
		return err
	}
	if cand.At == nil || cand.At.After(run.StartedAt) {
		return nil
	}
	// The Last-Modified is the upstream's clock: compare it with the
	// upstream's time when the read began, where known, so that a skewed
	// clock cannot make a racy date look safe.
	started, window := run.StartedAt, racyLocal
	if run.ReadStartedAt != nil {
		started, window = *run.ReadStartedAt, racyUpstream
	}
	column := map[tidemark.ValidatorKind]string{tidemark.ValidatorETag: "etag", tidemark.ValidatorLastModified: "last_modified", tidemark.ValidatorHash: "probe_hash"}[cand.Kind]
	if column == "" || (cand.Kind == tidemark.ValidatorLastModified && racyLastModified(cand.Validator, started, window)) {
		return tx.Exec(`UPDATE sync_state SET candidate_kind = '', candidate_validator = '', candidate_at = NULL
			WHERE source = ? AND resource = ?`, run.Source, run.Resource).Error
	}
	return tx.Exec(`UPDATE sync_state SET `+column+` = candidate_validator,
		candidate_kind = '', candidate_validator = '', candidate_at = NULL
		WHERE source = ? AND resource = ?`, run.Source, run.Resource).Error
}

// racyWindow is when a read's start is too close to a Last-Modified to
// trust that the read saw the modification: from ahead before the date to
// after past it.
type racyWindow struct{ ahead, after time.Duration }

var (
	// On tidemark's clock: the date's own second, and a few seconds of
	// skew either way (a date further ahead is a clock being ahead, not a
	// race: treating it as one would refetch until the clocks agree).
	racyLocal = racyWindow{ahead: 5 * time.Second, after: time.Second}
	// On the upstream's clock (the Date of the read's first response, one
	// second resolution, stamped as the page was answered): the date's own
	// second.
	racyUpstream = racyWindow{ahead: time.Second, after: time.Second}
)

// racyLastModified reports whether a fetch that started at started may have
// read the resource before a modification in the second of its
// Last-Modified: If-Modified-Since would then never report that change.
func racyLastModified(lastModified string, started time.Time, w racyWindow) bool {
	t, err := http.ParseTime(lastModified)
	if err != nil {
		return false
	}
	return started.Before(t.Add(w.after)) && started.After(t.Add(-w.ahead))
}
