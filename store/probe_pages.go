package store

import (
	"context"
	"encoding/json"
	"fmt"

	"gorm.io/gorm"
)

// ProbePage is one page a full read applied, as the rolling_hash probe
// re-asks it: its number (from 0), the read's position when it asked it
// (an upstream.Position, as a checkpoint keeps it) and its hash.
type ProbePage struct {
	Page     int             `gorm:"column:page"`
	Position json.RawMessage `gorm:"column:position"`
	Hash     string          `gorm:"column:hash"`
}

// SaveProbePage records page p of k's full read, after the page's
// transaction committed: the hash then describes records in the store.
func (s *Store) SaveProbePage(ctx context.Context, k Key, p ProbePage) error {
	err := s.db.WithContext(ctx).Exec(`INSERT INTO probe_pages (source, resource, page, position, hash) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (source, resource, page) DO UPDATE SET position = EXCLUDED.position, hash = EXCLUDED.hash`,
		k.Source, k.Resource, p.Page, string(p.Position), p.Hash).Error
	if err != nil {
		return fmt.Errorf("save probe page %d of %s: %w", p.Page, k, err)
	}
	return nil
}

// TrimProbePages forgets k's pages from pages on: a full read that ended
// with fewer pages than the one before.
func (s *Store) TrimProbePages(ctx context.Context, k Key, pages int) error {
	err := s.db.WithContext(ctx).Exec(`DELETE FROM probe_pages WHERE source = ? AND resource = ? AND page >= ?`,
		k.Source, k.Resource, pages).Error
	if err != nil {
		return fmt.Errorf("trim probe pages of %s: %w", k, err)
	}
	return nil
}

// RollingProbePage returns page turn mod the number of k's recorded pages,
// and that number; ErrNotFound when none is recorded (no full read has
// finished a page since the strategy was set).
func (s *Store) RollingProbePage(ctx context.Context, k Key, turn int64) (ProbePage, int, error) {
	var n int64
	db := s.db.WithContext(ctx)
	if err := db.Raw(`SELECT count(*) FROM probe_pages WHERE source = ? AND resource = ?`, k.Source, k.Resource).Scan(&n).Error; err != nil {
		return ProbePage{}, 0, fmt.Errorf("probe pages of %s: %w", k, err)
	}
	if n == 0 {
		return ProbePage{}, 0, fmt.Errorf("probe pages of %s: %w", k, ErrNotFound)
	}
	var row struct {
		Page     int
		Position string
		Hash     string
	}
	// Pages are numbered without gaps from 0 (each read writes 0..n-1 and
	// trims the rest), so the turn's page is its number.
	err := db.Raw(`SELECT page, position::text AS position, hash FROM probe_pages WHERE source = ? AND resource = ? AND page = ?`,
		k.Source, k.Resource, int(turn%n)).Scan(&row).Error
	if err == nil && row.Position == "" {
		err = gorm.ErrRecordNotFound
	}
	p := ProbePage{Page: row.Page, Position: json.RawMessage(row.Position), Hash: row.Hash}
	if err != nil {
		return ProbePage{}, int(n), fmt.Errorf("probe page %d of %s: %w", turn%n, k, notFound(err))
	}
	return p, int(n), nil
}

// ForgetProbePages drops k's recorded pages (tidemark reset --validators):
// the next rolling probe asks for a full read, which records them anew.
func (s *Store) ForgetProbePages(ctx context.Context, k Key) error {
	if err := s.db.WithContext(ctx).Exec(`DELETE FROM probe_pages WHERE source = ? AND resource = ?`, k.Source, k.Resource).Error; err != nil {
		return fmt.Errorf("forget probe pages of %s: %w", k, err)
	}
	return nil
}

// StoredAsIs reports whether every one of recs is stored, live, with the
// same content hash: a delta probe's page of nothing else has nothing to
// apply (the records a delta re-reads at its lower bound, the overlap and
// the newest ones below the watermark, are such a page while nothing
// changes). It compares ids and hashes only, as ApplyPage does first.
func (s *Store) StoredAsIs(ctx context.Context, k Key, recs []Record) (bool, error) {
	if len(recs) == 0 {
		return true, nil
	}
	ids, hashes := make([]string, len(recs)), make([]string, len(recs))
	for i, r := range recs {
		ids[i], hashes[i] = r.ExternalID, r.Hash
	}
	db, err := s.db.DB()
	if err != nil {
		return false, err
	}
	// One row per differing record: any at all is a change.
	var differ int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM (`+differingSQL+` LIMIT 1) d`, ids, hashes, k.Source, k.Resource).Scan(&differ)
	if err != nil {
		return false, fmt.Errorf("compare a delta probe's page of %s: %w", k, err)
	}
	return differ == 0, nil
}
