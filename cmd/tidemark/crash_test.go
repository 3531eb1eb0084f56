package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/failpoint"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

// crashRecords at crashPage records a page: a 10-page full read.
const (
	crashRecords = 1000
	crashPage    = 100
	crashPages   = crashRecords / crashPage
)

// TestCrashAtFailpoints SIGKILLs a process at each failpoint during a
// 10-page full read. The worker points kill the worker; asynq hands its task
// to a second worker after the lease expires, which resumes from the
// checkpoint. after_commit_before_publish kills the server's outbox relay;
// a restarted server publishes what was left. Afterwards, checked in SQL:
// records equal what upstream serves (ids and content hashes), each key
// once, version 1 and one created audit row per record; the run history is
// the abandoned attempt and its successful retry; the outbox announces
// every creation once, everything is published once on Redis, and an SSE
// client replaying from 0 sees each event once.
//
// The cases run in parallel so that the lease recovery (about a minute) is
// paid once in wall time.
func TestCrashAtFailpoints(t *testing.T) {
	t.Parallel()
	// Pub/sub channels are global to the Redis server: every case has its
	// own source name (unique to this process) and the collector keeps all
	// payloads.
	var (
		pubMu    sync.Mutex
		payloads []string
	)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
	t.Cleanup(func() { rdb.Close() })
	sub := rdb.Subscribe(context.Background(), events.Channel)
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatalf("subscribe %s: %v", events.Channel, err)
	}
	t.Cleanup(func() { sub.Close() })
	go func() {
		for m := range sub.Channel() {
			pubMu.Lock()
			payloads = append(payloads, m.Payload)
			pubMu.Unlock()
		}
	}()
	published := func(source string) map[int64]int {
		pubMu.Lock()
		defer pubMu.Unlock()
		return pubsubIDs(payloads, source)
	}

	type crashCase struct {
		point string
		at    int
		// pages committed when the process dies (worker points)
		committed int
		relay     bool // the server (relay) dies, not the worker

		source string
		up     *demoapi.Server
		r      *rig
		addr   string
		env    []string // the server's
		victim *proc
	}
	cases := []*crashCase{
		{point: failpoint.BeforePageCommit, at: 3, committed: 2},
		{point: failpoint.AfterPageCommit, at: 3, committed: 3},
		{point: failpoint.MidPagination, at: 3, committed: 3}, // hit before pages 2, 3, 4
		{point: failpoint.AfterCommitBeforePublish, at: 2, relay: true},
	}
	// The cases run side by side in phases, in one test: each has its own
	// database, Redis DB, upstream and processes, and all wait for the
	// lease recovery at the same time without taking more than one of the
	// package's parallel slots.
	for _, tc := range cases {
		// Unique per test process: another copy of this test (a concurrent
		// go test) publishes on the same server-wide channel.
		tc.source = fmt.Sprintf("crash%d_%s", os.Getpid(), tc.point)
		tc.up = demoapi.New(demoapi.Options{Seed: 7, Records: crashRecords, Latency: 30 * time.Millisecond})
		srv := httptest.NewServer(tc.up)
		t.Cleanup(srv.Close)
		tc.r = newRig(t, ticketSalesYAML(tc.source, srv.URL, true, crashPage, ""), testenv.Database(t), testenv.Redis(t))
		tc.addr = freeAddr(t)
		tc.env = append(tc.r.env[:len(tc.r.env):len(tc.r.env)], "TIDEMARK_ADDR="+tc.addr)
		fp := fmt.Sprintf("%s=%s:%d", failpoint.Env, tc.point, tc.at)
		if tc.relay {
			tc.victim = start(t, tc.point+" server", append(tc.env, fp), tc.r.bin, "server")
			waitTCP(t, tc.addr)
			start(t, tc.point+" worker", tc.r.env, tc.r.bin, "worker")
		} else {
			start(t, tc.point+" server", tc.env, tc.r.bin, "server")
			waitTCP(t, tc.addr)
			tc.victim = start(t, tc.point+" worker-1", append(tc.r.env[:len(tc.r.env):len(tc.r.env)], fp), tc.r.bin, "worker")
		}
		tc.r.sync(tc.source + "/ticket_sales")
	}
	// The kill: nothing beyond the committed pages is in Postgres.
	for _, tc := range cases {
		r := tc.r
		wait(t, 60*time.Second, tc.point, func() (bool, string) { return tc.victim.exited(), "still running" })
		if tc.relay {
			if n := r.count(`SELECT count(*) FROM outbox WHERE published_at IS NULL`); n == 0 {
				t.Errorf("%s: the relay died publishing a batch, yet the outbox shows every event published", tc.point)
			}
			continue
		}
		killed := r.runs(tc.source)
		if len(killed) != 1 || killed[0].Status != store.StatusRunning || killed[0].Pages != tc.committed {
			t.Fatalf("%s: after the kill: runs %+v, want one running run with %d pages", tc.point, killed, tc.committed)
		}
		if n := r.count(`SELECT count(*) FROM records WHERE source = ?`, tc.source); n != int64(tc.committed*crashPage) {
			t.Fatalf("%s: after the kill: %d records committed, the run counts %d pages of %d", tc.point, n, tc.committed, crashPage)
		}
		if n := r.count(`SELECT coalesce(sum((payload->>'created')::bigint), 0) FROM outbox WHERE source = ?`, tc.source); n != int64(tc.committed*crashPage) {
			t.Errorf("%s: after the kill: outbox announces %d creations, %d records are committed", tc.point, n, tc.committed*crashPage)
		}
	}
	// Recovery: a second worker takes the task over once its lease expires;
	// a second server's relay publishes what the first left.
	for _, tc := range cases {
		if tc.relay {
			tc.r.waitRun(tc.source, 60*time.Second, func(run store.Run) bool { return run.Status == store.StatusSucceeded })
			start(t, tc.point+" server-2", tc.env, tc.r.bin, "server")
			waitTCP(t, tc.addr)
		} else {
			start(t, tc.point+" worker-2", tc.r.env, tc.r.bin, "worker")
		}
	}
	for _, tc := range cases {
		t.Run(tc.point, func(t *testing.T) {
			r, source := tc.r, tc.source
			r.t = t
			r.waitRun(source, 150*time.Second, func(run store.Run) bool { return run.Status == store.StatusSucceeded })
			runs := r.runs(source)
			if tc.relay {
				if len(runs) != 1 || runs[0].Attempt != 1 || runs[0].Pages != crashPages {
					t.Errorf("runs %+v: want one succeeded first attempt of %d pages (the worker never died)", runs, crashPages)
				}
			} else {
				if len(runs) != 2 {
					t.Fatalf("%d runs, want 2 (abandoned, taken over): %+v", len(runs), runs)
				}
				retry, abandoned := runs[0], runs[1]
				if abandoned.Status != store.StatusInterrupted || !strings.Contains(abandoned.Error, "abandoned") || abandoned.Attempt != 1 ||
					abandoned.TakenOverBy == nil || *abandoned.TakenOverBy != retry.ID {
					t.Errorf("killed run: attempt %d %s %q taken over by %v, want attempt 1 interrupted as abandoned, taken over by run %d",
						abandoned.Attempt, abandoned.Status, abandoned.Error, abandoned.TakenOverBy, retry.ID)
				}
				// Taken over within seconds (the fetch lock's lease), not at
				// asynq's recovery of the task: a takeover task resumes it.
				if retry.Trigger != "takeover" || retry.Pages != crashPages-tc.committed {
					t.Errorf("the run after the kill: %s, pages %d; want a takeover resuming after page %d (%d pages)",
						retry.Trigger, retry.Pages, tc.committed, crashPages-tc.committed)
				}
				if want := int64(crashRecords - tc.committed*crashPage); retry.RecordsCreated != want {
					t.Errorf("retry created %d records, want %d", retry.RecordsCreated, want)
				}
			}

			wait(t, 30*time.Second, "every event published", func() (bool, string) {
				n := r.count(`SELECT count(*) FROM outbox WHERE published_at IS NULL`)
				return n == 0, fmt.Sprintf("%d unpublished", n)
			})
			r.assertMirrors(source, tc.up)
			r.assertOutboxOnce(source, crashRecords)
			var ids []int64
			if err := r.st.DBForTests().Raw(`SELECT id FROM outbox WHERE source = ? ORDER BY id`, source).Scan(&ids).Error; err != nil {
				t.Fatal(err)
			}
			sseReplay(t, tc.addr, source, len(ids))
			wait(t, 10*time.Second, "every outbox event on Redis pub/sub", func() (bool, string) {
				got := published(source)
				return len(got) >= len(ids), fmt.Sprintf("%d of %d", len(got), len(ids))
			})
			got := published(source)
			for _, id := range ids {
				if got[id] != 1 {
					t.Errorf("outbox event %d published %d times, want once", id, got[id])
					pubMu.Lock()
					for _, p := range payloads {
						if strings.Contains(p, source) && strings.Contains(p, fmt.Sprintf(`"id":%d,`, id)) {
							t.Logf("payload: %s", p)
						}
					}
					pubMu.Unlock()
				}
			}
			if len(got) != len(ids) {
				t.Errorf("%d distinct events published, outbox holds %d", len(got), len(ids))
			}
		})
	}
}
