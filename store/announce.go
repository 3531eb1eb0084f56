package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tidemark/tidemark"
)

// Announce writes an event that belongs to no resource (config.rejected)
// to the outbox, which carries it to SSE and webhooks like any other. It
// returns the event's id.
func (s *Store) Announce(ctx context.Context, event tidemark.EventType, payload any) (int64, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return 0, fmt.Errorf("announce %s: %w", event, err)
	}
	var id int64
	err = s.db.WithContext(ctx).Raw(`INSERT INTO outbox (event, source, resource, payload) VALUES (?, '', '', CAST(? AS jsonb)) RETURNING id`,
		event, string(body)).Scan(&id).Error
	if err != nil {
		return 0, fmt.Errorf("announce %s: %w", event, err)
	}
	return id, nil
}
