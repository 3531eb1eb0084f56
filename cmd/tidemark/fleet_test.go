package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds tidemark and demo-upstream once per test binary.
func binaries(t *testing.T) (tidemark, upstream string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tidemark-bin-")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{".", "../demo-upstream"} {
			out, err := exec.Command("go", "build", "-o", binDir+"/", pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "tidemark"), filepath.Join(binDir, "demo-upstream")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proc is a child process whose output goes to the test log.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// start runs a child process whose output goes to the test log under -v;
// it is killed when the test ends.
func start(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p, _ := startLogged(t, name, env, bin, args...)
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and expects a clean exit within the deadline.
func (p *proc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup's receive
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM, want 0", p.name, err)
		}
	case <-time.After(within):
		t.Errorf("%s still running %s after SIGTERM", p.name, within)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening after 20s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a port
	}
}

// TestTwoSchedulersTwoWorkers runs the fleet as real processes: two
// scheduler replicas and two workers against demo-upstream. Every resource
// must get exactly one run per interval slot: no slot enqueued twice, none
// lost, and all processes stop cleanly on SIGTERM.
func TestTwoSchedulersTwoWorkers(t *testing.T) {
	t.Parallel()
	tidemark, upstream := binaries(t)
	dir := t.TempDir()
	demo, err := os.ReadFile("../../examples/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Every resource read in full on a 3 s slot (pure pull), so the test
	// sees several slots quickly and each slot is one task.
	fast := regexp.MustCompile(`probe: \{[^}]*\}`).ReplaceAll(demo, []byte("probe: {strategy: none, every: 3s}"))
	fast = regexp.MustCompile(`full_sync: \{[^}]*\}`).ReplaceAll(fast, []byte("full_sync: {every: 3s, detect_deletes: true}"))
	fast = regexp.MustCompile(`(?m)^\s*delta: .*$`).ReplaceAll(fast, nil)
	confPath := filepath.Join(dir, "tidemark.yaml")
	if err := os.WriteFile(confPath, fast, 0o600); err != nil {
		t.Fatal(err)
	}
	upAddr := freeAddr(t)
	dbURL := testenv.Database(t)
	env := []string{
		"TIDEMARK_CONFIG=" + confPath,
		"TIDEMARK_DATABASE_URL=" + dbURL,
		"TIDEMARK_REDIS_URL=" + testenv.Redis(t),
		"DEMO_UPSTREAM_URL=http://" + upAddr,
		"TIDEMARK_SHUTDOWN_TIMEOUT=5s",
	}
	up := start(t, "demo-upstream", nil, upstream, "--addr", upAddr, "--records", "250", "--change-rate", "20")
	waitTCP(t, upAddr)
	var roles []*proc
	for i := range 2 {
		roles = append(roles, start(t, fmt.Sprintf("scheduler-%d", i), env, tidemark, "scheduler"))
		roles = append(roles, start(t, fmt.Sprintf("worker-%d", i), env, tidemark, "worker"))
	}

	ctx := context.Background()
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	type slotRuns struct {
		Resource string
		TaskID   string
		Runs     int
		Statuses string
	}
	query := func() []slotRuns {
		var rows []slotRuns
		if err := st.DBForTests().Raw(`
			SELECT resource, task_id, count(*) AS runs, string_agg(status, ',') AS statuses
			FROM sync_runs GROUP BY resource, task_id ORDER BY resource, task_id`).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		return rows
	}
	// Wait for 60 s of schedule: 20 finished 3 s slots of every resource.
	deadline := time.Now().Add(150 * time.Second)
	for {
		perResource := map[string]int{}
		for _, r := range query() {
			if !strings.Contains(r.Statuses, "running") {
				perResource[r.Resource]++
			}
		}
		enough := len(perResource) == 5
		for _, n := range perResource {
			enough = enough && n >= 20
		}
		if enough {
			break
		}
		for _, p := range append(roles, up) {
			if p.exited() {
				t.Fatalf("%s exited early", p.name)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 150s, finished slots per resource: %v", perResource)
		}
		time.Sleep(200 * time.Millisecond) // polling the database
	}
	for _, p := range roles {
		p.stop(t, 20*time.Second)
	}
	up.stop(t, 10*time.Second)

	// A slot whose task found the previous fetch still running (a slow
	// first read on a loaded machine) is not lost: it left the pending mark,
	// and the running fetch enqueued one follow-up (a random task id) when
	// it ended. Each such gap must be covered by one follow-up.
	slots := map[string][]int64{}
	followUps := map[string]int{}
	slotID := regexp.MustCompile(`^fetch:demo:(\w+):full:(\d+)$`)
	for _, r := range query() {
		m := slotID.FindStringSubmatch(r.TaskID)
		if m == nil {
			followUps[r.Resource] += r.Runs
			continue
		}
		if r.Runs != 1 {
			t.Errorf("%s slot %s has %d runs (%s), want exactly 1", r.Resource, m[2], r.Runs, r.Statuses)
		}
		if r.Statuses != store.StatusSucceeded && r.Statuses != store.StatusRunning {
			t.Errorf("%s slot %s: status %s", r.Resource, m[2], r.Statuses)
		}
		var n int64
		fmt.Sscan(m[2], &n)
		slots[r.Resource] = append(slots[r.Resource], n)
	}
	for res, ns := range slots {
		gaps := 0
		for i := 1; i < len(ns); i++ {
			gaps += int(ns[i] - ns[i-1] - 1)
		}
		if gaps > followUps[res] {
			t.Errorf("%s: slots %v miss %d slots but only %d follow-up runs cover them: a slot was lost", res, ns, gaps, followUps[res])
		}
		if followUps[res] > gaps+1 {
			t.Errorf("%s: %d follow-up runs for %d merged slots: a slot ran twice", res, followUps[res], gaps)
		}
	}
}

// TestWorkerSIGTERMMidFetch stops a worker with SIGTERM in the middle of a
// 20-page fetch: it exits 0 within its shutdown timeout, and a second worker
// finishes the fetch from the checkpoint, so every record lands exactly
// once and no page is read twice.
func TestWorkerSIGTERMMidFetch(t *testing.T) {
	t.Parallel()
	tidemark, upstream := binaries(t)
	upAddr := freeAddr(t)
	dbURL := testenv.Database(t)
	env := []string{
		"TIDEMARK_CONFIG=../../examples/demo.yaml",
		"TIDEMARK_DATABASE_URL=" + dbURL,
		"TIDEMARK_REDIS_URL=" + testenv.Redis(t),
		"DEMO_UPSTREAM_URL=http://" + upAddr,
		"TIDEMARK_SHUTDOWN_TIMEOUT=1s",
	}
	// 2,000 records at 100 per page: 20 pages, each taking 150 ms upstream.
	start(t, "demo-upstream", nil, upstream, "--addr", upAddr, "--records", "2000", "--latency", "150ms")
	waitTCP(t, upAddr)
	first := start(t, "worker-1", env, tidemark, "worker")
	sync := exec.Command(tidemark, "sync", "demo/ticket_sales", "--full")
	sync.Env = append(os.Environ(), env...)
	if out, err := sync.CombinedOutput(); err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}

	st := openStore(t, dbURL)
	runs := func() []store.Run { return runsOf(t, st, "ticket_sales") }
	deadline := time.Now().Add(30 * time.Second)
	for {
		if rs := runs(); len(rs) > 0 && rs[0].Pages >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fetch did not reach page 3 in 30s")
		}
		time.Sleep(20 * time.Millisecond) // polling the run row
	}
	began := time.Now()
	first.stop(t, 5*time.Second) // shutdown timeout 1 s, plus process exit
	t.Logf("worker exited %s after SIGTERM", time.Since(began).Round(time.Millisecond))

	start(t, "worker-2", env, tidemark, "worker")
	deadline = time.Now().Add(60 * time.Second)
	for {
		if rs := runs(); len(rs) > 0 && rs[0].Status == store.StatusSucceeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no succeeded run 60s after the second worker started: %+v", runs())
		}
		time.Sleep(50 * time.Millisecond) // polling the run row
	}

	all := runs()
	if len(all) != 2 {
		t.Fatalf("%d runs, want 2 (interrupted, resumed): %+v", len(all), all)
	}
	resumed, interrupted := all[0], all[1]
	// Interrupted, not failed: the task resumes, and no failure is counted.
	if interrupted.Status != store.StatusInterrupted || !strings.Contains(interrupted.Error, "interrupted") {
		t.Errorf("interrupted run: status %s error %q", interrupted.Status, interrupted.Error)
	}
	if interrupted.Pages+resumed.Pages != 20 || resumed.Pages >= 20 {
		t.Errorf("pages: interrupted %d + resumed %d, want 20 in all with the resumed run starting from the checkpoint",
			interrupted.Pages, resumed.Pages)
	}
	var live, created int64
	st.DBForTests().Raw(`SELECT count(*) FROM records WHERE resource = 'ticket_sales' AND deleted_at IS NULL`).Scan(&live)
	st.DBForTests().Raw(`SELECT ` + createdAudited + `resource = 'ticket_sales' AND op IN ('created', 'initial_load')`).Scan(&created)
	if live != 2000 || created != 2000 {
		t.Errorf("records %d, created audit rows %d; want 2000 and 2000 (each record exactly once)", live, created)
	}
}

