-- +goose Up
-- A resource's first load is audited as one row per run, not one created
-- row per record (docs/architecture.md, "The audit trail"): op
-- initial_load, external_id '', records = how many records the run's pages
-- created, new_hash = the resource's version hash after the last of them.
-- Each page of the run adds its count in its own transaction, so the row
-- always says exactly what is committed; the unique index is what each page
-- upserts on (it holds initial_load rows only).
ALTER TABLE record_changes DROP CONSTRAINT record_changes_op_check;
ALTER TABLE record_changes ADD CONSTRAINT record_changes_op_check
    CHECK (op IN ('created', 'updated', 'deleted', 'initial_load'));
ALTER TABLE record_changes ADD COLUMN records bigint;
CREATE UNIQUE INDEX record_changes_initial_load ON record_changes (run_id) WHERE op = 'initial_load';

-- +goose Down
DROP INDEX record_changes_initial_load;
DELETE FROM record_changes WHERE op = 'initial_load';
ALTER TABLE record_changes DROP COLUMN records;
ALTER TABLE record_changes DROP CONSTRAINT record_changes_op_check;
ALTER TABLE record_changes ADD CONSTRAINT record_changes_op_check
    CHECK (op IN ('created', 'updated', 'deleted'));
