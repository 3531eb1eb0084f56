package store

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	// Rejected are records set aside before they reached the store (no
	// usable id, one id twice): they are quarantined with the page.
	Rejected []Rejected
	// PassID, when non-zero, marks a full read's page: its ids join that
	// pass's seen-set, for deletion detection at its end, and its
	// checkpoint is the full read's (sync_state.full_checkpoint).
	PassID int64
	// Checkpoint returns where a retry of this fetch resumes, stored with the
	// page. It is called inside the page's transaction with the ids the page
	// created or updated, so that what it records about them (drift) commits
	// or rolls back with them. Nil stores no checkpoint.
	Checkpoint func(changed []string, seenIDs int) json.RawMessage
	// Requests is how many HTTP requests this page cost.
	Requests int
	// MaxChangedIDs bounds the ids listed in the page's outbox event. Default 100.
	MaxChangedIDs int
	// ExpectChanged skips comparing hashes before sending payloads: the
	// caller expects (because its previous page was all new) that every
	// record is new, when the comparison is a wasted round trip; the page
	// is then copied (copyNew). The outcome is the same either way.
	ExpectChanged bool
	// Quarantined says the resource may have quarantined records: a page
	// then takes the records it stores out of quarantine. Without it (no
	// quarantined record when the fetch began, none set aside since) the
	// page skips that statement.
	Quarantined bool
	// BeforeCommit, when set, is called last inside the page's transaction,
	// holding everything it holds (tests freeze a worker there).
	BeforeCommit func()
	// Partition, when set, is the partition the page was read for: its
	// records are stored under it, and its checkpoint is the partition's
	// (sync_partitions), not the resource's.
	Partition string
	// SummarizeCreates: the page belongs to its resource's first load,
	// audited as a summary (config audit.initial_load): the records it
	// creates get no created row each; the run's one initial_load row
	// counts them (summarizeCreates). Updates are audited as always.
	SummarizeCreates bool
}

// Rejected is a record that cannot be stored, with the reason.
type Rejected struct {
	// ExternalID is its id, "" when it has none tidemark can use.
	ExternalID string
	// Key tells apart records without a usable id (the id as received, or
	// the record's content) when ExternalID is "".
	Key    string
	Reason string
	Raw    []byte
}

// PageResult counts what applying a page changed.
type PageResult struct {
	Created, Updated, Unchanged int
	// Quarantined counts the page's records set aside, NewlyQuarantined
	// those not in quarantine before.
	Quarantined, NewlyQuarantined int
	// Changed lists the ids created or updated.
	Changed []string
	// DigestMatched: the page's digest showed the store holds it already,
	// and its records were not compared one by one (store/digest.go).
	DigestMatched bool
}

