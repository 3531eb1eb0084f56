package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Partition is the sync memory of one partition of a partitioned resource
// (table sync_partitions): what State is to a resource.
type Partition struct {
	Source    string `gorm:"column:source;primaryKey" json:"source"`
	Resource  string `gorm:"column:resource;primaryKey" json:"resource"`
	Partition string `gorm:"column:partition;primaryKey" json:"partition"`
	Watermark string `gorm:"column:watermark" json:"watermark"`
	// Checkpoint and FullCheckpoint are where the partition's interrupted
	// delta and full read resume, as in State.
	Checkpoint     json.RawMessage `gorm:"column:checkpoint;type:jsonb" json:"-"`
	FullCheckpoint json.RawMessage `gorm:"column:full_checkpoint;type:jsonb" json:"-"`
	ETag           string          `gorm:"column:etag" json:"etag,omitempty"`
	LastModified   string          `gorm:"column:last_modified" json:"last_modified,omitempty"`
	// ParentVersion is the parent record's content hash when the partition
	// last synced (parent.changed_only).
	ParentVersion string     `gorm:"column:parent_version" json:"parent_version,omitempty"`
	LastRunID     *int64     `gorm:"column:last_run_id" json:"last_run_id"`
	LastSuccessAt *time.Time `gorm:"column:last_success_at" json:"last_success_at"`
	// LastError is why the partition's last read failed, "" after a success.
	LastError string    `gorm:"column:last_error" json:"last_error,omitempty"`
	Records   int64     `gorm:"column:records" json:"records"`
	CreatedAt time.Time `gorm:"column:created_at" json:"created_at"`
	UpdatedAt time.Time `gorm:"column:updated_at" json:"updated_at"`
}

// TableName maps Partition to sync_partitions.
func (Partition) TableName() string { return "sync_partitions" }

// PartitionState returns a partition's state, making its row if it has
// none yet.
func (s *Store) PartitionState(ctx context.Context, k Key, name string) (Partition, error) {
	db := s.db.WithContext(ctx)
	var row Partition
	take := func() error {
		return db.Where("source = ? AND resource = ? AND partition = ?", k.Source, k.Resource, name).Take(&row).Error
	}
	// Read first: after the first sync every partition has its row.
	err := take()
	if errors.Is(err, gorm.ErrRecordNotFound) {
		row = Partition{Source: k.Source, Resource: k.Resource, Partition: name}
		if err = db.Clauses(clause.OnConflict{DoNothing: true}).Select("source", "resource", "partition").Create(&row).Error; err == nil {
			err = take()
		}
	}
	if err != nil {
		return row, fmt.Errorf("partition %s [%s]: %w", k, name, notFound(err))
	}
	return row, nil
}

// Partitions lists a resource's partitions in name order, after the name
// after, at most limit (keyset pages for the API and status).
func (s *Store) Partitions(ctx context.Context, k Key, after string, limit int) ([]Partition, error) {
	var out []Partition
	err := s.db.WithContext(ctx).Where("source = ? AND resource = ? AND partition > ?", k.Source, k.Resource, after).
		Order("partition").Limit(limit).Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s: %w", k, err)
	}
	return out, nil
}

// PartitionSummary rolls a resource's partitions up.
type PartitionSummary struct {
	Partitions int64 `json:"partitions"`
	// Failing counts partitions whose last read failed; NeverSynced those
	// not read successfully yet.
	Failing     int64 `json:"failing"`
	NeverSynced int64 `json:"never_synced"`
	// OldestSuccess is the oldest last success among synced partitions.
	OldestSuccess *time.Time `json:"oldest_success,omitempty"`
}

