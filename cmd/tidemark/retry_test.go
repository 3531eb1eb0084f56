package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// TestRetry archives tasks for real (a fetch that fails through its retry
// budget and one that fails for good, on a real asynq server; a probe
// archived by hand) and brings them back with `tidemark retry`, by task id
// and by run id, checking that they come back with a fresh budget, trigger
// "retry", in their queue, leave the archive, and that every message is in
// plain words.
func TestRetry(t *testing.T) {
	t.Parallel()
	redisURL, dbURL := testenv.Redis(t), testenv.Database(t)
	env := map[string]string{"TIDEMARK_REDIS_URL": redisURL, "TIDEMARK_DATABASE_URL": dbURL, "TIDEMARK_CONFIG": "../../examples/demo.yaml"}
	ctx := context.Background()
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	redisOpt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()
	client := asynq.NewClient(redisOpt)
	defer client.Close()

	expect := func(t *testing.T, args []string, code int, out, errOut string) {
		t.Helper()
		gotCode, gotOut, gotErr := runCmd(t, env, args...)
		if gotCode != code || !strings.Contains(gotOut, out) || !strings.Contains(gotErr, errOut) {
			t.Fatalf("tidemark %s: exit %d, want %d\nstdout: %s(want %q)\nstderr: %s(want %q)",
				strings.Join(args, " "), gotCode, code, gotOut, out, gotErr, errOut)
		}
		for _, jargon := range []string{"skip retry", "archived"} {
			if strings.Contains(gotOut+gotErr, jargon) {
				t.Errorf("tidemark %s says %q:\n%s%s", strings.Join(args, " "), jargon, gotOut, gotErr)
			}
		}
	}
	// run records a run of task taskID as the workers do.
	run := func(t *testing.T, resource string, kind tidemark.RunKind, taskID string) string {
		t.Helper()
		r := store.Run{Source: "demo", Resource: resource, Kind: kind, Trigger: jobs.TriggerSchedule, TaskID: taskID, Attempt: 1}
		if err := st.StartRun(ctx, &r); err != nil {
			t.Fatal(err)
		}
		return strconv.FormatInt(r.ID, 10)
	}
	archivedIn := func(q string) []*asynq.TaskInfo {
		t.Helper()
		infos, err := insp.ListArchivedTasks(q)
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			t.Fatal(err)
		}
		return infos
	}

	expect(t, []string{"retry", "--all"}, 0, "no dead tasks: nothing to retry", "")
	expect(t, []string{"retry"}, 2, "", "usage: tidemark retry [--all | TASK_ID|RUN_ID...]")
	expect(t, []string{"retry", "--all", "abc"}, 2, "", "usage: tidemark retry [--all | TASK_ID|RUN_ID...]")

	// A fetch that fails every attempt: one retry, then the archive; and
	// one that fails for good at once (a 404 is not worth retrying).
	enqueueFetch := func(resource string) *asynq.TaskInfo {
		t.Helper()
		fetch, err := jobs.NewFetch(jobs.FetchPayload{Source: "demo", Resource: resource, Mode: tidemark.RunFull, Trigger: jobs.TriggerSchedule},
			asynq.Queue("critical"), asynq.MaxRetry(1))
		if err != nil {
			t.Fatal(err)
		}
		info, err := client.Enqueue(fetch)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	fetchInfo, goneInfo := enqueueFetch("ticket_sales"), enqueueFetch("inventory_movements")
	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency:              1,
		Queues:                   map[string]int{"critical": 1},
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		TaskCheckInterval:        50 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		if p, _ := jobs.ParseFetch(task); p.Resource == "inventory_movements" {
			return jobs.Classify(fmt.Errorf("upstream: GET /v1/inventory_movements: HTTP 404 Not Found: %w", jobs.ErrBadInput))
		}
		return errors.New("upstream: GET /v1/ticket_sales: HTTP 503 Service Unavailable")
	})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(archivedIn("critical")) < 2 {
		if time.Now().After(deadline) {
			srv.Shutdown()
			t.Fatal("the failing fetch was not archived within 15s")
		}
		time.Sleep(20 * time.Millisecond) // polling for the condition, with a deadline
	}
	srv.Shutdown()
	for _, dead := range archivedIn("critical") {
		if want := map[string]int{fetchInfo.ID: 1, goneInfo.ID: 0}; dead.Retried != want[dead.ID] {
			t.Fatalf("archived %s with %d retries, want %d", dead.ID, dead.Retried, want[dead.ID])
		}
	}
	fetchRun, noTaskRun := run(t, "ticket_sales", tidemark.RunFull, fetchInfo.ID), run(t, "transactions", tidemark.RunDelta, "")

	// A probe archived by hand, in the queue its resource's priority picks.
	probe, err := jobs.NewProbe(jobs.ProbePayload{Source: "demo", Resource: "settlements", Trigger: jobs.TriggerSchedule}, asynq.Queue("low"))
	if err != nil {
		t.Fatal(err)
	}
	probeInfo, err := client.Enqueue(probe)
	if err != nil {
		t.Fatal(err)
	}
	probeRun := run(t, "settlements", tidemark.RunProbe, probeInfo.ID)
	// A pending task is not dead: retry refuses it, by task and by run.
	expect(t, []string{"retry", probeInfo.ID}, 2, "", "task "+probeInfo.ID+" is not dead: it is waiting in its queue to run (queue low); nothing to retry")
	expect(t, []string{"retry", probeRun}, 2, "", "run "+probeRun+" (probe of demo/settlements, running) ran as task "+probeInfo.ID+
		", which is not dead: it is waiting in its queue to run (queue low); nothing to retry")
	if err := insp.ArchiveTask("low", probeInfo.ID); err != nil {
		t.Fatal(err)
	}

	// An unknown id anywhere on the command line: nothing is done.
	expect(t, []string{"retry", fetchInfo.ID, "no-such-task"}, 2, "", "no task no-such-task in any queue (critical, default, low, probe_critical, probe_default, probe_low): "+
		"it succeeded, was retried already, or expired from the dead tasks; task ids are the TASK column of `tidemark runs`")
	expect(t, []string{"retry", fetchRun, "424242"}, 2, "", "no run 424242: run ids are the ID column of `tidemark runs`")
	expect(t, []string{"retry", noTaskRun}, 2, "", "run "+noTaskRun+" (delta fetch of demo/transactions, running) has no task recorded: nothing to retry; to read now: tidemark sync demo/transactions")
	if len(archivedIn("critical")) != 2 || len(archivedIn("low")) != 1 {
		t.Fatal("a rejected command line changed the archive")
	}

	pendingIn := func(t *testing.T, q string) []*asynq.TaskInfo {
		t.Helper()
		infos, err := insp.ListPendingTasks(q)
		if err != nil {
			t.Fatal(err)
		}
		return infos
	}
	payload := func(t *testing.T, payload []byte) map[string]any {
		t.Helper()
		var p map[string]any
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("by run id", func(t *testing.T) {
		// Named twice, by its run and by its id, it is retried once.
		expect(t, []string{"retry", fetchRun, fetchInfo.ID}, 0, "re-enqueued the full fetch of demo/ticket_sales as task ", "")
		expect(t, []string{"retry", fetchRun}, 2, "", "run "+fetchRun+" (full fetch of demo/ticket_sales, running) ran as task "+fetchInfo.ID+
			", which is in no queue any more: it succeeded, was retried already, or expired from the dead tasks; to read now: tidemark sync demo/ticket_sales --full")
		if n := len(archivedIn("critical")); n != 1 {
			t.Errorf("%d tasks archived in critical, want the 404 left", n)
		}
		pending := pendingIn(t, "critical")
		if len(pending) != 1 {
			t.Fatalf("%d pending tasks in critical, want 1", len(pending))
		}
		got := pending[0]
		if got.ID == fetchInfo.ID || got.Type != jobs.TypeFetch || got.Retried != 0 || got.MaxRetry != 8 {
			t.Errorf("re-enqueued %s %s with %d/%d retries, want a new fetch with 0/8", got.ID, got.Type, got.Retried, got.MaxRetry)
		}
		p := payload(t, got.Payload)
		// Retried, it continues the dead task's read from its checkpoint.
		if p["trigger"] != jobs.TriggerRetry || p["mode"] != string(tidemark.RunFull) || p["source"] != "demo" || p["resource"] != "ticket_sales" || p["resume"] != true {
			t.Errorf("payload %v, want the same fetch with trigger retry, resuming", p)
		}
	})
	t.Run("by task id, says how it failed", func(t *testing.T) {
		_, out, _ := runCmd(t, env, "retry", goneInfo.ID)
		want := "re-enqueued the full fetch of demo/inventory_movements as task "
		if !strings.Contains(out, want) || !strings.Contains(out, " (queue critical, up to 8 retries) in place of dead task "+goneInfo.ID+
			", which had failed in a way retrying alone does not fix: upstream: GET /v1/inventory_movements: HTTP 404 Not Found: bad input\n") {
			t.Errorf("stdout %q, want the 404 said without asynq's words", out)
		}
		if n := len(archivedIn("critical")); n != 0 {
			t.Errorf("%d tasks still archived in critical", n)
		}
		if n := len(archivedIn("low")); n != 1 {
			t.Errorf("%d tasks archived in low, want the probe left alone", n)
		}
	})
	t.Run("all", func(t *testing.T) {
		// Archived by hand, it has no error to tell.
		expect(t, []string{"retry", "--all"}, 0, " (queue low, up to 2 retries) in place of dead task "+probeInfo.ID+
			", which has no error recorded (it was moved to the dead tasks by hand?)", "")
		pending := pendingIn(t, "low")
		if len(pending) != 1 {
			t.Fatalf("%d pending tasks in low, want 1", len(pending))
		}
		got := pending[0]
		if got.Type != jobs.TypeProbe || got.Retried != 0 || got.MaxRetry != 2 {
			t.Errorf("re-enqueued %s with %d/%d retries, want a probe with 0/2", got.Type, got.Retried, got.MaxRetry)
		}
		if p := payload(t, got.Payload); p["trigger"] != jobs.TriggerRetry || p["resource"] != "settlements" {
			t.Errorf("payload %v, want the same probe with trigger retry", p)
		}
		expect(t, []string{"retry", "--all"}, 0, "no dead tasks: nothing to retry", "")
	})
}