// Event types written to the outbox.
const (
	EventDataUpdated        = "data.updated"
	EventRecordsQuarantined = "records.quarantined"
	EventDeletesHeld        = "deletes.held"
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

// RecordsQuarantined is the payload of a records.quarantined event: the
// records a page set aside that were not set aside before.
type RecordsQuarantined struct {
	Source      string    `json:"source"`
	Resource    string    `json:"resource"`
	RunID       int64     `json:"run_id"`
	Quarantined int       `json:"quarantined"`
	IDs         []string  `json:"ids,omitempty"`
	Reasons     []string  `json:"reasons"`
	At          time.Time `json:"at"`
}

// upsertPageSQL applies a page in one statement: it upserts every record
// whose content hash differs from the stored one (or that was tombstoned),
// bumps version only then, and writes one record_changes row per real change
// (creations only when $8 is false: see Page.SummarizeCreates).
// Unchanged records are not written at all. A single set-based statement
// (rather than GORM's per-row upserts) keeps a 1000-record page to one round
// trip. The records arrive as three parallel text arrays ($1 ids, $2
// payloads, $3 hashes) in Postgres' binary array format: no JSON envelope to
// encode in Go and parse again in Postgres, and each payload is parsed into
// jsonb exactly once. The "old" CTE sees the table as it was before the
// statement, which is what tells a create from an update.
const upsertPageSQL = `
WITH input AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS t(id, payload, hash)
),
old AS (
	-- LATERAL ... LIMIT 1 makes this one primary-key lookup per input row
	-- whatever the statistics say: during a first sync they are stale, and
	-- the planner's hash join over the whole resource per page made the sync
	-- quadratic (1,000 records/s at 65k records, falling).
	SELECT r.external_id, r.content_hash, r.deleted_at
	FROM input i CROSS JOIN LATERAL (
		SELECT r.external_id, r.content_hash, r.deleted_at FROM records r
		WHERE r.source = $4 AND r.resource = $5 AND r.external_id = i.id
		LIMIT 1 -- the key is unique; LIMIT also keeps the planner from flattening this
	) r
),
up AS (
	-- Only what is new or changed reaches the INSERT: ON CONFLICT DO UPDATE
	-- locks the existing row even when its WHERE then skips the update, and
	-- that lock is a heap write (and WAL) per unchanged record.
	INSERT INTO records AS r (source, resource, external_id, payload, content_hash, last_run_id, partition)
	SELECT $4, $5, i.id, CAST(i.payload AS jsonb), i.hash, $6, $7
	FROM input i LEFT JOIN old o ON o.external_id = i.id
	WHERE o.external_id IS NULL OR o.content_hash <> i.hash OR o.deleted_at IS NOT NULL
	ON CONFLICT (source, resource, external_id) DO UPDATE
	SET payload = EXCLUDED.payload,
	    content_hash = EXCLUDED.content_hash,
	    version = r.version + 1,
	    updated_at = now(),
	    deleted_at = NULL,
	    last_run_id = EXCLUDED.last_run_id,
	    -- An id under two partitions belongs to the one that last wrote it.
	    partition = EXCLUDED.partition
	WHERE r.content_hash <> EXCLUDED.content_hash OR r.deleted_at IS NOT NULL
	RETURNING r.external_id, r.content_hash, r.payload
),
changes AS (
	SELECT up.external_id, up.content_hash AS new_hash, up.payload,
		CASE WHEN old.external_id IS NULL OR old.deleted_at IS NOT NULL THEN 'created' ELSE 'updated' END AS op,
		CASE WHEN old.deleted_at IS NULL THEN old.content_hash END AS old_hash
	FROM up LEFT JOIN old ON old.external_id = up.external_id
),
audit AS (
	INSERT INTO record_changes (source, resource, external_id, run_id, op, old_hash, new_hash, changed_fields)
	SELECT $4, $5, c.external_id, $6, c.op, c.old_hash, c.new_hash,
		CASE WHEN c.op = 'updated' THEN (
			-- The whole statement reads one snapshot: this lookup sees the
			-- payload as it was before "up" changed it. Looked up only for
			-- updates, rather than carried in "old" for every record.
			SELECT array_agg(key ORDER BY key)
			FROM jsonb_each(c.payload) n FULL JOIN jsonb_each((
				SELECT p.payload FROM records p
				WHERE p.source = $4 AND p.resource = $5 AND p.external_id = c.external_id
			)) o USING (key)
			WHERE n.value IS DISTINCT FROM o.value
		) END
	FROM changes c
	WHERE c.op = 'updated' OR NOT $8::boolean
)
SELECT op, external_id, old_hash, new_hash FROM changes`

// ApplyPage applies one page of records with its run counters, checkpoint and
// outbox event in a single transaction. Applying the same page again changes
// nothing: unchanged records are skipped by hash.
//
// One record never fails its page: a record Postgres cannot store (see
// unstorable) is quarantined with the reason, with the page, and the rest
// of the page applies. A value Postgres refuses for a reason these checks
// did not foresee fails the page's statement; the page is then applied
// again without the records Postgres names (tidemark_jsonb_error).
func (s *Store) ApplyPage(ctx context.Context, p Page) (PageResult, error) {
	records, aside := storable(dedupe(p.Records))
	aside = append(aside, p.Rejected...)
	res, err := s.applyPage(ctx, p, records, aside)
	if err != nil && dataException(err) && len(records) > 0 {
		bad, ferr := s.refused(ctx, records)
		if ferr != nil {
			return PageResult{}, fmt.Errorf("apply page %s run %d: %w (and finding the values Postgres refused: %w)", p.Key, p.RunID, err, ferr)
		}
		if len(bad) > 0 {
			kept := records[:0:0]
			for i, r := range records {
				if why, ok := bad[i]; ok {
					aside = append(aside, Rejected{ExternalID: r.ExternalID, Reason: "Postgres cannot store it: " + why, Raw: r.Payload})
					continue
				}
				kept = append(kept, r)
			}
			res, err = s.applyPage(ctx, p, kept, aside)
		}
	}
	if err != nil {
		return PageResult{}, fmt.Errorf("apply page %s run %d: %w", p.Key, p.RunID, err)
	}
	return res, nil
}

// applyPage applies records (and quarantines aside) in one transaction:
// the records, the run's counters, the checkpoint, the digest and the
// outbox event commit together or not at all.
func (s *Store) applyPage(ctx context.Context, p Page, records []Record, aside []Rejected) (PageResult, error) {
	a := newPageApply(p, records, aside)
	err := s.pageTx(ctx, func(tx *gorm.DB, conn *sql.Conn) error { return a.run(ctx, tx, conn) })
	return a.res, err
}

// pageApply is one attempt at applying a page: what it was given and what
// its steps found so far.
type pageApply struct {
	p       Page
	records []Record
	aside   []Rejected
	// stored are the ids of records, hashes their content hashes; seen
	// are the ids the page saw: stored and those set aside.
	stored, hashes, seen []string

	res     PageResult
	changes []change
	digest  digestCheck
	// live is what the page did to the resource's version hash.
	live liveDelta
	// quarantineTouched: the page changed record_quarantine.
	quarantineTouched bool
}

func newPageApply(p Page, records []Record, aside []Rejected) *pageApply {
	a := &pageApply{p: p, records: records, aside: aside}
	a.stored = make([]string, len(records), len(records)+len(aside))
	a.hashes = make([]string, len(records))
	for i, r := range records {
		a.stored[i], a.hashes[i] = r.ExternalID, r.Hash
	}
	a.seen = a.stored
	// A record set aside still exists upstream: the full read has seen it,
	// and must not tombstone the version of it that is stored. (No stored
	// record has an id holding U+0000, which text refuses.)
	for _, r := range aside {
		if r.ExternalID != "" && strings.IndexByte(r.ExternalID, 0) < 0 {
			a.seen = append(a.seen, r.ExternalID)
		}
	}
	return a
}

// run is the page's transaction, step by step.
func (a *pageApply) run(ctx context.Context, tx *gorm.DB, conn *sql.Conn) error {
	// Both page statements are prepared once per connection; their
	// generic plans (a primary-key lookup per record) are as good as
	// any, while a custom plan cost ~3 ms of planning per page. The
	// upsert's estimated cost (the changed-fields subplan per row) is
	// above jit_above_cost, and compiling it took 30 ms per page:
	// longer than running it. It is not a query JIT helps.
	if _, err := exec(ctx, tx, `SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL jit = off; `+boundedWaits); err != nil {
		return err
	}
	var err error
	a.changes, a.digest, err = applyRecords(ctx, tx, conn, a.p, a.records, a.aside, a.stored, a.hashes)
	if err != nil {
		return err
	}
	a.res.DigestMatched = a.digest.trusted
	a.countChanges()
	if err := a.quarantine(ctx, tx); err != nil {
		return err
	}
	if err := a.rememberSeen(ctx, tx); err != nil {
		return err
	}
	if err := a.countRun(ctx, tx); err != nil {
		return err
	}
	if err := a.saveCheckpoint(ctx, tx); err != nil {
		return err
	}
	if err := recordDigest(ctx, tx, a.p, a.digest, a.live, a.res.Updated > 0); err != nil {
		return err
	}
	if a.p.SummarizeCreates && a.res.Created > 0 {
		if err := summarizeCreates(ctx, tx, a.p, a.res.Created); err != nil {
			return fmt.Errorf("audit the first load: %w", err)
		}
	}
	if err := a.announce(tx); err != nil {
		return err
	}
	if a.p.BeforeCommit != nil {
		a.p.BeforeCommit()
	}
	return nil
}

// countChanges counts the records the page created, updated and left
// alone, and what that did to the version hash.
func (a *pageApply) countChanges() {
	for _, c := range a.changes {
		switch c.op {
		case "created":
			a.res.Created++
			a.live.add(c.id, c.newHash)
		case "updated":
			a.res.Updated++
			a.live.replace(c.id, c.oldHash, c.newHash)
		}
		a.res.Changed = append(a.res.Changed, c.id)
	}
	a.res.Unchanged = len(a.records) - len(a.changes)
}

// quarantine sets aside the records the page could not store, and takes
// those it stored out of quarantine.
func (a *pageApply) quarantine(ctx context.Context, tx *gorm.DB) error {
	p := a.p
	if len(a.aside) > 0 {
		newly, err := quarantine(ctx, tx, p, a.aside)
		if err != nil {
			return fmt.Errorf("quarantine records: %w", err)
		}
		a.res.Quarantined, a.res.NewlyQuarantined = len(a.aside), len(newly)
		a.quarantineTouched = true
		if len(newly) > 0 {
			if err := writeQuarantineEvent(tx, p, newly); err != nil {
				return err
			}
		}
	}
	if (p.Quarantined || len(a.aside) > 0) && len(a.stored) > 0 {
		// Stored now: whatever kept them out before is fixed upstream.
		n, err := exec(ctx, tx, `DELETE FROM record_quarantine
			WHERE source = $1 AND resource = $2 AND external_id = ANY($3::text[])`, p.Source, p.Resource, a.stored)
		if err != nil {
			return fmt.Errorf("release quarantined records: %w", err)
		}
		if n > 0 {
			a.quarantineTouched = true
		}
	}
	return nil
}

// rememberSeen adds a full read's page to its pass's seen-set.
func (a *pageApply) rememberSeen(ctx context.Context, tx *gorm.DB) error {
	if a.p.PassID == 0 || len(a.seen) == 0 {
		return nil
	}
	// One row per page, the ids as an array: a row per id made the
	// seen-set about half of an unchanged resync's database work.
	if _, err := exec(ctx, tx, `INSERT INTO sync_seen (pass_id, ids, live_xor) VALUES ($1, $2, $3)`,
		a.p.PassID, a.seen, seenXor(a.records, a.aside)); err != nil {
		return fmt.Errorf("remember seen ids: %w", err)
	}
	return nil
}

// countRun adds the page to its run's counters. It is fenced by the run's
// status: a run another took over from (AbandonRunning, e.g. after Redis
// lost the fetch lock) must not apply pages to the pass the new run
// continues.
func (a *pageApply) countRun(ctx context.Context, tx *gorm.DB) error {
	p, res := a.p, a.res
	n, err := exec(ctx, tx, `
		UPDATE sync_runs SET pages = pages + 1,
			http_requests = http_requests + $1,
			records_fetched = records_fetched + $2,
			records_created = records_created + $3,
			records_updated = records_updated + $4,
			records_unchanged = records_unchanged + $5,
			records_quarantined = records_quarantined + $6
		WHERE id = $7 AND status = 'running'`,
		p.Requests, len(p.Records)+len(p.Rejected), res.Created, res.Updated, res.Unchanged, res.Quarantined, p.RunID)
	if err != nil {
		return fmt.Errorf("count run: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("run %d: %w", p.RunID, ErrSuperseded)
	}
	return nil
}

// saveCheckpoint stores where a retry resumes, the resource's (or, for a
// partition's page, the partition's), with the page's change to the
// version hash and the quarantine count.
func (a *pageApply) saveCheckpoint(ctx context.Context, tx *gorm.DB) error {
	p := a.p
	var cp json.RawMessage
	if p.Checkpoint != nil {
		seenIDs := 0
		if p.PassID != 0 {
			seenIDs = len(a.seen)
		}
		cp = p.Checkpoint(a.res.Changed, seenIDs)
	}
	column := checkpointColumn(p.PassID != 0)
	args := []any{a.live.count, a.live.xor, a.quarantineTouched, p.Source, p.Resource}
	setCheckpoint := `, ` + column + ` = CAST($6 AS jsonb)`
	if p.Partition != "" {
		if _, err := exec(ctx, tx, `UPDATE sync_partitions SET `+column+` = CAST($1 AS jsonb), updated_at = now()
			WHERE source = $2 AND resource = $3 AND partition = $4`, nullJSON(cp), p.Source, p.Resource, p.Partition); err != nil {
			return fmt.Errorf("save partition checkpoint: %w", err)
		}
		setCheckpoint = "" // the resource's is the walk's (FinishPartition)
	} else {
		args = append(args, nullJSON(cp))
	}
	if _, err := exec(ctx, tx, `UPDATE sync_state SET updated_at = now(),
			live_count = live_count + $1, live_xor = live_xor # $2,
			quarantined = CASE WHEN $3 THEN (SELECT count(*) FROM record_quarantine q
				WHERE q.source = sync_state.source AND q.resource = sync_state.resource) ELSE quarantined END`+setCheckpoint+`
		WHERE source = $4 AND resource = $5`, args...); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

// announce writes the page's data.updated event, when it changed anything,
// listing up to MaxChangedIDs of the changed ids.
func (a *pageApply) announce(tx *gorm.DB) error {
	if len(a.changes) == 0 {
		return nil
	}
	p, res := a.p, a.res
	listed := res.Changed[:min(len(res.Changed), cmpOr(p.MaxChangedIDs, 100))]
	return writeOutbox(tx, EventDataUpdated, p.Key, p.RunID, DataUpdated{
		Source: p.Source, Resource: p.Resource, RunID: p.RunID,
		Created: res.Created, Updated: res.Updated, IDs: listed, At: time.Now().UTC(),
	})
}

// boundedWaits keeps one stalled session from holding up the fleet. An
// outbox row takes a fleet-wide lock until its transaction ends (ids in
// commit order: migrations/00002), so a worker frozen inside a page
// transaction (a GC pause, a VM freeze, a partition) would stop every other
// page commit for as long as it stays frozen. Postgres ends such a session
// after 5s idle in its transaction (the page is retried from its
// checkpoint), and no page waits more than 5s for a lock.
const boundedWaits = `SET LOCAL idle_in_transaction_session_timeout = '5s'; SET LOCAL lock_timeout = '5s'`

// change is one record a page created or updated. oldHash is "" for a
// creation.
type change struct{ op, id, oldHash, newHash string }

// differingSQL lists the positions (1-based) of the records whose stored
// hash differs from the page's, that are new, or that are tombstoned: the
// only ones upsertPageSQL has anything to do for; and whether each is
// stored at all (tombstoned included), which a COPY would collide with.
const differingSQL = `
SELECT i.ord, r.content_hash IS NOT NULL AS stored FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i(id, hash, ord)
LEFT JOIN LATERAL (
	SELECT r.content_hash, r.deleted_at FROM records r
	WHERE r.source = $3 AND r.resource = $4 AND r.external_id = i.id
	LIMIT 1 -- one primary-key lookup per record, as in upsertPageSQL
) r ON true
WHERE r.content_hash IS DISTINCT FROM i.hash OR r.deleted_at IS NOT NULL`

// upsertDiffering applies the records that differ from what is stored. It
// first compares ids and hashes alone (differingSQL), then sends the
// payloads of the differing records only: an unchanged resync then ships
// and decodes no payload at all (with this, `tidemark-bench --workloads 2`
// went from 14.2 to 10.3 s for 1M records). A page that expects its records
// changed skips the comparison and sends them all. A page whose records
// are all new (a first load) is copied (copyNew), and upserted only when
// that finds a record stored meanwhile; so is a page expected changed,
// unless that finds one stored.
//
// Both statements run on the transaction's connection directly: GORM would
// expand the []string arguments into lists of scalars, where pgx sends each
// as one text[] in binary.
func upsertDiffering(ctx context.Context, tx *gorm.DB, conn *sql.Conn, p Page, records []Record, ids, hashes []string) ([]change, error) {
	allNew := true // unknown without the comparison: copyNew falls back if not
	if !p.ExpectChanged {
		differ, anyStored, err := differing(ctx, tx, p, ids, hashes)
		if err != nil || len(differ) == 0 {
			return nil, err
		}
		allNew = len(differ) == len(records) && !anyStored
		ids, hashes, records = pick(ids, differ), pick(hashes, differ), pick(records, differ)
	}
	if allNew {
		if changes, copied, err := copyNew(ctx, conn, p, records); err != nil || copied {
			return changes, err
		}
	}
	payloads := make([]string, len(records))
	for i, r := range records {
		payloads[i] = string(r.Payload)
	}
	return upsert(ctx, tx, p, ids, payloads, hashes)
}

// differing returns the indexes of the records that differ from what is
// stored, and whether any of them is stored (so not new).
func differing(ctx context.Context, tx *gorm.DB, p Page, ids, hashes []string) (differ []int, anyStored bool, err error) {
	rows, err := tx.Statement.ConnPool.QueryContext(ctx, differingSQL, ids, hashes, p.Source, p.Resource)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var ord int
		var stored bool
		if err := rows.Scan(&ord, &stored); err != nil {
			return nil, false, err
		}
		differ = append(differ, ord-1)
		anyStored = anyStored || stored
	}
	return differ, anyStored, rows.Err()
}

// pick returns the elements of s at the indexes idx.
func pick[T any](s []T, idx []int) []T {
	out := make([]T, len(idx))
	for j, i := range idx {
		out[j] = s[i]
	}
	return out
}

// upsert runs upsertPageSQL for the given records.
func upsert(ctx context.Context, tx *gorm.DB, p Page, ids, payloads, hashes []string) ([]change, error) {
	rows, err := tx.Statement.ConnPool.QueryContext(ctx, upsertPageSQL, ids, payloads, hashes, p.Source, p.Resource, p.RunID, p.Partition, p.SummarizeCreates)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []change
	for rows.Next() {
		var c change
		var old sql.NullString
		if err := rows.Scan(&c.op, &c.id, &old, &c.newHash); err != nil {
			return nil, err
		}
		c.oldHash = old.String
		out = append(out, c)
	}
	return out, rows.Err()
}

// VersionHash fingerprints a resource's present records: their count and an
// order-independent XOR of per-record hashes. Every write to records keeps
// both up to date in sync_state (liveDelta), so this is a primary-key read;
// a resource that predates that bookkeeping gets them from one scan of its
// records, under the state row's lock so no page's delta slips between.
func (s *Store) VersionHash(ctx context.Context, k Key) (string, error) {
	var row struct {
		N, X *int64
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		err := tx.Statement.ConnPool.QueryRowContext(ctx, `SELECT live_count, live_xor FROM sync_state
			WHERE source = $1 AND resource = $2 FOR UPDATE`, k.Source, k.Resource).Scan(&row.N, &row.X)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if row.N != nil && row.X != nil {
			return nil
		}
		if err := tx.Statement.ConnPool.QueryRowContext(ctx, `
			SELECT count(*),
			       coalesce(bit_xor(('x' || substr(md5(external_id || ':' || content_hash), 1, 16))::bit(64)::bigint), 0)
			FROM records WHERE source = $1 AND resource = $2 AND deleted_at IS NULL`, k.Source, k.Resource).Scan(&row.N, &row.X); err != nil {
			return err
		}
		_, err = exec(ctx, tx, `UPDATE sync_state SET live_count = $1, live_xor = $2 WHERE source = $3 AND resource = $4`,
			*row.N, *row.X, k.Source, k.Resource)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("version hash %s: %w", k, err)
	}
	if row.N == nil || row.X == nil {
		return "", fmt.Errorf("version hash %s: %w", k, ErrNotFound)
	}
	return fmt.Sprintf("%d-%016x", *row.N, uint64(*row.X)), nil
}

// liveDelta is what a write does to a resource's version hash: the change in
// live records and the XOR of the record hashes that entered or left.
type liveDelta struct {
	count int64
	xor   int64
}

func (d *liveDelta) add(id, hash string)    { d.count++; d.xor ^= recordHash(id, hash) }
func (d *liveDelta) remove(id, hash string) { d.count--; d.xor ^= recordHash(id, hash) }
func (d *liveDelta) replace(id, old, new string) {
	d.xor ^= recordHash(id, old) ^ recordHash(id, new)
}

// recordHash is a record's part of the version hash: the first 8 bytes of
// md5(id ":" content hash), as VersionHash's scan computes it in SQL.
func recordHash(id, hash string) int64 {
	sum := md5.Sum([]byte(id + ":" + hash))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// writeOutbox writes an event in tx, to be published after it commits.
func writeOutbox(tx *gorm.DB, event string, k Key, runID int64, payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	if _, err := exec(tx.Statement.Context, tx, `INSERT INTO outbox (event, source, resource, run_id, payload) VALUES ($1, $2, $3, $4, CAST($5 AS jsonb))`,
		event, k.Source, k.Resource, runID, string(body)); err != nil {
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
