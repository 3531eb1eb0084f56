package store

import (
	"context"
	"fmt"
)

// What ApplyPage would do with a record (Store.WouldApply).
const (
	WouldCreate    = "create"
	WouldUpdate    = "update"
	WouldUnchanged = "unchanged"
)

// Outlook is what applying a page would do, found by reading alone.
type Outlook struct {
	// Ops maps each storable record's id to WouldCreate, WouldUpdate or
	// WouldUnchanged.
	Ops map[string]string
	// Tombstoned lists the ids that would be created again: stored, but
	// deleted.
	Tombstoned map[string]bool
	// Aside are the records ApplyPage would quarantine rather than store,
	// with the reason (ids or payloads Postgres cannot store).
	Aside []Rejected
}

// wouldApplySQL reads the stored hash of each record by primary key: the
// comparison upsertPageSQL makes, without the write.
const wouldApplySQL = `
SELECT i.id, r.content_hash, r.deleted_at IS NOT NULL
FROM unnest($1::text[]) AS i(id)
LEFT JOIN LATERAL (
	SELECT r.content_hash, r.deleted_at FROM records r
	WHERE r.source = $2 AND r.resource = $3 AND r.external_id = i.id
	LIMIT 1
) r ON true`

// WouldApply says what ApplyPage would do with recs for resource k, by
// reading alone (tidemark preview): which records it would create, update
// or leave unchanged, and which it would set aside. It decides as
// ApplyPage does: the last of repeated ids counts, a record is changed when
// its content hash differs, and a tombstoned record is created again.
func (s *Store) WouldApply(ctx context.Context, k Key, recs []Record) (Outlook, error) {
	records, aside := storable(dedupe(recs))
	out := Outlook{Ops: make(map[string]string, len(records)), Tombstoned: map[string]bool{}, Aside: aside}
	ids := make([]string, len(records))
	hashes := make(map[string]string, len(records))
	for i, r := range records {
		ids[i], hashes[r.ExternalID] = r.ExternalID, r.Hash
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		return Outlook{}, err
	}
	// The driver sends the []string as one text[] (GORM would expand it).
	rows, err := sqlDB.QueryContext(ctx, wouldApplySQL, ids, k.Source, k.Resource)
	if err != nil {
		return Outlook{}, fmt.Errorf("read stored records of %s: %w", k, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var stored *string
		var deleted bool // false, not NULL, when no row matched
		if err := rows.Scan(&id, &stored, &deleted); err != nil {
			return Outlook{}, err
		}
		switch {
		case stored == nil:
			out.Ops[id] = WouldCreate
		case deleted:
			out.Ops[id] = WouldCreate
			out.Tombstoned[id] = true
		case *stored != hashes[id]:
			out.Ops[id] = WouldUpdate
		default:
			out.Ops[id] = WouldUnchanged
		}
	}
	return out, rows.Err()
}
