package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tidemark/tidemark"
)

// Target is a resource's freshness target, for CheckFreshness.
type Target struct {
	Source    string
	Resource  string
	Freshness time.Duration
}

// Transition is an alert state change CheckFreshness or CheckFailures made
// (and wrote an event for).
type Transition struct {
	Event    tidemark.EventType `gorm:"column:event"`
	Source   string             `gorm:"column:source"`
	Resource string             `gorm:"column:resource"`
	OutboxID int64              `gorm:"column:id"`
}

// CheckFreshness turns resources stale that State.Freshness judges so, and
// fresh again when it no longer does, writing a resource.stale or
// resource.recovered event for each transition. Each flip and its event are
// one statement, and a flip happens only while the row still holds what it
// was judged from (its flag, paused, in_sync_at, last_success_at,
// resumed_at): however many schedulers run it at once, each transition
// happens, and is announced, once (a concurrent UPDATE waits for the row
// lock, then re-checks and skips). Paused resources are left alone: their
// flag stays as it was until they are resumed. Time is the database's
// clock, the same for every replica.
func (s *Store) CheckFreshness(ctx context.Context, targets []Target) ([]Transition, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	states, now, err := s.freshnessStates(ctx)
	if err != nil {
		return nil, fmt.Errorf("check freshness: %w", err)
	}
	var flips []freshnessFlip
	for _, t := range targets {
		st, ok := states[Key{t.Source, t.Resource}]
		if !ok || st.Paused {
			continue
		}
		if f := st.Freshness(t.Freshness, now); f.Stale != st.Stale {
			flips = append(flips, freshnessFlip{Source: t.Source, Resource: t.Resource, Stale: f.Stale,
				InSyncAt: st.InSyncAt, LastSuccessAt: st.LastSuccessAt, ResumedAt: st.ResumedAt,
				LagMS: f.Lag.Milliseconds(), Synced: f.Synced, FreshnessMS: t.Freshness.Milliseconds()})
		}
	}
	if len(flips) == 0 {
		return nil, nil
	}
	body, err := json.Marshal(flips)
	if err != nil {
		return nil, fmt.Errorf("check freshness: %w", err)
	}
	var out []Transition
	// One statement per direction: the CTE updates the flags and the
	// INSERT writes the events from what it returned, atomically.
	for _, q := range []string{`
		WITH f AS (SELECT * FROM jsonb_to_recordset(CAST(? AS jsonb)) AS f(source text, resource text, stale boolean,
			in_sync_at timestamptz, last_success_at timestamptz, resumed_at timestamptz, lag_ms bigint, synced boolean, freshness_ms bigint)),
		flipped AS (
			UPDATE sync_state s SET stale = true, stale_since = now(), updated_at = now()
			FROM f
			WHERE f.stale AND ` + unchangedSince + `
			RETURNING s.source, s.resource, s.in_sync_at, f.lag_ms, f.synced, f.freshness_ms, s.consecutive_failures)
		INSERT INTO outbox (event, source, resource, payload)
		SELECT 'resource.stale', source, resource, jsonb_build_object(
			'source', source, 'resource', resource, 'in_sync_at', in_sync_at, 'never_synced', NOT synced,
			'lag_seconds', round(lag_ms / 1000.0, 3),
			'freshness_seconds', freshness_ms / 1000.0,
			'consecutive_failures', consecutive_failures, 'at', now())
		FROM flipped ORDER BY source, resource
		RETURNING id, event, source, resource`, `
		WITH f AS (SELECT * FROM jsonb_to_recordset(CAST(? AS jsonb)) AS f(source text, resource text, stale boolean,
			in_sync_at timestamptz, last_success_at timestamptz, resumed_at timestamptz)),
		flipped AS (
			UPDATE sync_state s SET stale = false, updated_at = now()
			FROM f
			WHERE NOT f.stale AND ` + unchangedSince + `
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

// unchangedSince is CheckFreshness's guard: the row f was judged from is
// still as it was (another replica's flip, a pause, a probe or fetch in
// between make this round skip it; the next round judges it afresh).
const unchangedSince = `s.source = f.source AND s.resource = f.resource AND s.stale <> f.stale AND NOT s.paused
	AND s.in_sync_at IS NOT DISTINCT FROM f.in_sync_at AND s.last_success_at IS NOT DISTINCT FROM f.last_success_at
	AND s.resumed_at IS NOT DISTINCT FROM f.resumed_at`

// freshnessFlip is a transition CheckFreshness judged due, with what it
// judged it from.
type freshnessFlip struct {
	Source        string     `json:"source"`
	Resource      string     `json:"resource"`
	Stale         bool       `json:"stale"`
	InSyncAt      *time.Time `json:"in_sync_at"`
	LastSuccessAt *time.Time `json:"last_success_at"`
	ResumedAt     *time.Time `json:"resumed_at"`
	LagMS         int64      `json:"lag_ms"`
	Synced        bool       `json:"synced"`
	FreshnessMS   int64      `json:"freshness_ms"`
}

// freshnessStates reads the columns State.Freshness needs of every
// resource, and the database's clock. The scheduler runs it every tick:
// by hand, not through GORM's reflection (see scheduler.states).
func (s *Store) freshnessStates(ctx context.Context) (map[Key]State, time.Time, error) {
	var now time.Time
	db, err := s.db.DB()
	if err != nil {
		return nil, now, err
	}
	rows, err := db.QueryContext(ctx, `SELECT source, resource, paused, stale, in_sync_at, last_success_at, resumed_at, created_at, now()
		FROM sync_state`)
	if err != nil {
		return nil, now, err
	}
	defer rows.Close()
	out := make(map[Key]State)
	for rows.Next() {
		var st State
		if err := rows.Scan(&st.Source, &st.Resource, &st.Paused, &st.Stale, &st.InSyncAt, &st.LastSuccessAt,
			&st.ResumedAt, &st.CreatedAt, &now); err != nil {
			return nil, now, err
		}
		out[Key{st.Source, st.Resource}] = st
	}
	return out, now, rows.Err()
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
