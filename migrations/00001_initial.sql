-- +goose Up
-- records holds the latest known state of every record of every resource.
CREATE TABLE records (
    source        text        NOT NULL,
    resource      text        NOT NULL,
    external_id   text        NOT NULL,
    payload       jsonb       NOT NULL,
    content_hash  text        NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    last_run_id   bigint,
    PRIMARY KEY (source, resource, external_id)
);

-- record_changes is the audit trail: one row per real change.
CREATE TABLE record_changes (
    id             bigserial   PRIMARY KEY,
    source         text        NOT NULL,
    resource       text        NOT NULL,
    external_id    text        NOT NULL,
    run_id         bigint      NOT NULL,
    op             text        NOT NULL CHECK (op IN ('created', 'updated', 'deleted')),
    old_hash       text,
    new_hash       text,
    changed_fields text[],
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX record_changes_record_idx ON record_changes (source, resource, external_id);
CREATE INDEX record_changes_run_idx ON record_changes (run_id);

-- sync_runs has one row per fetch run and per probe that failed or saw a change.
CREATE TABLE sync_runs (
    id                bigserial   PRIMARY KEY,
    source            text        NOT NULL,
    resource          text        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('probe', 'delta', 'full')),
    trigger           text        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'probe', 'webhook', 'retry')),
    task_id           text        NOT NULL DEFAULT '',
    attempt           integer     NOT NULL DEFAULT 1,
    status            text        NOT NULL CHECK (status IN ('running', 'succeeded', 'not_modified', 'failed', 'dead')),
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    http_requests     integer     NOT NULL DEFAULT 0,
    pages             integer     NOT NULL DEFAULT 0,
    records_fetched   bigint      NOT NULL DEFAULT 0,
    records_created   bigint      NOT NULL DEFAULT 0,
    records_updated   bigint      NOT NULL DEFAULT 0,
    records_deleted   bigint      NOT NULL DEFAULT 0,
    records_unchanged bigint      NOT NULL DEFAULT 0,
    drift             bigint,
    version_hash      text        NOT NULL DEFAULT '',
    error             text        NOT NULL DEFAULT ''
);
CREATE INDEX sync_runs_resource_idx ON sync_runs (source, resource, id DESC);
CREATE INDEX sync_runs_status_idx ON sync_runs (status, id DESC);

-- sync_state is the per-resource memory of the sync: validators, watermark,
-- checkpoint of the run in progress, and scheduling state.
CREATE TABLE sync_state (
    source                text        NOT NULL,
    resource              text        NOT NULL,
    etag                  text        NOT NULL DEFAULT '',
    last_modified         text        NOT NULL DEFAULT '',
    probe_hash            text        NOT NULL DEFAULT '',
    watermark             text        NOT NULL DEFAULT '',
    checkpoint            jsonb,
    last_success_at       timestamptz,
    last_change_at        timestamptz,
    last_full_sync_at     timestamptz,
    next_probe_at         timestamptz,
    probe_interval_ms     bigint      NOT NULL DEFAULT 0,
    paused                boolean     NOT NULL DEFAULT false,
    consecutive_failures  integer     NOT NULL DEFAULT 0,
    probes_total          bigint      NOT NULL DEFAULT 0,
    probes_not_modified   bigint      NOT NULL DEFAULT 0,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, resource)
);

-- outbox holds change events committed with the records they describe; a
-- relay publishes them after commit.
CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    event        text        NOT NULL,
    source       text        NOT NULL,
    resource     text        NOT NULL,
    run_id       bigint,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- sync_seen remembers which ids a full read saw, so that deletions can be
-- found at the end without rewriting every unchanged record. Unlogged: it is
-- scratch space that a crash may lose (the full read then starts over).
CREATE UNLOGGED TABLE sync_seen (
    pass_id     bigint NOT NULL,
    external_id text   NOT NULL,
    PRIMARY KEY (pass_id, external_id)
);

-- +goose Down
DROP TABLE sync_seen;
DROP TABLE outbox;
DROP TABLE sync_state;
DROP TABLE sync_runs;
DROP TABLE record_changes;
DROP TABLE records;
