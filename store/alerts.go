package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Alert event types, written to the outbox like data.updated.
const (
	EventResourceStale     = "resource.stale"
	EventResourceRecovered = "resource.recovered"
	EventRunFailed         = "run.failed"
)

// Target is a resource's freshness target, for CheckFreshness.
type Target struct {
	Source    string        `json:"source"`
	Resource  string        `json:"resource"`
	Freshness time.Duration `json:"-"`
	// FreshnessMS is Freshness for the query; filled by CheckFreshness.
	FreshnessMS int64 `json:"freshness_ms"`
}

// Transition is an alert state change CheckFreshness or CheckFailures made
// (and wrote an event for).
type Transition struct {
	Event    string `gorm:"column:event"`
	Source   string `gorm:"column:source"`
	Resource string `gorm:"column:resource"`
	OutboxID int64  `gorm:"column:id"`
}

// CheckFreshness turns resources stale whose lag (now minus in_sync_at)
// exceeds their target, and fresh again when it no longer does, writing a
// resource.stale or resource.recovered event for each transition. The flag
// flip and the event are one statement: however many schedulers run it at
// once, each transition happens, and is announced, once (a concurrent
// UPDATE waits for the row lock, then re-checks "NOT stale" and skips).
// Paused resources and resources never in sync are left alone, and so is a
// resource resumed less than its target ago (its lag is what it built up
// while paused; its first probe after the resume catches up). Time is the
// database's clock, the same for every replica.
func (s *Store) CheckFreshness(ctx context.Context, targets []Target) ([]Transition, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	for i := range targets {
		targets[i].FreshnessMS = targets[i].Freshness.Milliseconds()
	}
	body, err := json.Marshal(targets)
	if err != nil {
		return nil, fmt.Errorf("check freshness: %w", err)
	}
	var out []Transition
	// One statement per direction: the CTE updates the flags and the
	// INSERT writes the events from what it returned, atomically.
	for _, q := range []string{`
		WITH t AS (SELECT * FROM jsonb_to_recordset(CAST(? AS jsonb)) AS t(source text, resource text, freshness_ms bigint)),
		flipped AS (
			UPDATE sync_state s SET stale = true, stale_since = now(), updated_at = now()
			FROM t
			WHERE s.source = t.source AND s.resource = t.resource AND NOT s.stale AND NOT s.paused
			  AND s.in_sync_at IS NOT NULL AND s.in_sync_at < now() - t.freshness_ms * interval '1 millisecond'
			  AND (s.resumed_at IS NULL OR s.resumed_at < now() - t.freshness_ms * interval '1 millisecond')
			RETURNING s.source, s.resource, s.in_sync_at, t.freshness_ms, s.consecutive_failures)
		INSERT INTO outbox (event, source, resource, payload)
		SELECT 'resource.stale', source, resource, jsonb_build_object(
			'source', source, 'resource', resource, 'in_sync_at', in_sync_at,
			'lag_seconds', round(extract(epoch FROM now() - in_sync_at)::numeric, 3),
			'freshness_seconds', freshness_ms / 1000.0,
			'consecutive_failures', consecutive_failures, 'at', now())
		FROM flipped ORDER BY source, resource
		RETURNING id, event, source, resource`, `
		WITH t AS (SELECT * FROM jsonb_to_recordset(CAST(? AS jsonb)) AS t(source text, resource text, freshness_ms bigint)),
		flipped AS (
			UPDATE sync_state s SET stale = false, updated_at = now()
			FROM t
			WHERE s.source = t.source AND s.resource = t.resource AND s.stale
			  AND s.in_sync_at IS NOT NULL AND s.in_sync_at >= now() - t.freshness_ms * interval '1 millisecond'
			RETURNING s.source, s.resource, s.in_sync_at, s.stale_since)
		INSERT INTO outbox (event, source, resource, payload)
		SELECT 'resource.recovered', source, resource, jsonb_build_object(
			'source', source, 'resource', resource, 'in_sync_at', in_sync_at,
			'stale_since', stale_since,
			'stale_seconds', round(extract(epoch FROM now() - stale_since)::numeric, 3), 'at', now())
		FROM flipped ORDER BY source, resource
		RETURNING id, event, source, resource`} {
		var rows []Transition
		if err := s.db.WithContext(ctx).Raw(q, string(body)).Scan(&rows).Error; err != nil {
			return out, fmt.Errorf("check freshness: %w", err)
		}
		out = append(out, rows...)
	}
	return out, nil
}

// CheckFailures writes one run.failed event, carrying the last run's error,
// for each resource whose failure streak reached threshold, once per streak
// (the same flag-flip-and-event statement as CheckFreshness); a success
// (consecutive_failures back to 0) re-arms it.
func (s *Store) CheckFailures(ctx context.Context, threshold int) ([]Transition, error) {
	if threshold <= 0 {
		return nil, fmt.Errorf("check failures: threshold %d: want at least 1", threshold)
	}
	db := s.db.WithContext(ctx)
	if err := db.Exec(`UPDATE sync_state SET failure_alerted = false WHERE failure_alerted AND consecutive_failures = 0`).Error; err != nil {
		return nil, fmt.Errorf("check failures: re-arm: %w", err)
	}
	var rows []Transition
	err := db.Raw(`
		WITH flipped AS (
			UPDATE sync_state s SET failure_alerted = true, updated_at = now()
			WHERE NOT s.failure_alerted AND s.consecutive_failures >= ?
			RETURNING s.source, s.resource, s.consecutive_failures),
		last AS (
			SELECT DISTINCT ON (r.source, r.resource) r.source, r.resource, r.id, r.kind, r.status, r.error, r.finished_at
			FROM sync_runs r JOIN flipped f ON f.source = r.source AND f.resource = r.resource
			WHERE r.status IN ('failed', 'dead')
			ORDER BY r.source, r.resource, r.id DESC)
		INSERT INTO outbox (event, source, resource, run_id, payload)
		SELECT 'run.failed', f.source, f.resource, l.id, jsonb_build_object(
			'source', f.source, 'resource', f.resource, 'consecutive_failures', f.consecutive_failures,
			'run_id', l.id, 'kind', l.kind, 'status', l.status, 'error', coalesce(l.error, ''),
			'failed_at', l.finished_at, 'at', now())
		FROM flipped f LEFT JOIN last l ON l.source = f.source AND l.resource = f.resource
		ORDER BY f.source, f.resource
		RETURNING id, event, source, resource`, threshold).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("check failures: %w", err)
	}
	return rows, nil
}
