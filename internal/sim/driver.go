package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// Lane is one Postgres database and one Redis database that seeds run in,
// one seed at a time. Seeds leave their rows behind (each has a source of
// its own) and empty the Redis database before they start.
type Lane struct {
	Store    *store.Store
	RedisOpt asynq.RedisConnOpt
	Redis    *redis.Client
	Insp     *asynq.Inspector
	Log      *slog.Logger
}

// Result is what one seed found.
type Result struct {
	Seed       uint64
	Scenario   Scenario
	Violations []Violation
	// Converged: Postgres came to equal the model after the steps; Runs
	// and Took: the fetch runs and the time that took.
	Converged bool
	Runs      int
	Took      time.Duration
	Requests  int
	// EmptyAnswers counts the upstream's answers with API.EmptyStatus.
	EmptyAnswers int
	// Quarantined is how many records ended set aside.
	Quarantined int
	// NotModified counts the 304s a partition seed's upstream served to
	// conditional reads of its partitions.
	NotModified int
}

// Violation is one broken invariant.
type Violation struct {
	Kind   string
	Detail string
}

// Violation kinds, one per invariant (docs/architecture.md, Guarantees).
const (
	FalseDelete = "false_delete"  // a record live upstream was tombstoned
	LostUpdate  = "lost_update"   // the copy did not converge when it should have
	FalseEvent  = "false_event"   // an event or audit row that is not what changed
	Unbounded   = "unbounded_run" // a run that did not end, or made too many requests
	Wedged      = "wedged"        // a fault left the resource failing after it cleared
)

// Kinds lists the violation kinds in report order.
var Kinds = []string{FalseDelete, LostUpdate, FalseEvent, Unbounded, Wedged}

// maxRunRequests bounds the requests of any one run here: a few hundred
// records at a page size of at least one, with retries.
const maxRunRequests = 2000

// waitLimit is how long the fleet gets to finish a step's work.
const waitLimit = 45 * time.Second

// RunSeed drives the fleet through a seed's scenario and checks every
// invariant along the way and at the end.
func RunSeed(ctx context.Context, lane *Lane, seed uint64) Result {
	sc := NewScenario(seed)
	d := &driver{lane: lane, sc: sc, source: fmt.Sprintf("s%d", seed), began: time.Now(), out: Result{Seed: seed, Scenario: sc}}
	if err := d.run(ctx); err != nil {
		d.violate(Wedged, "%v", err)
	}
	if d.up != nil {
		d.out.Requests = d.up.Requests()
		d.out.EmptyAnswers = d.up.EmptyAnswers()
	}
	return d.out
}

// driver runs one seed.
type driver struct {
	lane   *Lane
	sc     Scenario
	source string
	began  time.Time
	out    Result

	model *Model
	up    *Upstream
	// client enqueues the seed's tasks. Each seed has its own: an asynq
	// client remembers which queues it has registered, and the lane's
	// Redis database is emptied between seeds.
	client   *asynq.Client
	conf     *config.Config
	resource *config.Resource
	sched    *scheduler.Scheduler
	// ahead is how far the scheduler's clock runs ahead of the fleet's:
	// each tick step moves it past the next probe slot.
	ahead time.Duration
	crash crashPlan
	// pageDeltaShifted: a page-style delta read ran while the upstream
	// changed; page numbers cannot tell such a read what moved (see
	// converge).
	pageDeltaShifted bool
}

