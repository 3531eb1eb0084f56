// Package worker runs tidemark's asynq servers and their task handlers:
// fetch (full reads, page by page with checkpoints), and later probe and
// webhook delivery. Workers are stateless: any number may run.
package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/oauth"
	"github.com/tidemark/tidemark/ratelimit"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// Config tunes a Worker.
type Config struct {
	// Concurrency is how many fetch (and webhook) tasks run at once: the
	// fetch pool. Default ConcurrencyDefault (8).
	Concurrency int
	// ProbeConcurrency is how many probes run at once: the probe pool, an
	// asynq server of its own over the probe queues, so that long fetches
	// never starve probes. Default ProbeConcurrencyDefault (4).
	ProbeConcurrency int
	// Queues are the fetch queues' weights. Default jobs.Queues.
	Queues map[string]int
	// ProbeQueues are the probe queues' weights. Default jobs.ProbeQueues.
	ProbeQueues map[string]int
	// MaxWait is how long one upstream request may wait in process for the
	// source's fleet-wide limits; a longer wait hands the task back to its
	// queue with that delay. Default MaxWaitDefault (2s).
	MaxWait time.Duration
	// ShutdownTimeout is how long in-flight tasks get to finish on shutdown
	// before they are handed back to the queue. Default
	// ShutdownTimeoutDefault (25s).
	ShutdownTimeout time.Duration
	// PollInterval is how often an idle worker looks for new tasks; it bounds
	// the latency a queued probe or fetch waits. Default
	// PollIntervalDefault (100ms).
	PollInterval time.Duration
	// RefetchAfter is how long a change a probe has seen, and enqueued a
	// fetch for, is not enqueued again by later probes. Default
	// RefetchAfterDefault (1m).
	RefetchAfter time.Duration
	// LockLease is the lease of the per-resource fetch lock, renewed every
	// third of it while the fetch makes progress: a worker that dies (or
	// stalls) holding it frees it after this long, and the takeover check
	// resumes its fetch elsewhere. Default LockLeaseDefault (6s): with
	// TakeoverCheck, a dead worker's fetch resumes within about 8s.
	LockLease time.Duration
	// TakeoverCheck is how often the worker looks for fetches whose worker
	// is gone (their run running, their lock lapsed) and enqueues a task
	// that resumes each from its checkpoint. Default TakeoverCheckDefault
	// (1s).
	TakeoverCheck time.Duration
	// RetryCheckInterval is how often the fetch pool moves tasks whose
	// delay is over (retries, hand-backs) back to their queue. The probe
	// pool does it every PollInterval. Default asynq's, 5s.
	RetryCheckInterval time.Duration
	// RetryDelay is asynq's delay before a failed task's next attempt.
	// Default jobs.RetryDelay.
	RetryDelay func(n int, err error, t *asynq.Task) time.Duration
	// CrashHook, when set, is asked at every failpoint of a fetch
	// (internal/failpoint) and fails the fetch there with the error it
	// returns, as a crash at that point would: for in-process tests such
	// as internal/sim, which cannot kill their own process. Default nil.
	CrashHook func(point string) error
	// Refresh, when set, is asked to pick up a config file changed since
	// the last poll when a task names a resource the config lacks (a
	// scheduler that reloaded first enqueued it); it reports whether a new
	// config is in force. Default nil: such a task is dropped at once.
	Refresh func() bool
	// SecretKey encrypts the OAuth2 tokens the fleet shares in Redis and
	// the rotated refresh tokens it stores (oauth.ParseKey of
	// TIDEMARK_SECRET_KEY). Default none: a source with auth type oauth2
	// fails the worker's start.
	SecretKey []byte
}

// Config's defaults, filled in by New; cmd/tidemark's flags start from them.
const (
	// ConcurrencyDefault is Config.Concurrency's default.
	ConcurrencyDefault = 8
	// ProbeConcurrencyDefault is Config.ProbeConcurrency's default.
	ProbeConcurrencyDefault = 4
	// MaxWaitDefault is Config.MaxWait's default: the upstream client's own.
	MaxWaitDefault = upstream.MaxWaitDefault
	// ShutdownTimeoutDefault is Config.ShutdownTimeout's default.
	ShutdownTimeoutDefault = 25 * time.Second
	// PollIntervalDefault is Config.PollInterval's default.
	PollIntervalDefault = 100 * time.Millisecond
	// RefetchAfterDefault is Config.RefetchAfter's default.
	RefetchAfterDefault = time.Minute
	// LockLeaseDefault is Config.LockLease's default.
	LockLeaseDefault = 6 * time.Second
	// TakeoverCheckDefault is Config.TakeoverCheck's default.
	TakeoverCheckDefault = time.Second
)

