// Package worker runs tidemark's asynq servers and their task handlers:
// fetch (full reads, page by page with checkpoints), and later probe and
// webhook delivery. Workers are stateless: any number may run.
package worker

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// Config tunes a Worker.
type Config struct {
	// Concurrency is how many tasks run at once. Default 8.
	Concurrency int
	// ShutdownTimeout is how long in-flight tasks get to finish on shutdown
	// before they are handed back to the queue. Default 25s.
	ShutdownTimeout time.Duration
	// PollInterval is how often an idle worker looks for new tasks; it bounds
	// the latency a queued probe or fetch waits. Default 100ms.
	PollInterval time.Duration
	// RefetchAfter is how long a change a probe has seen, and enqueued a
	// fetch for, is not enqueued again by later probes. Default 1m.
	RefetchAfter time.Duration
	// LockLease is the lease of the per-resource fetch lock; a worker that dies
	// holding it frees it after this long. Default 30s.
	LockLease time.Duration
}

// Worker runs tasks from the queues.
type Worker struct {
	cfg     Config
	conf    *config.Config
	store   *store.Store
	rdb     redis.UniversalClient
	redis   asynq.RedisConnOpt
	client  *asynq.Client
	clients map[string]*upstream.Client
	log     *slog.Logger
	// inflight counts running handlers: asynq stops waiting for them at its
	// shutdown timeout (it hands their tasks back), but their own cleanup —
	// recording the interrupted run, releasing the fetch lock — must still
	// happen before the process exits.
	inflight sync.WaitGroup
}

// New returns a worker for the sources of conf.
func New(cfg Config, conf *config.Config, st *store.Store, redisOpt asynq.RedisConnOpt, log *slog.Logger) (*Worker, error) {
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 8)
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, 25*time.Second)
	cfg.LockLease = cmp.Or(cfg.LockLease, 30*time.Second)
	cfg.RefetchAfter = cmp.Or(cfg.RefetchAfter, time.Minute)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, 100*time.Millisecond)
	rdb, ok := redisOpt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("worker: unsupported Redis connection option %T", redisOpt)
	}
	w := &Worker{
		cfg: cfg, conf: conf, store: st, rdb: rdb, redis: redisOpt,
		client:  asynq.NewClientFromRedisClient(rdb),
		clients: make(map[string]*upstream.Client),
		log:     log,
	}
	for i := range conf.Sources {
		src := &conf.Sources[i]
		c, err := upstream.New(src, upstream.Options{AllowHosts: src.AllowHosts})
		if err != nil {
			rdb.Close()
			return nil, err
		}
		w.clients[src.Name] = c
	}
	return w, nil
}

// Run serves tasks until ctx is done, then shuts down gracefully: in-flight
// tasks get ShutdownTimeout to finish, the rest go back to their queues.
func (w *Worker) Run(ctx context.Context) error {
	defer w.rdb.Close()
	if err := w.store.EnsureStates(ctx, store.KeysOf(w.conf)); err != nil {
		return err
	}
	srv := asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:       w.cfg.Concurrency,
		TaskCheckInterval: w.cfg.PollInterval,
		Queues:            jobs.Queues,
		RetryDelayFunc:    jobs.RetryDelay,
		ShutdownTimeout:   w.cfg.ShutdownTimeout,
		Logger:            NewAsynqLogger(w.log),
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			retried, _ := asynq.GetRetryCount(ctx)
			maxRetry, _ := asynq.GetMaxRetry(ctx)
			w.log.Warn("task failed", "type", t.Type(), "retried", retried, "max_retry", maxRetry, "error", err)
		}),
	})
	mux := asynq.NewServeMux()
	mux.Handle(jobs.TypeFetch, fetchHandler{w})
	mux.Handle(jobs.TypeProbe, probeHandler{w})
	mux.Handle(jobs.TypeWebhook, webhookHandler{w})
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency)
	<-ctx.Done()
	srv.Shutdown()
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		w.log.Error("handlers still running 10s after shutdown; exiting anyway")
	}
	w.log.Info("worker stopped")
	return nil
}
