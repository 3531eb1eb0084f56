package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// OutboxChannel is the NOTIFY channel the outbox's trigger signals when a
// transaction that wrote events commits (migrations/00002).
const OutboxChannel = "tidemark_outbox"

// Listen calls wake once it listens on channel (anything sent before was
// missed) and again at each notification, until ctx is done (it returns nil)
// or the connection is lost (it returns the error; when to listen again is
// the caller's to decide). The LISTEN holds a connection of its own, outside
// the pool: it belongs to one session for as long as it listens.
func (s *Store) Listen(ctx context.Context, channel string, wake func()) error {
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return fmt.Errorf("listen %s: connect: %w", channel, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen %s: %w", channel, err)
	}
	wake()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("listen %s: %w", channel, err)
		}
		wake()
	}
}