// Worker runs tasks from the queues.
type Worker struct {
	cfg    Config
	live   config.Provider
	store  *store.Store
	rdb    redis.UniversalClient
	redis  asynq.RedisConnOpt
	client *asynq.Client
	// clients holds an upstream client per source, made from the source's
	// config: a reload that changes a source gets a new one for the tasks
	// that start after it, while running tasks finish on the old.
	clientsMu sync.Mutex
	clients   map[string]sourceClient
	limiter   *ratelimit.Limiter
	log       *slog.Logger
	// tally writes unchanged probes' bookkeeping behind, coalesced
	// (store.ProbeBatcher); it runs for as long as Run.
	tally *store.ProbeBatcher
	// runProgress publishes fetches' run.progress on this installation's
	// channel.
	runProgress *events.Publisher
	// inflight counts running handlers: asynq stops waiting for them at its
	// shutdown timeout (it hands their tasks back), but their own cleanup —
	// recording the interrupted run, releasing the fetch lock — must still
	// happen before the process exits.
	inflight sync.WaitGroup
}

// sourceClient is a source's upstream client and the config it was made from.
type sourceClient struct {
	src    *config.Source
	client *upstream.Client
}

// New returns a worker for the sources of conf, read afresh for every task.
func New(cfg Config, conf config.Provider, st *store.Store, redisOpt asynq.RedisConnOpt, log *slog.Logger) (*Worker, error) {
	cfg = cfg.withDefaults()
	if cfg.Concurrency < 0 || cfg.ProbeConcurrency < 0 {
		return nil, fmt.Errorf("worker: concurrency %d, probe concurrency %d: want at least 1", cfg.Concurrency, cfg.ProbeConcurrency)
	}
	rdb, ok := redisOpt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("worker: unsupported Redis connection option %T", redisOpt)
	}
	// A request's concurrency slot is freed by the next admit of its
	// source (ratelimit.Options.ReleaseDelay): a busy probe pool then
	// takes and frees slots in one Redis round trip a probe, not two.
	limOpt := ratelimit.Options{Logger: log, ReleaseDelay: releaseDelay, OnWait: metrics.ObserveRateLimitWait,
		OnRemaining: metrics.ObserveRateLimitRemaining, OnIgnored: metrics.ObserveRateLimitHeadersIgnored}
	w := &Worker{
		cfg: cfg, live: conf, store: st, rdb: rdb, redis: redisOpt,
		client:  asynq.NewClientFromRedisClient(rdb),
		clients: make(map[string]sourceClient),
		limiter: ratelimit.New(rdb, limOpt),
		log:     log,
	}
	w.runProgress = events.NewPublisher(st, rdb)
	w.tally = st.NewProbeBatcher(0, func(err error) { log.Error("record unchanged probes (kept for the next flush)", "error", err) })
	w.tally.SetHooks(store.ProbeHooks{
		Applied: func(k store.Key, n int64) {
			metrics.ObserveProbes(k.Source, k.Resource, metrics.ProbeNotModified, n)
		},
		Stale: w.reprobe,
	})
	// Made now so that a source no client can be made for fails the start.
	initial := w.conf()
	for i := range initial.Sources {
		if _, err := w.clientFor(&initial.Sources[i]); err != nil {
			rdb.Close()
			return nil, err
		}
	}
	return w, nil
}

