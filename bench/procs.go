package bench

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for migrations.Up
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/migrations"
)

// build compiles tidemark and demo-upstream into dir with `go build`, from
// the module at root.
func build(ctx context.Context, root, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+string(os.PathSeparator), "./cmd/tidemark", "./cmd/demo-upstream")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build tidemark and demo-upstream: %w\n%s", err, out)
	}
	return nil
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run the harness from the tidemark module")
		}
		dir = parent
	}
}

// proc is a child process: demo-upstream or a tidemark role.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs bin with args, output to logDir/name.log.
func start(bin string, args []string, env []string, logDir, name string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM and waits (SIGKILL after 30s).
func (p *proc) stop() error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within 30s of SIGTERM", p.name)
	}
	return nil
}

// exited reports an early exit with the tail of the process's log.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v; log %s:\n%s", p.name, p.err, p.log, tail(p.log, 20))
	default:
		return nil
	}
}

// cpu is the process's user+system CPU time so far (Linux /proc).
func (p *proc) cpu() time.Duration { return procCPU(p.cmd.Process.Pid) }

// peakRSS is the process's peak resident set (VmHWM) in bytes.
func (p *proc) peakRSS() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / clockTicks
}

// postgresCPU sums the CPU time of every process named postgres (the
// server's backends and helpers); backends that exit in between are lost,
// so only deltas over a span where the connections stay open mean much.
func postgresCPU() time.Duration {
	ents, _ := os.ReadDir("/proc")
	var total time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		total += procCPU(pid)
	}
	return total
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// upstreamProc is a running demo-upstream.
type upstreamProc struct {
	*proc
	base string
}

// startUpstream runs demo-upstream with args and waits until it answers.
func startUpstream(ctx context.Context, bin, logDir, name string, args ...string) (*upstreamProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := start(bin, append([]string{"--addr", addr}, args...), nil, logDir, name)
	if err != nil {
		return nil, err
	}
	u := &upstreamProc{proc: p, base: "http://" + addr}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(u.base + "/_stats")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return u, nil
			}
		}
		if err := p.exited(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.stop()
			return nil, fmt.Errorf("demo-upstream at %s not answering after 2m", addr)
		}
		time.Sleep(50 * time.Millisecond) // polling a process we cannot signal on readiness
	}
}

// database is a tidemark_bench_* database, created and migrated.
type database struct {
	name  string
	url   string
	admin string
}

// databasePrefix begins the name of every database this run creates: the
// process id keeps two runs on one Postgres (two people, or a run and a
// run of an older checkout) from dropping each other's databases.
var databasePrefix = fmt.Sprintf("tidemark_bench_%d_", os.Getpid())

// createDatabase (re)creates tidemark_bench_<pid>_<suffix> and migrates it.
func createDatabase(ctx context.Context, adminURL, suffix string) (*database, error) {
	name := databasePrefix + suffix
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres at %s: %w", redactURL(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return nil, fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, fmt.Errorf("admin database URL: %w", err)
	}
	u.Path = "/" + name
	db := &database{name: name, url: u.String(), admin: adminURL}
	sqldb, err := sql.Open("pgx", db.url)
	if err != nil {
		return nil, err
	}
	defer sqldb.Close()
	if err := migrations.Up(ctx, sqldb); err != nil {
		return nil, fmt.Errorf("migrate %s: %w", name, err)
	}
	return db, nil
}

// drop removes the database.
func (d *database) drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, d.admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.name+" WITH (FORCE)")
	return err
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// redisDB is a Redis database number reserved the way internal/testenv
// reserves them (a lock in DB 0), so a bench never empties a database a
// test is using.
type redisDB struct {
	addr  string
	n     int
	key   string
	token string
}

func (r *redisDB) url() string { return fmt.Sprintf("redis://%s/%d", r.addr, r.n) }

func (r *redisDB) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.addr, DB: r.n})
}

func reserveRedis(ctx context.Context, addr string) (*redisDB, error) {
	locks := redis.NewClient(&redis.Options{Addr: addr, DB: 0})
	defer locks.Close()
	token := fmt.Sprintf("bench-%d-%d", os.Getpid(), time.Now().UnixNano())
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// From the top down: tests take the lowest free numbers first.
		for n := 15; n >= 1; n-- {
			key := "tidemark-test:redis-db:" + strconv.Itoa(n)
			ok, err := locks.SetNX(ctx, key, token, 2*time.Hour).Result()
			if err != nil {
				return nil, fmt.Errorf("reserve a Redis database at %s: %w", addr, err)
			}
			if !ok {
				continue
			}
			r := &redisDB{addr: addr, n: n, key: key, token: token}
			if err := r.flush(ctx); err != nil {
				return nil, err
			}
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.New("no free Redis database among 1..15 after 2m")
		}
		time.Sleep(200 * time.Millisecond) // waiting for a test to release one
	}
}

func (r *redisDB) flush(ctx context.Context) error {
	c := r.client()
	defer c.Close()
	if err := c.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("flush Redis db %d: %w", r.n, err)
	}
	return nil
}

func (r *redisDB) release(ctx context.Context) {
	_ = r.flush(ctx)
	locks := redis.NewClient(&redis.Options{Addr: r.addr, DB: 0})
	defer locks.Close()
	if v, _ := locks.Get(ctx, r.key).Result(); v == r.token {
		locks.Del(ctx, r.key)
	}
}

// waitFor polls cond every interval until it is true, fails, or the deadline passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not done after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