// PartitionSummaries rolls up the partitions of every partitioned
// resource, or of the one resource only names.
func (s *Store) PartitionSummaries(ctx context.Context, only ...Key) (map[Key]PartitionSummary, error) {
	var rows []struct {
		Source, Resource string
		PartitionSummary
	}
	q := s.db.WithContext(ctx).Table("sync_partitions").Select(`source, resource, count(*) AS partitions,
		count(*) FILTER (WHERE last_error <> '') AS failing,
		count(*) FILTER (WHERE last_success_at IS NULL) AS never_synced,
		min(last_success_at) AS oldest_success`).Group("source, resource")
	if len(only) == 1 {
		q = q.Where("source = ? AND resource = ?", only[0].Source, only[0].Resource)
	}
	err := q.Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("summarise partitions: %w", err)
	}
	out := make(map[Key]PartitionSummary, len(rows))
	for _, r := range rows {
		out[Key{r.Source, r.Resource}] = r.PartitionSummary
	}
	return out, nil
}

// ParentPartition is a partition named by a parent record.
type ParentPartition struct {
	// ParentID is the parent's external id (the walk's order and resume
	// position); Name the partition ("" when the parent has no key value).
	ParentID string
	Name     string
	Parent   json.RawMessage
	// ParentVersion is the parent's content hash.
	ParentVersion string
}

// ParentQuery asks for the partitions of a child resource under its parent.
type ParentQuery struct {
	Child  Key
	Parent string
	// KeyPath is the dotted field of the parent record naming a partition.
	KeyPath string
	// After is the parent id to continue after ("" from the first).
	After string
	// ChangedOnly leaves out parents whose content hash is the one their
	// partition last synced under, unless that sync was before Stale.
	ChangedOnly bool
	Stale       time.Time
	Limit       int
}

// ParentPartitions returns the next live parents of a child resource, in
// parent id order (keyset pages on the records' primary key: a walk over
// 100,000 parents holds one page of them at a time).
func (s *Store) ParentPartitions(ctx context.Context, q ParentQuery) ([]ParentPartition, error) {
	rows, err := s.db.WithContext(ctx).Raw(`
		SELECT r.external_id, coalesce(r.payload #>> ?::text[], ''), r.payload, r.content_hash
		FROM records r
		LEFT JOIN LATERAL (
			-- LATERAL ... LIMIT 1: one primary-key lookup per parent. A plain
			-- join on the expression was planned (statistics stale, one row
			-- guessed) as a scan of every partition per parent: quadratic,
			-- minutes at 10,000 parents.
			SELECT p.parent_version, p.last_success_at FROM sync_partitions p
			WHERE p.source = r.source AND p.resource = ? AND p.partition = r.payload #>> ?::text[]
			LIMIT 1
		) p ON true
		WHERE r.source = ? AND r.resource = ? AND r.deleted_at IS NULL AND r.external_id > ?
		AND (NOT ? OR p.last_success_at IS NULL OR p.last_success_at < ? OR p.parent_version <> r.content_hash)
		ORDER BY r.external_id LIMIT ?`,
		pgPath(q.KeyPath), q.Child.Resource, pgPath(q.KeyPath), q.Child.Source, q.Parent, q.After, q.ChangedOnly, q.Stale, q.Limit).Rows()
	if err != nil {
		return nil, fmt.Errorf("parents of %s: %w", q.Child, err)
	}
	defer rows.Close()
	var out []ParentPartition
	for rows.Next() {
		var pp ParentPartition
		var payload []byte
		if err := rows.Scan(&pp.ParentID, &pp.Name, &payload, &pp.ParentVersion); err != nil {
			return nil, fmt.Errorf("parents of %s: %w", q.Child, err)
		}
		pp.Parent = payload
		out = append(out, pp)
	}
	return out, rows.Err()
}

