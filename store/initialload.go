package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// OpInitialLoad is the record_changes op of a first load's summary row: the
// records a run of a resource's first load created, counted in one row
// (external_id ”; records, the count; new_hash, the resource's version
// hash after the run's last page that created records) instead of one
// created row each (config audit.initial_load, docs/architecture.md).
const OpInitialLoad = "initial_load"

// initialLoadSQL adds a page's creations to its run's summary row, in the
// page's transaction: the row says exactly what is committed, whatever
// becomes of the run. It runs after the page has updated the state row, so
// the version hash it takes from it includes the page.
const initialLoadSQL = `
INSERT INTO record_changes (source, resource, external_id, run_id, op, records, new_hash)
VALUES ($1, $2, '', $3, 'initial_load', $4, (
	SELECT CASE WHEN live_count IS NOT NULL AND live_xor IS NOT NULL
		THEN live_count || '-' || lpad(to_hex(live_xor), 16, '0') END -- as VersionHash spells it
	FROM sync_state WHERE source = $1 AND resource = $2))
ON CONFLICT (run_id) WHERE op = 'initial_load' DO UPDATE
SET records = record_changes.records + EXCLUDED.records, new_hash = EXCLUDED.new_hash, at = now()`

// summarizeCreates counts n records a first-load page created in its run's
// initial_load row.
func summarizeCreates(ctx context.Context, tx *gorm.DB, p Page, n int) error {
	_, err := tx.Statement.ConnPool.ExecContext(ctx, initialLoadSQL, p.Source, p.Resource, p.RunID, n)
	return err
}

// FirstLoad is a resource's first load as its audit trail summarizes it.
type FirstLoad struct {
	// Records is how many records the first load created, over all its
	// runs (a retry or a takeover of a first load is a run of it too).
	Records int64 `json:"records"`
	// Runs is how many runs it took; RunID is the last of them.
	Runs  int   `json:"runs"`
	RunID int64 `json:"run_id"`
	// VersionHash is the resource's version hash after the last page that
	// created records; At is when that page committed.
	VersionHash string    `json:"version_hash"`
	At          time.Time `json:"at"`
}

// String is how `tidemark status` and the resource page show it.
func (f FirstLoad) String() string {
	runs := fmt.Sprintf("run #%d", f.RunID)
	if f.Runs > 1 {
		runs = fmt.Sprintf("%d runs, the last #%d", f.Runs, f.RunID)
	}
	return fmt.Sprintf("first load: %s records, %s, version %s", groupThousands(f.Records), runs, f.VersionHash)
}

// FirstLoads returns the first-load summary of every resource that has one
// (resources audited per record from the start have none).
func (s *Store) FirstLoads(ctx context.Context) (map[Key]FirstLoad, error) {
	var rows []struct {
		Source, Resource string
		FirstLoad
	}
	// The summary rows are few (one per run of a first load) and all in
	// the partial index record_changes_initial_load.
	err := s.db.WithContext(ctx).Raw(`
		SELECT source, resource, sum(records) AS records, count(*) AS runs, max(run_id) AS run_id,
			(array_agg(coalesce(new_hash, '') ORDER BY run_id DESC))[1] AS version_hash, max(at) AS at
		FROM record_changes WHERE op = 'initial_load'
		GROUP BY source, resource`).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("first loads: %w", err)
	}
	out := make(map[Key]FirstLoad, len(rows))
	for _, r := range rows {
		out[Key{Source: r.Source, Resource: r.Resource}] = r.FirstLoad
	}
	return out, nil
}

// groupThousands writes n with commas between groups of three digits.
func groupThousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + groupThousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
