package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/migrations"
	"github.com/tidemark/tidemark/oauth"
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
	if err := st.Migrate(e.ctx, migrations.Up); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "migrations applied")
	return e.migrateViews(s, st)
}

// roles runs the scheduler, worker, server, or all three ("run"), until a
// signal; the first role to fail stops the others. The config file is
// reloaded when it changes and on SIGHUP.
func (e env) roles(role string, args []string) error {
	var s settings
	fs := e.flags(role, &s)
	f, envErr := e.roleFlags(fs, role)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if envErr != nil {
		return envErr
	}
	fetchQueues, probeQueues, err := f.check(role)
	if err != nil {
		return err
	}
	log, err := e.logger(s.logLevel)
	if err != nil {
		return err
	}
	watcher, rl, stopHUP, err := watchConfig(role, s.configPath, f.configPoll, log)
	if err != nil {
		return err
	}
	defer stopHUP()
	conf := watcher.Live()
	redisOpt, err := s.redisOpt()
	if err != nil {
		return err
	}
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	rdb, ok := redisOpt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return fmt.Errorf("unsupported Redis connection option %T", redisOpt)
	}
	defer rdb.Close()
	rl.store, rl.rdb = st, rdb

	tasks := []func(context.Context) error{watcher.Run}
	if role == "server" || role == "run" {
		client := asynq.NewClientFromRedisClient(rdb)
		hub := events.NewHub(events.HubConfig{}, st, rdb, log.With("role", "server"))
		relay := events.NewRelay(events.RelayConfig{Listen: true, Sink: jobs.WebhookSink(client, conf)}, st, rdb, log.With("role", "relay"))
		srv, err := server.New(f.srv, conf, st, redisOpt, hub, log.With("role", "server"))
		if err != nil {
			return err
		}
		tasks = append(tasks, srv.Run, hub.Run, relay.Run)
	}
	if role == "worker" || role == "run" {
		w, err := worker.New(worker.Config{
			Concurrency: f.fetchConc, ProbeConcurrency: f.probeConc,
			Queues: fetchQueues, ProbeQueues: probeQueues,
			ShutdownTimeout: f.shutdown, Refresh: watcher.Refresh, SecretKey: f.secretKey,
		}, conf, st, redisOpt, log.With("role", "worker"))
		if err != nil {
			return err
		}
		tasks = append(tasks, w.Run)
	}
	if role == "scheduler" || role == "run" {
		client := asynq.NewClientFromRedisClient(rdb)
		tasks = append(tasks, scheduler.New(scheduler.Config{FailureThreshold: f.failureThreshold, Redis: rdb}, conf, st, client, log.With("role", "scheduler")).Run,
			followViews(conf, st, log.With("role", "scheduler"), viewsFollowEvery))
	}
	if role == "worker" || role == "scheduler" {
		tasks = append(tasks, func(ctx context.Context) error { return metrics.Serve(ctx, f.metricsAddr) })
	}
	return together(e.ctx, tasks)
}

// roleFlags are the long-running roles' settings. Each role defines the
// flags it uses and no others, so that its -h lists only those; run, all
// roles in one process, has them all.
type roleFlags struct {
	configPoll time.Duration
	// server
	srv server.Config
	// worker
	fetchConc, probeConc int
	weights              string
	shutdown             time.Duration
	// secretKey is TIDEMARK_SECRET_KEY's (oauth.ParseKey); never a flag,
	// which ps would show.
	secretKey []byte
	// scheduler
	failureThreshold int
	// worker and scheduler: the server serves /metrics itself
	metricsAddr string
}

