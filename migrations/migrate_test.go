package migrations_test

import (
	"context"
	"database/sql"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/migrations"
)

// Up migrates an empty database (tests' databases are copies of a template
// and do not), again without effect, and Down takes every migration back.
func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("pgx", testenv.EmptyDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables := func() int {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables
			WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := range 2 {
		if err := migrations.Up(ctx, db); err != nil {
			t.Fatalf("up %d: %v", i+1, err)
		}
	}
	migrated := tables()
	if migrated == 0 {
		t.Fatal("no table after Up")
	}
	if err := migrations.Down(ctx, db); err != nil {
		t.Fatalf("down: %v", err)
	}
	if n := tables(); n != 0 {
		t.Errorf("%d tables after Down, want 0", n)
	}
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("up after down: %v", err)
	}
	if n := tables(); n != migrated {
		t.Errorf("%d tables after Up, Down, Up; want %d", n, migrated)
	}
}
