package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// ErrSuperseded is a page or the end of a run refused because the run is
// no longer running: another run took the resource over.
var ErrSuperseded = errors.New("the run was taken over by another (it is no longer running): its work is refused")

// ErrSeenSetIncomplete ends a full read whose seen-set holds fewer ids than
// its pages put there: sync_seen is unlogged, and a Postgres crash (or a
// failover to a standby) empties it. Deleting from it would tombstone every
// record the read saw before; the read starts over instead.
var ErrSeenSetIncomplete = errors.New("the full read's seen-set is incomplete (lost in a Postgres crash or failover): the read starts over")

// DeletePolicy says what a full read may do with the live records it did
// not see.
type DeletePolicy struct {
	// Detect tombstones unseen records at all (full_sync.detect_deletes).
	Detect bool
	// Confirmed: an operator confirmed this read's deletions
	// (--confirm-deletes): every one goes through.
	Confirmed bool
	// AfterReads is how many consecutive full reads must miss a record (1
	// or 2; full_sync.delete_after_reads, 1 for a one-page read).
	AfterReads int
	// MaxFraction is the share of live records one read may tombstone
	// (full_sync.max_delete_fraction); past it the read's deletions wait
	// for the next read to agree.
	MaxFraction float64
	// Hold, when set, is why this read can neither tombstone nor confirm
	// anything it did not see (an offset read that saw records shift, a
	// page with records of no usable id). Records it saw still clear their
	// pending deletions.
	Hold string
}

// FullRead is the end of a full read.
type FullRead struct {
	Key
	RunID, PassID int64
	// SeenIDs is how many ids the read's pages put in its seen-set (the
	// checkpoint's count, durable with each page): a seen-set holding fewer
	// was lost, and nothing is deleted from it.
	SeenIDs int64
	Policy  DeletePolicy
	// Partition, when set, is the partition the read was of: only its
	// records are candidates for deletion.
	Partition string
}

// FullReadResult is what a full read's end did with unseen records.
type FullReadResult struct {
	Deleted int
	// Held is how many deletions wait for the next full read to agree;
	// Mass says the max_delete_fraction brake held them.
	Held int
	Mass bool
	// Unseen is how many live records the read did not see; Live how many
	// were live before it ended.
	Unseen, Live int64
}

// FinishFullRead ends a full read: it verifies the pass's seen-set, decides
// which unseen records to tombstone (DeletePolicy), and tombstones them in
// one transaction with their audit rows, the run's counters and an outbox
// event; deletions it holds wait in pending_deletes for the next full read.
// It drops the pass's seen-set, and takes out of quarantine what the pass
// no longer saw.
func (s *Store) FinishFullRead(ctx context.Context, f FullRead) (FullReadResult, error) {
	var res FullReadResult
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(boundedWaits).Error; err != nil {
			return err
		}
		// Fenced like ApplyPage: the run that took over finishes the pass.
		if err := fenceRun(tx, f.RunID); err != nil {
			return err
		}
		digests, err := beginConfirm(ctx, tx, f)
		if err != nil {
			return err
		}
		pending, pendingArgs := pendingOf(f.Key, f.Partition)
		seen, err := seenCount(tx, f.PassID)
		if err != nil {
			return err
		}
		if seen != f.SeenIDs {
			return fmt.Errorf("%w (%d of %d ids left)", ErrSeenSetIncomplete, seen, f.SeenIDs)
		}
		all, err := sawEveryLiveRecord(tx, f, seen)
		if err != nil {
			return err
		}
		if f.Policy.Detect && all {
			if res, err = nothingUnseen(tx, f); err != nil {
				return err
			}
		} else if f.Policy.Detect {
			if res, err = tombstoneUnseen(ctx, tx, f, seen); err != nil {
				return err
			}
		} else if err := tx.Exec(`DELETE FROM pending_deletes p WHERE `+pending, pendingArgs...).Error; err != nil {
			return err
		}
		if f.Partition != "" {
			// A partition's read knows only its own held deletions.
			return finishPartitionPass(tx, f, res)
		}
		if err := tx.Exec(`UPDATE sync_state SET deletes_held = ?, deletes_held_mass = ? WHERE source = ? AND resource = ?`,
			res.Held, res.Mass && res.Held > 0, f.Source, f.Resource).Error; err != nil {
			return err
		}
		// Quarantined records this pass no longer saw are gone upstream (a
		// row written since the pass began was seen by it or after it).
		if err := tx.Exec(`DELETE FROM record_quarantine WHERE source = ? AND resource = ?
			AND pass_id IS DISTINCT FROM ? AND run_id < ?`, f.Source, f.Resource, f.PassID, f.PassID).Error; err != nil {
			return err
		}
		if err := tx.Exec(`UPDATE sync_state SET quarantined = (SELECT count(*) FROM record_quarantine q
			WHERE q.source = sync_state.source AND q.resource = sync_state.resource)
			WHERE source = ? AND resource = ?`, f.Source, f.Resource).Error; err != nil {
			return err
		}
		if err := confirmDigests(ctx, tx, f, digests); err != nil {
			return err
		}
		return tx.Exec(`DELETE FROM sync_seen WHERE pass_id = ?`, f.PassID).Error
	})
	if err != nil {
		return FullReadResult{}, fmt.Errorf("finish full read %s run %d: %w", f.Key, f.RunID, err)
	}
	return res, nil
}

