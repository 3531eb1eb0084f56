-- +goose Up
-- outbox ids are handed out in commit order: a BEFORE INSERT trigger takes a
-- transaction-scoped advisory lock and only then draws the id, so a
-- transaction that writes an outbox row holds the lock until it commits or
-- rolls back. A reader that sees outbox row N therefore sees every committed
-- row below N too, which is what lets an SSE client resume from
-- Last-Event-ID without gaps (a bigserial alone allows row 11 to commit
-- before row 10). The cost: transactions that write events serialise from
-- their outbox insert to their commit, which is the tail of a page apply.
-- The AFTER INSERT trigger wakes relays through NOTIFY, delivered at commit.
-- +goose StatementBegin
CREATE FUNCTION outbox_ordered_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7467348211); -- "tidemark outbox"
    NEW.id := nextval(pg_get_serial_sequence('outbox', 'id'));
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tidemark_outbox', NEW.id::text);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER outbox_ordered_id BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_ordered_id();
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_notify();

-- the SSE replay reads a resource's events after an id
CREATE INDEX outbox_resource_idx ON outbox (source, resource, id);

-- +goose Down
DROP INDEX outbox_resource_idx;
DROP TRIGGER outbox_notify ON outbox;
DROP TRIGGER outbox_ordered_id ON outbox;
DROP FUNCTION outbox_notify();
DROP FUNCTION outbox_ordered_id();
