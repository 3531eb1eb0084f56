-- +goose Up
-- A run handed back (429, the fleet's rate limit) or interrupted by a
-- graceful shutdown is not a failure: it gets a status of its own, and does
-- not count towards the failure streak.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'not_modified', 'failed', 'dead', 'interrupted'));

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
DROP TABLE pending_deletes;
DROP TABLE record_quarantine;
UPDATE sync_state SET checkpoint = full_checkpoint WHERE checkpoint IS NULL AND full_checkpoint IS NOT NULL;
ALTER TABLE sync_state
    DROP COLUMN full_checkpoint,
    DROP COLUMN basis,
    DROP COLUMN quarantined,
    DROP COLUMN deletes_held,
    DROP COLUMN deletes_held_mass;
ALTER TABLE sync_runs
    DROP COLUMN records_quarantined,
    DROP COLUMN deletes_held,
    DROP COLUMN note,
    DROP COLUMN read_started_at;
UPDATE sync_runs SET status = 'failed' WHERE status = 'interrupted';
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'not_modified', 'failed', 'dead'));
