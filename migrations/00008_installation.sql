-- +goose Up
-- This installation's identity: a random id made once, when the database is
-- set up. Installations may share a Redis server (different DB numbers), and
-- Redis pub/sub ignores DB numbers, so what one publishes (run.progress) is
-- namespaced by this id (events.Installation). One row only (only_one).
CREATE TABLE installation (
    id         text        PRIMARY KEY DEFAULT gen_random_uuid()::text,
    only_one   boolean     NOT NULL DEFAULT true UNIQUE CHECK (only_one),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO installation DEFAULT VALUES;

-- When a paused resource was last resumed: for one freshness target after
-- it, the resource is not turned stale (store.CheckFreshness), so that
-- resuming after an outage does not send resource.stale for the lag it
-- built up while paused, a moment before its first probe catches up.
ALTER TABLE sync_state ADD COLUMN resumed_at timestamptz;

-- +goose Down
ALTER TABLE sync_state DROP COLUMN resumed_at;
DROP TABLE installation;