// pgPath is a dotted path as a Postgres text[] literal for #>>.
func pgPath(dotted string) string {
	parts := strings.Split(dotted, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p) + `"`
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// PartitionDone is the end of one partition's read in a run.
type PartitionDone struct {
	Key
	Partition string
	RunID     int64
	// Full: the read was a full one (its checkpoint is cleared, not the
	// delta's).
	Full bool
	// Watermark, when set, is the partition's new watermark.
	Watermark string
	// ParentVersion is the parent's content hash the partition is now in
	// step with; "" keeps the one it had (a read whose deletions wait for
	// the next to agree: parent.changed_only must read it again).
	ParentVersion string
	// ETag is the partition's validator from now on: its one page's ETag
	// ("" for a read of several pages, whose first page is not all of it).
	ETag string
	// Err, when set, is why the read failed: the partition keeps its
	// checkpoint and watermark.
	Err string
	// Walk is the resource's walk checkpoint after this partition (in
	// sync_state, with the partition's end: a crash resumes after it).
	Walk json.RawMessage
}

// FinishPartition records the end of one partition's read and moves the
// resource's walk past it, in one transaction fenced by the run's status.
func (s *Store) FinishPartition(ctx context.Context, d PartitionDone) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := fenceRun(tx, d.RunID); err != nil {
			return err
		}
		upd := map[string]any{"last_run_id": d.RunID, "updated_at": gorm.Expr("now()"), "last_error": d.Err}
		if d.Err == "" {
			upd["last_success_at"] = gorm.Expr("now()")
			upd[checkpointColumn(d.Full)] = nil
			if d.ParentVersion != "" {
				upd["parent_version"] = d.ParentVersion
			}
			upd["etag"] = d.ETag
			upd["records"] = gorm.Expr(`(SELECT count(*) FROM records r WHERE r.source = ? AND r.resource = ?
				AND r.partition <> '' AND r.partition = ? AND r.deleted_at IS NULL)`, d.Source, d.Resource, d.Partition)
			if d.Watermark != "" {
				upd["watermark"] = d.Watermark
			}
		}
		if err := tx.Model(&Partition{}).Where("source = ? AND resource = ? AND partition = ?", d.Source, d.Resource, d.Partition).
			Updates(upd).Error; err != nil {
			return err
		}
		return tx.Model(&State{}).Where("source = ? AND resource = ?", d.Source, d.Resource).
			Updates(map[string]any{checkpointColumn(d.Full): nullJSON(d.Walk), "updated_at": gorm.Expr("now()")}).Error
	})
	if err != nil {
		return fmt.Errorf("finish partition %s [%s] run %d: %w", d.Key, d.Partition, d.RunID, err)
	}
	return nil
}

func checkpointColumn(full bool) string {
	if full {
		return "full_checkpoint"
	}
	return "checkpoint"
}

// fenceRun locks a run's row and refuses a run no longer running (another
// took the resource over).
func fenceRun(tx *gorm.DB, runID int64) error {
	var status string
	if err := tx.Raw(`SELECT status FROM sync_runs WHERE id = ? FOR UPDATE`, runID).Scan(&status).Error; err != nil {
		return err
	}
	if status != StatusRunning {
		return fmt.Errorf("run %d: %w", runID, ErrSuperseded)
	}
	return nil
}

// NewPassID names a partition's full read's seen-set. A resource's own
// full read uses its run's id; a partitioned run reads many partitions,
// each with a seen-set of its own, so their ids come from the same
// sequence as the runs' and never collide with one.
func (s *Store) NewPassID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.db.WithContext(ctx).Raw(`SELECT nextval(pg_get_serial_sequence('sync_runs', 'id'))`).Scan(&id).Error; err != nil {
		return 0, fmt.Errorf("new pass id: %w", err)
	}
	return id, nil
}

// Orphans asks for the partitions of a child resource whose parent is gone.
type Orphans struct {
	Child   Key
	Parent  string
	KeyPath string
	RunID   int64
}

