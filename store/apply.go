package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Record is one record ready to store: its id, the JSON to keep, and the hash
// of its canonical content (volatile fields removed) that decides whether it
// changed.
type Record struct {
	ExternalID string          `json:"id"`
	Payload    json.RawMessage `json:"payload"`
	Hash       string          `json:"hash"`
}

// Page is one page of a fetch, applied atomically.
type Page struct {
	Key
	RunID   int64
	Records []Record
	// PassID, when non-zero, remembers the page's ids as seen by that full
	// read, for deletion detection at its end.
	PassID int64
	// Checkpoint returns where a retry of this fetch resumes, stored with the
	// page. It is called inside the page's transaction with the ids the page
	// created or updated, so that what it records about them (drift) commits
	// or rolls back with them. Nil stores no checkpoint.
	Checkpoint func(changed []string) json.RawMessage
	// Requests is how many HTTP requests this page cost.
	Requests int
	// MaxChangedIDs bounds the ids listed in the page's outbox event. Default 100.
	MaxChangedIDs int
}

// PageResult counts what applying a page changed.
type PageResult struct {
	Created, Updated, Unchanged int
	// Changed lists the ids created or updated.
	Changed []string
}

// Event types written to the outbox.
const (
	EventDataUpdated = "data.updated"
)

// DataUpdated is the payload of a data.updated event.
type DataUpdated struct {
	Source   string    `json:"source"`
	Resource string    `json:"resource"`
	RunID    int64     `json:"run_id"`
	Created  int       `json:"created"`
	Updated  int       `json:"updated"`
	Deleted  int       `json:"deleted"`
	IDs      []string  `json:"ids,omitempty"`
	At       time.Time `json:"at"`
}

// upsertPageSQL applies a page in one statement: it upserts every record
// whose content hash differs from the stored one (or that was tombstoned),
// bumps version only then, and writes one record_changes row per real change.
// Unchanged records are not written at all. A single set-based statement
// (rather than GORM's per-row upserts) keeps a 1000-record page to one round
// trip. The "old" CTE sees the table as it was before the statement, which is
// what tells a create from an update.
const upsertPageSQL = `
WITH input AS (
	SELECT * FROM jsonb_to_recordset(CAST(@records AS jsonb)) AS t(id text, payload jsonb, hash text)
),
old AS (
	-- LATERAL ... LIMIT 1 makes this one primary-key lookup per input row
	-- whatever the statistics say: during a first sync they are stale, and
	-- the planner's hash join over the whole resource per page made the sync
	-- quadratic (1,000 records/s at 65k records, falling).
	SELECT r.external_id, r.content_hash, r.payload, r.deleted_at
	FROM input i CROSS JOIN LATERAL (
		SELECT * FROM records r
		WHERE r.source = @source AND r.resource = @resource AND r.external_id = i.id
		LIMIT 1 -- the key is unique; LIMIT also keeps the planner from flattening this
	) r
),
up AS (
	INSERT INTO records AS r (source, resource, external_id, payload, content_hash, last_run_id)
	SELECT @source, @resource, i.id, i.payload, i.hash, @run_id FROM input i
	ON CONFLICT (source, resource, external_id) DO UPDATE
	SET payload = EXCLUDED.payload,
	    content_hash = EXCLUDED.content_hash,
	    version = r.version + 1,
	    updated_at = now(),
	    deleted_at = NULL,
	    last_run_id = EXCLUDED.last_run_id
	WHERE r.content_hash <> EXCLUDED.content_hash OR r.deleted_at IS NOT NULL
	RETURNING r.external_id, r.content_hash, r.payload
)
INSERT INTO record_changes (source, resource, external_id, run_id, op, old_hash, new_hash, changed_fields)
SELECT @source, @resource, up.external_id, @run_id,
	CASE WHEN old.external_id IS NULL OR old.deleted_at IS NOT NULL THEN 'created' ELSE 'updated' END,
	CASE WHEN old.deleted_at IS NULL THEN old.content_hash END,
	up.content_hash,
	CASE WHEN old.external_id IS NOT NULL AND old.deleted_at IS NULL THEN (
		SELECT array_agg(key ORDER BY key)
		FROM jsonb_each(up.payload) n FULL JOIN jsonb_each(old.payload) o USING (key)
		WHERE n.value IS DISTINCT FROM o.value
	) END
FROM up LEFT JOIN old ON old.external_id = up.external_id
RETURNING op, external_id`

