package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

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
	db, up, conf, src := rig.db, rig.up, rig.conf, rig.src
	st, err := store.Open(ctx, db.url)
	if err != nil {
		return err
	}
	defer st.Close()
	redisOpt := asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	w, err := worker.New(worker.Config{ProbeConcurrency: e.cfg.Concurrency}, conf, st, redisOpt, log)
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()

	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := primeProbes(ctx, redisOpt, src, conn, func() error { return nil }); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(e.cfg.ProfileDir, "probe.pprof"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	bases, err := probeBases(ctx, conn, src)
	if err != nil {
		return err
	}
	took, err := drainProbes(ctx, redisOpt, src, n, nil, nil, bases)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	// The probe's steps one at a time, sequentially, to see their latency.
	key := store.Key{Source: "bench", Resource: src.Resources[0].Name}
	const reps = 300
	lat := func(fn func() error) (string, error) {
		t := time.Now()
		for range reps {
			if err := fn(); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("%.2f ms", float64(time.Since(t).Microseconds())/reps/1000), nil
	}
	var head, state, record, ping, redisPing string
	hreq := up.base + src.Resources[0].Path + "?limit=1000"
	known, err := st.ProbeState(ctx, key)
	if err != nil {
		return err
	}
	if head, err = lat(func() error {
		// Conditional, as the probe's: an unchanged upstream answers 304.
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, hreq, nil)
		req.Header.Set("If-None-Match", known.ETag)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}); err != nil {
		return err
	}
	if state, err = lat(func() error { _, err := st.ProbeState(ctx, key); return err }); err != nil {
		return err
	}
	if record, err = lat(func() error {
		return st.RecordProbe(ctx, key, store.ProbeOutcome{Interval: time.Hour})
	}); err != nil {
		return err
	}
	if ping, err = lat(func() error { return conn.Ping(ctx) }); err != nil {
		return err
	}
	rc := e.redis.client()
	defer rc.Close()
	if redisPing, err = lat(func() error { return rc.Ping(ctx).Err() }); err != nil {
		return err
	}
	e.note("profile: %s probes through an in-process worker took %s (%.0f probes/s, enqueueing excluded; CPU profile %s); a probe's steps alone, sequential means over %d: conditional HEAD to demo-upstream %s, store.ProbeState %s, store.RecordProbe %s (a direct write, as a changed probe's; an unchanged probe's is coalesced by store.ProbeBatcher), Postgres ping %s, Redis PING %s.",
		thousands(int64(n)), secs(took), float64(n)/took.Seconds(), f.Name(), reps, head, state, record, ping, redisPing)
	return nil
}
