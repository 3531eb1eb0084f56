package testenv

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

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