func (d *driver) violate(kind, format string, args ...any) {
	d.out.Violations = append(d.out.Violations, Violation{Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

func (d *driver) key() store.Key { return store.Key{Source: d.source, Resource: "items"} }

func (d *driver) run(ctx context.Context) error {
	d.model = NewModel(d.sc.Seed, d.sc.Content, d.sc.Skew, d.sc.StampRes, d.sc.Records)
	d.up = NewUpstream(d.model, d.sc.API, d.sc.Seed)
	srv := httptest.NewServer(d.up)
	defer srv.Close()
	conf, err := config.Parse(d.source+".yaml", []byte(d.sc.ConfigYAML(d.source, srv.URL)))
	if err != nil {
		return fmt.Errorf("scenario config: %w", err)
	}
	d.conf, d.resource = conf, conf.Sources[0].Resource("items")
	if err := d.lane.Redis.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("flush the lane's Redis database: %w", err)
	}
	d.client = asynq.NewClient(d.lane.RedisOpt)
	defer d.client.Close()
	w, err := worker.New(worker.Config{
		Concurrency: 2, ProbeConcurrency: 1,
		PollInterval:    10 * time.Millisecond,
		ShutdownTimeout: 2 * time.Second,
		// The driver waits for quiet between steps: a change a probe saw
		// before is never a fetch still on its way.
		RefetchAfter:       time.Millisecond,
		RetryDelay:         fastRetry,
		RetryCheckInterval: 20 * time.Millisecond,
		CrashHook:          d.crash.hit,
	}, conf, d.lane.Store, d.lane.RedisOpt, d.lane.Log)
	if err != nil {
		return err
	}
	wctx, stopWorker := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stopWorker()
		<-done
	}()
	d.sched = scheduler.New(scheduler.Config{Now: func() time.Time { return time.Now().Add(d.ahead) }},
		conf, d.lane.Store, d.client, d.lane.Log)
	if err := d.lane.Store.EnsureStates(ctx, []store.Key{d.key()}); err != nil {
		return err
	}

	for i, st := range d.sc.Steps {
		if err := d.step(ctx, st); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, st, err)
		}
	}
	if err := d.converge(ctx); err != nil {
		return err
	}
	return d.checkHistory(ctx)
}

// fastRetry is jobs.RetryDelay with failures retried in milliseconds, not
// seconds: the sim waits for every retry. Hand-backs keep their delay.
func fastRetry(n int, err error, t *asynq.Task) time.Duration {
	if d, ok := jobs.HandBack(err); ok {
		return d
	}
	return min(20*time.Millisecond<<min(n, 4), 300*time.Millisecond)
}

// step runs one step and waits until the fleet is quiet again.
func (d *driver) step(ctx context.Context, st Step) error {
	if st.Op == OpMutate {
		d.model.Mutate(st.N, false)
		return nil
	}
	before, err := d.lastRunID(ctx)
	if err != nil {
		return err
	}
	_, midBefore := d.model.Stats()
	d.up.SetFaults(st.Faults)
	d.crash.set(st.Crash, st.CrashAt)
	err = d.enqueue(ctx, st.Op)
	if err == nil {
		err = d.waitQuiet(ctx)
	}
	d.up.SetFaults(Faults{})
	d.crash.set("", 0)
	if err != nil {
		return err
	}
	if _, midAfter := d.model.Stats(); midAfter > midBefore && d.unprovable() && d.sc.Content.Format != "" {
		d.pageDeltaShifted = true
	}
	return d.checkRuns(ctx, before, st)
}

// unprovable says the scenario's reads cannot prove they skipped nothing
// when records move during them: page numbers, or offset pages of one
// record (too small to overlap). docs/architecture.md, invariant 2.
func (d *driver) unprovable() bool {
	size := d.sc.Limit
	if d.sc.API.Cap > 0 {
		size = min(size, d.sc.API.Cap)
	}
	return d.sc.API.Style == "page" || d.sc.API.Style == "offset" && size < 2
}

// enqueue puts the task of a run step in its queue, as the scheduler
// would (or lets the real scheduler do it, for a tick).
func (d *driver) enqueue(ctx context.Context, op StepOp) error {
	res := d.resource
	probeless := res.Probe.Strategy == config.ProbeNone
	var task *asynq.Task
	var err error
	switch {
	case op == OpTick:
		d.ahead += res.Probe.Every.D() + time.Second
		return d.sched.Tick(ctx)
	case op == OpProbe && !probeless:
		// With the basis a scheduler's tick would read now: by the time
		// the probe runs, a fetch may have made it stale.
		var st store.State
		if st, err = d.lane.Store.State(ctx, d.key()); err != nil {
			return err
		}
		task, err = jobs.NewProbe(jobs.ProbePayload{Source: d.source, Resource: res.Name, Trigger: jobs.TriggerSchedule, Basis: jobs.BasisOf(res, st)}, jobs.ProbeOptions(res)...)
	case op == OpFull:
		task, err = jobs.NewFetch(jobs.FetchPayload{Source: d.source, Resource: res.Name, Mode: jobs.ModeFull, Trigger: jobs.TriggerSchedule}, jobs.FetchOptions(res)...)
	default: // a delta, or the scheduled fetch of a resource without probes
		task, err = jobs.NewFetch(jobs.FetchPayload{Source: d.source, Resource: res.Name, Mode: jobs.ModeFor(res, false), Trigger: jobs.TriggerSchedule}, jobs.FetchOptions(res)...)
	}
	if err != nil {
		return err
	}
	_, err = d.client.EnqueueContext(ctx, task)
	return err
}

