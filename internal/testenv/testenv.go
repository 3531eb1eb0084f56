// Package testenv gives each test its own real Postgres database and its own
// Redis database number, so tests run in parallel (and across packages)
// without seeing each other's data. Services are found through
// TIDEMARK_TEST_DATABASE_URL and TIDEMARK_TEST_REDIS_URL.
package testenv

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/migrations"
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

var dbSeq atomic.Int64

// Database creates an empty, migrated database for this test, drops it when
// the test ends, and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	admin, err := sql.Open("pgx", AdminDatabaseURL())
	if err != nil {
		t.Fatalf("testenv: open admin database: %v", err)
	}
	defer admin.Close()
	name := fmt.Sprintf("tidemark_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, dbSeq.Add(1))
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
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
	u, err := url.Parse(AdminDatabaseURL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	u.Path = "/" + name
	dbURL := u.String()

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatalf("testenv: open %s: %v", name, err)
	}
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("testenv: migrate %s: %v", name, err)
	}
	return dbURL
}

// redisDBs is how many numbered Redis databases tests share (1..15; 0 holds
// the allocation locks and is left to the demo).
const redisDBs = 15

// Redis reserves a Redis database number for this test, empties it, and
// returns a redis:// URL to it. Reservations are locks in Redis DB 0, so
// parallel test binaries never share a number.
func Redis(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	locks := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: 0})
	defer locks.Close()
	token := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for n := 1; n <= redisDBs; n++ {
			key := "tidemark-test:redis-db:" + strconv.Itoa(n)
			ok, err := locks.SetNX(ctx, key, token, 15*time.Minute).Result()
			if err != nil {
				t.Fatalf("testenv: reserve a Redis database (is Redis running at %s?): %v", RedisAddr(), err)
			}
			if !ok {
				continue
			}
			c := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: n})
			if err := c.FlushDB(ctx).Err(); err != nil {
				t.Fatalf("testenv: flush Redis db %d: %v", n, err)
			}
			c.Close()
			// The reservation outlives its TTL for as long as the test runs
			// (a long simulator run takes more than 15 minutes): another
			// test taking the number would share, and lose, its data.
			stop := make(chan struct{})
			kept := make(chan struct{})
			go func() {
				defer close(kept)
				l := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: 0})
				defer l.Close()
				tick := time.NewTicker(time.Minute)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if v, _ := l.Get(context.Background(), key).Result(); v == token {
							l.Expire(context.Background(), key, 15*time.Minute)
						}
					}
				}
			}()
			t.Cleanup(func() {
				close(stop)
				<-kept
				c := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: n})
				c.FlushDB(context.Background())
				c.Close()
				l := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: 0})
				defer l.Close()
				if v, _ := l.Get(context.Background(), key).Result(); v == token {
					l.Del(context.Background(), key)
				}
			})
			return fmt.Sprintf("redis://%s/%d", RedisAddr(), n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: no free Redis database among 1..%d after 2m", redisDBs)
		}
		time.Sleep(100 * time.Millisecond) // waiting for another test to release one
	}
}
