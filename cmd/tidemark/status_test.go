package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// TestStatusShowsTheCause: `tidemark status` says on a failing resource's
// row why it fails in plain words, since when, how many attempts, and what
// happens next, from the task queue: the next attempt of a task waiting for
// its retry; for an archived one, the retry command to run.
func TestStatusShowsTheCause(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	confYAML := `
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - {name: orders, path: /orders, records: {id: id}, freshness: 1m}
      - {name: items, path: /items, records: {id: id}, freshness: 1m}
      - {name: fine, path: /fine, records: {id: id}, freshness: 1m}
      - {name: limited, path: /limited, records: {id: id}, freshness: 1m}
`
	conf, st, redisOpt, env := statusRig(t, confYAML)
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()

	// orders: three failed fetches, its task waiting for a retry in an hour.
	// items: one dead fetch, its task archived.
	failures := []struct {
		resource, status, msg string
		n                     int
		archive               bool
	}{
		{"orders", store.StatusFailed, "fetch shop/orders page 1: GET http://127.0.0.1:1/orders?limit=100: HTTP 503: {\"error\":\"busy\"}", 3, false},
		{"items", store.StatusDead, "GET http://127.0.0.1:1/items: HTTP 401: unauthorized", 1, true},
	}
	taskIDs := map[string]string{}
	for _, f := range failures {
		res := conf.Source("shop").Resource(f.resource)
		task, err := jobs.NewFetch(jobs.FetchPayload{Source: "shop", Resource: f.resource, Mode: tidemark.RunDelta, Trigger: jobs.TriggerSchedule},
			append(jobs.FetchOptions(res), asynq.ProcessIn(time.Hour))...)
		if err != nil {
			t.Fatal(err)
		}
		info, err := client.Enqueue(task)
		if err != nil {
			t.Fatal(err)
		}
		taskIDs[f.resource] = info.ID
		if f.archive {
			if err := insp.ArchiveTask(info.Queue, info.ID); err != nil {
				t.Fatal(err)
			}
		}
		for range f.n {
			run := store.Run{Source: "shop", Resource: f.resource, Kind: tidemark.RunDelta, Trigger: jobs.TriggerSchedule, TaskID: info.ID}
			if err := st.StartRun(ctx, &run); err != nil {
				t.Fatal(err)
			}
			if err := st.FinishRun(ctx, run.ID, store.RunOutcome{Status: f.status, Error: f.msg}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// limited: its fetch handed back under a 429, not a failure.
	run := store.Run{Source: "shop", Resource: "limited", Kind: tidemark.RunDelta, Trigger: jobs.TriggerSchedule}
	if err := st.StartRun(ctx, &run); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishRun(ctx, run.ID, store.RunOutcome{Status: store.StatusInterrupted, Error: "rate limited: handed back for 2s: GET http://127.0.0.1:1/limited: HTTP 429"}); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runCmd(t, env, "status")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("tidemark status:\n%s", out)
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, _, ok := strings.Cut(line, " "); ok {
			rows[k] = line
		}
	}
	for k, want := range map[string][]string{
		"shop/orders": {"the upstream failed (HTTP 503 Service Unavailable) at GET http://127.0.0.1:1/orders;", "failing since ", "(3 attempts)", "next attempt at "},
		"shop/items": {"the upstream refused tidemark's credentials (HTTP 401 Unauthorized) at GET http://127.0.0.1:1/items;", "(1 attempt)",
			"dead: run `tidemark retry " + taskIDs["items"] + "`"},
	} {
		for _, w := range want {
			if !strings.Contains(rows[k], w) {
				t.Errorf("status row of %s lacks %q:\n%s", k, w, rows[k])
			}
		}
	}
	if !strings.HasSuffix(rows["shop/limited"], "last fetch interrupted: rate limited: handed back for 2s: GET http://127.0.0.1:1/limited: HTTP 429") {
		t.Errorf("status row of shop/limited does not say its fetch was handed back:\n%s", rows["shop/limited"])
	}
	if !strings.HasSuffix(strings.TrimSpace(rows["shop/fine"]), " -") {
		t.Errorf("a resource that is not failing has a cause:\n%s", rows["shop/fine"])
	}
	if strings.Contains(out, "limit=100") {
		t.Errorf("status shows a URL's query string:\n%s", out)
	}

	// With a Redis that does not answer: the table still comes, soon,
	// saying what the runs say.
	env["TIDEMARK_REDIS_URL"] = "redis://" + silentServer(t) + "/0"
	began := time.Now()
	code, out, errOut = runCmd(t, env, "status")
	// About one 2 s read timeout: Redis is asked once, not once per
	// failing resource, and not with go-redis's default timeouts (10 s here).
	if took := time.Since(began); code != 0 || took > 4500*time.Millisecond {
		t.Fatalf("status without Redis: exit %d after %s\n%s%s", code, took, out, errOut)
	}
	t.Logf("status with a silent Redis took %s", time.Since(began))
	for _, want := range []string{"will retry (the task queue cannot be read: ", "dead: run `tidemark retry " + taskIDs["items"] + "` (the task queue cannot be read: "} {
		if !strings.Contains(out, want) {
			t.Errorf("status without Redis lacks %q:\n%s", want, out)
		}
	}
}

// statusRig writes confYAML to a config file and gives its config, a
// store of the test's own database holding the sync state of every
// resource, the test's own Redis, and the environment that points tidemark
// at all three.
func statusRig(t *testing.T, confYAML string) (*config.Config, *store.Store, asynq.RedisConnOpt, map[string]string) {
	t.Helper()
	confPath := filepath.Join(t.TempDir(), "tidemark.yaml")
	if err := os.WriteFile(confPath, []byte(confYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	conf, err := config.Parse(confPath, []byte(confYAML))
	if err != nil {
		t.Fatal(err)
	}
	dbURL, redisURL := testenv.Database(t), testenv.Redis(t)
	st := openStore(t, dbURL)
	if err := st.EnsureStates(context.Background(), store.KeysOf(conf)); err != nil {
		t.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	return conf, st, redisOpt, map[string]string{"TIDEMARK_CONFIG": confPath, "TIDEMARK_DATABASE_URL": dbURL, "TIDEMARK_REDIS_URL": redisURL}
}

// silentServer accepts TCP connections and never answers: a Redis that
// hangs. It returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestStatusShowsTheFirstLoadAsOneEntry: a first load audited as a summary
// shows in `tidemark status` as one line, its count, run and version; a
// resource audited per record shows none.
func TestStatusShowsTheFirstLoadAsOneEntry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conf, st, _, env := statusRig(t, `
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - {name: orders, path: /orders, records: {id: id}}
      - {name: items, path: /items, records: {id: id}, audit: {initial_load: records}}
`)
	runs := map[string]int64{}
	for _, name := range []string{"orders", "items"} {
		run := store.Run{Source: "shop", Resource: name, Kind: tidemark.RunFull, Trigger: jobs.TriggerSchedule}
		if err := st.StartRun(ctx, &run); err != nil {
			t.Fatal(err)
		}
		runs[name] = run.ID
		page := store.Page{Key: store.Key{Source: "shop", Resource: name}, RunID: run.ID,
			SummarizeCreates: conf.Source("shop").Resource(name).Audit.InitialLoad == config.InitialLoadSummary}
		for i := range 1200 {
			page.Records = append(page.Records, store.Record{ExternalID: strconv.Itoa(i), Payload: []byte(`{}`), Hash: strconv.Itoa(i)})
		}
		if _, err := st.ApplyPage(ctx, page); err != nil {
			t.Fatal(err)
		}
	}
	vh, err := st.VersionHash(ctx, store.Key{Source: "shop", Resource: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, env, "status")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	want := fmt.Sprintf("shop/orders: first load: 1,200 records, run #%d, version %s\n", runs["orders"], vh)
	if !strings.Contains(out, want) || strings.Contains(out, "shop/items: first load") {
		t.Errorf("status does not show orders' first load as %q (and none for items):\n%s", want, out)
	}
}
