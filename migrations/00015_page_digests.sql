-- +goose Up
-- Page digests let a full read skip comparing a page's records one by one
-- when the store is known to hold exactly that page already (store/digest.go).
-- digest_passes is one row per full read that records digests: the live
-- state of the resource (sync_state.live_count, live_xor) its digests hold
-- at. While the pass runs, that is the state its own pages left (a write by
-- anything else shows as a mismatch); a confirmed pass is the one whose
-- digests a later read may trust, as long as the live state is still the
-- one it was confirmed at. Both tables are unlogged scratch: a Postgres
-- crash empties them, which only costs the next full read its shortcut (a
-- page with no trusted digest is compared record by record).
CREATE UNLOGGED TABLE digest_passes (
    pass_id    bigint  PRIMARY KEY,
    source     text    NOT NULL,
    resource   text    NOT NULL,
    live_count bigint  NOT NULL,
    live_xor   bigint  NOT NULL,
    confirmed  boolean NOT NULL DEFAULT false
);
CREATE INDEX digest_passes_resource_idx ON digest_passes (source, resource);

-- page_digests: sha256 over a page's ids and content hashes, in page order,
-- one row per page of a pass.
CREATE UNLOGGED TABLE page_digests (
    pass_id bigint NOT NULL REFERENCES digest_passes ON DELETE CASCADE,
    digest  bytea  NOT NULL,
    PRIMARY KEY (pass_id, digest)
);

-- A seen-set row's live_xor is the XOR of the version hash's per-record
-- parts (md5 of id ":" content hash) of the page's records: when a full
-- read's pages add up to the resource's live count and XOR, it saw every
-- live record, and its end skips the anti-join (store/seen.go). NULL for a
-- page with records set aside (their hashes are unknown), and for rows an
-- older worker wrote.
ALTER TABLE sync_seen ADD COLUMN live_xor bigint;

-- +goose Down
ALTER TABLE sync_seen DROP COLUMN live_xor;
DROP TABLE page_digests;
DROP TABLE digest_passes;
