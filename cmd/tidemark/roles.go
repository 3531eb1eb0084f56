package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/migrations"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/worker"
)

func (e env) migrate(args []string) error {
	var s settings
	fs := e.flags("migrate", &s)
	create := fs.Bool("create-db", false, "create the database first if it does not exist")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *create {
		if err := migrations.CreateDatabase(e.ctx, s.databaseURL); err != nil {
			return err
		}
	}
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	db, err := st.DB().DB()
	if err != nil {
		return err
	}
	if err := migrations.Up(e.ctx, db); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "migrations applied")
	return nil
}

// roles runs the scheduler, worker, server, or all three ("run"), until a
// signal; the first role to fail stops the others.
func (e env) roles(role string, args []string) error {
	var s settings
	fs := e.flags(role, &s)
	addr := fs.String("addr", e.or("TIDEMARK_ADDR", "127.0.0.1:8080"), "server listen address (TIDEMARK_ADDR)")
	adminToken := fs.String("admin-token", e.getenv("TIDEMARK_ADMIN_TOKEN"), "bearer token required by the admin API (TIDEMARK_ADMIN_TOKEN)")
	publishAddr := fs.String("publish-addr", e.getenv("TIDEMARK_PUBLISH_ADDR"), "address the server is published on when not --addr, as a container's published port; beyond loopback the demo token is refused (TIDEMARK_PUBLISH_ADDR)")
	trustProxyDef, trustProxyErr := e.envBool("TIDEMARK_TRUST_PROXY", false)
	trustProxy := fs.Bool("trust-proxy", trustProxyDef, "a TLS-terminating proxy is in front: trust its X-Forwarded-Proto: https, making the session cookie Secure (TIDEMARK_TRUST_PROXY)")
	hookWindowDef, hookWindowErr := e.envDuration("TIDEMARK_HOOK_WINDOW", server.HookWindowDefault)
	hookWindow := fs.Duration("hook-window", hookWindowDef, "inbound hooks of one resource enqueue at most one probe per window (TIDEMARK_HOOK_WINDOW)")
	fetchConc, probeConc, weights, envErr := e.poolEnv()
	fs.IntVar(&fetchConc, "fetch-concurrency", fetchConc, "fetch tasks a worker runs at once: the fetch pool (TIDEMARK_FETCH_CONCURRENCY)")
	fs.IntVar(&fetchConc, "concurrency", fetchConc, "old name of --fetch-concurrency (TIDEMARK_CONCURRENCY)")
	fs.IntVar(&probeConc, "probe-concurrency", probeConc, "probes a worker runs at once: the probe pool (TIDEMARK_PROBE_CONCURRENCY)")
	fs.StringVar(&weights, "queue-weights", weights, "queue weights by priority, for both pools (TIDEMARK_QUEUE_WEIGHTS)")
	metricsAddr := fs.String("metrics-addr", e.getenv("TIDEMARK_METRICS_ADDR"), "worker and scheduler: serve /metrics and /healthz here; empty = off (TIDEMARK_METRICS_ADDR)")
	thresholdDef, thresholdErr := e.envInt("TIDEMARK_FAILURE_THRESHOLD", 3)
	failureThreshold := fs.Int("failure-threshold", thresholdDef, "consecutive failed runs of a resource that fire run.failed (TIDEMARK_FAILURE_THRESHOLD)")
	shutdownDef, shutdownErr := e.envDuration("TIDEMARK_SHUTDOWN_TIMEOUT", 25*time.Second)
	shutdown := fs.Duration("shutdown-timeout", shutdownDef, "time in-flight tasks get to finish on SIGTERM (TIDEMARK_SHUTDOWN_TIMEOUT)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := errors.Join(envErr, thresholdErr, shutdownErr, trustProxyErr, hookWindowErr); err != nil {
		return err
	}
	if fetchConc < 1 {
		return usagef("--fetch-concurrency %d: want at least 1", fetchConc)
	}
	if probeConc < 1 {
		return usagef("--probe-concurrency %d: want at least 1", probeConc)
	}
	fetchQueues, probeQueues, err := jobs.ParseWeights(weights)
	if err != nil {
		return usagef("--queue-weights: %v", err)
	}
	conf, err := s.loadConfig()
	if err != nil {
		return err
	}
	srvConf := server.Config{Addr: *addr, AdminToken: *adminToken, PublishAddr: *publishAddr, TrustProxy: *trustProxy, HookWindow: *hookWindow}
	if role == "server" || role == "run" {
		if err := srvConf.Check(); err != nil {
			return usageError{err}
		}
	}
	log, err := e.logger(s.logLevel)
	if err != nil {
		return err
	}
	redisOpt, err := s.redisOpt()
	if err != nil {
		return err
	}
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()

	var tasks []func(context.Context) error
	if role == "server" || role == "run" {
		rdb, ok := redisOpt.MakeRedisClient().(redis.UniversalClient)
		if !ok {
			return fmt.Errorf("unsupported Redis connection option %T", redisOpt)
		}
		defer rdb.Close()
		client := asynq.NewClientFromRedisClient(rdb)
		hub := events.NewHub(events.HubConfig{}, st, rdb, log.With("role", "server"))
		relay := events.NewRelay(events.RelayConfig{DatabaseURL: s.databaseURL, Sink: jobs.WebhookSink(client, conf.Webhooks)}, st, rdb, log.With("role", "relay"))
		srv, err := server.New(srvConf, conf, st, redisOpt, hub, log.With("role", "server"))
		if err != nil {
			return err
		}
		tasks = append(tasks, srv.Run, hub.Run, relay.Run)
	}
	if role == "worker" || role == "run" {
		w, err := worker.New(worker.Config{
			Concurrency: fetchConc, ProbeConcurrency: probeConc,
			Queues: fetchQueues, ProbeQueues: probeQueues,
			ShutdownTimeout: *shutdown,
		}, conf, st, redisOpt, log.With("role", "worker"))
		if err != nil {
			return err
		}
		tasks = append(tasks, w.Run)
	}
	if role == "scheduler" || role == "run" {
		rdb, ok := redisOpt.MakeRedisClient().(redis.UniversalClient)
		if !ok {
			return fmt.Errorf("unsupported Redis connection option %T", redisOpt)
		}
		defer rdb.Close()
		client := asynq.NewClientFromRedisClient(rdb)
		tasks = append(tasks, scheduler.New(scheduler.Config{FailureThreshold: *failureThreshold, Redis: rdb}, conf, st, client, log.With("role", "scheduler")).Run)
	}
	if role == "worker" || role == "scheduler" {
		tasks = append(tasks, func(ctx context.Context) error { return metrics.Serve(ctx, *metricsAddr) })
	}
	return together(e.ctx, tasks)
}

