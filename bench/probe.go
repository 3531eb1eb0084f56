package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// probeWorkload (4): probes per second against an unchanged upstream (each
// a HEAD answered 304) through one worker process, vs the same number of
// no-op tasks through bare asynq with the same concurrency, on a Redis
// database of its own so that the worker stays up between its turns; the
// two take turns Config.Reps times.
func (e *env) probeWorkload(ctx context.Context) error {
	n := e.cfg.ProbeTasks
	rig, err := e.startProbeRig(ctx, "probe")
	if err != nil {
		return err
	}
	defer rig.close(ctx)
	bareRedis, err := reserveRedis(ctx, e.cfg.RedisAddr)
	if err != nil {
		return err
	}
	defer bareRedis.release(context.WithoutCancel(ctx))
	redisOpt := asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n}
	w, err := e.startRole("worker", rig.cfgPath, rig.db, "worker-probe", "--probe-concurrency", fmt.Sprint(e.cfg.Concurrency))
	if err != nil {
		return err
	}
	defer w.stop()
	// Prime: the first probe sees a change (no validator stored yet) and
	// enqueues a fetch; wait for that fetch so every measured probe is a 304.
	conn, err := pgx.Connect(ctx, rig.db.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := primeProbes(ctx, redisOpt, rig.src, conn, w.exited); err != nil {
		return err
	}
	bare, tm := make([]probeRun, e.cfg.Reps), make([]probeRun, e.cfg.Reps)
	for i := range e.cfg.Reps {
		if bare[i], err = e.bareProbeRun(ctx, bareRedis, rig.src, n); err != nil {
			return fmt.Errorf("bare asynq, repetition %d: %w", i+1, err)
		}
		if tm[i], err = tidemarkProbeRun(ctx, redisOpt, rig, conn, w, n); err != nil {
			return fmt.Errorf("tidemark worker, repetition %d: %w", i+1, err)
		}
	}
	e.probeRow(rig.src, bare, tm)
	return nil
}

// probeRun is one drain of n probes.
type probeRun struct {
	took, cpu   time.Duration
	notModified int64 // probes answered 304 (tidemark only)
	requests    int64 // upstream requests meanwhile (tidemark only)
}

// bareProbeRun drains n probe tasks through a bare asynq server with a
// no-op handler, in this process: its CPU is this process's during the
// drain (the drain's own queue polling included).
func (e *env) bareProbeRun(ctx context.Context, rdb *redisDB, src *config.Source, n int) (probeRun, error) {
	if err := rdb.flush(ctx); err != nil {
		return probeRun{}, err
	}
	opt := asynq.RedisClientOpt{Addr: rdb.addr, DB: rdb.n}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: e.cfg.Concurrency, Queues: map[string]int{jobs.ProbeQueue(&src.Resources[0]): 1},
		TaskCheckInterval: 100 * time.Millisecond, Logger: quietLogger{},
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(jobs.TypeProbe, func(context.Context, *asynq.Task) error { return nil })
	if err := srv.Start(mux); err != nil {
		return probeRun{}, fmt.Errorf("start bare asynq server: %w", err)
	}
	defer srv.Shutdown()
	cpu0 := procCPU(os.Getpid())
	took, err := drainProbes(ctx, opt, src, n, nil, nil, nil)
	return probeRun{took: took, cpu: procCPU(os.Getpid()) - cpu0}, err
}

