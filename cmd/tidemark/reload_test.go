package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// TestRoleHelpFlags: each role's -h lists the flags it uses and no others;
// run lists them all.
func TestRoleHelpFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		role       string
		has, lacks []string
	}{
		{"worker", []string{"fetch-concurrency", "probe-concurrency", "shutdown-timeout", "metrics-addr", "config-poll"},
			[]string{"addr", "admin-token", "trust-proxy", "hook-window", "failure-threshold"}},
		{"server", []string{"addr", "admin-token", "hook-window", "config-poll"},
			[]string{"fetch-concurrency", "queue-weights", "shutdown-timeout", "metrics-addr", "failure-threshold"}},
		{"scheduler", []string{"failure-threshold", "metrics-addr", "config-poll"},
			[]string{"addr", "admin-token", "fetch-concurrency", "shutdown-timeout"}},
		{"run", []string{"addr", "admin-token", "fetch-concurrency", "shutdown-timeout", "failure-threshold", "config-poll"},
			[]string{"metrics-addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			t.Parallel()
			code, _, help := runCmd(t, nil, tt.role, "-h")
			if code != 0 {
				t.Fatalf("tidemark %s -h: exit %d", tt.role, code)
			}
			listed := func(flag string) bool {
				return regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(flag) + `\b`).MatchString(help)
			}
			for _, f := range tt.has {
				if !listed(f) {
					t.Errorf("tidemark %s -h does not list --%s:\n%s", tt.role, f, help)
				}
			}
			for _, f := range tt.lacks {
				if listed(f) {
					t.Errorf("tidemark %s -h lists --%s, which it does not use:\n%s", tt.role, f, help)
				}
			}
		})
	}
}

// TestRoleFlagEnv: a role reads only its own flags' variables.
func TestRoleFlagEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{"TIDEMARK_FAILURE_THRESHOLD": "three", "TIDEMARK_CONFIG_POLL": "5"}
	code, _, errOut := runCmd(t, env, "scheduler", "--config", "../../examples/demo.yaml")
	for _, want := range []string{`TIDEMARK_FAILURE_THRESHOLD="three": want a whole number`, `TIDEMARK_CONFIG_POLL="5"`} {
		if code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("scheduler: exit %d, stderr %q; want 2 and %q", code, errOut, want)
		}
	}
	code, _, errOut = runCmd(t, env, "server", "--config", "../../examples/demo.yaml")
	if code != 2 || strings.Contains(errOut, "FAILURE_THRESHOLD") {
		t.Errorf("server: exit %d, stderr %q; want 2 for TIDEMARK_CONFIG_POLL alone", code, errOut)
	}
}

