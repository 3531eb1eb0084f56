-- +goose Up
-- A run handed back (429, the fleet's rate limit) or interrupted by a
-- graceful shutdown is not a failure: it gets a status of its own, and does
-- not count towards the failure streak.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'not_modified', 'failed', 'dead', 'interrupted'));

-- A fetch whose worker is gone (its run still running, its fetch lock
-- lapsed) is resumed by a takeover task within seconds; taken_over_by names
-- the run that took over, so that the dead worker's task, when asynq
-- recovers it later, ends without a second run.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'probe', 'webhook', 'retry', 'takeover'));
ALTER TABLE sync_runs ADD COLUMN taken_over_by bigint;
CREATE INDEX sync_runs_task_idx ON sync_runs (task_id) WHERE taken_over_by IS NOT NULL;

-- What a run set aside or held back, and why, beside its counters:
-- records_quarantined, deletes_held, and a note for what is not an error
-- (a read restarted from its first page, deletions held, cursors in the
-- future). read_started_at is the upstream's clock (its Date header) when
-- the read began: the watermark never passes it, and a Last-Modified is
-- confirmed against it.
ALTER TABLE sync_runs
    ADD COLUMN records_quarantined bigint      NOT NULL DEFAULT 0,
    ADD COLUMN deletes_held        bigint      NOT NULL DEFAULT 0,
    ADD COLUMN note                text        NOT NULL DEFAULT '',
    ADD COLUMN read_started_at     timestamptz;

-- Each mode keeps its own checkpoint: a delta between a failed full read and
-- its retry no longer throws the full read's away. basis records what the
-- watermark and the stored ids were made under (the delta field and format,
-- the id path), so that a config change does not strand them.
ALTER TABLE sync_state
    ADD COLUMN full_checkpoint   jsonb,
    ADD COLUMN basis             jsonb,
    ADD COLUMN quarantined       bigint  NOT NULL DEFAULT 0,
    ADD COLUMN deletes_held      bigint  NOT NULL DEFAULT 0,
    ADD COLUMN deletes_held_mass boolean NOT NULL DEFAULT false;
UPDATE sync_state SET full_checkpoint = checkpoint, checkpoint = NULL WHERE checkpoint->>'mode' = 'full';

-- Records tidemark cannot store (a string holding U+0000, a number beyond
-- numeric, an id too long for the primary key or not valid UTF-8, no id at
-- all, one id twice with different content) are set aside here with the
-- reason, not allowed to fail their page. qkey is the id, or a digest of
-- what identifies the record when it has no usable id; raw is its JSON as
-- text (jsonb cannot hold what put it here). A later read that stores the
-- record removes it; a full read that no longer sees it removes it too.
CREATE TABLE record_quarantine (
    source        text        NOT NULL,
    resource      text        NOT NULL,
    qkey          text        NOT NULL,
    external_id   text,
    reason        text        NOT NULL,
    raw           text        NOT NULL,
    run_id        bigint      NOT NULL,
    pass_id       bigint,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, resource, qkey)
);

-- Deletions a full read saw but did not apply: the next full read applies
-- those it agrees on (pagination that shifts under deletes, or more than
-- max_delete_fraction of the resource: mass). since is when the first read
-- missed the record; a record written after that is not deleted.
CREATE TABLE pending_deletes (
    source      text        NOT NULL,
    resource    text        NOT NULL,
    external_id text        NOT NULL,
    run_id      bigint      NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, resource, external_id)
);

-- Fetches asked for and not yet done: by an operator (tidemark sync, the
-- API), by a probe that saw a change, or by a fetch that found its resource
-- busy (the follow-up). Redis may lose its queues (a restart without
-- persistence, a failover to an empty replica); Postgres keeps these until a
-- fetch that covers them succeeds, and the scheduler enqueues them again
-- when it finds Redis emptied. One outstanding request per resource, mode
-- and confirmation.
CREATE TABLE sync_requests (
    id              bigserial   PRIMARY KEY,
    source          text        NOT NULL,
    resource        text        NOT NULL,
    mode            text        NOT NULL CHECK (mode IN ('delta', 'full')),
    trigger         text        NOT NULL,
    confirm_deletes boolean     NOT NULL DEFAULT false,
    resume          boolean     NOT NULL DEFAULT false,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    run_id          bigint
);
CREATE UNIQUE INDEX sync_requests_outstanding ON sync_requests (source, resource, mode, confirm_deletes) WHERE done_at IS NULL;

-- jsonb_error is NULL when doc is valid jsonb, else why not: a page whose
-- upsert Postgres refused finds its unstorable records with it.
-- +goose StatementBegin
CREATE FUNCTION tidemark_jsonb_error(doc text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM doc::jsonb;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN SQLERRM;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tidemark_jsonb_error(text);
DROP TABLE sync_requests;
DROP TABLE pending_deletes;
DROP TABLE record_quarantine;
UPDATE sync_state SET checkpoint = full_checkpoint WHERE checkpoint IS NULL AND full_checkpoint IS NOT NULL;
ALTER TABLE sync_state
    DROP COLUMN full_checkpoint,
    DROP COLUMN basis,
    DROP COLUMN quarantined,
    DROP COLUMN deletes_held,
    DROP COLUMN deletes_held_mass;
DROP INDEX sync_runs_task_idx;
ALTER TABLE sync_runs DROP COLUMN taken_over_by;
UPDATE sync_runs SET trigger = 'retry' WHERE trigger = 'takeover';
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_trigger_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'probe', 'webhook', 'retry'));
ALTER TABLE sync_runs
    DROP COLUMN records_quarantined,
    DROP COLUMN deletes_held,
    DROP COLUMN note,
    DROP COLUMN read_started_at;
UPDATE sync_runs SET status = 'failed' WHERE status = 'interrupted';
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'not_modified', 'failed', 'dead'));
