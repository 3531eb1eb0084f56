// Package layout holds no code, only a test that keeps the codebase's shape
// as issue 19 left it: no function longer than 80 lines outside tests
// and generated files unless a "// long: <reason>" comment directly above
// it says why, GORM imported by store alone, and pgx or database/sql only
// where a second road to Postgres is the point (store, migrations,
// internal/testenv, bench). It lives in a package of its own so that
// `make test` runs it like any other test and a reader finds it by name.
package layout