// together runs fns until ctx is done or one fails; it returns the first error.
func together(ctx context.Context, fns []func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(fns))
	for _, fn := range fns {
		go func() { errc <- fn(ctx) }()
	}
	var first error
	for range fns {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// poolEnv reads the worker pools' settings from the environment: a value
// that is set but invalid is a usage error naming the variable.
func (e env) poolEnv() (fetch, probe int, weights string, err error) {
	fetch, probe, weights = 8, 4, "critical=6,default=3,low=1"
	for _, v := range []struct {
		name string
		to   *int
	}{
		{"TIDEMARK_CONCURRENCY", &fetch},
		{"TIDEMARK_FETCH_CONCURRENCY", &fetch},
		{"TIDEMARK_PROBE_CONCURRENCY", &probe},
	} {
		if raw := e.getenv(v.name); raw != "" {
			n, perr := strconv.Atoi(raw)
			if perr != nil || n < 1 {
				return 0, 0, "", usagef("%s=%q: want a whole number of at least 1", v.name, raw)
			}
			*v.to = n
		}
	}
	if raw := e.getenv("TIDEMARK_QUEUE_WEIGHTS"); raw != "" {
		if _, _, werr := jobs.ParseWeights(raw); werr != nil {
			return 0, 0, "", usagef("TIDEMARK_QUEUE_WEIGHTS: %v", werr)
		}
		weights = raw
	}
	return fetch, probe, weights, nil
}

// envInt reads an integer variable: def when unset, a usage error naming
// the variable when it is set to something else.
func (e env) envInt(name string, def int) (int, error) {
	v := e.getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def, usagef("%s=%q: want a whole number", name, v)
	}
	return n, nil
}

// envBool reads a boolean variable (true, false, 1, 0, ...) like envInt.
func (e env) envBool(name string, def bool) (bool, error) {
	v := e.getenv(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def, usagef("%s=%q: want true or false", name, v)
	}
	return b, nil
}

// envDuration reads a duration variable like envInt.
func (e env) envDuration(name string, def time.Duration) (time.Duration, error) {
	v := e.getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return def, usagef("%s=%q: want a duration such as 25s", name, v)
	}
	return d, nil
}
