-- +goose Up
-- sync_partitions is the sync memory of one partition of a partitioned
-- resource (config parent or partitions): what sync_state is to a resource,
-- one row per partition, so that 100,000 parents cost rows rather than a
-- growing document. The resource's own sync_state row keeps the run-level
-- state (the walk's checkpoint, freshness, live counts).
CREATE TABLE sync_partitions (
    source          text        NOT NULL,
    resource        text        NOT NULL,
    partition       text        NOT NULL,
    watermark       text        NOT NULL DEFAULT '',
    checkpoint      jsonb,
    full_checkpoint jsonb,
    etag            text        NOT NULL DEFAULT '',
    last_modified   text        NOT NULL DEFAULT '',
    -- parent_version is the parent record's content hash when the
    -- partition last synced: parent.changed_only skips a partition whose
    -- parent still has it.
    parent_version  text        NOT NULL DEFAULT '',
    last_run_id     bigint,
    last_success_at timestamptz,
    last_error      text        NOT NULL DEFAULT '',
    records         bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, resource, partition)
);

-- A record's partition: '' for a resource that is not partitioned. A
-- partition's full read tombstones only its own unseen records, and a
-- parent's tombstone those of its partition. The index is partial: records
-- of unpartitioned resources (most of them) do not pay for it on write.
ALTER TABLE records ADD COLUMN partition text NOT NULL DEFAULT '';
CREATE INDEX records_partition ON records (source, resource, partition, external_id) WHERE partition <> '';

-- A parent's change starts its children's reads (trigger parent).
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'probe', 'webhook', 'retry', 'takeover', 'parent'));

-- +goose Down
UPDATE sync_runs SET trigger = 'retry' WHERE trigger = 'parent';
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'probe', 'webhook', 'retry', 'takeover'));
DROP INDEX records_partition;
ALTER TABLE records DROP COLUMN partition;
DROP TABLE sync_partitions;
