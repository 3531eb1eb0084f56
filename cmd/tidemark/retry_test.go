package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
)

// TestRetry archives tasks for real (a fetch that fails through its retry
// budget on a real asynq server, a probe archived by hand) and brings them
// back with `tidemark retry`, checking that they come back with a fresh
// budget, trigger "retry", in their queue, and leave the archive.
func TestRetry(t *testing.T) {
	t.Parallel()
	redisURL := testenv.Redis(t)
	env := map[string]string{"TIDEMARK_REDIS_URL": redisURL, "TIDEMARK_CONFIG": "../../examples/demo.yaml"}
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
	}
	archivedIn := func(q string) []*asynq.TaskInfo {
		t.Helper()
		infos, err := insp.ListArchivedTasks(q)
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			t.Fatal(err)
		}
		return infos
	}

	expect(t, []string{"retry", "--all"}, 0, "no archived tasks", "")
	expect(t, []string{"retry"}, 2, "", "usage: tidemark retry [--all | TASK_ID...]")
	expect(t, []string{"retry", "--all", "abc"}, 2, "", "usage: tidemark retry [--all | TASK_ID...]")

	// A fetch that fails every attempt: one retry, then the archive.
	fetch, err := jobs.NewFetch(jobs.FetchPayload{Source: "demo", Resource: "ticket_sales", Mode: jobs.ModeFull, Trigger: jobs.TriggerSchedule},
		asynq.Queue("critical"), asynq.MaxRetry(1))
	if err != nil {
		t.Fatal(err)
	}
	fetchInfo, err := client.Enqueue(fetch)
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency:              1,
		Queues:                   map[string]int{"critical": 1},
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		TaskCheckInterval:        50 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		return errors.New("upstream: GET /v1/ticket_sales: HTTP 404")
	})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(archivedIn("critical")) == 0 {
		if time.Now().After(deadline) {
			srv.Shutdown()
			t.Fatal("the failing fetch was not archived within 15s")
		}
		time.Sleep(20 * time.Millisecond) // polling for the condition, with a deadline
	}
	srv.Shutdown()
	if dead := archivedIn("critical")[0]; dead.ID != fetchInfo.ID || dead.Retried != 1 {
		t.Fatalf("archived %s with %d retries, want %s with its 1 retry spent", dead.ID, dead.Retried, fetchInfo.ID)
	}

	// A probe archived by hand, in the queue its resource's priority picks.
	probe, err := jobs.NewProbe(jobs.ProbePayload{Source: "demo", Resource: "settlements", Trigger: jobs.TriggerSchedule}, asynq.Queue("low"))
	if err != nil {
		t.Fatal(err)
	}
	probeInfo, err := client.Enqueue(probe)
	if err != nil {
		t.Fatal(err)
	}
	// A pending task is not dead: retry refuses it.
	expect(t, []string{"retry", probeInfo.ID}, 2, "", "task "+probeInfo.ID+" in queue low is pending, not archived")
	if err := insp.ArchiveTask("low", probeInfo.ID); err != nil {
		t.Fatal(err)
	}

	// An unknown id anywhere on the command line: nothing is done.
	expect(t, []string{"retry", fetchInfo.ID, "no-such-task"}, 2, "", "no task no-such-task in queues critical, default, low")
	if len(archivedIn("critical")) != 1 || len(archivedIn("low")) != 1 {
		t.Fatal("a rejected command line changed the archive")
	}

	pendingOne := func(t *testing.T, q string) *asynq.TaskInfo {
		t.Helper()
		infos, err := insp.ListPendingTasks(q)
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) != 1 {
			t.Fatalf("%d pending tasks in %s, want 1", len(infos), q)
		}
		return infos[0]
	}
	trigger := func(t *testing.T, payload []byte) map[string]any {
		t.Helper()
		var p map[string]any
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("by id", func(t *testing.T) {
		expect(t, []string{"retry", fetchInfo.ID}, 0, "retried task "+fetchInfo.ID+" (full fetch of demo/ticket_sales, queue critical) as task ", "")
		if n := len(archivedIn("critical")); n != 0 {
			t.Errorf("%d tasks still archived in critical", n)
		}
		got := pendingOne(t, "critical")
		if got.ID == fetchInfo.ID || got.Type != jobs.TypeFetch || got.Retried != 0 || got.MaxRetry != 8 {
			t.Errorf("re-enqueued %s %s with %d/%d retries, want a new fetch with 0/8", got.ID, got.Type, got.Retried, got.MaxRetry)
		}
		p := trigger(t, got.Payload)
		// Retried, it continues the dead task's read from its checkpoint.
		if p["trigger"] != jobs.TriggerRetry || p["mode"] != jobs.ModeFull || p["source"] != "demo" || p["resource"] != "ticket_sales" || p["resume"] != true {
			t.Errorf("payload %v, want the same fetch with trigger retry, resuming", p)
		}
		if n := len(archivedIn("low")); n != 1 {
			t.Errorf("%d tasks archived in low, want the probe left alone", n)
		}
	})
	t.Run("all", func(t *testing.T) {
		expect(t, []string{"retry", "--all"}, 0, "retried task "+probeInfo.ID+" (probe of demo/settlements, queue low) as task ", "")
		got := pendingOne(t, "low")
		if got.Type != jobs.TypeProbe || got.Retried != 0 || got.MaxRetry != 2 {
			t.Errorf("re-enqueued %s with %d/%d retries, want a probe with 0/2", got.Type, got.Retried, got.MaxRetry)
		}
		if p := trigger(t, got.Payload); p["trigger"] != jobs.TriggerRetry || p["resource"] != "settlements" {
			t.Errorf("payload %v, want the same probe with trigger retry", p)
		}
		expect(t, []string{"retry", "--all"}, 0, "no archived tasks", "")
	})
}
