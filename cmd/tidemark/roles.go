package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/jobs"
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
	concurrency := fs.Int("concurrency", e.intOr("TIDEMARK_CONCURRENCY", 8), "tasks a worker runs at once (TIDEMARK_CONCURRENCY)")
	shutdown := fs.Duration("shutdown-timeout", e.durationOr("TIDEMARK_SHUTDOWN_TIMEOUT", 25*time.Second), "time in-flight tasks get to finish on SIGTERM (TIDEMARK_SHUTDOWN_TIMEOUT)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	conf, err := s.loadConfig()
	if err != nil {
		return err
	}
	srvConf := server.Config{Addr: *addr, AdminToken: *adminToken}
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
		w, err := worker.New(worker.Config{Concurrency: *concurrency, ShutdownTimeout: *shutdown}, conf, st, redisOpt, log.With("role", "worker"))
		if err != nil {
			return err
		}
		tasks = append(tasks, w.Run)
	}
	if role == "scheduler" || role == "run" {
		client := asynq.NewClient(redisOpt)
		defer client.Close()
		tasks = append(tasks, scheduler.New(scheduler.Config{}, conf, st, client, log.With("role", "scheduler")).Run)
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

func (e env) intOr(name string, def int) int {
	if n, err := strconv.Atoi(e.getenv(name)); err == nil {
		return n
	}
	return def
}

func (e env) durationOr(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(e.getenv(name)); err == nil {
		return d
	}
	return def
}
