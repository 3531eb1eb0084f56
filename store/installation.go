package store

import (
	"context"
	"fmt"
)

// InstallationID is the random id the migrations gave this database: the
// identity of the installation whose data it holds.
func (s *Store) InstallationID(ctx context.Context) (string, error) {
	var id string
	if err := s.db.WithContext(ctx).Raw(`SELECT id FROM installation`).Scan(&id).Error; err != nil {
		return "", fmt.Errorf("installation id: %w", err)
	}
	if id == "" {
		return "", fmt.Errorf("installation id: the installation table is empty (run tidemark migrate)")
	}
	return id, nil
}
