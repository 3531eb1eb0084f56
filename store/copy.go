package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"
)

// pageTx runs fn in one transaction, on a connection fn can also reach as
// pgx (copyNew's CopyFrom, which database/sql cannot express): both are the
// same Postgres session, so the COPY is part of the transaction.
func (s *Store) pageTx(ctx context.Context, fn func(tx *gorm.DB, conn *sql.Conn) error) error {
	return s.db.WithContext(ctx).Connection(func(c *gorm.DB) error {
		conn, ok := c.Statement.ConnPool.(*sql.Conn)
		if !ok {
			return fmt.Errorf("page transaction: connection is a %T, not a *sql.Conn", c.Statement.ConnPool)
		}
		return c.Transaction(func(tx *gorm.DB) error { return fn(tx, conn) })
	})
}

// Columns copyNew writes; the others take their defaults (version 1,
// first_seen_at and updated_at now(), deleted_at NULL), as an INSERT of a
// new record by upsertPageSQL does.
var (
	copyRecordColumns = []string{"source", "resource", "external_id", "payload", "content_hash", "last_run_id", "partition"}
	copyAuditColumns  = []string{"source", "resource", "external_id", "run_id", "op", "new_hash"}
)

// copyNew writes a page whose records are all expected to be new (none
// stored, not even tombstoned) with binary COPY: no per-record lookup, no
// ON CONFLICT arbiter, no executor per row. On the first load of 1M
// records it is what brings a page to the cost of COPY itself.
//
// The expectation may be wrong: a record stored meanwhile (a delta, a
// takeover's retry that read a page again), one that moved between pages
// during the read, a tombstoned one. The primary key then refuses the COPY;
// it runs inside a savepoint, so rolling back to it leaves the page's
// transaction as it was, and ok = false tells the caller to apply the page
// by the upsert, which handles every case. Nothing is lost and nothing
// fails: the worst case costs a refused COPY.
//
// The savepoint is not released: the rest of the page's transaction runs
// inside it (after a rollback to it too), so every row the page writes,
// its records, audit rows and outbox event alike, carries the one
// transaction id the page's first write took (the simulator's audit check
// groups a page's rows by it), and a round trip is saved; commit ends it
// with the transaction.
//
// Each record is audited as created, unless p.SummarizeCreates (the run's
// initial_load row counts them instead).
func copyNew(ctx context.Context, conn *sql.Conn, p Page, records []Record) (changes []change, ok bool, err error) {
	err = conn.Raw(func(driverConn any) error {
		pg := driverConn.(*stdlib.Conn).Conn()
		if _, err := pg.Exec(ctx, `SAVEPOINT copy_page`); err != nil {
			return err
		}
		err := copyRows(ctx, pg, p, records)
		if isPrimaryKeyViolation(err) {
			_, err = pg.Exec(ctx, `ROLLBACK TO SAVEPOINT copy_page`)
			return err
		}
		ok = err == nil
		return err
	})
	if err != nil || !ok {
		return nil, false, err
	}
	changes = make([]change, len(records))
	for i, r := range records {
		changes[i] = change{op: "created", id: r.ExternalID, newHash: r.Hash}
	}
	return changes, true, nil
}

// copyRows copies the records, and their created audit rows unless the
// page summarizes them.
func copyRows(ctx context.Context, pg *pgx.Conn, p Page, records []Record) error {
	if _, err := pg.CopyFrom(ctx, pgx.Identifier{"records"}, copyRecordColumns, pgx.CopyFromSlice(len(records), func(i int) ([]any, error) {
		r := records[i]
		return []any{p.Source, p.Resource, r.ExternalID, []byte(r.Payload), r.Hash, p.RunID, p.Partition}, nil
	})); err != nil {
		return fmt.Errorf("copy records: %w", err)
	}
	if p.SummarizeCreates {
		return nil
	}
	if _, err := pg.CopyFrom(ctx, pgx.Identifier{"record_changes"}, copyAuditColumns, pgx.CopyFromSlice(len(records), func(i int) ([]any, error) {
		r := records[i]
		return []any{p.Source, p.Resource, r.ExternalID, p.RunID, "created", r.Hash}, nil
	})); err != nil {
		return fmt.Errorf("copy audit rows: %w", err)
	}
	return nil
}

// isPrimaryKeyViolation: err is Postgres refusing a record whose key is
// already stored.
func isPrimaryKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "records_pkey"
}