// withDefaults returns cfg with every unset field that has a default set
// to it.
func (cfg Config) withDefaults() Config {
	cfg.Concurrency = cmp.Or(cfg.Concurrency, ConcurrencyDefault)
	cfg.ProbeConcurrency = cmp.Or(cfg.ProbeConcurrency, ProbeConcurrencyDefault)
	cfg.MaxWait = cmp.Or(cfg.MaxWait, MaxWaitDefault)
	if cfg.Queues == nil {
		cfg.Queues = jobs.Queues
	}
	if cfg.ProbeQueues == nil {
		cfg.ProbeQueues = jobs.ProbeQueues
	}
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, ShutdownTimeoutDefault)
	cfg.LockLease = cmp.Or(cfg.LockLease, LockLeaseDefault)
	cfg.TakeoverCheck = cmp.Or(cfg.TakeoverCheck, TakeoverCheckDefault)
	cfg.RefetchAfter = cmp.Or(cfg.RefetchAfter, RefetchAfterDefault)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, PollIntervalDefault)
	if cfg.RetryDelay == nil {
		cfg.RetryDelay = jobs.RetryDelay
	}
	return cfg
}

// releaseDelay is the worker's ratelimit.Options.ReleaseDelay: long enough
// for a busy pool's next admit of the source to carry the release, short
// beside the 50ms a waiter for a full semaphore polls at.
const releaseDelay = 10 * time.Millisecond

// conf is the config in force: read it once per task.
func (w *Worker) conf() *config.Config { return w.live.Current() }

// clientFor returns the upstream client for src's config: the one made
// before while the source's settings are the same, a new one once a reload
// has changed them.
func (w *Worker) clientFor(src *config.Source) (*upstream.Client, error) {
	w.clientsMu.Lock()
	defer w.clientsMu.Unlock()
	if sc, ok := w.clients[src.Name]; ok && (sc.src == src || config.SameSource(sc.src, src)) {
		return sc.client, nil
	}
	opts := upstream.Options{AllowHosts: src.AllowHosts, Limiter: w.limiter, MaxWait: w.cfg.MaxWait}
	if src.Auth != nil && src.Auth.Type == config.AuthOAuth2 {
		tokens, err := oauth.New(oauth.Config{Source: src, Key: w.cfg.SecretKey, Redis: w.rdb, Store: w.store, Log: w.log})
		if err != nil {
			return nil, err
		}
		opts.Tokens = tokens
	}
	c, err := upstream.New(src, opts)
	if err != nil {
		return nil, err
	}
	w.clients[src.Name] = sourceClient{src: src, client: c}
	return c, nil
}

// Run serves tasks until ctx is done, then shuts down gracefully: in-flight
// tasks get ShutdownTimeout to finish, the rest go back to their queues.
func (w *Worker) Run(ctx context.Context) error {
	defer w.rdb.Close()
	defer w.limiter.FreeReleased() // before the client closes (deferred calls run last first)
	if err := w.store.EnsureStates(ctx, store.KeysOf(w.conf())); err != nil {
		return err
	}
	// The probe tally flushes until every handler is done (deferred calls
	// run after the wait for them below), then once more.
	tallyCtx, stopTally := context.WithCancel(context.WithoutCancel(ctx))
	tallyDone := make(chan struct{})
	go func() { w.tally.Run(tallyCtx); close(tallyDone) }()
	defer func() { stopTally(); <-tallyDone }()
	// Two pools, two asynq servers: fetches (and webhook deliveries) on
	// the priority queues, probes on queues of their own.
	newServer := func(pool string, concurrency int, queues map[string]int, forward time.Duration) *asynq.Server {
		return asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
			Concurrency:              concurrency,
			TaskCheckInterval:        w.cfg.PollInterval,
			DelayedTaskCheckInterval: forward,
			Queues:                   queues,
			RetryDelayFunc:           w.cfg.RetryDelay,
			IsFailure:                jobs.IsFailure,
			ShutdownTimeout:          w.cfg.ShutdownTimeout,
			Logger:                   NewAsynqLogger(w.log.With("pool", pool)),
			ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
				retried, _ := asynq.GetRetryCount(ctx)
				maxRetry, _ := asynq.GetMaxRetry(ctx)
				if d, ok := jobs.HandBack(err); ok || errors.Is(err, asynq.RevokeTask) {
					w.log.Info("task handed back", "type", t.Type(), "pool", pool, "delay", d.String(), "reason", err)
					return
				}
				w.log.Warn("task failed", "type", t.Type(), "pool", pool, "retried", retried, "max_retry", maxRetry, "error", err)
			}),
		})
	}
	fetches := newServer("fetch", w.cfg.Concurrency, w.cfg.Queues, w.cfg.RetryCheckInterval)
	// Scheduled probes (the trailing probe of a burst of inbound hooks, a
	// probe handed back by the rate limiter) move to their queue when the
	// pool checks; asynq's default, every 5s, would delay them past most
	// probe intervals. Checking every PollInterval costs each worker two
	// small Redis scripts per probe queue per check.
	probes := newServer("probe", w.cfg.ProbeConcurrency, w.cfg.ProbeQueues, w.cfg.PollInterval)
	fetchMux, probeMux := w.muxes()
	if err := fetches.Start(fetchMux); err != nil {
		return fmt.Errorf("start worker fetch pool: %w", err)
	}
	if err := probes.Start(probeMux); err != nil {
		fetches.Shutdown()
		return fmt.Errorf("start worker probe pool: %w", err)
	}
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency, "probe_concurrency", w.cfg.ProbeConcurrency)
	w.warnUnsigned()
	takeovers := make(chan struct{})
	go func() { defer close(takeovers); w.takeoverLoop(ctx) }()
	defer func() { <-takeovers }()
	<-ctx.Done()
	var stopping sync.WaitGroup
	for _, srv := range []*asynq.Server{fetches, probes} {
		stopping.Go(srv.Shutdown)
	}
	stopping.Wait()
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