// waitQuiet waits until no task is queued, running or waiting to retry,
// and no run row is still running.
func (d *driver) waitQuiet(ctx context.Context) error {
	deadline := time.Now().Add(waitLimit)
	quiet := 0
	for {
		busy, detail, err := d.busy(ctx)
		if err != nil {
			return err
		}
		// Twice in a row: busy reads the queues one by one, so a task
		// that ends in a queue read later after enqueuing a task into
		// one read before (a probe starting its fetch) looks like quiet
		// once; the next look sees the new task.
		quiet++
		if busy {
			quiet = 0
		} else if quiet == 2 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the fleet was still busy after %s: %s", waitLimit, detail)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond): // polling the queues, not waiting for an event
		}
	}
}

func (d *driver) busy(ctx context.Context) (bool, string, error) {
	queues, err := d.lane.Insp.Queues()
	if err != nil {
		return false, "", fmt.Errorf("list queues: %w", err)
	}
	for _, q := range queues {
		info, err := d.lane.Insp.GetQueueInfo(q)
		if err != nil {
			return false, "", fmt.Errorf("inspect queue %s: %w", q, err)
		}
		if n := info.Pending + info.Active + info.Scheduled + info.Retry; n > 0 {
			return true, fmt.Sprintf("queue %s: %d pending, %d active, %d scheduled, %d retry", q, info.Pending, info.Active, info.Scheduled, info.Retry), nil
		}
	}
	var running int64
	if err := d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT count(*) FROM sync_runs WHERE source = ? AND status = 'running'`, d.source).Scan(&running).Error; err != nil {
		return false, "", err
	}
	if running > 0 {
		return true, fmt.Sprintf("%d runs still running", running), nil
	}
	return false, "", nil
}

func (d *driver) lastRunID(ctx context.Context) (int64, error) {
	var id int64
	err := d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT coalesce(max(id), 0) FROM sync_runs WHERE source = ?`, d.source).Scan(&id).Error
	return id, err
}

// crashPlan makes the at-th pass through one failpoint fail the run, as a
// crash there would (worker.Config.CrashHook).
type crashPlan struct {
	mu    sync.Mutex
	point string
	at    int
	hits  int
}

func (c *crashPlan) set(point string, at int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.point, c.at, c.hits = point, at, 0
}

func (c *crashPlan) hit(point string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if point != c.point {
		return nil
	}
	c.hits++
	if c.hits == c.at {
		return fmt.Errorf("sim: injected crash at %s (pass %d)", point, c.at)
	}
	return nil
}

// runRow is what the checks read of a run.
type runRow struct {
	ID           int64
	Kind         string
	Status       string
	HTTPRequests int
	Error        string
	StartedAt    time.Time
	FinishedAt   *time.Time
}

func (d *driver) runsAfter(ctx context.Context, after int64) ([]runRow, error) {
	var rows []runRow
	err := d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT id, kind, status, http_requests, error, started_at, finished_at
		FROM sync_runs WHERE source = ? AND id > ? ORDER BY id`, d.source, after).Scan(&rows).Error
	return rows, err
}

// checkRuns checks the runs of one step: every run ended within its
// request bound, a hand-back or an interruption is not a failure, and a
// pagination loop is reported as one.
func (d *driver) checkRuns(ctx context.Context, after int64, st Step) error {
	runs, err := d.runsAfter(ctx, after)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if r.HTTPRequests > maxRunRequests {
			d.violate(Unbounded, "run %d made %d requests (bound %d): %s", r.ID, r.HTTPRequests, maxRunRequests, r.Error)
		}
		if (r.Status == "failed" || r.Status == "dead") && strings.Contains(r.Error, "handed back") {
			d.violate(Wedged, "run %d: a hand-back was recorded as %s: %s", r.ID, r.Status, r.Error)
		}
		// A loop must be named as one; other failures in such a step are the
		// upstream's own answers (a 4xx for an expired cursor) or a crash.
		loopStep := st.Faults.IgnorePage || st.Faults.Cycle
		if loopStep && r.Kind != "probe" && (r.Status == "failed" || r.Status == "dead") &&
			!strings.Contains(r.Error, "pagination loop") && !strings.Contains(r.Error, "injected crash") && !strings.Contains(r.Error, ": HTTP 4") {
			d.violate(Unbounded, "run %d in a step whose upstream loops failed without naming the pagination loop: %s", r.ID, r.Error)
		}
	}
	return nil
}
