package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/failpoint"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

// storeSources are n sources of one ticket_sales each, their own demo
// upstream of records records served slowly, with deletion detection on.
func storeSources(t *testing.T, prefix string, n, records int, latency time.Duration) (string, []string, []*demoapi.Server) {
	t.Helper()
	var yaml strings.Builder
	var names []string
	var ups []*demoapi.Server
	for i := range n {
		name := fmt.Sprintf("%s%d_%d", prefix, os.Getpid(), i)
		up := demoapi.New(demoapi.Options{Seed: int64(i + 1), Records: records, Latency: latency})
		srv := httptest.NewServer(up)
		t.Cleanup(srv.Close)
		yaml.WriteString(ticketSalesYAML(name, srv.URL, true, 100, ""))
		names, ups = append(names, name), append(ups, up)
	}
	return yaml.String(), names, ups
}

// TestPostgresCrashDuringFullReads crashes Postgres (stop -m immediate:
// crash recovery empties the unlogged seen-sets) three times while full
// reads with deletion detection run, and restarts it. A full read must
// never delete from a seen-set it cannot prove complete: no record is
// tombstoned and no deletion is announced, and every read ends in step.
func TestPostgresCrashDuringFullReads(t *testing.T) {
	t.Parallel()
	pg := startPrivatePostgres(t)
	sources, names, ups := storeSources(t, "pgcrash", 5, 3000, 40*time.Millisecond)
	bin, _ := binaries(t)
	migrate := exec.Command(bin, "migrate")
	migrate.Env = append(os.Environ(), "TIDEMARK_DATABASE_URL="+pg.url())
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	r := newRig(t, sources, pg.url(), testenv.Redis(t))
	start(t, "worker", append(r.env, "TIDEMARK_FETCH_CONCURRENCY=5"), r.bin, "worker")
	for _, s := range names {
		r.sync(s + "/ticket_sales")
	}
	firstRuns := map[string]int64{}
	for _, s := range names {
		firstRuns[s] = r.waitRun(s, 90*time.Second, func(run store.Run) bool { return run.Status == store.StatusSucceeded }).ID
	}

	// Unchanged full reads, 30 pages each, and three crashes during them.
	for _, s := range names {
		r.sync(s + "/ticket_sales")
	}
	for crash := 1; crash <= 3; crash++ {
		wait(t, 60*time.Second, fmt.Sprintf("crash %d: full reads under way", crash), func() (bool, string) {
			var n int64
			r.st.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE status = 'running' AND kind = 'full' AND pages >= 3`).Scan(&n)
			return n > 0, fmt.Sprintf("%d reads past page 3", n)
		})
		pg.crash(t)
		time.Sleep(500 * time.Millisecond) // Postgres down for a moment: what a crash and a restart take
		pg.start(t)                        // pg_ctl -w: returns once crash recovery is over
	}
	for _, s := range names {
		wait(t, 180*time.Second, s+": a full read that succeeded after the crashes", func() (bool, string) {
			var ok int64
			r.st.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE source = ? AND kind = 'full' AND status = 'succeeded' AND id > ?`, s, firstRuns[s]).Scan(&ok)
			return ok > 0, ""
		})
	}
	if n := r.count(`SELECT count(*) FROM records WHERE deleted_at IS NOT NULL`); n != 0 {
		t.Errorf("%d live records tombstoned after Postgres crashes during full reads, want 0", n)
	}
	if n := r.count(`SELECT count(*) FROM outbox WHERE event = 'data.updated' AND (payload->>'deleted')::int > 0`); n != 0 {
		t.Errorf("%d deletion events for live records, want 0", n)
	}
	for i, s := range names {
		r.assertMirrors(s, ups[i])
	}
	// The crashes hit reads in progress: each such read either failed and
	// would not resume from its emptied seen-set, or carried on and was
	// refused at its end.
	var refused []string
	r.st.DBForTests().Raw(`SELECT error || note FROM sync_runs WHERE error LIKE '%seen-set%' OR note LIKE '%seen-set%'`).Scan(&refused)
	t.Logf("%d runs refused a seen-set the crashes emptied: %q", len(refused), refused)
	if len(refused) == 0 {
		t.Error("no run met a seen-set a crash emptied: the crashes missed the reads")
	}
}

