// Package workertest runs a real worker for a test: on the test's own
// Postgres database and Redis DB (internal/testenv), with the config's sync
// state rows in place, stopped and checked when the test ends.
package workertest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// Worker is a running worker and the handles a test drives it with.
type Worker struct {
	Store     *store.Store
	Client    *asynq.Client
	Inspector *asynq.Inspector
	Redis     asynq.RedisConnOpt
}

// Start runs a worker for conf (a *config.Config, or a *config.Live a test
// reloads) until the test ends. Zero fields of cfg take the worker's
// defaults, but ShutdownTimeout defaults to 5s to keep tests short.
func Start(t testing.TB, conf config.Provider, cfg worker.Config) *Worker {
	t.Helper()
	return StartLogged(t, conf, cfg, Logger())
}

// StartLogged is Start with the worker logging to log: a test that checks
// what the worker logs (that no secret does) captures it there.
func StartLogged(t testing.TB, conf config.Provider, cfg worker.Config, log *slog.Logger) *Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
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
	w, err := worker.New(cfg, conf, st, redisOpt, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	client := asynq.NewClient(redisOpt)
	insp := asynq.NewInspector(redisOpt)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
		insp.Close()
		client.Close()
		st.Close()
	})
	return &Worker{Store: st, Client: client, Inspector: insp, Redis: redisOpt}
}

// Logger writes to stderr under go test -v, and nowhere otherwise.
func Logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}