// tombstoneUnseen applies a full read's deletion rules (DeletePolicy) to the
// live records its seen-set lacks.
func tombstoneUnseen(ctx context.Context, tx *gorm.DB, f FullRead, seen int64) (FullReadResult, error) {
	k, pol := f.Key, f.Policy
	res, err := findUnseen(tx, f)
	if err != nil {
		return res, err
	}
	if pol.Hold != "" {
		// Nothing is decided; records this read saw are not gone.
		if res.Held, err = forgetSeenPending(tx, f); err != nil {
			return res, err
		}
		return res, setRunHeld(tx, f, res.Held)
	}
	// An empty read of a non-empty resource is an outage that looks like
	// an empty collection until a second read agrees.
	mass := float64(res.Unseen) > pol.MaxFraction*float64(res.Live) || seen == 0 && res.Live > 0
	now := pol.Confirmed || pol.AfterReads <= 1 && !mass
	tombstoned, err := markUnseenDeleted(tx, f, !now)
	if err != nil {
		return res, fmt.Errorf("tombstone unseen records: %w", err)
	}
	res.Deleted = len(tombstoned)
	pending, pendingArgs := pendingOf(k, f.Partition)
	if err := tx.Exec(`DELETE FROM pending_deletes p WHERE `+pending, pendingArgs...).Error; err != nil {
		return res, err
	}
	if !now {
		if res.Held, err = holdUnseen(tx, f); err != nil {
			return res, err
		}
		res.Mass = mass
	}
	if err := recordTombstones(tx, k, f.RunID, tombstoned); err != nil {
		return res, err
	}
	if err := setRunHeld(tx, f, res.Held); err != nil {
		return res, err
	}
	if res.Mass && res.Held > 0 {
		return res, writeOutbox(tx, EventDeletesHeld, k, f.RunID, DeletesHeld{
			Source: k.Source, Resource: k.Resource, RunID: f.RunID, Held: res.Held, Live: res.Live,
			MaxFraction: pol.MaxFraction, At: time.Now().UTC(),
		})
	}
	return res, nil
}

// findUnseen puts the live records the read's seen-set lacks in the
// temporary table unseen (dropped at commit), and counts them (Unseen) and
// the live records (Live).
func findUnseen(tx *gorm.DB, f FullRead) (FullReadResult, error) {
	var res FullReadResult
	// The anti-join must hash the pass's ids. Postgres has no statistics
	// for the unnested arrays and estimates a handful of rows, so left
	// alone it picks a nested loop: a million records times a million ids.
	// work_mem lets a million ids (~100 MB of hash table) stay in one batch
	// instead of spilling to disk.
	if err := tx.Exec(`SET LOCAL enable_nestloop = off; SET LOCAL work_mem = '256MB'`).Error; err != nil {
		return res, err
	}
	scope, scopeArgs := recordsInPartition(f.Partition)
	if err := tx.Exec(`CREATE TEMP TABLE unseen ON COMMIT DROP AS
		WITH seen AS MATERIALIZED (SELECT unnest(ids) AS external_id FROM sync_seen WHERE pass_id = ?)
		SELECT r.external_id, r.updated_at FROM records r
		WHERE r.source = ? AND r.resource = ? AND r.deleted_at IS NULL`+scope+`
		AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.external_id = r.external_id)`,
		append([]any{f.PassID, f.Source, f.Resource}, scopeArgs...)...).Error; err != nil {
		return res, fmt.Errorf("find unseen records: %w", err)
	}
	err := tx.Raw(`SELECT (SELECT count(*) FROM unseen) AS unseen,
		(SELECT count(*) FROM records r WHERE r.source = ? AND r.resource = ? AND r.deleted_at IS NULL`+scope+`) AS live`,
		append([]any{f.Source, f.Resource}, scopeArgs...)...).Scan(&res).Error
	return res, err
}