// TombstoneOrphans tombstones the live records of every partition of a
// child resource whose parent record is tombstoned or gone (a partition
// no live parent names), with their audit rows, the resource's live counts
// and an outbox event, and drops those partitions' rows, in one
// transaction fenced by the run.
func (s *Store) TombstoneOrphans(ctx context.Context, o Orphans) (int, error) {
	var gone []tombstone
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := fenceRun(tx, o.RunID); err != nil {
			return err
		}
		// EXCEPT: one pass over each side, where a NOT EXISTS on the
		// parents' key expression (no index serves it) scanned every
		// parent per partition.
		if err := tx.Exec(`CREATE TEMP TABLE orphaned ON COMMIT DROP AS
			SELECT p.partition FROM sync_partitions p WHERE p.source = ? AND p.resource = ?
			EXCEPT
			SELECT r.payload #>> CAST(? AS text[]) FROM records r
			WHERE r.source = ? AND r.resource = ? AND r.deleted_at IS NULL`,
			o.Child.Source, o.Child.Resource, pgPath(o.KeyPath), o.Child.Source, o.Parent).Error; err != nil {
			return fmt.Errorf("find orphaned partitions: %w", err)
		}
		if err := tx.Raw(`
			WITH gone AS (
				UPDATE records r
				SET deleted_at = now(), version = r.version + 1, updated_at = now(), last_run_id = ?
				WHERE r.source = ? AND r.resource = ? AND r.deleted_at IS NULL
				AND r.partition <> '' AND r.partition IN (SELECT partition FROM orphaned)
				RETURNING r.external_id, r.content_hash
			)
			INSERT INTO record_changes (source, resource, external_id, run_id, op, old_hash)
			SELECT ?, ?, external_id, ?, 'deleted', content_hash FROM gone
			RETURNING external_id, old_hash`,
			o.RunID, o.Child.Source, o.Child.Resource, o.Child.Source, o.Child.Resource, o.RunID).Scan(&gone).Error; err != nil {
			return fmt.Errorf("tombstone the records of orphaned partitions: %w", err)
		}
		if err := tx.Exec(`DELETE FROM sync_partitions WHERE source = ? AND resource = ? AND partition IN (SELECT partition FROM orphaned)`,
			o.Child.Source, o.Child.Resource).Error; err != nil {
			return err
		}
		return recordTombstones(tx, o.Child, o.RunID, gone)
	})
	if err != nil {
		return 0, fmt.Errorf("tombstone orphans of %s: %w", o.Child, err)
	}
	return len(gone), nil
}

// tombstone is a record just tombstoned, with the content hash it had.
type tombstone struct{ ExternalID, OldHash string }

// recordTombstones books tombstoned records: the resource's live count and
// version hash, the run's counter and a data.updated event.
func recordTombstones(tx *gorm.DB, k Key, runID int64, gone []tombstone) error {
	if len(gone) == 0 {
		return nil
	}
	ids := make([]string, 0, min(len(gone), 100))
	var live liveDelta
	for _, t := range gone {
		live.remove(t.ExternalID, t.OldHash)
		if len(ids) < cap(ids) {
			ids = append(ids, t.ExternalID)
		}
	}
	if err := tx.Exec(`UPDATE sync_state SET live_count = live_count + ?, live_xor = live_xor # ? WHERE source = ? AND resource = ?`,
		live.count, live.xor, k.Source, k.Resource).Error; err != nil {
		return err
	}
	if err := tx.Exec(`UPDATE sync_runs SET records_deleted = records_deleted + ? WHERE id = ?`, len(gone), runID).Error; err != nil {
		return err
	}
	return writeOutbox(tx, EventDataUpdated, k, runID, DataUpdated{
		Source: k.Source, Resource: k.Resource, RunID: runID, Deleted: len(gone), IDs: ids, At: time.Now().UTC(),
	})
}

// resetPartitions forgets the same pieces of a resource's partitions' state
// as ResetState does of the resource's.
func (s *Store) resetPartitions(ctx context.Context, k Key, r Reset) error {
	upd := map[string]any{"updated_at": time.Now().UTC()}
	if r.Checkpoint {
		upd["checkpoint"], upd["full_checkpoint"] = nil, nil
	}
	if r.Watermark {
		upd["watermark"] = ""
	}
	if r.Validators {
		upd["etag"], upd["last_modified"], upd["parent_version"] = "", "", ""
	}
	if err := s.db.WithContext(ctx).Model(&Partition{}).Where("source = ? AND resource = ?", k.Source, k.Resource).Updates(upd).Error; err != nil {
		return fmt.Errorf("reset the partitions of %s: %w", k, err)
	}
	return nil
}