// handBack wraps a handler so that a task the source's limits turned away
// (see jobs.HandBack) goes back to its queue with the delay, never as a
// failure. Below the retry limit asynq does that itself (jobs.IsFailure,
// jobs.RetryDelay); at the limit asynq would archive the task whatever
// IsFailure says, so the task is revoked and a copy enqueued instead.
func (w *Worker) handBack(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := h.ProcessTask(ctx, t)
		d, ok := jobs.HandBack(err)
		if !ok {
			return err
		}
		task := runningTask(ctx)
		left := task.RetriesLeft()
		if left > 0 {
			return err
		}
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, eerr := w.client.EnqueueContext(ectx, jobs.Resubmit(t, task.ID, task.Queue, left, d)); eerr != nil {
			// Not revoked: asynq archives it, and tidemark retry brings it back.
			return fmt.Errorf("%w (hand-back at the retry limit failed: %w)", err, eerr)
		}
		return fmt.Errorf("%w: %w", err, asynq.RevokeTask)
	})
}

// classify hands every handler's error to jobs.Classify, the one place
// that decides retry or not: handlers return their errors as they are, and
// wrap jobs.ErrBadInput where no retry can help. It runs outside handBack
// and dropUnconfigured, so that they see the handler's own error.
func (w *Worker) classify(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		return jobs.Classify(next.ProcessTask(ctx, t))
	})
}

// track counts a running handler in inflight, so that shutdown can wait for
// its cleanup even after asynq has handed its task back.
func (w *Worker) track(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		w.inflight.Add(1)
		defer w.inflight.Done()
		return next.ProcessTask(ctx, t)
	})
}

// notConfiguredError is a task's resource missing from the config: removed
// by a reload since the task was enqueued.
type notConfiguredError struct{ source, resource string }

func (e notConfiguredError) Error() string {
	return fmt.Sprintf("resource %s/%s is not in the config", e.source, e.resource)
}

// dropUnconfigured ends a task whose resource the config no longer has as
// done, with an info line: the operator removed the resource, and retrying
// the task (or archiving it as dead) would only page someone. The config
// file is looked at once more first, in case it names the resource and this
// process has not polled it yet.
func (w *Worker) dropUnconfigured(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := next.ProcessTask(ctx, t)
		var nc notConfiguredError
		if !errors.As(err, &nc) {
			return err
		}
		if w.cfg.Refresh != nil && w.cfg.Refresh() {
			if err = next.ProcessTask(ctx, t); !errors.As(err, &nc) {
				return err
			}
		}
		w.log.Info("task dropped: its resource is no longer in the config", "type", t.Type(), "task_id", runningTask(ctx).ID,
			"source", nc.source, "resource", nc.resource)
		return nil
	})
}
