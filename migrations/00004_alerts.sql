-- +goose Up
-- Alert state, so each alert fires once fleet-wide: the scheduler flips these
-- flags with UPDATE ... WHERE NOT flag RETURNING and writes the event in the
-- same statement; a second scheduler replica's UPDATE waits for the row lock,
-- re-checks the flag and finds nothing to do.
ALTER TABLE sync_state
    ADD COLUMN stale           boolean     NOT NULL DEFAULT false,
    ADD COLUMN stale_since     timestamptz,
    ADD COLUMN failure_alerted boolean     NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE sync_state
    DROP COLUMN stale,
    DROP COLUMN stale_since,
    DROP COLUMN failure_alerted;