// ApplyPage applies one page of records with its run counters, checkpoint and
// outbox event in a single transaction. Applying the same page again changes
// nothing: unchanged records are skipped by hash.
func (s *Store) ApplyPage(ctx context.Context, p Page) (PageResult, error) {
	var res PageResult
	records := dedupe(p.Records)
	body, err := json.Marshal(records)
	if err != nil {
		return res, fmt.Errorf("apply page %s: encode records: %w", p.Key, err)
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var changes []struct {
			Op         string
			ExternalID string
		}
		if len(records) > 0 {
			if err := tx.Raw(upsertPageSQL, map[string]any{
				"records": string(body), "source": p.Source, "resource": p.Resource, "run_id": p.RunID,
			}).Scan(&changes).Error; err != nil {
				return fmt.Errorf("upsert records: %w", err)
			}
		}
		ids := make([]string, 0, min(len(changes), cmpOr(p.MaxChangedIDs, 100)))
		for _, c := range changes {
			switch c.Op {
			case "created":
				res.Created++
			case "updated":
				res.Updated++
			}
			if len(ids) < cap(ids) {
				ids = append(ids, c.ExternalID)
			}
			res.Changed = append(res.Changed, c.ExternalID)
		}
		res.Unchanged = len(records) - len(changes)

		if p.PassID != 0 && len(records) > 0 {
			// The ids alone, not the page's records again: parsing the
			// whole page (payloads included) a second time just to read
			// its ids cost about a tenth of an unchanged resync.
			ids := make([]string, len(records))
			for i, r := range records {
				ids[i] = r.ExternalID
			}
			idsJSON, err := json.Marshal(ids)
			if err != nil {
				return fmt.Errorf("remember seen ids: %w", err)
			}
			if err := tx.Exec(`
				INSERT INTO sync_seen (pass_id, external_id)
				SELECT @pass, t.id FROM jsonb_array_elements_text(CAST(@ids AS jsonb)) AS t(id)
				ON CONFLICT DO NOTHING`,
				map[string]any{"pass": p.PassID, "ids": string(idsJSON)}).Error; err != nil {
				return fmt.Errorf("remember seen ids: %w", err)
			}
		}
		// Fenced by the run's status: a run another took over from
		// (AbandonRunning, e.g. after Redis lost the fetch lock) must not
		// apply pages to the pass the new run continues.
		upd := tx.Exec(`
			UPDATE sync_runs SET pages = pages + 1,
				http_requests = http_requests + ?,
				records_fetched = records_fetched + ?,
				records_created = records_created + ?,
				records_updated = records_updated + ?,
				records_unchanged = records_unchanged + ?
			WHERE id = ? AND status = 'running'`,
			p.Requests, len(p.Records), res.Created, res.Updated, res.Unchanged, p.RunID)
		if err := upd.Error; err != nil {
			return fmt.Errorf("count run: %w", err)
		}
		if upd.RowsAffected == 0 {
			return fmt.Errorf("run %d: %w", p.RunID, ErrSuperseded)
		}
		var cp json.RawMessage
		if p.Checkpoint != nil {
			cp = p.Checkpoint(res.Changed)
		}
		if err := tx.Exec(`UPDATE sync_state SET checkpoint = CAST(? AS jsonb), updated_at = now()
			WHERE source = ? AND resource = ?`, nullJSON(cp), p.Source, p.Resource).Error; err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
		if len(changes) > 0 {
			return writeOutbox(tx, EventDataUpdated, p.Key, p.RunID, DataUpdated{
				Source: p.Source, Resource: p.Resource, RunID: p.RunID,
				Created: res.Created, Updated: res.Updated, IDs: ids, At: time.Now().UTC(),
			})
		}
		return nil
	})
	if err != nil {
		return PageResult{}, fmt.Errorf("apply page %s run %d: %w", p.Key, p.RunID, err)
	}
	return res, nil
}

// ErrDeleteEverything guards against an upstream that answers a full read with
// nothing at all (an outage that looks like an empty collection).
// ErrSuperseded is a page or the end of a full read refused because the run
// is no longer running: another run took the resource over.
var ErrSuperseded = errors.New("the run was taken over by another (it is no longer running): its work is refused")

var ErrDeleteEverything = fmt.Errorf("full read saw no records: refusing to delete every record")