// TestStalledWorkerDoesNotStopTheFleet freezes a worker (SIGSTOP) at the
// end of a page transaction, holding the outbox's ordering lock, while
// another worker syncs other resources. Their pages keep committing: the
// frozen session is ended after 5s idle in its transaction, and no page
// waits more than 5s for a lock.
func TestStalledWorkerDoesNotStopTheFleet(t *testing.T) {
	t.Parallel()
	sources, names, _ := storeSources(t, "stall", 6, 3000, 60*time.Millisecond)
	r := newRig(t, sources, testenv.Database(t), testenv.Redis(t))
	frozenEnv := append(r.env[:len(r.env):len(r.env)], "TIDEMARK_FETCH_CONCURRENCY=1", failpoint.Env+"="+failpoint.InPageTransaction+":3:stop")
	frozen, logs := startLogged(t, "frozen worker", frozenEnv, r.bin, "worker")
	t.Cleanup(func() { frozen.cmd.Process.Signal(syscall.SIGCONT) })
	r.sync(names[0] + "/ticket_sales") // the frozen worker's first fetch
	wait(t, 30*time.Second, "the worker to freeze inside a page transaction", func() (bool, string) {
		return strings.Contains(logs.String(), "SIGSTOP"), ""
	})
	frozeAt := time.Now()
	start(t, "worker", append(r.env[:len(r.env):len(r.env)], "TIDEMARK_FETCH_CONCURRENCY=4"), r.bin, "worker")
	for _, s := range names[1:] {
		r.sync(s + "/ticket_sales")
	}
	// The others' commits while it stays frozen: their pages, by time.
	var (
		mu      sync.Mutex
		commits []time.Time
	)
	last := int64(0)
	deadline := frozeAt.Add(25 * time.Second)
	for time.Now().Before(deadline) {
		var pages int64
		r.st.DBForTests().Raw(`SELECT coalesce(sum(pages), 0) FROM sync_runs WHERE source <> ?`, names[0]).Scan(&pages)
		if pages > last {
			mu.Lock()
			commits = append(commits, time.Now())
			mu.Unlock()
			last = pages
		}
		time.Sleep(50 * time.Millisecond) // polling the run counters
	}
	if len(commits) < 10 {
		t.Fatalf("only %d page commits by the other worker in the 25s the first stayed frozen", len(commits))
	}
	gap, prev := time.Duration(0), frozeAt
	for _, c := range commits {
		gap, prev = max(gap, c.Sub(prev)), c
	}
	t.Logf("while a worker stayed frozen inside a page transaction for 25s: %d page commits by the other, longest gap %s", last, gap.Round(10*time.Millisecond))
	if gap > 10*time.Second {
		t.Errorf("the longest gap between the other worker's page commits was %s: the frozen worker held the fleet", gap)
	}
}

// TestRedisEmptiedMidSync kills Redis while manual full syncs are queued
// and one runs, and starts it again empty (as Redis without persistence
// does). Every request is honoured: the scheduler notices the emptied
// Redis and enqueues the outstanding requests at once, the running fetch
// keeps its lock. The test reports how long after Redis returned the last
// resource synced.
func TestRedisEmptiedMidSync(t *testing.T) {
	t.Parallel()
	rs := startPrivateRedis(t)
	sources, names, ups := storeSources(t, "emptied", 5, 2000, 40*time.Millisecond)
	r := newRig(t, sources, testenv.Database(t), rs.url())
	start(t, "scheduler", r.env, r.bin, "scheduler")
	start(t, "worker", append(r.env[:len(r.env):len(r.env)], "TIDEMARK_FETCH_CONCURRENCY=1"), r.bin, "worker")
	began := time.Now()
	for _, s := range names {
		r.sync(s + "/ticket_sales")
	}
	wait(t, 60*time.Second, "a fetch under way", func() (bool, string) {
		var n int64
		r.st.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE status = 'running' AND pages >= 2`).Scan(&n)
		return n > 0, ""
	})
	if n := r.count(`SELECT count(*) FROM sync_requests WHERE done_at IS NULL`); n < 4 {
		t.Fatalf("%d outstanding requests when Redis is killed, want the queued ones", n)
	}
	rs.kill(t) // as a Redis without persistence crashes and comes back: empty
	rs.start(t)
	back := time.Now()
	wait(t, 60*time.Second, "every request honoured", func() (bool, string) {
		n := r.count(`SELECT count(*) FROM sync_requests WHERE done_at IS NULL`)
		return n == 0, fmt.Sprintf("%d outstanding", n)
	})
	took := time.Since(back)
	for i, s := range names {
		run := r.waitRun(s, 30*time.Second, func(run store.Run) bool { return run.Status == store.StatusSucceeded })
		if run.Kind != "full" || run.StartedAt.Before(began) {
			t.Errorf("%s: last run %s, want the requested full read", s, run.Kind)
		}
		r.assertMirrors(s, ups[i])
	}
	t.Logf("Redis killed and back empty mid-sync with %d manual syncs: every request honoured %s after Redis returned", len(names), took.Round(100*time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("the last request was honoured %s after Redis returned, want within 15s", took.Round(100*time.Millisecond))
	}
}
