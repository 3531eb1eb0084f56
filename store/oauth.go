package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// OAuthToken is an OAuth2 source's rotated refresh token, as stored: the
// token encrypted by the caller (the store never sees it in the clear).
type OAuthToken struct {
	Source          string `gorm:"primaryKey"`
	RefreshTokenEnc []byte
	// SeedSHA256 is the hex SHA-256 of the environment's refresh token
	// this one descends from.
	SeedSHA256 string `gorm:"column:seed_sha256"`
	RotatedAt  time.Time
}

// TableName is the table OAuthToken rows live in.
func (OAuthToken) TableName() string { return "oauth_tokens" }

// OAuthToken returns source's stored refresh token, or ErrNotFound.
func (s *Store) OAuthToken(ctx context.Context, source string) (OAuthToken, error) {
	var t OAuthToken
	if err := s.db.WithContext(ctx).Where("source = ?", source).Take(&t).Error; err != nil {
		return t, fmt.Errorf("oauth token of source %s: %w", source, notFound(err))
	}
	return t, nil
}

// SaveOAuthToken stores t, replacing the source's previous token.
func (s *Store) SaveOAuthToken(ctx context.Context, t OAuthToken) error {
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "source"}},
		DoUpdates: clause.AssignmentColumns([]string{"refresh_token_enc", "seed_sha256", "rotated_at"}),
	}).Create(&t).Error
	if err != nil {
		return fmt.Errorf("save oauth token of source %s: %w", t.Source, err)
	}
	return nil
}
