// Package workertest gives a test a real worker: on the test's own Postgres
// database and Redis DB (internal/testenv), with the config's sync state
// rows in place, stopped and checked when the test ends. Start runs it on
// the queues, for tests of the queue itself (retries, hand-backs,
// takeovers, concurrency); New runs nothing by itself, and the test runs
// one task at a time through the real handlers with Work, Fetch or Probe
// (River's rivertest.Worker), asserting as soon as the call returns.
package workertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// Worker is a worker and the handles a test drives it with.
type Worker struct {
	Store     *store.Store
	Client    *asynq.Client
	Inspector *asynq.Inspector
	Redis     asynq.RedisConnOpt

	conf   config.Provider
	worker *worker.Worker
	tasks  atomic.Int64 // ids of the tasks Work runs
}

// Start runs a worker for conf (a *config.Config, or a *config.Live a test
// reloads) on its queues until the test ends. Zero fields of cfg take the
// worker's defaults, but ShutdownTimeout defaults to 5s to keep tests
// short.
func Start(t testing.TB, conf config.Provider, cfg worker.Config) *Worker {
	t.Helper()
	return StartLogged(t, conf, cfg, Logger())
}

// StartLogged is Start with the worker logging to log: a test that checks
// what the worker logs (that no secret does) captures it there.
func StartLogged(t testing.TB, conf config.Provider, cfg worker.Config, log *slog.Logger) *Worker {
	t.Helper()
	w := newWorker(t, conf, cfg, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.worker.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		// A test that runs its tasks with Work may end before Run is past
		// its start; stopped there by the cancel, it has not failed.
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("worker: %v", err)
		}
	})
	return w
}

// New returns a worker for conf that takes no task from its queues: the
// test runs its tasks with Work (or Fetch, Probe). Tasks the handlers
// enqueue (a changed probe's fetch) wait in the queues, for the test to
// inspect. Zero fields of cfg take the worker's defaults.
func New(t testing.TB, conf config.Provider, cfg worker.Config) *Worker {
	t.Helper()
	w := newWorker(t, conf, cfg, Logger())
	t.Cleanup(func() { w.worker.Close() })
	return w
}

// newWorker makes the worker of Start and New, and its handles; the handles
// are closed when the test ends (after the worker: cleanups run last first).
func newWorker(t testing.TB, conf config.Provider, cfg worker.Config, log *slog.Logger) *Worker {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.EnsureStates(ctx, store.KeysOf(conf.Current())); err != nil {
		t.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	client := asynq.NewClient(redisOpt)
	insp := asynq.NewInspector(redisOpt)
	t.Cleanup(func() {
		insp.Close()
		client.Close()
	})
	ww, err := worker.New(cfg, conf, st, redisOpt, log)
	if err != nil {
		t.Fatal(err)
	}
	return &Worker{Store: st, Client: client, Inspector: insp, Redis: redisOpt, conf: conf, worker: ww}
}

// Work runs task through the worker's real handlers and middleware, here
// and now, and returns the handler's error (River's rivertest.Worker.Work).
// opts are the options the task would be enqueued with (jobs.FetchOptions,
// ...); the attempt is the first (see TaskInfo). It works on a worker from
// New and on one from Start alike.
func (w *Worker) Work(t testing.TB, task *asynq.Task, opts ...asynq.Option) error {
	t.Helper()
	return w.WorkAs(t, task, w.TaskInfo(opts...))
}

// TaskInfo is what asynq would tell the handler of the first attempt of a
// task enqueued with opts: its queue, retry budget and id read from them
// (asynq's defaults where they say nothing; a fresh id).
func (w *Worker) TaskInfo(opts ...asynq.Option) worker.TaskInfo {
	info := worker.TaskInfo{Queue: "default", MaxRetry: 25} // asynq's defaults
	for _, o := range opts {
		switch o.Type() {
		case asynq.QueueOpt:
			info.Queue = o.Value().(string)
		case asynq.MaxRetryOpt:
			info.MaxRetry = o.Value().(int)
		case asynq.TaskIDOpt:
			info.ID = o.Value().(string)
		}
	}
	if info.ID == "" {
		info.ID = fmt.Sprintf("workertest-%d-%d", os.Getpid(), w.tasks.Add(1))
	}
	return info
}

// WorkAs is Work with what asynq would tell the handler given outright:
// for a later attempt (info.Retried), or the last one.
func (w *Worker) WorkAs(t testing.TB, task *asynq.Task, info worker.TaskInfo) error {
	t.Helper()
	return w.worker.Work(t.Context(), task, info)
}

// Fetch runs a fetch task of p with Work, made as the scheduler makes it
// (jobs.NewFetch with the resource's jobs.FetchOptions).
func (w *Worker) Fetch(t testing.TB, p jobs.FetchPayload) error {
	t.Helper()
	opts := jobs.FetchOptions(w.resource(t, p.Source, p.Resource))
	task, err := jobs.NewFetch(p, opts...)
	return w.workMade(t, task, err, opts)
}

// Probe runs a probe task of p with Work, made as the scheduler makes it
// (jobs.NewProbe with the resource's jobs.ProbeOptions).
func (w *Worker) Probe(t testing.TB, p jobs.ProbePayload) error {
	t.Helper()
	opts := jobs.ProbeOptions(w.resource(t, p.Source, p.Resource))
	task, err := jobs.NewProbe(p, opts...)
	return w.workMade(t, task, err, opts)
}

// workMade runs task, which a jobs constructor made with opts (or failed
// to, with err: the test fails), with Work.
func (w *Worker) workMade(t testing.TB, task *asynq.Task, err error, opts []asynq.Option) error {
	t.Helper()
	if err != nil {
		t.Fatalf("workertest: %v", err)
	}
	return w.Work(t, task, opts...)
}

// resource is source/resource in the config in force; the test fails
// when the config lacks it.
func (w *Worker) resource(t testing.TB, source, resource string) *config.Resource {
	t.Helper()
	if src := w.conf.Current().Source(source); src != nil {
		if res := src.Resource(resource); res != nil {
			return res
		}
	}
	t.Fatalf("workertest: %s/%s is not in the config", source, resource)
	return nil
}

// Logger writes to stderr under go test -v, and nowhere otherwise.
func Logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}
