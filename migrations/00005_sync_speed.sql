-- +goose Up
-- A full read's seen-set, one row per applied page with the page's ids as an
-- array: a row per id (00001) cost as much as the rest of an unchanged
-- resync's writes. Scratch space as before: unlogged, emptied by a crash (the
-- read then starts over), so nothing in it needs carrying over.
DROP TABLE sync_seen;
CREATE UNLOGGED TABLE sync_seen (
    pass_id bigint NOT NULL,
    ids     text[] NOT NULL
);
CREATE INDEX sync_seen_pass_idx ON sync_seen (pass_id);

-- The version hash's parts, kept up to date by every write to records (an
-- XOR is its own inverse), so a run no longer scans the whole resource to
-- compute it. NULL means not known yet: existing rows get it from one scan
-- at their next run; a new resource starts empty.
ALTER TABLE sync_state ADD COLUMN live_count bigint, ADD COLUMN live_xor bigint;
ALTER TABLE sync_state ALTER COLUMN live_count SET DEFAULT 0, ALTER COLUMN live_xor SET DEFAULT 0;

-- Audit rows are written in run order, so a BRIN index finds a run's rows
-- for a fraction of what the btree cost on every insert (a third of the
-- audit table's insert time on a first sync).
DROP INDEX record_changes_run_idx;
CREATE INDEX record_changes_run_brin ON record_changes USING brin (run_id);

-- +goose Down
DROP INDEX record_changes_run_brin;
CREATE INDEX record_changes_run_idx ON record_changes (run_id);
ALTER TABLE sync_state DROP COLUMN live_count, DROP COLUMN live_xor;
DROP TABLE sync_seen;
CREATE UNLOGGED TABLE sync_seen (
    pass_id     bigint NOT NULL,
    external_id text   NOT NULL,
    PRIMARY KEY (pass_id, external_id)
);