// roleFlags defines role's flags on fs, with their defaults from the
// environment; the error is a variable set to something invalid.
func (e env) roleFlags(fs *flag.FlagSet, role string) (*roleFlags, error) {
	f := &roleFlags{}
	var errs []error
	pollDef, err := e.envDuration("TIDEMARK_CONFIG_POLL", config.PollDefault)
	errs = append(errs, err)
	fs.DurationVar(&f.configPoll, "config-poll", pollDef, "how often the config file is checked for changes, which are applied without a restart (also on SIGHUP); 0 = only on SIGHUP (TIDEMARK_CONFIG_POLL)")
	serves, works, schedules := role == "server" || role == "run", role == "worker" || role == "run", role == "scheduler" || role == "run"
	if serves {
		fs.StringVar(&f.srv.Addr, "addr", e.or("TIDEMARK_ADDR", "127.0.0.1:8080"), "server listen address (TIDEMARK_ADDR)")
		fs.StringVar(&f.srv.AdminToken, "admin-token", e.getenv("TIDEMARK_ADMIN_TOKEN"), "bearer token required by the admin API (TIDEMARK_ADMIN_TOKEN)")
		fs.StringVar(&f.srv.PublishAddr, "publish-addr", e.getenv("TIDEMARK_PUBLISH_ADDR"), "address the server is published on when not --addr, as a container's published port; beyond loopback the demo token is refused (TIDEMARK_PUBLISH_ADDR)")
		trustProxyDef, err := e.envBool("TIDEMARK_TRUST_PROXY", false)
		errs = append(errs, err)
		fs.BoolVar(&f.srv.TrustProxy, "trust-proxy", trustProxyDef, "a TLS-terminating proxy is in front: trust its X-Forwarded-Proto: https, making the session cookie Secure (TIDEMARK_TRUST_PROXY)")
		hookWindowDef, err := e.envDuration("TIDEMARK_HOOK_WINDOW", server.HookWindowDefault)
		errs = append(errs, err)
		fs.DurationVar(&f.srv.HookWindow, "hook-window", hookWindowDef, "inbound hooks of one resource enqueue at most one probe per window (TIDEMARK_HOOK_WINDOW)")
	}
	if works {
		var err error
		f.fetchConc, f.probeConc, f.weights, err = e.poolEnv()
		errs = append(errs, err)
		fs.IntVar(&f.fetchConc, "fetch-concurrency", f.fetchConc, "fetch tasks a worker runs at once: the fetch pool (TIDEMARK_FETCH_CONCURRENCY)")
		fs.IntVar(&f.fetchConc, "concurrency", f.fetchConc, "old name of --fetch-concurrency (TIDEMARK_CONCURRENCY)")
		fs.IntVar(&f.probeConc, "probe-concurrency", f.probeConc, "probes a worker runs at once: the probe pool (TIDEMARK_PROBE_CONCURRENCY)")
		fs.StringVar(&f.weights, "queue-weights", f.weights, "queue weights by priority, for both pools (TIDEMARK_QUEUE_WEIGHTS)")
		shutdownDef, err := e.envDuration("TIDEMARK_SHUTDOWN_TIMEOUT", 25*time.Second)
		errs = append(errs, err)
		fs.DurationVar(&f.shutdown, "shutdown-timeout", shutdownDef, "time in-flight tasks get to finish on SIGTERM (TIDEMARK_SHUTDOWN_TIMEOUT)")
		f.secretKey, err = e.secretKey()
		errs = append(errs, err)
	}
	if schedules {
		thresholdDef, err := e.envInt("TIDEMARK_FAILURE_THRESHOLD", 3)
		errs = append(errs, err)
		fs.IntVar(&f.failureThreshold, "failure-threshold", thresholdDef, "consecutive failed runs of a resource that fire run.failed (TIDEMARK_FAILURE_THRESHOLD)")
	}
	if role == "worker" || role == "scheduler" {
		fs.StringVar(&f.metricsAddr, "metrics-addr", e.getenv("TIDEMARK_METRICS_ADDR"), "serve /metrics and /healthz here; empty = off (TIDEMARK_METRICS_ADDR)")
	}
	return f, errors.Join(errs...)
}

// check validates the parsed flags of role and returns the worker's queue
// weights.
func (f *roleFlags) check(role string) (fetchQueues, probeQueues map[string]int, err error) {
	if f.configPoll < 0 {
		return nil, nil, usagef("--config-poll %s: want 0 (only on SIGHUP) or more", f.configPoll)
	}
	if f.configPoll == 0 {
		f.configPoll = -1 // the watcher's "no polling"
	}
	if role == "server" || role == "run" {
		if err := f.srv.Check(); err != nil {
			return nil, nil, usageError{err}
		}
	}
	if role != "worker" && role != "run" {
		return nil, nil, nil
	}
	if f.fetchConc < 1 {
		return nil, nil, usagef("--fetch-concurrency %d: want at least 1", f.fetchConc)
	}
	if f.probeConc < 1 {
		return nil, nil, usagef("--probe-concurrency %d: want at least 1", f.probeConc)
	}
	fetchQueues, probeQueues, err = jobs.ParseWeights(f.weights)
	if err != nil {
		return nil, nil, usagef("--queue-weights: %v", err)
	}
	return fetchQueues, probeQueues, nil
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

// secretKey reads TIDEMARK_SECRET_KEY: nil when unset (a source that
// needs it then says so), a usage error when set but malformed.
func (e env) secretKey() ([]byte, error) {
	key, err := oauth.ParseKey(e.getenv(oauth.KeyEnv))
	if errors.Is(err, oauth.ErrNoKey) {
		return nil, nil
	}
	if err != nil {
		return nil, usageError{err}
	}
	return key, nil
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
	d, err := parseDuration(v)
	if err != nil {
		return def, usagef("%s=%q: %v", name, v, err)
	}
	return d, nil
}
