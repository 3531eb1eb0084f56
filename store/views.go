package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark/config"
)

// Typed views. Each resource gets a read-only view over records in the
// configured schema, with a typed column per field; records stays the truth.
// Views are DDL over the hot records table, so every change runs in its own
// short transaction with a lock_timeout: CREATE VIEW takes no lock that
// conflicts with a sync's row writes, and a view held by a long query makes
// the change fail fast rather than queue other readers behind it.
//
// This file uses database/sql rather than GORM: view definitions carry
// record keys as SQL literals, and a "?" or "@" in a key would be taken by
// GORM for a placeholder.

const (
	// viewSample is how many of a resource's newest records type inference reads.
	viewSample = 200
	// maxInferredColumns bounds the columns inferred from raw records
	// (Postgres allows 1,600 per view); keys beyond it are left in payload.
	maxInferredColumns = 200
	// viewLockTimeout bounds how long a view change waits for a lock.
	viewLockTimeout = 2 * time.Second
	// viewMarker starts the comment on every view tidemark made: only such
	// views are ever replaced or dropped.
	viewMarker = "tidemark view of "
	// awaitingMarker is in the comment of a view whose columns wait for records.
	awaitingMarker = "; awaiting records to infer its columns"
	// viewsLock is the advisory lock key that serialises view changes
	// between processes (several migrate jobs at once).
	viewsLock = 0x7469_6465_7669 // "tidevi"
)

// ViewColumn is one typed column of a view.
type ViewColumn struct {
	Name string
	// Type is one of config.ViewTypes.
	Type string
	// Declared is true for a type from field_types, false for an inferred one.
	Declared bool
	// Failures is how many stored values did not cast to Type (NULL in the view).
	Failures int64
}

// ViewResult says what RefreshViews did to one view.
type ViewResult struct {
	Key
	View string
	// Action is created, replaced, recreated (a column changed type or place:
	// dropped and made again in one transaction), unchanged, dropped or failed.
	Action  string
	Columns []ViewColumn
	// Notes are keys or fields left without a column, and why.
	Notes []string
	// Awaiting is true for a view of raw records made before there were any
	// to infer its columns from: the scheduler refreshes it once there are.
	Awaiting bool
	Err      error
}

// View actions.
const (
	ViewCreated   = "created"
	ViewReplaced  = "replaced"
	ViewRecreated = "recreated"
	ViewUnchanged = "unchanged"
	ViewDropped   = "dropped"
	ViewFailed    = "failed"
)

// RefreshViews makes the views of conf's resources match the config and the
// data: it creates the schema, creates or replaces each resource's view,
// drops the views tidemark made there for resources no longer configured,
// and counts the values that do not cast. A view that cannot be changed is
// a failed result, and the others are still done; the error then says how
// many failed.
func (s *Store) RefreshViews(ctx context.Context, conf *config.Config) ([]ViewResult, error) {
	return s.refreshViews(ctx, conf, true, nil)
}

// RefreshViewsUncounted is RefreshViews without counting the values that
// do not cast, which takes a pass over every resource's records: what a
// config reload runs (the stored counts stay as tidemark views last made them).
func (s *Store) RefreshViewsUncounted(ctx context.Context, conf *config.Config) ([]ViewResult, error) {
	return s.refreshViews(ctx, conf, false, nil)
}

// refreshViews refreshes the views of conf's resources, or only those in
// only (then no view is dropped).
func (s *Store) refreshViews(ctx context.Context, conf *config.Config, count bool, only map[Key]bool) ([]ViewResult, error) {
	db, err := s.db.DB()
	if err != nil {
		return nil, err
	}
	schema := conf.Views.SchemaName()
	if err := inViewTx(ctx, db, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize())
		return err
	}); err != nil {
		return nil, fmt.Errorf("views: create schema %s: %w", schema, err)
	}
	var results []ViewResult
	configured := map[string]bool{}
	failed := 0
	conf.Each(func(src *config.Source, res *config.Resource) {
		if only != nil && !only[Key{src.Name, res.Name}] {
			return
		}
		r := refreshView(ctx, db, schema, src.Name, res, count)
		configured[r.View] = true
		if r.Err != nil {
			failed++
		}
		results = append(results, r)
	})
	if only != nil {
		return results, failedErr(failed, len(configured))
	}
	dropped, err := dropStaleViews(ctx, db, schema, configured)
	results = append(results, dropped...)
	if err != nil {
		return results, err
	}
	if err := pruneCastFailures(ctx, db, results); err != nil {
		return results, err
	}
	return results, failedErr(failed, len(configured))
}

