-- +goose Up
-- When the resource was first configured (its sync_state row made). A
-- resource never synced counts its freshness lag from here
-- (store.State.Freshness), so one whose first sync never finishes turns
-- stale after its target like any other. Rows older than this migration
-- did not record it: the last time each was written stands in, never
-- earlier than the true moment, so none turns stale sooner than it should
-- (and it no longer matters once a resource has synced).
ALTER TABLE sync_state ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
UPDATE sync_state SET created_at = least(created_at, updated_at);

-- +goose Down
ALTER TABLE sync_state DROP COLUMN created_at;