// reloadConfig is a config of demo-upstream's resources named.
func reloadConfig(upAddr string, resources ...string) string {
	blocks := map[string]string{
		"transactions": `      - name: transactions
        path: /api/transactions
        records: {path: transactions, id: txn_id}
        pagination: {style: page, page_param: page, start: 1, limit_param: per_page, limit: 100, total_field: total}
        probe: {strategy: last_modified, method: GET, every: 1s, max_every: 2s, limit: 1}
        full_sync: {every: 1h}
`,
		"ticket_sales": `      - name: ticket_sales
        path: /v1/ticket_sales
        records: {path: data, id: id}
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 100}
        probe: {strategy: etag, method: HEAD, every: 1s, max_every: 2s, limit: 1}
        full_sync: {every: 1h}
`,
		"settlements": `      - name: settlements
        path: /settlements
        records: {path: results, id: settlement.id}
        pagination: {style: offset, offset_param: offset, limit_param: limit, limit: 100, total_field: count}
        probe: {strategy: hash, method: GET, every: 1s, max_every: 2s, limit: 1}
        full_sync: {every: 1h}
`,
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sources:\n  - name: demo\n    base_url: http://%s\n    allow_private: true\n    rate_limit: {requests: 500, per: 1s, burst: 50}\n    timeout: 10s\n    resources:\n", upAddr)
	for _, r := range resources {
		b.WriteString(blocks[r])
	}
	return b.String()
}

// TestConfigReload changes the config file under a running scheduler,
// worker and server (real processes), none restarted: an added resource is
// synced; a resource removed while its fetch runs ends cleanly, and its
// queued tasks are dropped, none dead; a broken file is refused (counted,
// announced once, the old config running on); SIGHUP reloads a server that
// does not poll.
func TestConfigReload(t *testing.T) {
	t.Parallel()
	r := startReloadRig(t)
	r.waitSucceeded("transactions")

	// Added: taken up at once, no restart.
	r.write("transactions", "ticket_sales")
	r.wait("ticket_sales fetch under way", func() (bool, string) {
		rs := runsOf(t, r.st, "ticket_sales")
		for _, run := range rs {
			if run.Status == store.StatusRunning && run.Pages >= 2 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d runs", len(rs))
	})

	r.removeMidFetch()
	r.refuseBroken()

	// Fixed, with a new resource: the polling roles sync it; the server
	// (on the first config still) lists it after SIGHUP.
	r.write("transactions", "settlements")
	r.waitSucceeded("settlements")
	if listsResource(t, r.srvAddr, "settlements") {
		t.Fatal("the server, which does not poll, took up the new config before SIGHUP")
	}
	r.srv.cmd.Process.Signal(syscall.SIGHUP)
	r.wait("the server lists settlements after SIGHUP", func() (bool, string) {
		return listsResource(t, r.srvAddr, "settlements"), ""
	})
	if n := archivedTasks(t, r.redis); n != 0 {
		t.Errorf("%d dead (archived) tasks at the end, want 0", n)
	}
	for _, p := range r.procs {
		p.stop(t, 20*time.Second)
	}
}

// reloadRig is TestConfigReload's fleet: demo-upstream, and a worker and a
// scheduler polling the config file, and a server reloading on SIGHUP only.
type reloadRig struct {
	t                *testing.T
	confPath, upAddr string
	st               *store.Store
	redis            asynq.RedisConnOpt
	procs            []*proc
	srv              *proc
	workerLog        *logBuf
	// metrics addresses of the worker, scheduler and server
	workerAddr, schedAddr, srvAddr string
}

func startReloadRig(t *testing.T) *reloadRig {
	t.Helper()
	tidemark, upstream := binaries(t)
	r := &reloadRig{t: t, confPath: filepath.Join(t.TempDir(), "tidemark.yaml"), upAddr: freeAddr(t),
		workerAddr: freeAddr(t), schedAddr: freeAddr(t), srvAddr: freeAddr(t)}
	r.write("transactions")
	dbURL, redisURL := testenv.Database(t), testenv.Redis(t)
	var err error
	if r.redis, err = asynq.ParseRedisURI(redisURL); err != nil {
		t.Fatal(err)
	}
	env := []string{"TIDEMARK_CONFIG=" + r.confPath, "TIDEMARK_DATABASE_URL=" + dbURL, "TIDEMARK_REDIS_URL=" + redisURL,
		"TIDEMARK_CONFIG_POLL=300ms", "TIDEMARK_SHUTDOWN_TIMEOUT=5s"}
	// 1,500 records at 100 per page, 150 ms a response: a full read takes
	// a few seconds, long enough to change the config under it.
	start(t, "demo-upstream", nil, upstream, "--addr", r.upAddr, "--records", "1500", "--latency", "150ms")
	waitTCP(t, r.upAddr)
	worker, workerLog := startLogged(t, "worker", append(env, "TIDEMARK_METRICS_ADDR="+r.workerAddr), tidemark, "worker")
	sched := start(t, "scheduler", append(env, "TIDEMARK_METRICS_ADDR="+r.schedAddr), tidemark, "scheduler")
	r.srv = start(t, "server", append(env, "TIDEMARK_CONFIG_POLL=0", "TIDEMARK_ADDR="+r.srvAddr), tidemark, "server")
	r.procs, r.workerLog = []*proc{worker, sched, r.srv}, workerLog
	r.st = openStore(t, dbURL)
	return r
}

// write puts a config of the resources named in place, in one rename.
func (r *reloadRig) write(resources ...string) { r.writeRaw(reloadConfig(r.upAddr, resources...)) }

func (r *reloadRig) writeRaw(content string) {
	r.t.Helper()
	if err := os.WriteFile(r.confPath+".tmp", []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(r.confPath+".tmp", r.confPath); err != nil {
		r.t.Fatal(err)
	}
}

// wait is wait that also fails the test when a process has exited: no
// reload may stop one.
func (r *reloadRig) wait(what string, cond func() (bool, string)) {
	r.t.Helper()
	wait(r.t, 60*time.Second, what, func() (bool, string) {
		for _, p := range r.procs {
			if p.exited() {
				r.t.Fatalf("%s exited: a reload must not stop it", p.name)
			}
		}
		return cond()
	})
}

func (r *reloadRig) waitSucceeded(resource string) {
	r.t.Helper()
	r.wait(resource+" synced", func() (bool, string) {
		rs := runsOf(r.t, r.st, resource)
		for _, run := range rs {
			if run.Status == store.StatusSucceeded {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d runs", len(rs))
	})
}

// removeMidFetch removes ticket_sales while its fetch runs: the fetch ends
// (on the config it began with), a task queued for it is dropped, and
// nothing is dead.
func (r *reloadRig) removeMidFetch() {
	t := r.t
	t.Helper()
	r.write("transactions")
	r.wait("ticket_sales runs ended", func() (bool, string) {
		for _, run := range runsOf(t, r.st, "ticket_sales") {
			if run.Status == store.StatusRunning {
				return false, fmt.Sprintf("run %d still running", run.ID)
			}
		}
		return true, ""
	})
	old, err := config.Parse("v2", []byte(reloadConfig(r.upAddr, "transactions", "ticket_sales")))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(r.redis)
	defer client.Close()
	res := old.Source("demo").Resource("ticket_sales")
	probe, _ := jobs.NewProbe(jobs.ProbePayload{Source: "demo", Resource: "ticket_sales", Trigger: jobs.TriggerSchedule},
		append(jobs.ProbeOptions(res), asynq.TaskID("queued-before-removal"), asynq.Retention(time.Hour))...)
	if _, err := client.Enqueue(probe); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(r.redis)
	defer insp.Close()
	r.wait("the queued probe of the removed resource done", func() (bool, string) {
		info, err := insp.GetTaskInfo(jobs.ProbeQueue(res), "queued-before-removal")
		if err != nil {
			return false, err.Error()
		}
		if info.State == asynq.TaskStateArchived || info.State == asynq.TaskStateRetry {
			t.Fatalf("the probe of a removed resource is %s (%s), want it completed as a no-op", info.State, info.LastErr)
		}
		return info.State == asynq.TaskStateCompleted, info.State.String()
	})
	if !strings.Contains(r.workerLog.String(), "task dropped: its resource is no longer in the config") {
		t.Error("the worker did not log the dropped task")
	}
	for _, run := range runsOf(t, r.st, "ticket_sales") {
		if run.Status == store.StatusFailed || run.Status == store.StatusDead {
			t.Errorf("ticket_sales run %d ended %s (%s), want it to end cleanly", run.ID, run.Status, run.Error)
		}
	}
	if n := archivedTasks(t, r.redis); n != 0 {
		t.Errorf("%d dead (archived) tasks after removing a resource, want 0", n)
	}
}

// refuseBroken writes an invalid file: every process refuses it (counted;
// the server on SIGHUP), one config.rejected event names the field, and
// everything runs on.
func (r *reloadRig) refuseBroken() {
	t := r.t
	t.Helper()
	r.writeRaw(reloadConfig(r.upAddr, "transactions") + "    timeout: soon\n")
	for _, addr := range []string{r.workerAddr, r.schedAddr} {
		r.wait(addr+" counts the rejection", func() (bool, string) { return rejections(t, addr) == 1, "" })
	}
	r.srv.cmd.Process.Signal(syscall.SIGHUP)
	r.wait("the server counts the rejection after SIGHUP", func() (bool, string) { return rejections(t, r.srvAddr) == 1, "" })
	var announced []store.OutboxEvent
	r.wait("the config.rejected event relayed", func() (bool, string) {
		r.st.DBForTests().Where("event = ?", config.EventConfigRejected).Find(&announced)
		return len(announced) > 0 && announced[0].PublishedAt != nil, fmt.Sprintf("%d events", len(announced))
	})
	if len(announced) != 1 {
		t.Fatalf("%d config.rejected events, want 1 (three processes refused one file)", len(announced))
	}
	var ev struct {
		File     string   `json:"file"`
		Problems []string `json:"problems"`
	}
	json.Unmarshal(announced[0].Payload, &ev)
	if ev.File != r.confPath || len(ev.Problems) != 1 || !strings.HasSuffix(ev.Problems[0], "sources[0].timeout") {
		t.Errorf("config.rejected payload %s: want the file and sources[0].timeout", announced[0].Payload)
	}
}

// rejections reads tidemark_config_reloads_total{result="rejected"} from
// the /metrics at addr (-1 when unreadable).
func rejections(t *testing.T, addr string) int {
	t.Helper()
	body := httpBody(t, "http://"+addr+"/metrics")
	m := regexp.MustCompile(`(?m)^tidemark_config_reloads_total\{result="rejected"\} (\d+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

func listsResource(t *testing.T, addr, resource string) bool {
	t.Helper()
	return strings.Contains(httpBody(t, "http://"+addr+"/api/resources"), `"resource":"`+resource+`"`)
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// archivedTasks counts dead tasks over every queue.
func archivedTasks(t *testing.T, opt asynq.RedisConnOpt) int {
	t.Helper()
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	queues, err := insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range queues {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		n += info.Archived
	}
	return n
}
