package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The store-failure tests kill and restart Postgres and Redis, so they run
// servers of their own: a Postgres cluster made with initdb and a
// redis-server, on free ports, from the binaries .ci/run installs.

// ownPostgres is a Postgres cluster of the test's own.
type ownPostgres struct {
	t          *testing.T
	bin, data  string
	port       string
	runAs      []string // runuser -u postgres --, when the test runs as root
	stopped    bool
	dbURL, log string
}

// startOwnPostgres makes a cluster in a temporary directory and starts it.
func startOwnPostgres(t *testing.T) *ownPostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Skip("no Postgres server binaries (/usr/lib/postgresql/*/bin): .ci/run installs them")
	}
	pg := &ownPostgres{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "tidemark-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: the cluster belongs to postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root without a postgres user to own a test cluster")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		pg.runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	pg.data, pg.log = filepath.Join(dir, "data"), filepath.Join(dir, "log")
	pg.port = strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	pg.run("initdb", "-D", pg.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	pg.start()
	t.Cleanup(func() {
		if !pg.stopped {
			pg.ctl("stop", "-m", "immediate")
		}
	})
	pg.dbURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%s/tidemark?sslmode=disable", pg.port)
	return pg
}

func (pg *ownPostgres) run(name string, args ...string) {
	pg.t.Helper()
	argv := append(append([]string{}, pg.runAs...), append([]string{filepath.Join(pg.bin, name)}, args...)...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		pg.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func (pg *ownPostgres) ctl(args ...string) {
	pg.t.Helper()
	pg.run("pg_ctl", append([]string{"-D", pg.data, "-w", "-l", pg.log}, args...)...)
}

func (pg *ownPostgres) start() {
	pg.t.Helper()
	pg.ctl("start", "-o", fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c fsync=off", pg.port, filepath.Dir(pg.data)))
	pg.stopped = false
}

// crash stops Postgres as a crash would (no checkpoint: crash recovery at
// the next start, which empties unlogged tables).
func (pg *ownPostgres) crash() {
	pg.t.Helper()
	pg.ctl("stop", "-m", "immediate")
	pg.stopped = true
}

// ownRedis is a redis-server of the test's own, keeping nothing on disk.
type ownRedis struct {
	t    *testing.T
	port string
	proc *proc
}

func startOwnRedis(t *testing.T) *ownRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server: .ci/run installs it")
	}
	r := &ownRedis{t: t, port: strings.TrimPrefix(freeAddr(t), "127.0.0.1:")}
	r.start(bin)
	return r
}

func (r *ownRedis) start(bin string) {
	r.t.Helper()
	r.proc = start(r.t, "redis-server", nil, bin, "--bind", "127.0.0.1", "--port", r.port, "--save", "", "--appendonly", "no")
	waitTCP(r.t, "127.0.0.1:"+r.port)
}

// restartEmpty kills the server (SIGKILL) and starts a new one on the same
// port: as a Redis without persistence comes back after a crash, empty.
func (r *ownRedis) restartEmpty() {
	r.t.Helper()
	r.proc.cmd.Process.Kill()
	<-r.proc.done
	r.proc.done <- nil
	bin, _ := exec.LookPath("redis-server")
	r.start(bin)
}

func (r *ownRedis) url() string { return "redis://127.0.0.1:" + r.port + "/0" }

// waitPostgres waits until the cluster answers.
func waitPostgres(t *testing.T, url string) {
	t.Helper()
	wait(t, 30*time.Second, "Postgres to answer", func() (bool, string) {
		db, err := sql.Open("pgx", url)
		if err != nil {
			return false, err.Error()
		}
		defer db.Close()
		if err := db.PingContext(context.Background()); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}
