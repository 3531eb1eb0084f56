package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
)

// watchConfig loads the config file and returns the watcher that keeps it
// in force: it reloads when the file's content changes (every poll) and on
// SIGHUP, which it catches from now on (its default action ends the
// process) until stop. A config that does not load is a usage error.
func watchConfig(role, path string, poll time.Duration, log *slog.Logger) (w *config.Watcher, rl *reloads, stop func(), err error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	rl = &reloads{role: role, path: path, log: log}
	w, err = config.Watch(path, config.WatcherConfig{Interval: poll, Reload: hup,
		OnApply: rl.applied, OnReject: rl.rejected, Log: log.With("role", role)})
	if err != nil {
		signal.Stop(hup)
		return nil, nil, nil, usageError{err}
	}
	return w, rl, func() { signal.Stop(hup) }, nil
}

// reloads reports the config watcher's decisions: each in the
// tidemark_config_reloads_total metric, a refused file also as a
// config.rejected event (SSE, webhooks). The store and Redis are set once
// open, before the watcher runs.
type reloads struct {
	role, path string
	store      *store.Store
	rdb        redis.UniversalClient
	log        *slog.Logger
}

func (r *reloads) applied(_, _ *config.Config, _ string) {
	metrics.ObserveConfigReload(metrics.ReloadApplied)
}

func (r *reloads) rejected(err error, sum string) {
	metrics.ObserveConfigReload(metrics.ReloadRejected)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Every process watching the file refuses it; the first announces it
	// for all (a failed check announces anyway: twice beats never).
	first, rerr := r.rdb.SetNX(ctx, "tidemark:config:rejected:"+sum, r.role, time.Hour).Result()
	if rerr == nil && !first {
		return
	}
	host, _ := os.Hostname()
	payload := map[string]any{
		"file": r.path, "sha256": sum[:min(len(sum), 12)], "problems": problemsAt(err),
		"role": r.role, "host": host, "at": time.Now().UTC(),
		"hint": fmt.Sprintf("the config in force stays; tidemark config check %s shows what is wrong", r.path),
	}
	if _, aerr := r.store.Announce(ctx, tidemark.EventConfigRejected, payload); aerr != nil {
		r.log.Error("announce the refused config", "error", aerr)
	}
}

// problemsAt lists where a config is wrong (file:line: field), without the
// messages: those may quote values (a webhook URL can carry a token), and
// the event goes to every webhook and dashboard. The log line and
// `tidemark config check` have the messages.
func problemsAt(err error) []string {
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		return []string{err.Error()} // unreadable file: the path and the OS error
	}
	out := make([]string, 0, len(cerr.Problems))
	for _, p := range cerr.Problems {
		at := p.File
		if p.Line > 0 {
			at = fmt.Sprintf("%s:%d", at, p.Line)
		}
		if p.Field != "" {
			at += ": " + p.Field
		}
		out = append(out, at)
	}
	return out
}
