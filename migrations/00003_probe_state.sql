-- +goose Up
-- Change detection state. A probe that sees a new validator (ETag,
-- Last-Modified or content hash) records it as a candidate; the fetch that
-- starts after it promotes it to the confirmed column (etag, last_modified,
-- probe_hash) only when it succeeds, so a failed fetch never makes the next
-- probe believe the change was synced.
ALTER TABLE sync_state
    ADD COLUMN candidate_kind      text        NOT NULL DEFAULT '',
    ADD COLUMN candidate_validator text        NOT NULL DEFAULT '',
    ADD COLUMN candidate_at        timestamptz,
    ADD COLUMN head_unsupported    boolean     NOT NULL DEFAULT false,
    ADD COLUMN in_sync_at          timestamptz,
    ADD COLUMN last_drift          bigint;

-- +goose Down
ALTER TABLE sync_state
    DROP COLUMN candidate_kind,
    DROP COLUMN candidate_validator,
    DROP COLUMN candidate_at,
    DROP COLUMN head_unsupported,
    DROP COLUMN in_sync_at,
    DROP COLUMN last_drift;
