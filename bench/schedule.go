package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark/jobs"
)

// scheduleEvery is workload 8's probe interval.
const scheduleEvery = 10 * time.Second

// scheduleWindow is how long workload 8 measures each size: two probe
// slots, taken from the middle of one slot to the middle of the one two
// later, so both slot changes in it are enqueued well inside it.
const scheduleWindow = 2 * scheduleEvery

// resourcesPerSource is how many resources each generated source has.
const resourcesPerSource = 100

// scheduleConfig is workload 8's generated config: n resources, 100 to a
// source, every one probed by HEAD every 10 s. Nothing is fetched (no
// worker runs), so the upstream address is never dialled.
func scheduleConfig(n int) string {
	var b strings.Builder
	b.WriteString("sources:\n")
	for i := 0; i < n; i += resourcesPerSource {
		fmt.Fprintf(&b, "  - name: src_%03d\n    base_url: http://127.0.0.1:9\n    allow_private: true\n    resources:\n", i/resourcesPerSource)
		for j := i; j < min(n, i+resourcesPerSource); j++ {
			prio := []string{"critical", "default", "low"}[j%3]
			fmt.Fprintf(&b, `      - name: res_%05d
        path: /v1/items/%d
        priority: %s
        records: {path: data, id: id}
        probe: {strategy: etag, method: HEAD, every: %s}
        full_sync: {every: 24h}
`, j, j, prio, scheduleEvery)
		}
	}
	return b.String()
}

// scheduleRun is one size's measurement.
type scheduleRun struct {
	resources int
	cpu       time.Duration // scheduler CPU over the window
	pgCPU     time.Duration // its Postgres backends' CPU over the window
	window    time.Duration
	probes    int64 // probe tasks enqueued in the window
	want      int64 // resources × slot changes in the window
	peakRSS   int64 // the scheduler's peak resident set (VmHWM)
}

func (r scheduleRun) cpuPerSec() float64 { return r.cpu.Seconds() / r.window.Seconds() }

// perTask is the scheduler's CPU per probe enqueued.
func (r scheduleRun) perTask() time.Duration { return r.cpu / time.Duration(max(r.probes, 1)) }

// rssPerResource is the scheduler's peak RSS per configured resource.
func (r scheduleRun) rssPerResource() float64 { return float64(r.peakRSS) / float64(r.resources) }

// scheduleSizes are workload 8's sizes: a hundredth, a tenth and all of
// Config.ScheduleResources, none smaller than one source.
func (c *Config) scheduleSizes() []int {
	big := c.ScheduleResources
	return []int{max(resourcesPerSource, big/100), max(resourcesPerSource, big/10), big}
}

// scheduleTolerance is how much more CPU per enqueued task the largest
// schedule may take than the smallest and still count as linear: /proc
// counts CPU in 10 ms ticks, and a shared machine moves the figure by
// about this much between runs.
const scheduleTolerance = 1.25

// scheduleWorkload (8): the scheduler alone (no worker: the probes it
// enqueues stay queued and are counted, so the figure is for a scheduler
// that did its job) over 1,000, 10,000 and 100,000 resources probed every
// 10 s: its CPU per probe enqueued and its memory, which should grow no
// faster than the schedule.
func (e *env) scheduleWorkload(ctx context.Context) error {
	var runs []scheduleRun
	for _, n := range e.cfg.scheduleSizes() {
		if err := e.redis.flush(ctx); err != nil {
			return err
		}
		r, err := e.scheduleOnce(ctx, n)
		if err != nil {
			return fmt.Errorf("%d resources: %w", n, err)
		}
		runs = append(runs, r)
	}
	s, b := runs[0], runs[len(runs)-1]
	allDone, rssLinear := true, true
	for i, r := range runs {
		allDone = allDone && r.probes == r.want
		rssLinear = rssLinear && (i == 0 || r.rssPerResource() <= runs[i-1].rssPerResource())
	}
	cpuGrowth := float64(b.perTask()) / float64(s.perTask())
	var each []string
	for _, r := range runs {
		each = append(each, fmt.Sprintf("%s: %.0f µs, %s", thousands(int64(r.resources)), float64(r.perTask().Nanoseconds())/1e3, mib(r.peakRSS)))
	}
	e.report.Rows = append(e.report.Rows, Row{
		ID: "8", Workload: fmt.Sprintf("scale of the schedule: scheduler alone, resources probed every %s; CPU per probe enqueued, peak RSS", scheduleEvery),
		Tidemark: strings.Join(each, "; "),
		Baseline: fmt.Sprintf("%s resources: %.0f µs, %s", thousands(int64(s.resources)), float64(s.perTask().Nanoseconds())/1e3, mib(s.peakRSS)),
		Ratio:    fmt.Sprintf("%.2fx the CPU per task, %.1fx the memory for %.0fx the resources", cpuGrowth, float64(b.peakRSS)/float64(s.peakRSS), float64(b.resources)/float64(s.resources)),
		Target:   fmt.Sprintf("≤ linear: CPU per task ≤ %.2fx, memory per resource not growing; every due probe enqueued", scheduleTolerance),
		Met:      met(cpuGrowth <= scheduleTolerance && rssLinear && allDone),
	})
	e.scheduleNote(runs)
	return nil
}

