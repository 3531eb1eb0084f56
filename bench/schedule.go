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
	window    time.Duration
	probes    int64 // probe tasks enqueued in the window
	want      int64 // resources × slot changes in the window
}

func (r scheduleRun) cpuPerSec() float64 { return r.cpu.Seconds() / r.window.Seconds() }

// scheduleWorkload (8): the scheduler's CPU per second with 1,000 and with
// 10,000 configured resources probed every 10 s, alone (no worker: the
// probes it enqueues stay queued and are counted, so the figure is for a
// scheduler that did its job).
func (e *env) scheduleWorkload(ctx context.Context) error {
	big := e.cfg.ScheduleResources
	small := max(resourcesPerSource, big/10)
	var runs []scheduleRun
	for _, n := range []int{small, big} {
		if err := e.redis.flush(ctx); err != nil {
			return err
		}
		r, err := e.scheduleOnce(ctx, n)
		if err != nil {
			return fmt.Errorf("%d resources: %w", n, err)
		}
		runs = append(runs, r)
	}
	s, b := runs[0], runs[1]
	growth := b.cpuPerSec() / s.cpuPerSec()
	scale := float64(b.resources) / float64(s.resources)
	e.report.Rows = append(e.report.Rows, Row{
		ID: "8", Workload: fmt.Sprintf("scale of the schedule: scheduler alone, %s resources probed every %s", thousands(int64(b.resources)), scheduleEvery),
		Tidemark: fmt.Sprintf("%s CPU/s (%.2f%% of a core), %s probes enqueued of %s due", ms(time.Duration(b.cpuPerSec()*float64(time.Second))), 100*b.cpuPerSec(), thousands(b.probes), thousands(b.want)),
		Baseline: fmt.Sprintf("%s resources: %s CPU/s, %s probes of %s due", thousands(int64(s.resources)), ms(time.Duration(s.cpuPerSec()*float64(time.Second))), thousands(s.probes), thousands(s.want)),
		Ratio:    fmt.Sprintf("%.1fx the CPU for %.0fx the resources", growth, scale),
		Target:   fmt.Sprintf("linear or better (≤ %.0fx)", scale),
		Met:      met(growth <= scale && b.probes == b.want && s.probes == s.want),
	})
	e.note("workload 8: CPU (user+system, /proc) of the scheduler process over %s from the middle of a probe slot, after a warm-up of at least one slot; the probes are counted in the probe queues (no worker runs); full syncs are marked done so only probes are due. %.0f µs of CPU per probe enqueued at %s resources, %.0f µs at %s.",
		scheduleWindow, float64(b.cpu.Microseconds())/float64(max(b.probes, 1)), thousands(int64(b.resources)), float64(s.cpu.Microseconds())/float64(max(s.probes, 1)), thousands(int64(s.resources)))
	return nil
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
	cpu0, t0 := sch.cpu(), time.Now()
	if err := sleepUntil(ctx, start.Add(scheduleWindow)); err != nil {
		return r, err
	}
	r.cpu, r.window = sch.cpu()-cpu0, time.Since(t0)
	if err := sch.exited(); err != nil {
		return r, err
	}
	q1, err := probeTasks(insp)
	if err != nil {
		return r, err
	}
	r.probes = q1 - q0
	r.want = int64(n) * int64(scheduleWindow/scheduleEvery)
	e.logf("workload 8: %d resources: scheduler CPU %s over %s, %d probes enqueued (%d due)", n, r.cpu, r.window.Round(time.Millisecond), r.probes, r.want)
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
