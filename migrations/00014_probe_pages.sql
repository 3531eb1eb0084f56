-- +goose Up
-- probe_pages is what the rolling_hash probe compares against: for each
-- page the last full read of a resource applied, where the read stood
-- when it asked it (the pager's position: the URL and what the walk knew,
-- so that the probe's pager decides about a next page as the read's did)
-- and a hash of the page's records (ids and content hashes, in order) and
-- of whether a next page followed. A page is
-- written after the read's transaction for it commits, so a stored hash
-- always describes records already in the store; a probe whose page hashes
-- differently has seen a change and asks for a full read, which writes the
-- pages anew. A small table rather than a sync_state column: a full read
-- writes one row per page, not a growing document per page.
CREATE TABLE probe_pages (
    source   text    NOT NULL,
    resource text    NOT NULL,
    page     integer NOT NULL,
    position jsonb   NOT NULL,
    hash     text    NOT NULL,
    PRIMARY KEY (source, resource, page)
);

-- +goose Down
DROP TABLE probe_pages;