// scheduleNote is workload 8's note: how it measures, and per size the CPU
// a second, the probes, the Postgres side and the memory.
func (e *env) scheduleNote(runs []scheduleRun) {
	var each []string
	for i, r := range runs {
		marginal := ""
		if i > 0 {
			p := runs[i-1]
			marginal = fmt.Sprintf(", %.1f KiB more per added resource", float64(r.peakRSS-p.peakRSS)/float64(r.resources-p.resources)/1024)
		}
		each = append(each, fmt.Sprintf("%s resources: %s CPU/s (%.2f%% of a core), %s of %s due probes enqueued, Postgres backends %.0f µs per probe, peak RSS %s%s",
			thousands(int64(r.resources)), ms(time.Duration(r.cpuPerSec()*float64(time.Second))), 100*r.cpuPerSec(), thousands(r.probes), thousands(r.want),
			float64(r.pgCPU.Nanoseconds())/1e3/float64(max(r.probes, 1)), mib(r.peakRSS), marginal))
	}
	e.note("workload 8: CPU (user+system, /proc) of the scheduler process, and of the Postgres backends connected to its database, over %s from the middle of a probe slot, after a warm-up of at least one slot; the probes are counted in the probe queues (no worker runs); full syncs are marked done so only probes are due. %s.",
		scheduleWindow, strings.Join(each, "; "))
}

// scheduleOnce runs the scheduler alone over n resources on a database of
// its own and measures one window.
func (e *env) scheduleOnce(ctx context.Context, n int) (scheduleRun, error) {
	r := scheduleRun{resources: n}
	db, err := createDatabase(ctx, e.cfg.AdminDatabaseURL, fmt.Sprintf("schedule_%d", n))
	if err != nil {
		return r, err
	}
	if !e.cfg.Keep {
		defer db.drop(context.WithoutCancel(ctx))
	}
	cfgPath, _, err := e.writeConfig(fmt.Sprintf("schedule-%d.yaml", n), scheduleConfig(n))
	if err != nil {
		return r, err
	}
	sch, err := e.startRole("scheduler", cfgPath, db, fmt.Sprintf("scheduler-%d", n))
	if err != nil {
		return r, err
	}
	defer sch.stop()
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return r, err
	}
	defer conn.Close(ctx)
	if err := waitFor(ctx, time.Minute, 100*time.Millisecond, "the scheduler's state rows", func() (bool, error) {
		if err := sch.exited(); err != nil {
			return false, err
		}
		var k int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM sync_state`).Scan(&k)
		return k == n, err
	}); err != nil {
		return r, err
	}
	// The steady state of a fleet: full syncs done, only probes due.
	if _, err := conn.Exec(ctx, `UPDATE sync_state SET last_full_sync_at = now()`); err != nil {
		return r, err
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n})
	defer insp.Close()

	// Warm up for at least one slot, then start mid-slot.
	start := midSlot(time.Now().Add(scheduleEvery), scheduleEvery)
	if err := sleepUntil(ctx, start); err != nil {
		return r, err
	}
	if err := sch.exited(); err != nil {
		return r, err
	}
	q0, err := probeTasks(insp)
	if err != nil {
		return r, err
	}
	pg0, err := backendsCPU(ctx, conn, db.name)
	if err != nil {
		return r, err
	}
	cpu0, t0 := sch.cpu(), time.Now()
	if err := sleepUntil(ctx, start.Add(scheduleWindow)); err != nil {
		return r, err
	}
	r.cpu, r.window, r.peakRSS = sch.cpu()-cpu0, time.Since(t0), sch.peakRSS()
	pg1, err := backendsCPU(ctx, conn, db.name)
	if err != nil {
		return r, err
	}
	for pid, c := range pg1 {
		r.pgCPU += c - pg0[pid] // a backend opened in the window counts from 0
	}
	if err := sch.exited(); err != nil {
		return r, err
	}
	q1, err := probeTasks(insp)
	if err != nil {
		return r, err
	}
	r.probes = q1 - q0
	r.want = int64(n) * int64(scheduleWindow/scheduleEvery)
	e.logf("workload 8: %d resources: scheduler CPU %s over %s, %d probes enqueued (%d due), peak RSS %s", n, r.cpu, r.window.Round(time.Millisecond), r.probes, r.want, mib(r.peakRSS))
	return r, nil
}

// midSlot is the middle of the first slot of length every starting at or
// after t; slots start at multiples of every since the Unix epoch, as the
// scheduler's do.
func midSlot(t time.Time, every time.Duration) time.Time {
	next := t.Truncate(every)
	if next.Before(t) {
		next = next.Add(every)
	}
	return next.Add(every / 2)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// probeTasks counts the tasks in the probe queues (pending: no worker runs).
func probeTasks(insp *asynq.Inspector) (int64, error) {
	var total int64
	for q := range jobs.ProbeQueues {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			if errors.Is(err, asynq.ErrQueueNotFound) {
				continue // nothing enqueued there yet
			}
			return 0, fmt.Errorf("probe queue %s: %w", q, err)
		}
		total += int64(info.Size)
	}
	return total, nil
}

// backendsCPU is the CPU so far of each Postgres backend connected to the
// database other than conn's own, by pid. A backend that exits between two
// readings takes its share with it: the scheduler keeps its pool open.
func backendsCPU(ctx context.Context, conn *pgx.Conn, dbname string) (map[int]time.Duration, error) {
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, dbname)
	if err != nil {
		return nil, fmt.Errorf("list backends of %s: %w", dbname, err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("list backends of %s: %w", dbname, err)
	}
	out := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		out[pid] = procCPU(pid)
	}
	return out, nil
}