// tidemarkProbeRun drains n probes through the running worker w.
func tidemarkProbeRun(ctx context.Context, opt asynq.RedisClientOpt, rig *rig, conn *pgx.Conn, w *proc, n int) (probeRun, error) {
	var r probeRun
	// The probes carry the basis the scheduler would give them (its read
	// of sync_state at the tick), as the scheduler's probes do.
	bases, err := probeBases(ctx, conn, rig.src)
	if err != nil {
		return r, err
	}
	var nm0, nm1, total0 int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(probes_not_modified), 0), coalesce(sum(probes_total), 0) FROM sync_state`).Scan(&nm0, &total0); err != nil {
		return r, err
	}
	// A probe counts once its bookkeeping is in Postgres: the worker writes
	// unchanged probes' counters behind (store.ProbeBatcher), so the clock
	// runs until the last flush has landed, not only until the queue is
	// empty.
	recorded := func() (bool, error) {
		var total int64
		err := conn.QueryRow(ctx, `SELECT coalesce(sum(probes_total), 0) FROM sync_state`).Scan(&total)
		return total >= total0+int64(n), err
	}
	s0, err := stats(ctx, rig.up.base)
	if err != nil {
		return r, err
	}
	cpu0 := w.cpu()
	if r.took, err = drainProbes(ctx, opt, rig.src, n, w.exited, recorded, bases); err != nil {
		return r, err
	}
	r.cpu = w.cpu() - cpu0
	s1, err := stats(ctx, rig.up.base)
	if err != nil {
		return r, err
	}
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(probes_not_modified), 0) FROM sync_state`).Scan(&nm1); err != nil {
		return r, err
	}
	r.notModified, r.requests = nm1-nm0, s1.Requests-s0.Requests
	return r, nil
}

// probeRow is workload 4's row and note.
func (e *env) probeRow(src *config.Source, bare, tm []probeRun) {
	n := e.cfg.ProbeTasks
	rates := func(runs []probeRun) spread {
		s := make(spread, len(runs))
		for i, r := range runs {
			s[i] = float64(n) / r.took.Seconds()
		}
		return s
	}
	tmRate, bareRate := rates(tm), rates(bare)
	of := pairRatios(tmRate, bareRate)
	var notModified int64 // the fewest of any repetition: each should be all
	for i, r := range tm {
		if i == 0 || r.notModified < notModified {
			notModified = r.notModified
		}
	}
	e.report.Rows = append(e.report.Rows, Row{
		ID: "4", Workload: fmt.Sprintf("probe throughput, %s probes over %d resources, 1 worker, probe concurrency %d", thousands(int64(n)), len(src.Resources), e.cfg.Concurrency),
		Tidemark: fmt.Sprintf("%s probes/s (at least %s unchanged in each)", tmRate.format(inCount), thousands(notModified)),
		Baseline: fmt.Sprintf("bare asynq no-op %s tasks/s", bareRate.format(inCount)),
		Ratio:    of.format(inTimes) + " of bare asynq",
		Target:   "≥ 0.5x", Met: met(of.median() >= 0.5),
	})
	t, b := tm[tmRate.medianAt()], bare[bareRate.medianAt()]
	e.note("workload 4, the median repetition of each: %d upstream requests for %d probes; worker CPU %s for the probes (%.0f µs/probe), bare asynq's %s (%.0f µs/task); bare asynq drained %d tasks in %s, tidemark in %s (until the last probe's counters were in Postgres). The worker stays up, idle, while bare asynq drains its own Redis database.",
		t.requests, n, secs(t.cpu), float64(t.cpu.Microseconds())/float64(n), secs(b.cpu), float64(b.cpu.Microseconds())/float64(n), n, secs(b.took), secs(t.took))
}

// drainProbes pauses the probe queue, enqueues n probes over the resources
// of src (each with its resource's basis in bases, when set), resumes the
// queue and times until none is pending or active and recorded (when set)
// reports the probes' effects in place. alive (when set) reports a dead
// worker.
func drainProbes(ctx context.Context, opt asynq.RedisClientOpt, src *config.Source, n int, alive func() error, recorded func() (bool, error), bases map[string]*jobs.ProbeBasis) (time.Duration, error) {
	queue := jobs.ProbeQueue(&src.Resources[0])
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	client := asynq.NewClient(opt)
	defer client.Close()
	if err := insp.PauseQueue(queue); err != nil {
		return 0, fmt.Errorf("pause %s: %w", queue, err)
	}
	for i := range n {
		res := &src.Resources[i%len(src.Resources)]
		task, err := jobs.NewProbe(jobs.ProbePayload{Source: "bench", Resource: res.Name, Trigger: jobs.TriggerSchedule, Basis: bases[res.Name]}, jobs.ProbeOptions(res)...)
		if err != nil {
			return 0, err
		}
		if _, err := client.EnqueueContext(ctx, task); err != nil {
			return 0, fmt.Errorf("enqueue probe: %w", err)
		}
	}
	info0, err := insp.GetQueueInfo(queue)
	if err != nil {
		return 0, err
	}
	began := time.Now()
	if err := insp.UnpauseQueue(queue); err != nil {
		return 0, err
	}
	err = waitFor(ctx, 30*time.Minute, 10*time.Millisecond, "the probe queue to drain", func() (bool, error) {
		if alive != nil {
			if err := alive(); err != nil {
				return false, err
			}
		}
		info, err := insp.GetQueueInfo(queue)
		if err != nil || info.Pending+info.Active+info.Scheduled+info.Retry > 0 {
			return false, err
		}
		if recorded == nil {
			return true, nil
		}
		return recorded()
	})
	took := time.Since(began)
	if err != nil {
		return 0, err
	}
	info, err := insp.GetQueueInfo(queue)
	if err != nil {
		return 0, err
	}
	if failed := info.FailedTotal - info0.FailedTotal; failed > 0 || info.Archived > info0.Archived {
		return 0, fmt.Errorf("%d of %d probes failed (%d archived)", failed, n, info.Archived)
	}
	return took, nil
}

