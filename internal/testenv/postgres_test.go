package testenv_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/tidemark/tidemark/internal/testenv"
)

// tableCount counts the tables of database dbURL's public schema.
func tableCount(t *testing.T, dbURL string) int {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(context.Background(),
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A test's database has every migration applied; an empty one has none.
func TestDatabases(t *testing.T) {
	t.Parallel()
	for range 3 { // copies of one template, each its own
		dbURL := testenv.Database(t)
		db, err := sql.Open("pgx", dbURL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(context.Background(),
			`INSERT INTO records (source, resource, external_id, payload, content_hash) VALUES ('s', 'r', '1', '{}', 'h')`); err != nil {
			t.Errorf("insert into a test database's records: %v", err)
		}
		var n int
		if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM records`).Scan(&n); err != nil || n != 1 {
			t.Errorf("records after one insert: %d (%v), want 1: a copy sees no other copy's rows", n, err)
		}
		db.Close()
	}
	if n := tableCount(t, testenv.EmptyDatabase(t)); n != 0 {
		t.Errorf("empty database: %d tables, want 0", n)
	}
}