func failedErr(failed, of int) error {
	if failed > 0 {
		return fmt.Errorf("views: %d of %d views could not be changed", failed, of)
	}
	return nil
}

// refreshView plans, applies and checks one resource's view.
func refreshView(ctx context.Context, db *sql.DB, schema, source string, res *config.Resource, count bool) ViewResult {
	r := ViewResult{Key: Key{source, res.Name}, View: config.ViewName(source, res.Name)}
	fail := func(err error) ViewResult {
		r.Action, r.Err = ViewFailed, fmt.Errorf("view %s.%s: %w", schema, r.View, err)
		return r
	}
	sample, err := sampleKeys(ctx, db, r.Key)
	if err != nil {
		return fail(err)
	}
	r.Columns, r.Notes = planColumns(res, sample)
	r.Awaiting = len(res.Fields) == 0 && len(sample) == 0
	err = inViewTx(ctx, db, func(tx *sql.Tx) error {
		r.Action, err = applyView(ctx, tx, schema, &r)
		return err
	})
	if err != nil {
		return fail(err)
	}
	if count {
		err = countCastFailures(ctx, db, r.Key, r.Columns)
	} else {
		err = forgetChangedCounts(ctx, db, r.Key, r.Columns)
	}
	if err != nil {
		return fail(err)
	}
	return r
}

// inViewTx runs fn in a transaction that holds the views' advisory lock and
// waits at most viewLockTimeout for any lock.
func inViewTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", viewLockTimeout.Milliseconds())); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", viewsLock); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// sampledKey is what the sample says about one top-level key.
type sampledKey struct {
	name                                  string
	values                                int64 // non-null values
	booleans, numbers, timestamps, scalar bool  // every non-null value is one
}

// sampleKeys reads the top-level keys of the resource's newest records and
// what their values are. It orders by updated_at without an index of its
// own: one pass over the resource's rows, paid only when views are refreshed.
func sampleKeys(ctx context.Context, db *sql.DB, k Key) ([]sampledKey, error) {
	rows, err := db.QueryContext(ctx, `
WITH sample AS (
	SELECT payload FROM records
	WHERE source = $1 AND resource = $2 AND jsonb_typeof(payload) = 'object'
	ORDER BY updated_at DESC LIMIT $3
)
SELECT e.k,
	count(*) FILTER (WHERE jsonb_typeof(e.v) <> 'null'),
	coalesce(bool_and(jsonb_typeof(e.v) = 'boolean') FILTER (WHERE jsonb_typeof(e.v) <> 'null'), false),
	coalesce(bool_and(jsonb_typeof(e.v) = 'number') FILTER (WHERE jsonb_typeof(e.v) <> 'null'), false),
	coalesce(bool_and(tidemark_try_timestamptz(e.v) IS NOT NULL) FILTER (WHERE jsonb_typeof(e.v) <> 'null'), false),
	coalesce(bool_and(jsonb_typeof(e.v) IN ('string', 'number', 'boolean')) FILTER (WHERE jsonb_typeof(e.v) <> 'null'), true)
FROM sample, jsonb_each(sample.payload) AS e(k, v)
GROUP BY e.k ORDER BY e.k`, k.Source, k.Resource, viewSample)
	if err != nil {
		return nil, fmt.Errorf("sample records: %w", err)
	}
	defer rows.Close()
	var out []sampledKey
	for rows.Next() {
		var sk sampledKey
		if err := rows.Scan(&sk.name, &sk.values, &sk.booleans, &sk.numbers, &sk.timestamps, &sk.scalar); err != nil {
			return nil, fmt.Errorf("sample records: %w", err)
		}
		out = append(out, sk)
	}
	return out, rows.Err()
}

// inferType is the narrowest type every sampled value fits; a key with no
// value in the sample is text.
func inferType(sk sampledKey) string {
	switch {
	case sk.values == 0:
		return config.TypeText
	case sk.booleans:
		return config.TypeBoolean
	case sk.numbers:
		return config.TypeNumeric
	case sk.timestamps:
		return config.TypeTimestamptz
	case sk.scalar:
		return config.TypeText
	}
	return config.TypeJSONB
}