// forgetSeenPending drops the pending deletions of the records the read
// saw, and counts those left.
func forgetSeenPending(tx *gorm.DB, f FullRead) (int, error) {
	pending, pendingArgs := pendingOf(f.Key, f.Partition)
	err := tx.Exec(`DELETE FROM pending_deletes p WHERE `+pending+`
		AND NOT EXISTS (SELECT 1 FROM unseen u WHERE u.external_id = p.external_id)`, pendingArgs...).Error
	if err != nil {
		return 0, err
	}
	var held int64
	if err := tx.Raw(`SELECT count(*) FROM pending_deletes p WHERE `+pending, pendingArgs...).Scan(&held).Error; err != nil {
		return 0, err
	}
	return int(held), nil
}

// markUnseenDeleted tombstones unseen records, with an audit row each: every
// one, or when agreed only those the previous read missed too and nobody
// wrote since (pending_deletes).
func markUnseenDeleted(tx *gorm.DB, f FullRead, agreed bool) ([]tombstone, error) {
	k := f.Key
	which, whichArgs := `SELECT external_id FROM unseen`, []any(nil)
	if agreed {
		which = `SELECT u.external_id FROM unseen u JOIN pending_deletes p
			ON p.source = ? AND p.resource = ? AND p.external_id = u.external_id
			WHERE u.updated_at <= p.since`
		whichArgs = []any{k.Source, k.Resource}
	}
	args := append([]any{f.RunID, k.Source, k.Resource}, whichArgs...)
	args = append(args, k.Source, k.Resource, f.RunID)
	var tombstoned []tombstone
	err := tx.Raw(`
		WITH gone AS (
			UPDATE records r
			SET deleted_at = now(), version = r.version + 1, updated_at = now(), last_run_id = ?
			WHERE r.source = ? AND r.resource = ? AND r.deleted_at IS NULL
			AND r.external_id IN (`+which+`)
			RETURNING r.external_id, r.content_hash
		)
		INSERT INTO record_changes (source, resource, external_id, run_id, op, old_hash)
		SELECT ?, ?, external_id, ?, 'deleted', content_hash FROM gone
		RETURNING external_id, old_hash`, args...).Scan(&tombstoned).Error
	return tombstoned, err
}

// holdUnseen makes the unseen records not tombstoned pending deletions,
// for the next full read to agree on, and counts them.
func holdUnseen(tx *gorm.DB, f FullRead) (int, error) {
	k := f.Key
	held := tx.Exec(`INSERT INTO pending_deletes (source, resource, external_id, run_id)
		SELECT ?, ?, external_id, ? FROM unseen u
		WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.source = ? AND r.resource = ?
			AND r.external_id = u.external_id AND r.deleted_at IS NOT NULL)`,
		k.Source, k.Resource, f.RunID, k.Source, k.Resource)
	return int(held.RowsAffected), held.Error
}

// setRunHeld records on the run how many deletions its read held.
func setRunHeld(tx *gorm.DB, f FullRead, held int) error {
	return tx.Exec(`UPDATE sync_runs SET deletes_held = `+heldExpr(f.Partition)+` WHERE id = ?`, held, f.RunID).Error
}

// DeletesHeld is the payload of a deletes.held event: a full read would
// have tombstoned more than max_delete_fraction of the resource, and
// tombstoned none of it.
type DeletesHeld struct {
	Source      string    `json:"source"`
	Resource    string    `json:"resource"`
	RunID       int64     `json:"run_id"`
	Held        int       `json:"held"`
	Live        int64     `json:"live"`
	MaxFraction float64   `json:"max_delete_fraction"`
	At          time.Time `json:"at"`
}