// quietLogger keeps the bare asynq server's logs out of the bench output.
type quietLogger struct{}

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(...any) {}
func (quietLogger) Fatal(...any) {}

// probeResources is how many resources workload 4's probes spread over, so
// that they do not all queue on one sync_state row.
const probeResources = 50

// probeConfig is workload 4's config: probeResources copies of ticket_sales
// (100 records each), all critical, all probed by HEAD.
func probeConfig(base string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sources:\n  - name: bench\n    base_url: %s\n    allow_private: true\n    max_concurrency: 64\n    resources:\n", base)
	for i := range probeResources {
		fmt.Fprintf(&b, `      - name: ts_%03d
        path: /v1/ticket_sales
        priority: critical
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 1000}
        probe: {strategy: etag, method: HEAD, every: 1h}
        full_sync: {every: 24h, detect_deletes: true}
`, i)
	}
	return b.String()
}

// primeProbes runs one probe of every resource and waits for the fetch each
// enqueues (no validator is stored yet, so each sees a change): after it,
// every probe of the unchanged upstream is a 304. alive reports a dead
// worker.
func primeProbes(ctx context.Context, redisOpt asynq.RedisConnOpt, src *config.Source, conn *pgx.Conn, alive func() error) error {
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	for i := range src.Resources {
		r := &src.Resources[i]
		task, _ := jobs.NewProbe(jobs.ProbePayload{Source: src.Name, Resource: r.Name, Trigger: jobs.TriggerManual}, jobs.ProbeOptions(r)...)
		if _, err := client.EnqueueContext(ctx, task); err != nil {
			return err
		}
	}
	return waitFor(ctx, 2*time.Minute, 50*time.Millisecond, "the priming probes' fetches", func() (bool, error) {
		if err := alive(); err != nil {
			return false, err
		}
		var k int
		err := conn.QueryRow(ctx, `SELECT count(DISTINCT resource) FROM sync_runs WHERE kind <> 'probe' AND status = 'succeeded'`).Scan(&k)
		return k == len(src.Resources), err
	})
}

// probeBases reads the basis of each resource's probe from sync_state, as
// the scheduler's tick does (scheduler.Scheduler.Tick).
func probeBases(ctx context.Context, conn *pgx.Conn, src *config.Source) (map[string]*jobs.ProbeBasis, error) {
	bases := make(map[string]*jobs.ProbeBasis, len(src.Resources))
	for i := range src.Resources {
		res := &src.Resources[i]
		var st store.State
		err := conn.QueryRow(ctx, `SELECT etag, last_modified, probe_hash, probe_interval_ms, head_unsupported
			FROM sync_state WHERE source = $1 AND resource = $2`, src.Name, res.Name).
			Scan(&st.ETag, &st.LastModified, &st.ProbeHash, &st.ProbeIntervalMS, &st.HeadUnsupported)
		if err != nil {
			return nil, fmt.Errorf("probe basis of %s: %w", res.Name, err)
		}
		bases[res.Name] = jobs.BasisOf(res, st)
	}
	return bases, nil
}
