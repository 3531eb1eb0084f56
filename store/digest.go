package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"

	"gorm.io/gorm"
)

// Page digests let a full read skip the record-by-record comparison of a
// page the store is known to hold already: an unchanged resync then costs
// Postgres a few statements per page instead of a primary-key lookup per
// record.
//
// A page's digest is a sha256 over its records' ids and content hashes, in
// page order (pageDigest). Each full read (a pass) records the digest of
// every page it applied: right after the page's transaction, the store holds
// exactly those ids with those hashes. What it holds later depends on what
// wrote to the resource since, and that is what decides whether a digest may
// be trusted:
//
//   - The resource's live state (sync_state.live_count, live_xor: the count
//     and an XOR of per-record hashes of its live records, which every write
//     to records keeps up to date for the version hash) changes with any
//     write that changes a record's hash or liveness.
//   - While a pass runs, digest_passes keeps the live state its own writes
//     lead to (chain): the state before its page plus the page's own change.
//     A page that finds the state elsewhere than where the pass left it knows
//     something else wrote (a delta between an interrupted read and its
//     resumption, a run that lost its lock): the pass's digests so far are
//     dropped, as they may describe records that write changed.
//   - A page that updates a record that was already live may be overwriting
//     one an earlier page of the same pass set (an id on two pages with
//     different content): the pass's digests so far are dropped too.
//     Creations cannot be such a record (a record the pass saw is live).
//   - At its end, a pass whose chain is intact is confirmed at the live state
//     after its deletions (which only touch records no page of the pass had).
//     Its digests then describe the store exactly, and keep doing so until
//     anything changes the live state.
//   - A later full read trusts a page digest only if it belongs to the
//     confirmed pass and the live state is still the one it was confirmed at.
//
// So a skip never hides a difference: a digest is trusted only while nothing
// at all has changed the resource's live records since the pass that proved
// it (the revert case: a delta wrote X v2, the upstream says v1 again, the
// page's digest equals the confirmed one, but the live state moved with the
// delta's write, so the page is compared record by record and X goes back
// to v1). The only chance of a wrong skip is a 64-bit collision of the live
// state's XOR, as for the version hash. The price is that any write between
// two full reads (a delta that changed one record) makes the next full read
// compare every page as before; it confirms a fresh set for the one after.
//
// A page still adds its ids to the pass's seen-set, so deletion detection is
// unchanged. Partitioned reads and pages with records set aside do not use
// digests.

// digestCheck is what a full read's page found out before its writes:
// whether its digest is trusted, and where the pass's chain stands.
type digestCheck struct {
	on      bool // the page takes part (a full read's page, unpartitioned, nothing set aside)
	digest  []byte
	trusted bool
	// state is the live state before the page's writes; valid is false
	// while the resource has none (it predates the bookkeeping).
	state struct {
		count, xor int64
		valid      bool
	}
	// intact: the pass's chain exists and the live state is where the
	// pass's previous page left it.
	intact bool
}

// pageDigest is a sha256 over the records' ids and content hashes in order,
// each length-prefixed so that no two pages share one by concatenation.
func pageDigest(records []Record) []byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, r := range records {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(r.ExternalID)))])
		h.Write([]byte(r.ExternalID))
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(r.Hash)))])
		h.Write([]byte(r.Hash))
	}
	return h.Sum(nil)
}

// checkDigestSQL reads, in one round trip, the live state, whether the
// confirmed pass holds the page's digest at that state, and the running
// pass's chain.
const checkDigestSQL = `
SELECT s.live_count, s.live_xor,
	EXISTS (SELECT 1 FROM digest_passes c JOIN page_digests d ON d.pass_id = c.pass_id AND d.digest = $4
		WHERE c.source = $1 AND c.resource = $2 AND c.confirmed
		AND c.live_count = s.live_count AND c.live_xor = s.live_xor),
	p.live_count, p.live_xor
FROM sync_state s LEFT JOIN digest_passes p ON p.pass_id = $3 AND NOT p.confirmed
WHERE s.source = $1 AND s.resource = $2`

// checkDigest is a page's digest check, before its writes.
func checkDigest(ctx context.Context, tx *gorm.DB, p Page, records []Record, aside []Rejected) (digestCheck, error) {
	var c digestCheck
	if p.PassID == 0 || p.Partition != "" || len(aside) > 0 || len(records) == 0 {
		return c, nil
	}
	c.on, c.digest = true, pageDigest(records)
	var count, xor, chainCount, chainXor sql.NullInt64
	err := tx.Statement.ConnPool.QueryRowContext(ctx, checkDigestSQL, p.Source, p.Resource, p.PassID, c.digest).
		Scan(&count, &xor, &c.trusted, &chainCount, &chainXor)
	if err == sql.ErrNoRows {
		c.on = false // no state row: nothing to chain to
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("check page digest: %w", err)
	}
	c.state.count, c.state.xor, c.state.valid = count.Int64, xor.Int64, count.Valid && xor.Valid
	c.trusted = c.trusted && c.state.valid
	c.intact = c.state.valid && chainCount.Valid && chainCount.Int64 == count.Int64 && chainXor.Int64 == xor.Int64
	return c, nil
}

