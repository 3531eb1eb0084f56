package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/ratelimit"
	"github.com/tidemark/tidemark/store"
)

// TestHandBackAtRetryLimit: a task whose retries are used up (MaxRetry 0)
// meets a source in cooldown. asynq would archive it whatever IsFailure
// says; the worker revokes it and enqueues a copy for when the cooldown
// ends instead. Nothing is archived, no failure is counted, and the copy
// does the work once the source may be called again.
func TestHandBackAtRetryLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		queue string
		task  func(f *fleet) *asynq.Task
		done  func(f *fleet) (bool, string)
	}{
		{
			name:  "probe",
			queue: "probe_critical",
			task: func(f *fleet) *asynq.Task {
				task, err := jobs.NewProbe(jobs.ProbePayload{Source: "demo", Resource: "ticket_sales", Trigger: jobs.TriggerManual},
					append(jobs.ProbeOptions(f.resource("ticket_sales")), asynq.MaxRetry(0))...)
				if err != nil {
					t.Fatal(err)
				}
				return task
			},
			done: func(f *fleet) (bool, string) {
				n := f.state("ticket_sales").ProbesTotal
				return n == 1, fmt.Sprintf("%d probes recorded", n)
			},
		},
		{
			name:  "fetch",
			queue: "critical",
			task: func(f *fleet) *asynq.Task {
				task, err := jobs.NewFetch(jobs.FetchPayload{Source: "demo", Resource: "ticket_sales", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual},
					append(jobs.FetchOptions(f.resource("ticket_sales")), asynq.MaxRetry(0))...)
				if err != nil {
					t.Fatal(err)
				}
				return task
			},
			done: func(f *fleet) (bool, string) {
				runs, err := f.store.Runs(context.Background(), store.RunFilter{Resource: "ticket_sales"})
				if err != nil || len(runs) == 0 {
					return false, fmt.Sprint(err)
				}
				return runs[0].Status == store.StatusSucceeded, "latest run " + runs[0].Status
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFleet(t, 50)
			rdb := f.redis.MakeRedisClient().(redis.UniversalClient)
			t.Cleanup(func() { rdb.Close() })
			const cooldown = 3 * time.Second
			if err := ratelimit.New(rdb, ratelimit.Options{}).Cooldown(context.Background(), "demo", time.Now().Add(cooldown)); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			info, err := f.client.Enqueue(tt.task(f))
			if err != nil {
				t.Fatal(err)
			}
			// The original goes; a copy waits out the cooldown.
			waitFor(t, cooldown, "the task handed back as a scheduled copy", func() (bool, string) {
				qi, err := f.insp.GetQueueInfo(tt.queue)
				if err != nil {
					return false, err.Error()
				}
				_, gone := f.insp.GetTaskInfo(tt.queue, info.ID)
				return qi.Scheduled == 1 && gone != nil, fmt.Sprintf("%d scheduled, original: %v", qi.Scheduled, gone)
			})
			waitFor(t, 15*time.Second, "the copy done after the cooldown", func() (bool, string) { return tt.done(f) })
			if took := time.Since(began); took < cooldown-200*time.Millisecond {
				t.Errorf("done %s after the cooldown began, want no call before %s", took, cooldown)
			}
			for _, q := range jobs.AllQueues() {
				qi, err := f.insp.GetQueueInfo(q)
				if err != nil {
					continue
				}
				if qi.Archived+qi.Failed+qi.FailedTotal != 0 {
					t.Errorf("queue %s: %d archived, %d failed, %d failed in all; want none", q, qi.Archived, qi.Failed, qi.FailedTotal)
				}
			}
			runs, err := f.store.Runs(context.Background(), store.RunFilter{Resource: "ticket_sales"})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range runs {
				if r.Status == store.StatusDead {
					t.Errorf("run %d is dead: %s", r.ID, r.Error)
				}
				if r.Status == store.StatusFailed && !strings.HasPrefix(r.Error, "rate limited: handed back for ") {
					t.Errorf("run %d failed: %s", r.ID, r.Error)
				}
			}
		})
	}
}
