package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

// The restart tests kill and restart Postgres or Redis in the middle of a
// run. They never touch the machine's shared servers (other tests use
// them): each starts a private instance on a free port.

// privateRedis runs redis-server without persistence on a free port.
type privateRedis struct {
	bin, port string
	p         *proc
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: cannot restart a private Redis (CI installs redis-server)")
	}
	_, port, _ := strings.Cut(freeAddr(t), ":")
	r := &privateRedis{bin: bin, port: port}
	r.start(t)
	return r
}

func (r *privateRedis) start(t *testing.T) {
	t.Helper()
	r.p = start(t, "redis-"+r.port, nil, r.bin, "--port", r.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	waitTCP(t, "127.0.0.1:"+r.port)
}

// kill ends the server at once, losing everything it held.
func (r *privateRedis) kill(t *testing.T) {
	t.Helper()
	r.p.cmd.Process.Kill()
	<-r.p.done
	r.p.done <- nil
}

func (r *privateRedis) url() string { return "redis://127.0.0.1:" + r.port + "/0" }

// privatePostgres is a cluster in its own directory on a free port.
type privatePostgres struct {
	bin, data, sock, port, logFile string
	asUser                         []string // runuser prefix when root
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	initdbs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(initdbs) == 0 {
		t.Skip("no /usr/lib/postgresql/*/bin/initdb: cannot run a private Postgres (CI installs postgresql)")
	}
	// The directory is outside t.TempDir(): its parents are 0700 root, which
	// the postgres user could not traverse.
	dir, err := os.MkdirTemp("", "tidemark-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pg := &privatePostgres{bin: filepath.Dir(initdbs[len(initdbs)-1]), data: filepath.Join(dir, "data"), sock: dir, logFile: filepath.Join(dir, "log")}
	_, pg.port, _ = strings.Cut(freeAddr(t), ":")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root without a postgres user: cannot run initdb")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		pg.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	pg.run(t, "initdb", "-D", pg.data, "-U", "postgres", "-A", "trust", "--no-sync")
	pg.start(t)
	t.Cleanup(func() { pg.stop(t) })
	return pg
}

func (pg *privatePostgres) run(t *testing.T, name string, args ...string) {
	t.Helper()
	argv := append(append([]string{}, pg.asUser...), append([]string{filepath.Join(pg.bin, name)}, args...)...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(pg.logFile)
		t.Fatalf("%s: %v\n%s\nserver log:\n%s", strings.Join(argv, " "), err, out, log)
	}
}

func (pg *privatePostgres) start(t *testing.T) {
	t.Helper()
	pg.run(t, "pg_ctl", "-D", pg.data, "-l", pg.logFile, "-w", "-t", "30",
		"-o", fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", pg.port, pg.sock), "start")
}

// crash stops the server the way a crash does: no checkpoint, connections
// cut; the next start recovers from the WAL.
func (pg *privatePostgres) crash(t *testing.T) {
	t.Helper()
	pg.run(t, "pg_ctl", "-D", pg.data, "-m", "immediate", "-w", "stop")
}

func (pg *privatePostgres) stop(t *testing.T) {
	argv := append(append([]string{}, pg.asUser...), filepath.Join(pg.bin, "pg_ctl"), "-D", pg.data, "-m", "immediate", "stop")
	exec.Command(argv[0], argv[1:]...).Run()
}

func (pg *privatePostgres) url() string {
	return "postgres://postgres@127.0.0.1:" + pg.port + "/postgres?sslmode=disable"
}

// restartInterval is the resources' full sync interval in the restart tests.
const restartInterval = 4 * time.Second

// restartYAML is two resources read in full every restartInterval (no
// probe, no delta): 20 pages of 100 records, 40 ms a page.
func restartYAML(source, baseURL string) string {
	return fmt.Sprintf(`  - name: %s
    base_url: %s
    allow_private: true
    timeout: 5s
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 100}
        probe: {strategy: none, every: %[3]s}
        full_sync: {every: %[3]s, detect_deletes: true}
      - name: transactions
        path: /api/transactions
        records: {path: transactions, id: txn_id}
        pagination: {style: page, page_param: page, start: 1, limit_param: per_page, limit: 100}
        probe: {strategy: none, every: %[3]s}
        full_sync: {every: %[3]s, detect_deletes: true}
`, source, baseURL, restartInterval)
}

// TestServiceRestartMidRun kills Postgres, then Redis, in the middle of
// full reads run by a scheduler and a worker (real processes). Each outage
// must fail the runs it hits, commit no partial page (the records of a
// resource are always whole pages), and every resource must be back in
// step with upstream within two intervals of the service's return.
func TestServiceRestartMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts private Postgres and Redis servers")
	}
	t.Parallel()
	for _, tc := range []struct {
		name    string
		service string
	}{
		{name: "postgres", service: "postgres"},
		{name: "redis", service: "redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbURL, redisURL := "", ""
			var pg *privatePostgres
			var rds *privateRedis
			if tc.service == "postgres" {
				pg = startPrivatePostgres(t)
				dbURL = pg.url()
				redisURL = testenv.Redis(t)
			} else {
				rds = startPrivateRedis(t)
				redisURL = rds.url()
				dbURL = testenv.Database(t)
			}
			tidemark, _ := binaries(t)
			if tc.service == "postgres" {
				migrate := exec.Command(tidemark, "migrate")
				migrate.Env = append(os.Environ(), "TIDEMARK_DATABASE_URL="+dbURL)
				if out, err := migrate.CombinedOutput(); err != nil {
					t.Fatalf("migrate: %v\n%s", err, out)
				}
			}
			source := "restart_" + tc.name
			up := demoapi.New(demoapi.Options{Seed: 11, Records: 2000, Latency: 40 * time.Millisecond})
			srv := httptest.NewServer(up)
			t.Cleanup(srv.Close)
			r := newRig(t, restartYAML(source, srv.URL), dbURL, redisURL)
			scheduler := start(t, "scheduler", r.env, r.bin, "scheduler")
			worker := start(t, "worker", r.env, r.bin, "worker")

			// Mid-run: a run of ticket_sales has committed some pages, not all.
			r.waitRun(source, 30*time.Second, func(run store.Run) bool {
				return run.Status == store.StatusRunning && run.Pages >= 3 && run.Pages < 15
			})
			before := r.runs(source)
			down := time.Now()
			if pg != nil {
				pg.crash(t)
			} else {
				rds.kill(t)
			}
			// Let the fleet notice the outage: runs fail and retry against a
			// server that is gone.
			time.Sleep(2 * time.Second) // the outage's length, not synchronisation
			if pg != nil {
				pg.start(t)
			} else {
				rds.start(t)
			}
			back := time.Now()
			t.Logf("%s down for %s", tc.service, back.Sub(down).Round(time.Millisecond))

			// Whole pages only, at every moment after the restart.
			for _, res := range []string{"ticket_sales", "transactions"} {
				n := r.count(`SELECT count(*) FROM records WHERE source = ? AND resource = ?`, source, res)
				if n%100 != 0 {
					t.Errorf("%s: %d records after the outage: a partial page was committed", res, n)
				}
			}
			// In step again within two intervals (plus the 20-page read
			// itself, about a second).
			within := 2*restartInterval + 3*time.Second
			wait(t, within, "every resource in step again", func() (bool, string) {
				var state []string
				ok := true
				for _, res := range []string{"ticket_sales", "transactions"} {
					succeeded := r.count(`SELECT count(*) FROM sync_runs WHERE source = ? AND resource = ? AND status = 'succeeded' AND finished_at > ?`, source, res, back)
					live := r.count(`SELECT count(*) FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`, source, res)
					ok = ok && succeeded > 0 && live == int64(len(up.Export(res)))
					state = append(state, fmt.Sprintf("%s: %d runs succeeded since, %d records", res, succeeded, live))
				}
				return ok, strings.Join(state, "; ")
			})
			t.Logf("%s: in step %s after the restart", tc.service, time.Since(back).Round(time.Millisecond))
			t.Cleanup(func() {
				if t.Failed() {
					for _, run := range r.runs(source) {
						t.Logf("run %d %s %s task %s attempt %d %s pages %d created %d deleted %d %q", run.ID, run.Resource, run.StartedAt.Format("15:04:05.000"),
							run.TaskID, run.Attempt, run.Status, run.Pages, run.RecordsCreated, run.RecordsDeleted, run.Error)
					}
				}
			})
			r.assertMirrorsResource(source, up, "ticket_sales")
			r.assertMirrorsResource(source, up, "transactions")

			// The run hit by the outage did not succeed; a later one did.
			var hit store.Run
			for _, run := range before {
				if run.Status == store.StatusRunning {
					hit = run
				}
			}
			if hit.ID == 0 {
				t.Fatalf("no run was in flight at the outage: %+v", before)
			}
			after := r.runs(source)
			for _, run := range after {
				if run.ID == hit.ID && (run.Status == store.StatusSucceeded || run.Status == store.StatusRunning) && tc.service == "postgres" {
					t.Errorf("run %d, in flight when Postgres died, ended %s, want failed", run.ID, run.Status)
				}
			}
			// A Postgres outage fails the run in flight. A Redis outage of
			// two seconds may not: the Redis client retries its dials for
			// about that long, and a run whose every Redis call got through
			// on a retry rode the outage out (the mirror checks above hold
			// either way).
			failed := r.count(`SELECT count(*) FROM sync_runs WHERE source = ? AND status IN ('failed', 'dead')`, source)
			switch {
			case failed == 0 && tc.service == "postgres":
				t.Errorf("no failed run recorded for the %s outage", tc.service)
			case failed == 0:
				t.Logf("%s outage: no run failed (ridden out by the client's retries)", tc.service)
			}
			if scheduler.exited() || worker.exited() {
				t.Errorf("a role exited during the %s outage (scheduler %t, worker %t): it must ride it out", tc.service, scheduler.exited(), worker.exited())
			}
			if rds != nil {
				c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + rds.port})
				defer c.Close()
				if err := c.Ping(context.Background()).Err(); err != nil {
					t.Errorf("private Redis: %v", err)
				}
			}
		})
	}
}