// CollectSeen drops seen-sets no full read can resume: those of passes no
// full checkpoint names (an interrupted read that was started over, or
// whose checkpoint an operator reset). A page writes its seen ids and its
// checkpoint in one transaction, so a pass in progress is always named.
func (s *Store) CollectSeen(ctx context.Context) (int64, error) {
	res := s.db.WithContext(ctx).Exec(`DELETE FROM sync_seen s WHERE NOT EXISTS (
		SELECT 1 FROM sync_state st WHERE (st.full_checkpoint->>'pass_id')::bigint = s.pass_id)
		AND NOT EXISTS (SELECT 1 FROM sync_partitions p WHERE (p.full_checkpoint->>'pass_id')::bigint = s.pass_id)`)
	if res.Error != nil {
		return 0, fmt.Errorf("collect abandoned seen-sets: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// SeenCount is how many ids a pass's seen-set holds (a Postgres crash
// empties the unlogged table: a resumed full read checks it first).
func (s *Store) SeenCount(ctx context.Context, passID int64) (int64, error) {
	return seenCount(s.db.WithContext(ctx), passID)
}

func seenCount(db *gorm.DB, passID int64) (int64, error) {
	var n int64
	if err := db.Raw(`SELECT coalesce(sum(cardinality(ids)), 0) FROM sync_seen WHERE pass_id = ?`, passID).Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("seen-set of pass %d: %w", passID, err)
	}
	return n, nil
}

// DropPass drops one pass's seen-set, when a full read starts over.
func (s *Store) DropPass(ctx context.Context, passID int64) error {
	if err := s.db.WithContext(ctx).Exec(`DELETE FROM sync_seen WHERE pass_id = ?`, passID).Error; err != nil {
		return fmt.Errorf("drop seen-set of pass %d: %w", passID, err)
	}
	if err := dropDigests(ctx, s.db.WithContext(ctx), passID); err != nil {
		return fmt.Errorf("drop page digests of pass %d: %w", passID, err)
	}
	return nil
}

// recordsInPartition restricts a statement on records (as r) to one
// partition: the SQL to append and its argument, nothing for an
// unpartitioned resource. The literal partition <> ” lets the planner use
// the partial index records_partition.
func recordsInPartition(partition string) (string, []any) {
	if partition == "" {
		return "", nil
	}
	return ` AND r.partition <> '' AND r.partition = ?`, []any{partition}
}

// pendingOf is the condition that picks k's pending deletions (as p),
// only those of one partition's records when partition is set (as
// recordsInPartition), and its arguments.
func pendingOf(k Key, partition string) (string, []any) {
	if partition == "" {
		return `p.source = ? AND p.resource = ?`, []any{k.Source, k.Resource}
	}
	return `p.source = ? AND p.resource = ? AND p.external_id IN (SELECT r.external_id FROM records r
		WHERE r.source = ? AND r.resource = ? AND r.partition <> '' AND r.partition = ?)`,
		[]any{k.Source, k.Resource, k.Source, k.Resource, partition}
}

// heldExpr is how a run's deletes_held takes a read's held count: a
// partition's read adds its own to the other partitions'.
func heldExpr(partition string) string {
	if partition == "" {
		return "?"
	}
	return "deletes_held + ?"
}

// finishPartitionPass ends a partition's full read: the resource's held
// deletions are counted over every partition, and the seen-set dropped.
// (Quarantined records are left alone: record_quarantine does not know
// partitions, and one partition's read cannot tell another's are gone.)
func finishPartitionPass(tx *gorm.DB, f FullRead, res FullReadResult) error {
	if err := tx.Exec(`UPDATE sync_state SET deletes_held = (SELECT count(*) FROM pending_deletes p
		WHERE p.source = sync_state.source AND p.resource = sync_state.resource),
		deletes_held_mass = deletes_held_mass AND ? OR ?
		WHERE source = ? AND resource = ?`, res.Held > 0, res.Mass && res.Held > 0, f.Source, f.Resource).Error; err != nil {
		return err
	}
	return tx.Exec(`DELETE FROM sync_seen WHERE pass_id = ?`, f.PassID).Error
}
