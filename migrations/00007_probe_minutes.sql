-- +goose Up
-- Unchanged probes write no run row (and most probes are unchanged), so
-- what they did is kept here, one row per resource and minute: how many
-- there were and when the newest ran. The resource page charts requests per
-- hour and the freshness lag of the last day from it; the scheduler prunes
-- rows older than two days.
CREATE TABLE probe_minutes (
    source    text        NOT NULL,
    resource  text        NOT NULL,
    minute    timestamptz NOT NULL,
    unchanged bigint      NOT NULL DEFAULT 0,
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (source, resource, minute)
);

-- +goose Down
DROP TABLE probe_minutes;
