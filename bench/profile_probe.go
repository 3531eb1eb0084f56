package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// profileProbes runs workload 4's probes through a worker in this process
// with a CPU profile (ProfileDir/probe.pprof): the worker process of
// workload 4 has no profiling endpoint, and production code gains none.
func (e *env) profileProbes(ctx context.Context) error {
	n := e.cfg.ProbeTasks
	rig, err := e.startProbeRig(ctx, "profile-probe")
	if err != nil {
		return err
	}
	defer rig.close(ctx)
	st, err := store.Open(ctx, rig.db.url)
	if err != nil {
		return err
	}
	defer st.Close()
	redisOpt := asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n}
	stopWorker, err := runWorker(ctx, worker.Config{ProbeConcurrency: e.cfg.Concurrency}, rig.conf, st, redisOpt)
	if err != nil {
		return err
	}
	defer stopWorker()
	conn, err := pgx.Connect(ctx, rig.db.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := primeProbes(ctx, redisOpt, rig.src, conn, func() error { return nil }); err != nil {
		return err
	}
	profilePath, stopProfile, err := startCPUProfile(e.cfg.ProfileDir, "probe.pprof")
	if err != nil {
		return err
	}
	defer stopProfile()
	bases, err := probeBases(ctx, conn, rig.src)
	if err != nil {
		return err
	}
	took, err := drainProbes(ctx, redisOpt, rig.src, n, nil, nil, bases)
	stopProfile()
	if err != nil {
		return err
	}
	steps, err := e.probeStepLatencies(ctx, rig, st, conn)
	if err != nil {
		return err
	}
	e.note("profile: %s probes through an in-process worker took %s (%.0f probes/s, enqueueing excluded; CPU profile %s); a probe's steps alone, sequential means over %d: conditional HEAD to demo-upstream %s, store.ProbeState %s, store.RecordProbe %s (a direct write, as a changed probe's; an unchanged probe's is coalesced by store.ProbeBatcher), Postgres ping %s, Redis PING %s.",
		thousands(int64(n)), secs(took), float64(n)/took.Seconds(), profilePath, probeStepReps, steps.head, steps.state, steps.record, steps.ping, steps.redisPing)
	return nil
}

// runWorker runs a worker in this process, its logs discarded, until stop
// is called.
func runWorker(ctx context.Context, cfg worker.Config, conf *config.Config, st *store.Store, redisOpt asynq.RedisClientOpt) (stop func(), err error) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	w, err := worker.New(cfg, conf, st, redisOpt, log)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	return func() { cancel(); <-done }, nil
}

// probeStepReps is how many times probeStepLatencies runs each step.
const probeStepReps = 300

// probeSteps are the mean latencies of a probe's steps, formatted.
type probeSteps struct{ head, state, record, ping, redisPing string }

// probeStepLatencies times the probe's steps one at a time, sequentially,
// to see their latency.
func (e *env) probeStepLatencies(ctx context.Context, rig *rig, st *store.Store, conn *pgx.Conn) (probeSteps, error) {
	var s probeSteps
	src := rig.src
	key := store.Key{Source: "bench", Resource: src.Resources[0].Name}
	hreq := rig.up.base + src.Resources[0].Path + "?limit=1000"
	known, err := st.ProbeState(ctx, key)
	if err != nil {
		return s, err
	}
	rc := e.redis.client()
	defer rc.Close()
	for _, step := range []struct {
		into *string
		fn   func() error
	}{
		{&s.head, func() error {
			// Conditional, as the probe's: an unchanged upstream answers 304.
			req, _ := http.NewRequestWithContext(ctx, http.MethodHead, hreq, nil)
			req.Header.Set("If-None-Match", known.ETag)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			return err
		}},
		{&s.state, func() error { _, err := st.ProbeState(ctx, key); return err }},
		{&s.record, func() error { return st.RecordProbe(ctx, key, store.ProbeOutcome{Interval: time.Hour}) }},
		{&s.ping, func() error { return conn.Ping(ctx) }},
		{&s.redisPing, func() error { return rc.Ping(ctx).Err() }},
	} {
		if *step.into, err = meanLatency(step.fn); err != nil {
			return s, err
		}
	}
	return s, nil
}

// meanLatency runs fn probeStepReps times and formats its mean time.
func meanLatency(fn func() error) (string, error) {
	t := time.Now()
	for range probeStepReps {
		if err := fn(); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%.2f ms", float64(time.Since(t).Microseconds())/probeStepReps/1000), nil
}