// TestWorkerKilledMidDelta SIGKILLs a worker in the middle of a multi-page
// delta. asynq recovers the task once its lease expires; the retry resumes
// from the checkpoint, which was never ahead of the committed rows; every
// record is present exactly once.
func TestWorkerKilledMidDelta(t *testing.T) {
	t.Parallel()
	tidemark, upstream := binaries(t)
	upAddr := freeAddr(t)
	dbURL := testenv.Database(t)
	env := []string{
		"TIDEMARK_CONFIG=../../examples/demo.yaml",
		"TIDEMARK_DATABASE_URL=" + dbURL,
		"TIDEMARK_REDIS_URL=" + testenv.Redis(t),
		"DEMO_UPSTREAM_URL=http://" + upAddr,
	}
	// 3,000 records at 100 per page: a 30-page delta (no watermark yet).
	start(t, "demo-upstream", nil, upstream, "--addr", upAddr, "--records", "3000", "--latency", "100ms")
	waitTCP(t, upAddr)
	victim := start(t, "worker-1", env, tidemark, "worker")
	sync := exec.Command(tidemark, "sync", "demo/ticket_sales")
	sync.Env = append(os.Environ(), env...)
	if out, err := sync.CombinedOutput(); err != nil || !strings.Contains(string(out), "delta") {
		t.Fatalf("sync: %v\n%s", err, out)
	}

	ctx := context.Background()
	st := openStore(t, dbURL)
	runs := func() []store.Run { return runsOf(t, st, "ticket_sales") }
	deadline := time.Now().Add(30 * time.Second)
	for len(runs()) == 0 || runs()[0].Pages < 5 {
		if time.Now().After(deadline) {
			t.Fatal("the delta did not reach page 5 in 30s")
		}
		time.Sleep(20 * time.Millisecond) // polling the run row
	}
	victim.cmd.Process.Kill()
	<-victim.done
	victim.done <- nil

	killed := runs()[0]
	var committed int64
	st.DBForTests().Raw(`SELECT count(*) FROM records WHERE resource = 'ticket_sales'`).Scan(&committed)
	if committed != int64(killed.Pages)*100 {
		t.Fatalf("after the kill: %d records committed, the run counts %d pages: checkpoint and rows disagree", committed, killed.Pages)
	}

	start(t, "worker-2", env, tidemark, "worker")
	deadline = time.Now().Add(150 * time.Second)
	for {
		if rs := runs(); rs[0].Status == store.StatusSucceeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no succeeded run 150s after the kill: %+v", runs())
		}
		time.Sleep(200 * time.Millisecond) // polling the run row
	}
	all := runs()
	resumed := all[0]
	if resumed.Trigger != "takeover" || resumed.Kind != "delta" {
		t.Errorf("resumed run: %s %s, want a delta taking over the killed one", resumed.Trigger, resumed.Kind)
	}
	if resumed.Pages >= 30 || all[len(all)-1].Pages+resumed.Pages < 30 {
		t.Errorf("resumed run read %d pages after %d committed: want it to start from the checkpoint", resumed.Pages, killed.Pages)
	}
	if abandoned := all[len(all)-1]; abandoned.Status != store.StatusInterrupted || !strings.Contains(abandoned.Error, "abandoned") {
		t.Errorf("the killed run is left %s %q, want interrupted as abandoned", abandoned.Status, abandoned.Error)
	}
	var live, created int64
	st.DBForTests().Raw(`SELECT count(*) FROM records WHERE resource = 'ticket_sales' AND deleted_at IS NULL`).Scan(&live)
	st.DBForTests().Raw(`SELECT ` + createdAudited + `resource = 'ticket_sales' AND op IN ('created', 'initial_load')`).Scan(&created)
	if live != 3000 || created != 3000 {
		t.Errorf("records %d, created audit rows %d; want 3000 and 3000 (each record exactly once)", live, created)
	}
	if s, _ := st.State(ctx, store.Key{Source: "demo", Resource: "ticket_sales"}); s.Watermark == "" || s.Checkpoint != nil {
		t.Errorf("after the resumed delta: watermark %q, checkpoint %s; want a watermark and no checkpoint", s.Watermark, s.Checkpoint)
	}
}

// openStore opens the test's database; it is closed when the test ends.
func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// runsOf lists a resource's runs, newest first.
func runsOf(t *testing.T, st *store.Store, resource string) []store.Run {
	t.Helper()
	rs, err := st.Runs(context.Background(), store.RunFilter{Resource: resource})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}
