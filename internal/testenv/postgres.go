package testenv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/tidemark/tidemark/migrations"
)

var dbSeq atomic.Int64

// Database creates a migrated database for this test, drops it when the
// test ends, and returns its URL. It is a copy of the template database
// migrated for the current migration files (see ensureTemplate).
func Database(t testing.TB) string {
	t.Helper()
	return newDatabase(t, createFromTemplate)
}

// EmptyDatabase creates an empty database for this test (no migration
// applied), drops it when the test ends, and returns its URL: for tests of
// migrating itself.
func EmptyDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, func(ctx context.Context, admin *sql.DB, name string) error {
		_, err := admin.ExecContext(ctx, "CREATE DATABASE "+name)
		return err
	})
}

// newDatabase names a database for this test, has create make it, drops it
// when the test ends, and returns its URL.
func newDatabase(t testing.TB, create func(ctx context.Context, admin *sql.DB, name string) error) string {
	t.Helper()
	admin, err := sql.Open("pgx", AdminDatabaseURL())
	if err != nil {
		t.Fatalf("testenv: open admin database: %v", err)
	}
	defer admin.Close()
	name := fmt.Sprintf("tidemark_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, dbSeq.Add(1))
	if err := create(context.Background(), admin, name); err != nil {
		t.Fatalf("testenv: create database (is Postgres running? TIDEMARK_TEST_DATABASE_URL=%s): %v", AdminDatabaseURL(), err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", AdminDatabaseURL())
		if err != nil {
			t.Errorf("testenv: open admin database: %v", err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	dbURL, err := databaseURL(name)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dbURL
}

// databaseURL is the URL of database name on the admin database's server.
func databaseURL(name string) (string, error) {
	u, err := url.Parse(AdminDatabaseURL())
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// Postgres error codes the template copy handles.
const (
	codeObjectInUse       = "55006" // "source database ... is being accessed by other users"
	codeUndefinedDatabase = "3D000" // the template is gone: another run's dropped it
)

// createFromTemplate creates database name as a copy of the migrated
// template. Postgres refuses the copy while any session is connected to
// the template (none of ours ever is; autovacuum may be, briefly), so a
// refusal is retried for a while; a template dropped meanwhile (by a test
// run of other migrations, see dropOtherTemplates) is made again.
func createFromTemplate(ctx context.Context, admin *sql.DB, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for remade := 0; ; {
		tmpl, err := ensureTemplate(ctx, admin)
		if err != nil {
			return err
		}
		_, err = admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tmpl)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			return nil
		case !errors.As(err, &pgErr) || time.Now().After(deadline):
			return err
		case pgErr.Code == codeObjectInUse:
			time.Sleep(20 * time.Millisecond) // until the other session leaves the template
		case pgErr.Code == codeUndefinedDatabase && remade < 3:
			remade++
			forgetTemplate(tmpl)
		default:
			return err
		}
	}
}

// templatePrefix begins the name of every template database testenv makes;
// the migrations' Digest ends it.
const templatePrefix = "tidemark_template_"

// template is this process's migrated template database, once made or
// found.
var template struct {
	mu   sync.Mutex
	name string
}

// forgetTemplate makes the next ensureTemplate look for the template in
// Postgres again, if it still names tmpl.
func forgetTemplate(tmpl string) {
	template.mu.Lock()
	defer template.mu.Unlock()
	if template.name == tmpl {
		template.name = ""
	}
}

// ensureTemplate returns the name of the template database migrated for
// the current migration files, making it if no process has. Test binaries
// run as parallel processes, so it is made under a Postgres advisory lock,
// under a temporary name renamed when complete: a process killed while
// migrating leaves no template that looks finished.
func ensureTemplate(ctx context.Context, admin *sql.DB) (string, error) {
	template.mu.Lock()
	defer template.mu.Unlock()
	if template.name != "" {
		return template.name, nil
	}
	digest, err := migrations.Digest()
	if err != nil {
		return "", err
	}
	name := templatePrefix + digest[:16]
	conn, err := admin.Conn(ctx) // one session: it holds the advisory lock
	if err != nil {
		return "", fmt.Errorf("template lock: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtext('tidemark testenv template'))`); err != nil {
		return "", fmt.Errorf("template lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('tidemark testenv template'))`)
	var exists bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look for template %s: %w", name, err)
	}
	if !exists {
		if err := buildTemplate(ctx, conn, name); err != nil {
			return "", err
		}
		dropOtherTemplates(ctx, conn, name)
	}
	template.name = name
	return name, nil
}

// buildTemplate makes template database name: migrated from empty under a
// temporary name, closed to connections (so that no stray session, not
// even autovacuum's, delays a copy), then renamed.
func buildTemplate(ctx context.Context, conn *sql.Conn, name string) error {
	building := name + "_building"
	for _, stmt := range []string{
		"DROP DATABASE IF EXISTS " + building + " WITH (FORCE)", // left by a process that died building it
		"CREATE DATABASE " + building,
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("build template %s: %w", name, err)
		}
	}
	if err := migrate(ctx, building); err != nil {
		return fmt.Errorf("build template %s: %w", name, err)
	}
	for _, stmt := range []string{
		"ALTER DATABASE " + building + " WITH ALLOW_CONNECTIONS false",
		"ALTER DATABASE " + building + " RENAME TO " + name,
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("build template %s: %w", name, err)
		}
	}
	return nil
}

// migrate applies every migration to database name.
func migrate(ctx context.Context, name string) error {
	dbURL, err := databaseURL(name)
	if err != nil {
		return err
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close() // before the rename: Postgres renames no database in use
	return migrations.Up(ctx, db)
}

// dropOtherTemplates drops the templates of other migration files, left by
// earlier runs, unless a session is using one (then a later build drops
// it). A run of other migrations that still wants its template makes it
// again (createFromTemplate).
func dropOtherTemplates(ctx context.Context, conn *sql.Conn, keep string) {
	rows, err := conn.QueryContext(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND datname <> $2`, templatePrefix, keep)
	if err != nil {
		return
	}
	var old []string
	for rows.Next() {
		var name string
		if rows.Scan(&name) == nil {
			old = append(old, name)
		}
	}
	rows.Close()
	for _, name := range old {
		conn.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name) // without FORCE: in use, it stays
	}
}