// recordDigestSQL moves the pass's chain to the state its page left and
// adds the page's digest.
const recordDigestSQL = `
WITH chain AS (
	INSERT INTO digest_passes (pass_id, source, resource, live_count, live_xor)
	VALUES ($1, $2, $3, $4, $5)
	ON CONFLICT (pass_id) DO UPDATE SET live_count = EXCLUDED.live_count, live_xor = EXCLUDED.live_xor
	RETURNING pass_id
)
INSERT INTO page_digests (pass_id, digest) SELECT pass_id, $6 FROM chain
ON CONFLICT DO NOTHING`

// recordDigest adds a page's digest to its pass, after the page's writes,
// which changed the live state by live. The chain moves to the state before
// the page plus live, not to the state read now: a write by anything else
// that slipped in meanwhile then shows as a mismatch at the next page.
func recordDigest(ctx context.Context, tx *gorm.DB, p Page, c digestCheck, live liveDelta, updated bool) error {
	if !c.on {
		return nil
	}
	conn := tx.Statement.ConnPool
	if !c.state.valid {
		// No live state to chain to: the pass cannot be confirmed.
		_, err := conn.ExecContext(ctx, `DELETE FROM digest_passes WHERE pass_id = $1`, p.PassID)
		return err
	}
	if !c.intact || updated {
		// Something else wrote since the pass's last page, or this page
		// may have overwritten a record an earlier page set: the earlier
		// pages' digests may no longer hold.
		if _, err := conn.ExecContext(ctx, `DELETE FROM page_digests WHERE pass_id = $1`, p.PassID); err != nil {
			return fmt.Errorf("drop page digests of pass %d: %w", p.PassID, err)
		}
	}
	_, err := conn.ExecContext(ctx, recordDigestSQL, p.PassID, p.Source, p.Resource,
		c.state.count+live.count, c.state.xor^live.xor, c.digest)
	if err != nil {
		return fmt.Errorf("record page digest: %w", err)
	}
	return nil
}

// digestState is the live state at the start of a full read's end, and
// whether the pass's chain reaches it.
type digestState struct {
	on, intact bool
}

// beginConfirm locks the resource's state row for the rest of the full
// read's end (nothing else can change the live state until it commits) and
// tells whether the pass's chain is intact: no write but the pass's own
// since its first page.
func beginConfirm(ctx context.Context, tx *gorm.DB, f FullRead) (digestState, error) {
	if f.Partition != "" {
		return digestState{}, nil
	}
	var intact sql.NullBool // NULL (a count not kept yet) or no row: not intact
	err := tx.Statement.ConnPool.QueryRowContext(ctx, `SELECT p.live_count = s.live_count AND p.live_xor = s.live_xor
		FROM sync_state s JOIN digest_passes p ON p.pass_id = $1 AND NOT p.confirmed
		WHERE s.source = $2 AND s.resource = $3 FOR UPDATE OF s`, f.PassID, f.Source, f.Resource).Scan(&intact)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return digestState{}, fmt.Errorf("check the pass's page digests: %w", err)
	}
	return digestState{on: true, intact: intact.Bool}, nil
}

// confirmDigests ends a full read's digests, last in its end's transaction:
// with an intact chain, the pass's digests become the ones later reads
// trust, at the live state its deletions left; every other pass's of the
// resource goes (a stale confirmed set, abandoned passes).
func confirmDigests(ctx context.Context, tx *gorm.DB, f FullRead, d digestState) error {
	if !d.on {
		return nil
	}
	if d.intact {
		// No join: tombstoneUnseen turned nested loops off for this
		// transaction, and the penalty on a join's only possible plan put
		// its cost past jit_above_cost (seconds of compiling, holding the
		// outbox lock).
		if _, err := exec(ctx, tx, `UPDATE digest_passes SET confirmed = true, (live_count, live_xor) = (
				SELECT s.live_count, s.live_xor FROM sync_state s WHERE s.source = $1 AND s.resource = $2)
			WHERE pass_id = $3 AND EXISTS (SELECT 1 FROM sync_state s WHERE s.source = $1 AND s.resource = $2
				AND s.live_count IS NOT NULL AND s.live_xor IS NOT NULL)`,
			f.Source, f.Resource, f.PassID); err != nil {
			return fmt.Errorf("confirm page digests: %w", err)
		}
	}
	_, err := exec(ctx, tx, `DELETE FROM digest_passes WHERE source = $1 AND resource = $2 AND (pass_id <> $3 OR NOT confirmed)`,
		f.Source, f.Resource, f.PassID)
	return err
}

// dropDigests forgets a pass's digests (a full read that starts over).
func dropDigests(ctx context.Context, db *gorm.DB, passID int64) error {
	_, err := exec(ctx, db, `DELETE FROM digest_passes WHERE pass_id = $1 AND NOT confirmed`, passID)
	return err
}

// applyRecords writes a page's records that differ from the store's,
// unless the page's digest shows the store holds them all already. It
// returns the changes and the digest check, for recordDigest.
func applyRecords(ctx context.Context, tx *gorm.DB, conn *sql.Conn, p Page, records []Record, aside []Rejected, ids, hashes []string) ([]change, digestCheck, error) {
	c, err := checkDigest(ctx, tx, p, records, aside)
	if err != nil || c.trusted || len(records) == 0 {
		return nil, c, err
	}
	changes, err := upsertDiffering(ctx, tx, conn, p, records, ids, hashes)
	if err != nil {
		return nil, c, fmt.Errorf("upsert records: %w", err)
	}
	return changes, c, nil
}
