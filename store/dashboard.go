package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// FailureStreak is what the run rows say about a resource that is failing:
// its current streak of failed runs, and the newest of them.
type FailureStreak struct {
	// Attempts is the length of the streak (sync_state.consecutive_failures).
	Attempts int
	// Since is when the first failed run of the streak started.
	Since time.Time
	// Last is the newest failed (or dead) run.
	Last Run
}

// FailureStreaks returns the streak of every resource whose last runs
// failed. The streak is the newest consecutive_failures failed or dead
// runs: FinishRun adds one per such run, and only what brings the resource
// in step (a successful fetch, an unchanged probe) resets it, so these are
// exactly the failures since the resource last worked (interrupted runs and
// the runs of probes that saw a change count for neither).
func (s *Store) FailureStreaks(ctx context.Context) (map[Key]FailureStreak, error) {
	var rows []struct {
		Attempts int
		Since    time.Time
		Run
	}
	// LATERAL with LIMIT per row: each resource reads only its newest
	// failed runs through sync_runs_resource_idx.
	err := s.db.WithContext(ctx).Raw(`
		SELECT s.consecutive_failures AS attempts, f.since, l.*
		FROM sync_state s
		CROSS JOIN LATERAL (
			SELECT min(started_at) AS since FROM (
				SELECT started_at FROM sync_runs r
				WHERE r.source = s.source AND r.resource = s.resource AND r.status IN ('failed', 'dead')
				ORDER BY r.id DESC LIMIT s.consecutive_failures) x) f
		CROSS JOIN LATERAL (
			SELECT * FROM sync_runs r
			WHERE r.source = s.source AND r.resource = s.resource AND r.status IN ('failed', 'dead')
			ORDER BY r.id DESC LIMIT 1) l
		WHERE s.consecutive_failures > 0`).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("failure streaks: %w", err)
	}
	out := make(map[Key]FailureStreak, len(rows))
	for _, r := range rows {
		out[Key{r.Source, r.Resource}] = FailureStreak{Attempts: r.Attempts, Since: r.Since, Last: r.Run}
	}
	return out, nil
}

// HourRequests is one hour of a resource's upstream requests.
type HourRequests struct {
	Hour time.Time `json:"hour"`
	// Probe counts probe requests; Unchanged those of them that found
	// nothing new (a 304, or the same hash); Fetch the requests of delta and
	// full reads.
	Probe     int64 `json:"probe"`
	Unchanged int64 `json:"unchanged"`
	Fetch     int64 `json:"fetch"`
}

// RequestsPerHour counts a resource's requests in each hour from since's
// hour to now's, oldest first, hours without any included.
func (s *Store) RequestsPerHour(ctx context.Context, k Key, since time.Time) ([]HourRequests, error) {
	var out []HourRequests
	err := s.db.WithContext(ctx).Raw(`
		WITH hours AS (
			SELECT generate_series(date_trunc('hour', CAST(? AS timestamptz)), date_trunc('hour', now()), interval '1 hour') AS hour),
		probes AS (
			SELECT date_trunc('hour', minute) AS hour, sum(unchanged) AS unchanged FROM probe_minutes
			WHERE source = ? AND resource = ? AND minute >= date_trunc('hour', CAST(? AS timestamptz))
			GROUP BY 1),
		runs AS (
			SELECT date_trunc('hour', started_at) AS hour,
				sum(http_requests) FILTER (WHERE kind = 'probe') AS probe,
				sum(http_requests) FILTER (WHERE kind <> 'probe') AS fetch
			FROM sync_runs
			WHERE source = ? AND resource = ? AND started_at >= date_trunc('hour', CAST(? AS timestamptz))
			GROUP BY 1)
		SELECT h.hour, coalesce(p.unchanged, 0) + coalesce(r.probe, 0) AS probe,
			coalesce(p.unchanged, 0) AS unchanged, coalesce(r.fetch, 0) AS fetch
		FROM hours h LEFT JOIN probes p USING (hour) LEFT JOIN runs r USING (hour)
		ORDER BY h.hour`,
		since, k.Source, k.Resource, since, k.Source, k.Resource, since).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("requests per hour of %s: %w", k, err)
	}
	return out, nil
}

// InSyncMoment is a moment a resource was known to be in step with its
// upstream (At), learnt at Known: an unchanged probe knows it at once; a
// successful fetch, when it finishes, knows the data was in step as of its
// start.
type InSyncMoment struct {
	At    time.Time
	Known time.Time
}

// InSyncMoments returns the moments known since since, in no order: the
// newest unchanged probe of each minute, and each successful fetch. It
// starts from the last moment known before since, if any, so a lag can be
// told from since on.
func (s *Store) InSyncMoments(ctx context.Context, k Key, since time.Time) ([]InSyncMoment, error) {
	var out []InSyncMoment
	err := s.db.WithContext(ctx).Raw(`
		SELECT last_at AS at, last_at AS known FROM probe_minutes
		WHERE source = ? AND resource = ? AND last_at >= ?
		UNION ALL
		SELECT started_at, finished_at FROM sync_runs
		WHERE source = ? AND resource = ? AND kind IN ('delta', 'full')
			AND status = 'succeeded' AND finished_at >= ?
		UNION ALL
		SELECT max(at), max(at) FROM (
			SELECT max(last_at) AS at FROM probe_minutes
			WHERE source = ? AND resource = ? AND last_at < ?
			UNION ALL
			SELECT max(started_at) FROM sync_runs
			WHERE source = ? AND resource = ? AND kind IN ('delta', 'full')
				AND status = 'succeeded' AND finished_at < ?) before
		HAVING max(at) IS NOT NULL`,
		k.Source, k.Resource, since, k.Source, k.Resource, since,
		k.Source, k.Resource, since, k.Source, k.Resource, since).Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("in-sync moments of %s: %w", k, err)
	}
	return out, nil
}

// PruneProbeMinutes deletes the probe counts older than two days (the
// resource page shows one).
func (s *Store) PruneProbeMinutes(ctx context.Context) (int64, error) {
	res := s.db.WithContext(ctx).Exec(`DELETE FROM probe_minutes WHERE minute < now() - interval '2 days'`)
	if res.Error != nil {
		return 0, fmt.Errorf("prune probe minutes: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// FetchRunsSince returns a resource's delta and full runs that finished
// since since, oldest first, at most 5000 (about one every 17 s for a day).
func (s *Store) FetchRunsSince(ctx context.Context, k Key, since time.Time) ([]Run, error) {
	var runs []Run
	err := s.db.WithContext(ctx).
		Where("source = ? AND resource = ? AND kind IN ? AND finished_at >= ?", k.Source, k.Resource, []string{KindDelta, KindFull}, since).
		Order("id DESC").Limit(5000).Find(&runs).Error
	if err != nil {
		return nil, fmt.Errorf("runs of %s since %s: %w", k, since.Format(time.RFC3339), err)
	}
	slices.Reverse(runs)
	return runs, nil
}
