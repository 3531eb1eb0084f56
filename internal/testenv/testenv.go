// Package testenv gives each test its own real Postgres database and its own
// Redis database number, so tests run in parallel (and across packages)
// without seeing each other's data. Services are found through
// TIDEMARK_TEST_DATABASE_URL and TIDEMARK_TEST_REDIS_URL.
//
// A test's database is a copy of a template database migrated once for the
// whole test run (see Database): copying is cheaper than migrating.
package testenv

import (
	"cmp"
	"fmt"
	"net/url"
	"os"
)

// AdminDatabaseURL is the server tests create their databases on.
func AdminDatabaseURL() string {
	return cmp.Or(os.Getenv("TIDEMARK_TEST_DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
}

// RedisAddr is the host:port of the Redis server tests use.
func RedisAddr() string {
	u, err := url.Parse(cmp.Or(os.Getenv("TIDEMARK_TEST_REDIS_URL"), "redis://127.0.0.1:6379"))
	if err != nil {
		panic(fmt.Sprintf("TIDEMARK_TEST_REDIS_URL: %v", err))
	}
	return u.Host
}