// planColumns picks the view's field columns: the resource's fields, or
// without fields the top-level keys of the sample and of field_types; each
// with its declared type or the inferred one. Names the view cannot take
// are returned as notes.
func planColumns(res *config.Resource, sample []sampledKey) ([]ViewColumn, []string) {
	byName := map[string]sampledKey{}
	for _, sk := range sample {
		byName[sk.name] = sk
	}
	var names []string
	if len(res.Fields) > 0 {
		for name := range res.Fields {
			names = append(names, name)
		}
	} else {
		for _, sk := range sample {
			names = append(names, sk.name)
		}
		for name := range res.FieldTypes {
			if _, ok := byName[name]; !ok {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	var cols []ViewColumn
	var notes []string
	for _, name := range names {
		switch {
		case slices.Contains(config.ViewColumns, name):
			notes = append(notes, fmt.Sprintf("%s: no column of its own, the name is a view column (read it from payload)", name))
			continue
		case len(name) > config.MaxIdentifier:
			notes = append(notes, fmt.Sprintf("%.20s...: no column, the key is longer than %d bytes (read it from payload)", name, config.MaxIdentifier))
			continue
		case len(res.Fields) == 0 && len(cols) >= maxInferredColumns:
			notes = append(notes, fmt.Sprintf("%s: no column, the view has %d inferred columns already (read it from payload)", name, maxInferredColumns))
			continue
		}
		c := ViewColumn{Name: name, Type: res.FieldTypes[name], Declared: res.FieldTypes[name] != ""}
		if !c.Declared {
			c.Type = inferType(byName[name])
		}
		cols = append(cols, c)
	}
	return cols, notes
}

// pgTypes maps view types to the names format_type gives them.
var pgTypes = map[string]string{
	config.TypeText:        "text",
	config.TypeNumeric:     "numeric",
	config.TypeBoolean:     "boolean",
	config.TypeTimestamptz: "timestamp with time zone",
	config.TypeJSONB:       "jsonb",
}

// viewShape is a view's columns as "name type" strings, in order: the
// columns every view has, then the fields.
func viewShape(cols []ViewColumn) []string {
	shape := []string{"external_id text", "synced_at timestamp with time zone", "deleted boolean", "payload jsonb"}
	for _, c := range cols {
		shape = append(shape, c.Name+" "+pgTypes[c.Type])
	}
	return shape
}

// keepOrder puts the columns an existing view has first, in its order, and
// new ones after them (in name order), so that adding a field appends a
// column and CREATE OR REPLACE VIEW can do it: views an operator built on
// this one then stay.
func keepOrder(cols []ViewColumn, existing []string) []ViewColumn {
	at := map[string]int{}
	for i, name := range existing {
		at[name] = i
	}
	out := slices.Clone(cols)
	slices.SortStableFunc(out, func(a, b ViewColumn) int {
		i, aok := at[a.Name]
		j, bok := at[b.Name]
		switch {
		case aok && bok:
			return i - j
		case aok:
			return -1
		case bok:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// applyView creates, replaces or recreates the view inside tx, after
// looking at what is there now (under the advisory lock, so two processes
// do not act on each other's stale view).
func applyView(ctx context.Context, tx *sql.Tx, schema string, r *ViewResult) (string, error) {
	existing, names, oldComment, err := existingView(ctx, tx, schema, r.View)
	if err != nil {
		return "", err
	}
	if existing != nil && !strings.HasPrefix(oldComment, viewMarker) {
		return "", fmt.Errorf("a relation of that name exists that tidemark did not make: rename or drop it, or set views.schema")
	}
	r.Columns = keepOrder(r.Columns, names)
	want := viewShape(r.Columns)
	name := pgx.Identifier{schema, r.View}.Sanitize()
	comment := viewMarker + r.Key.String()
	if r.Awaiting {
		comment += awaitingMarker
	}
	comment += "; made by tidemark views, replaced when the config changes"
	setComment := func() error {
		_, err := tx.ExecContext(ctx, "COMMENT ON VIEW "+name+" IS "+literal(comment))
		return err
	}
	action := ViewCreated
	switch {
	case slices.Equal(existing, want) && comment == oldComment:
		return ViewUnchanged, nil
	case slices.Equal(existing, want):
		return ViewUnchanged, setComment()
	case existing != nil && len(existing) < len(want) && slices.Equal(existing, want[:len(existing)]):
		// CREATE OR REPLACE VIEW may only add columns at the end.
		action = ViewReplaced
	case existing != nil:
		if _, err := tx.ExecContext(ctx, "DROP VIEW "+name); err != nil {
			return "", fmt.Errorf("drop to change its columns: %w", err)
		}
		action = ViewRecreated
	}
	if _, err := tx.ExecContext(ctx, "CREATE OR REPLACE VIEW "+name+" AS "+viewQuery(r.Key, r.Columns)); err != nil {
		return "", err
	}
	if err := setComment(); err != nil {
		return "", err
	}
	return action, nil
}

// existingView returns the columns of schema.name as viewShape writes them
// and their names (nil if there is no such relation), and the comment of the
// view ("" for a relation that is not a view).
func existingView(ctx context.Context, tx *sql.Tx, schema, name string) (shape, names []string, viewComment string, err error) {
	var kind string
	var comment sql.NullString
	err = tx.QueryRowContext(ctx, `
SELECT c.relkind::text, obj_description(c.oid, 'pg_class')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`, schema, name).Scan(&kind, &comment)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, "", nil
	}
	if err != nil {
		return nil, nil, "", err
	}
	if kind == "v" {
		viewComment = comment.String
	}
	rows, err := tx.QueryContext(ctx, `
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, schema, name)
	if err != nil {
		return nil, nil, "", err
	}
	defer rows.Close()
	shape = []string{}
	for rows.Next() {
		var col, typ string
		if err := rows.Scan(&col, &typ); err != nil {
			return nil, nil, "", err
		}
		shape, names = append(shape, col+" "+typ), append(names, col)
	}
	return shape, names, viewComment, rows.Err()
}

// viewQuery is the view's SELECT. records is resolved when the view is made
// (views store the table, not its name).
func viewQuery(k Key, cols []ViewColumn) string {
	var b strings.Builder
	b.WriteString("SELECT r.external_id, r.updated_at AS synced_at, r.deleted_at IS NOT NULL AS deleted, r.payload")
	for _, c := range cols {
		b.WriteString(",\n    " + columnExpr(c) + " AS " + pgx.Identifier{c.Name}.Sanitize())
	}
	fmt.Fprintf(&b, "\nFROM records r\nWHERE r.source = %s AND r.resource = %s", literal(k.Source), literal(k.Resource))
	return b.String()
}

// columnExpr reads a column from the payload with a cast that yields NULL
// where the value does not fit (the tidemark_try_ functions, migration 00009).
func columnExpr(c ViewColumn) string {
	key := literal(c.Name)
	switch c.Type {
	case config.TypeText:
		return "(r.payload ->> " + key + ")"
	case config.TypeJSONB:
		return "NULLIF(r.payload -> " + key + ", 'null'::jsonb)" // a JSON null is an SQL NULL here
	}
	return "tidemark_try_" + c.Type + "(r.payload -> " + key + ")"
}

// literal quotes s as an SQL string literal (standard_conforming_strings is
// on in every supported Postgres, so only quotes need doubling).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// castFails is true where a stored value is present but did not cast.
func castFails(c ViewColumn) string {
	v := "(payload -> " + literal(c.Name) + ")"
	return "count(*) FILTER (WHERE jsonb_typeof" + v + " <> 'null' AND tidemark_try_" + c.Type + v + " IS NULL)"
}

// countCastFailures counts, in one pass over the resource's records, the
// values of each cast column that read as NULL in the view, and stores the
// counts for the server's /metrics (tidemark_view_cast_failures).
func countCastFailures(ctx context.Context, db *sql.DB, k Key, cols []ViewColumn) error {
	var cast []int
	var exprs []string
	for i, c := range cols {
		if c.Type != config.TypeText && c.Type != config.TypeJSONB {
			cast = append(cast, i)
			exprs = append(exprs, castFails(c))
		}
	}
	if len(cast) > 0 {
		counts := make([]any, len(cast))
		for j, i := range cast {
			counts[j] = &cols[i].Failures
		}
		q := "SELECT " + strings.Join(exprs, ", ") + " FROM records WHERE source = $1 AND resource = $2"
		if err := db.QueryRowContext(ctx, q, k.Source, k.Resource).Scan(counts...); err != nil {
			return fmt.Errorf("count cast failures: %w", err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `DELETE FROM view_cast_failures WHERE source = $1 AND resource = $2`, k.Source, k.Resource); err != nil {
		return err
	}
	for _, i := range cast {
		c := cols[i]
		if _, err := tx.ExecContext(ctx, `INSERT INTO view_cast_failures (source, resource, field, type, failures) VALUES ($1, $2, $3, $4, $5)`,
			k.Source, k.Resource, c.Name, c.Type, c.Failures); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// dropStaleViews drops the views tidemark made in schema whose resource is
// no longer configured. Views it did not make are never touched.
func dropStaleViews(ctx context.Context, db *sql.DB, schema string, configured map[string]bool) ([]ViewResult, error) {
	rows, err := db.QueryContext(ctx, `
SELECT c.relname, obj_description(c.oid, 'pg_class')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'v' AND obj_description(c.oid, 'pg_class') LIKE $2
ORDER BY c.relname`, schema, viewMarker+"%")
	if err != nil {
		return nil, fmt.Errorf("views: list %s: %w", schema, err)
	}
	var stale []ViewResult
	for rows.Next() {
		var name, comment string
		if err := rows.Scan(&name, &comment); err != nil {
			rows.Close()
			return nil, err
		}
		if !configured[name] {
			src, res, _ := strings.Cut(strings.SplitN(strings.TrimPrefix(comment, viewMarker), ";", 2)[0], "/")
			stale = append(stale, ViewResult{Key: Key{src, res}, View: name, Action: ViewDropped})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, r := range stale {
		err := inViewTx(ctx, db, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "DROP VIEW IF EXISTS "+pgx.Identifier{schema, r.View}.Sanitize())
			return err
		})
		if err != nil {
			stale[i].Action, stale[i].Err = ViewFailed, fmt.Errorf("drop view %s.%s: %w", schema, r.View, err)
			return stale, stale[i].Err
		}
	}
	return stale, nil
}

// forgetChangedCounts forgets the stored counts of the resource's columns
// that are gone or have another type now: they no longer say anything
// true, and an uncounted refresh has no new ones.
func forgetChangedCounts(ctx context.Context, db *sql.DB, k Key, cols []ViewColumn) error {
	var fields, types []string
	for _, c := range cols {
		fields, types = append(fields, c.Name), append(types, c.Type)
	}
	_, err := db.ExecContext(ctx, `
DELETE FROM view_cast_failures f
WHERE f.source = $1 AND f.resource = $2
  AND NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) AS c(field, type)
                  WHERE c.field = f.field AND c.type = f.type)`, k.Source, k.Resource, fields, types)
	if err != nil {
		return fmt.Errorf("forget cast failure counts: %w", err)
	}
	return nil
}

// pruneCastFailures forgets the counts of resources no longer configured.
func pruneCastFailures(ctx context.Context, db *sql.DB, results []ViewResult) error {
	var sources, resources []string
	for _, r := range results {
		if r.Action != ViewDropped {
			sources, resources = append(sources, r.Source), append(resources, r.Resource)
		}
	}
	_, err := db.ExecContext(ctx, `
DELETE FROM view_cast_failures f
WHERE NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS k(source, resource)
                  WHERE k.source = f.source AND k.resource = f.resource)`, sources, resources)
	if err != nil {
		return fmt.Errorf("views: prune cast failure counts: %w", err)
	}
	return nil
}

// CastFailure is one stored count of values that read as NULL in a view.
type CastFailure struct {
	Source, Resource, Field, Type string
	Failures                      int64
	CheckedAt                     time.Time
}

// CastFailures lists the counts the last RefreshViews stored.
func (s *Store) CastFailures(ctx context.Context) ([]CastFailure, error) {
	var out []CastFailure
	err := s.db.WithContext(ctx).Raw(`SELECT source, resource, field, type, failures, checked_at
		FROM view_cast_failures ORDER BY source, resource, field`).Scan(&out).Error
	return out, err
}

// RefreshPendingViews makes, without counting, the views of conf that do
// not exist (a migrate that ran without the config file, as in the
// Kubernetes base), and refreshes those made before their resource had
// records to infer columns from, once it has some. It is cheap enough to
// call every few seconds: one catalog query, and an index probe of records
// per view still waiting for records.
func (s *Store) RefreshPendingViews(ctx context.Context, conf *config.Config) ([]ViewResult, error) {
	db, err := s.db.DB()
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `
SELECT c.relname, obj_description(c.oid, 'pg_class') LIKE $3
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'v' AND obj_description(c.oid, 'pg_class') LIKE $2`,
		conf.Views.SchemaName(), viewMarker+"%", viewMarker+"%"+awaitingMarker+"%")
	if err != nil {
		return nil, fmt.Errorf("views: list: %w", err)
	}
	awaiting := map[string]bool{} // view → waiting for records
	for rows.Next() {
		var name string
		var waits bool
		if err := rows.Scan(&name, &waits); err != nil {
			rows.Close()
			return nil, err
		}
		awaiting[name] = waits
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	only := map[Key]bool{}
	var errs []error
	conf.Each(func(src *config.Source, res *config.Resource) {
		k := Key{src.Name, res.Name}
		waits, exists := awaiting[config.ViewName(src.Name, res.Name)]
		switch {
		case !exists:
			only[k] = true
		case waits && len(res.Fields) == 0:
			var has bool
			if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM records WHERE source = $1 AND resource = $2)`, src.Name, res.Name).Scan(&has); err != nil {
				errs = append(errs, err)
			} else if has {
				only[k] = true
			}
		}
	})
	if err := errors.Join(errs...); err != nil || len(only) == 0 {
		return nil, err
	}
	return s.refreshViews(ctx, conf, false, only)
}