// PassSeen reports whether a full read's seen-set holds any id. sync_seen
// is unlogged, so a Postgres crash empties it: a full read resumed after
// that must start over, or FinishFullRead would tombstone every record the
// read saw before the crash.
func (s *Store) PassSeen(ctx context.Context, passID int64) (bool, error) {
	var seen bool
	if err := s.db.WithContext(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM sync_seen WHERE pass_id = ?)`, passID).Scan(&seen).Error; err != nil {
		return false, fmt.Errorf("seen-set of pass %d: %w", passID, err)
	}
	return seen, nil
}

// FinishFullRead ends a full read: with detectDeletes it tombstones the
// records of the resource that the read (pass) did not see, in one
// transaction with their audit rows, the run's counter and an outbox event.
// Either way it drops the pass's seen-set.
func (s *Store) FinishFullRead(ctx context.Context, k Key, runID, passID int64, detectDeletes bool) (deleted int, err error) {
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Fenced like ApplyPage: the run that took over finishes the pass.
		var status string
		if err := tx.Raw(`SELECT status FROM sync_runs WHERE id = ? FOR UPDATE`, runID).Scan(&status).Error; err != nil {
			return err
		}
		if status != StatusRunning {
			return fmt.Errorf("run %d: %w", runID, ErrSuperseded)
		}
		if detectDeletes {
			var seen, live int64
			if err := tx.Raw(`SELECT count(*) FROM sync_seen WHERE pass_id = ?`, passID).Scan(&seen).Error; err != nil {
				return err
			}
			if seen == 0 {
				if err := tx.Raw(`SELECT count(*) FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`,
					k.Source, k.Resource).Scan(&live).Error; err != nil {
					return err
				}
				if live > 0 {
					return fmt.Errorf("%w (%d live)", ErrDeleteEverything, live)
				}
			}
			var gone []string
			if err := tx.Raw(`
				WITH gone AS (
					UPDATE records r
					SET deleted_at = now(), version = r.version + 1, updated_at = now(), last_run_id = @run
					WHERE r.source = @source AND r.resource = @resource AND r.deleted_at IS NULL
					AND NOT EXISTS (SELECT 1 FROM sync_seen s WHERE s.pass_id = @pass AND s.external_id = r.external_id)
					RETURNING r.external_id, r.content_hash
				)
				INSERT INTO record_changes (source, resource, external_id, run_id, op, old_hash)
				SELECT @source, @resource, external_id, @run, 'deleted', content_hash FROM gone
				RETURNING external_id`,
				map[string]any{"run": runID, "source": k.Source, "resource": k.Resource, "pass": passID},
			).Scan(&gone).Error; err != nil {
				return fmt.Errorf("tombstone unseen records: %w", err)
			}
			deleted = len(gone)
			if deleted > 0 {
				if err := tx.Exec(`UPDATE sync_runs SET records_deleted = records_deleted + ? WHERE id = ?`, deleted, runID).Error; err != nil {
					return err
				}
				if err := writeOutbox(tx, EventDataUpdated, k, runID, DataUpdated{
					Source: k.Source, Resource: k.Resource, RunID: runID,
					Deleted: deleted, IDs: gone[:min(len(gone), 100)], At: time.Now().UTC(),
				}); err != nil {
					return err
				}
			}
		}
		return tx.Exec(`DELETE FROM sync_seen WHERE pass_id = ?`, passID).Error
	})
	if err != nil {
		return 0, fmt.Errorf("finish full read %s run %d: %w", k, runID, err)
	}
	return deleted, nil
}

// VersionHash fingerprints a resource's present records: an order-independent
// XOR of per-record hashes, so it streams through the rows without sorting.
func (s *Store) VersionHash(ctx context.Context, k Key) (string, error) {
	var row struct {
		N int64
		X int64
	}
	err := s.db.WithContext(ctx).Raw(`
		SELECT count(*) AS n,
		       coalesce(bit_xor(('x' || substr(md5(external_id || ':' || content_hash), 1, 16))::bit(64)::bigint), 0) AS x
		FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`, k.Source, k.Resource).Scan(&row).Error
	if err != nil {
		return "", fmt.Errorf("version hash %s: %w", k, err)
	}
	return fmt.Sprintf("%d-%016x", row.N, uint64(row.X)), nil
}

func writeOutbox(tx *gorm.DB, event string, k Key, runID int64, payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	if err := tx.Exec(`INSERT INTO outbox (event, source, resource, run_id, payload) VALUES (?, ?, ?, ?, CAST(? AS jsonb))`,
		event, k.Source, k.Resource, runID, string(body)).Error; err != nil {
		return fmt.Errorf("write %s event: %w", event, err)
	}
	return nil
}

// dedupe keeps the last occurrence of each id: an upsert cannot touch a row
// twice in one statement, and the later copy in a page is the newer one.
func dedupe(recs []Record) []Record {
	seen := make(map[string]int, len(recs))
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		if i, ok := seen[r.ExternalID]; ok {
			out[i] = r
			continue
		}
		seen[r.ExternalID] = len(out)
		out = append(out, r)
	}
	return out
}

func nullJSON(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func cmpOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}
