package bench

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/upstream"
)

// economyConfig is workload 5's config: the five demo resources as
// examples/demo.yaml has them, except for their probes, and that every
// resource's base probe interval is the interval the naive poller polls at,
// pages are 1000 records (the fewest requests for the poller), and the
// daily full sync is the initial one. The three resources with a delta
// probe with it (probe.strategy delta: one request per interval, busy or
// quiet); settlements hashes a one-record page (its envelope's count moves
// with each batch); tax_summaries, without change metadata or a count,
// hashes its pages in rotation (rolling_hash), so that an amendment deep in
// the collection is seen within the day. Back-off stops at busyMaxEvery for
// the busy resources and at quietMaxEvery for the others.
const economyConfig = `sources:
  - name: bench
    base_url: %[1]s
    allow_private: true
    headers: {Accept: application/json}
    max_concurrency: 4
    timeout: 30s
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        priority: critical
        freshness: 30s
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 1000}
        probe: {strategy: delta, every: %[2]s, max_every: %[3]s}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h, detect_deletes: true}
      - name: inventory_movements
        path: /v1/inventory_movements
        priority: critical
        freshness: 30s
        records: {path: "", id: id}
        pagination: {style: link, limit_param: limit, limit: 1000}
        probe: {strategy: delta, every: %[2]s, max_every: %[3]s}
        delta: {param: after, field: id, format: number}
        full_sync: {every: 24h, detect_deletes: true}
      - name: transactions
        path: /api/transactions
        priority: critical
        freshness: 30s
        records: {path: transactions, id: txn_id}
        pagination: {style: page, page_param: page, start: 1, limit_param: per_page, limit: 1000, total_field: total}
        probe: {strategy: delta, every: %[2]s, max_every: %[3]s}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h, detect_deletes: true}
      - name: settlements
        path: /settlements
        priority: low
        freshness: 10m
        records: {path: results, id: settlement.id}
        pagination: {style: offset, offset_param: offset, limit_param: limit, limit: 1000, total_field: count}
        probe: {strategy: hash, method: GET, every: %[2]s, max_every: %[4]s, limit: 1}
        full_sync: {every: 24h, detect_deletes: true}
      - name: tax_summaries
        path: /v2/tax/summaries
        priority: low
        freshness: 1h
        records: {path: result.items, id: id}
        pagination: {style: next_url, next_field: next_url, limit_param: per_page, limit: 1000}
        probe: {strategy: rolling_hash, every: %[2]s, max_every: %[4]s}
        full_sync: {every: 24h, detect_deletes: true}
`

const (
	// pollEvery is both tidemark's base probe interval and the naive
	// poller's interval.
	pollEvery = time.Second
	// busyMaxEvery and quietMaxEvery are where tidemark's adaptive back-off
	// stops after unchanged probes: 4x the base interval for the busy
	// resources, 10x for settlements and tax summaries (demo.yaml: 5s → 20s,
	// 30s → 5m).
	busyMaxEvery  = 4 * time.Second
	quietMaxEvery = 10 * time.Second
)

// dayChanges is the compressed day's change schedule for one real second:
// transactions, ticket sales and inventory busy in opening hours (07:00 to
// 23:00) and nearly quiet at night (a night payment every fourth interval),
// settlements in one nightly batch at 02:00, one tax summary amended at
// noon.
func dayChanges(second, daySeconds, records int) []map[string]any {
	hour := func(h int) int { return daySeconds * h / 24 }
	var out []map[string]any
	if second >= hour(7) && second < hour(23) {
		out = append(out,
			map[string]any{"resource": "transactions", "creates": 2, "updates": 4},
			map[string]any{"resource": "ticket_sales", "creates": 1, "updates": 2},
			map[string]any{"resource": "inventory_movements", "creates": 1})
	} else if second%4 == 0 {
		out = append(out, map[string]any{"resource": "transactions", "creates": 1})
	}
	if second == hour(2) {
		out = append(out, map[string]any{"resource": "settlements", "creates": max(10, records/100)})
	}
	if second == hour(12) {
		out = append(out, map[string]any{"resource": "tax_summaries", "updates": 1})
	}
	return out
}

var dayResources = []string{"ticket_sales", "inventory_movements", "transactions", "settlements", "tax_summaries"}

// economyWorkload (5): requests and bytes tidemark spends over a compressed
// day against what a naive poller re-reading every resource every interval
// would spend. The naive cost is measured, not modelled: one full read of
// every resource before the day and one after (on the same upstream, with
// nothing else running), averaged, times the number of intervals in the day.
// Freshness is measured too: how long each change of the day took to show
// in Postgres, since tidemark's back-off must not cost it its targets.
func (e *env) economyWorkload(ctx context.Context) error {
	rig, err := e.startRig(ctx, "economy", func(base string) string {
		return fmt.Sprintf(economyConfig, base, pollEvery, busyMaxEvery, quietMaxEvery)
	}, "--records", fmt.Sprint(e.cfg.DayRecords), "--seed", "1")
	if err != nil {
		return err
	}
	defer rig.close(ctx)
	base := rig.up.base
	d := economyDay{lags: newLagTracker()}
	if d.naiveBefore, err = naiveRead(ctx, base, rig.src); err != nil {
		return fmt.Errorf("naive read before the day: %w", err)
	}
	conn, err := pgx.Connect(ctx, rig.db.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n})
	defer insp.Close()
	if d.sw, err = stats(ctx, base); err != nil {
		return err
	}
	w, err := e.startRole("worker", rig.cfgPath, rig.db, "worker-economy")
	if err != nil {
		return err
	}
	defer w.stop()
	sch, err := e.startRole("scheduler", rig.cfgPath, rig.db, "scheduler-economy")
	if err != nil {
		return err
	}
	defer sch.stop()
	if err := e.warmUp(ctx, &d, rig, conn, insp, w); err != nil {
		return err
	}
	if err := e.liveDay(ctx, &d, base, conn, insp, w, sch); err != nil {
		return err
	}
	if d.s1, err = stats(ctx, base); err != nil {
		return err
	}
	if d.naiveAfter, err = naiveRead(ctx, base, rig.src); err != nil {
		return fmt.Errorf("naive read after the day: %w", err)
	}
	return e.economyReport(ctx, &d, rig.db, conn)
}

// economyDay is what workload 5 measures: the naive reads around the day,
// demo-upstream's statistics at its start (sw), after the warm-up (s0) and
// at the end (s1), and the changes' way into Postgres.
type economyDay struct {
	naiveBefore, naiveAfter map[string]readCost
	sw, s0, s1              upstreamStats
	warmTook, elapsed       time.Duration
	lags                    *lagTracker
}

// warmUp waits, before the day, for the first full syncs and the probes
// that learn each resource's validator. On a loaded machine the first syncs
// of 5 × 10,000 records take a minute or more, a large share of a
// compressed day where a real day's full sync is a small one. The day's
// full sync is counted instead as one full read per resource, the cost
// naiveRead measured.
func (e *env) warmUp(ctx context.Context, d *economyDay, rig *rig, conn *pgx.Conn, insp *asynq.Inspector, w *proc) error {
	warm := time.Now()
	if err := waitFor(ctx, 10*time.Minute, 250*time.Millisecond, "the first full syncs and validators", func() (bool, error) {
		if err := w.exited(); err != nil {
			return false, err
		}
		// A delta or rolling_hash probe keeps no validator: its resource
		// is warm once synced.
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM sync_state WHERE last_full_sync_at IS NOT NULL
			AND (etag || last_modified || probe_hash <> '' OR resource = ANY($1)) AND candidate_at IS NULL`,
			readingProbes(rig.src)).Scan(&n); err != nil {
			return false, err
		}
		return n == len(dayResources) && queuesIdle(insp), nil
	}); err != nil {
		return err
	}
	d.warmTook = time.Since(warm)
	var err error
	d.s0, err = stats(ctx, rig.up.base)
	return err
}

// liveDay makes the day's changes, one real second at a time, while the
// lag tracker watches them arrive; then it stops the scheduler, lets the
// last fetches finish and stops the worker.
func (e *env) liveDay(ctx context.Context, d *economyDay, base string, conn *pgx.Conn, insp *asynq.Inspector, w, sch *proc) error {
	stopWatching := d.lags.watch(ctx, conn)
	defer stopWatching()
	began := time.Now()
	if err := e.makeDayChanges(ctx, d.lags, base, w, sch); err != nil {
		return err
	}
	// The day is over: stop scheduling, let the last fetches finish.
	if err := sch.stop(); err != nil {
		return err
	}
	if err := waitFor(ctx, time.Minute, 100*time.Millisecond, "the queues to drain", func() (bool, error) {
		return queuesIdle(insp), nil
	}); err != nil {
		return err
	}
	if err := w.stop(); err != nil {
		return err
	}
	d.elapsed = time.Since(began)
	if err := stopWatching(); err != nil {
		return fmt.Errorf("watch changes arrive: %w", err)
	}
	return d.lags.poll(ctx, conn) // what arrived in the drain
}

// makeDayChanges makes dayChanges' changes upstream, one second of the
// compressed day per real second, and hands each changed id to lags.
func (e *env) makeDayChanges(ctx context.Context, lags *lagTracker, base string, w, sch *proc) error {
	daySeconds := int(e.cfg.Day / time.Second)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for s := range daySeconds {
		for _, m := range dayChanges(s, daySeconds, e.cfg.DayRecords) {
			at := time.Now()
			changed, err := mutateIDs(ctx, base, m)
			if err != nil {
				return err
			}
			lags.add(m["resource"].(string), append(changed.Created, changed.Updated...), at)
		}
		if err := w.exited(); err != nil {
			return err
		}
		if err := sch.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// economyCost is the day's cost on both sides, in total and per resource.
type economyCost struct {
	naiveReq, naiveBytes    float64
	tReq, tBytes, fullReads float64
	per                     []string // each resource's line of the note
}

// dayCost adds up what tidemark spent in the day, plus one full read per
// resource for the day's full sync, and what the naive poller would have
// spent over ticks intervals.
func dayCost(d *economyDay, ticks float64) economyCost {
	var c economyCost
	for _, r := range dayResources {
		nr := ticks * float64(d.naiveBefore[r].requests+d.naiveAfter[r].requests) / 2
		nb := ticks * float64(d.naiveBefore[r].bytes+d.naiveAfter[r].bytes) / 2
		c.naiveReq += nr
		c.naiveBytes += nb
		s1, s0 := d.s1.Resources[r], d.s0.Resources[r]
		tr := s1.Requests - s0.Requests
		tb := s1.BodyBytes - s0.BodyBytes
		full := d.naiveBefore[r] // the day's full sync
		c.fullReads += float64(full.requests)
		c.tReq += float64(tr + full.requests)
		c.tBytes += float64(tb + full.bytes)
		c.per = append(c.per, fmt.Sprintf("%s %s req / %s in the day {%s} + full sync %s req / %s (naive %s req / %s)", r, thousands(tr), mib(tb),
			statusDelta(s1.ByStatus, s0.ByStatus), thousands(full.requests), mib(full.bytes), thousands(int64(nr)), mib(int64(nb))))
	}
	return c
}

// economyReport is workload 5's row and notes.
func (e *env) economyReport(ctx context.Context, d *economyDay, db *database, conn *pgx.Conn) error {
	day := e.cfg.Day
	ticks := float64(day / pollEvery)
	simTick := (24 * time.Hour / time.Duration(ticks)).Round(time.Second)
	c := dayCost(d, ticks)
	reqX, bytesX := c.naiveReq/c.tReq, c.naiveBytes/c.tBytes
	e.report.Rows = append(e.report.Rows, Row{
		ID: "5", Workload: fmt.Sprintf("API economy, compressed day (%s real, 5 resources × %s records, 1000/page, both every %s; tidemark backs off to %s / %s when unchanged)",
			day, thousands(int64(e.cfg.DayRecords)), pollEvery, busyMaxEvery, quietMaxEvery),
		Tidemark: fmt.Sprintf("%s requests, %s", thousands(int64(c.tReq)), mib(int64(c.tBytes))),
		Baseline: fmt.Sprintf("naive poller %s requests, %s", thousands(int64(c.naiveReq)), mib(int64(c.naiveBytes))),
		Ratio:    fmt.Sprintf("%.1fx fewer requests, %.1fx fewer bytes", reqX, bytesX),
		Target:   "≥ 20x requests, ≥ 50x bytes", Met: met(reqX >= 20 && bytesX >= 50),
	})
	e.note("workload 5: day of %s real (%s with the drain); tidemark's count is what it spent in the day plus one full read per resource for the day's full sync; its responses in the day by status {%s}; per resource: %s.",
		day, d.elapsed.Round(time.Second), statusDelta(d.s1.ByStatus, d.s0.ByStatus), strings.Join(c.per, "; "))
	e.note("workload 5 warm-up before the day (not counted: the first full syncs, the first probes and the fetches they asked for, until every resource had a confirmed validator and the queues were idle): %s, %s requests / %s.",
		d.warmTook.Round(time.Second), thousands(d.s0.Requests-d.sw.Requests), mib(d.s0.BodyBytes-d.sw.BodyBytes))
	e.note("workload 5 intervals: each 1 s interval stands for %s of the day. The naive poller re-reads every resource in full every %s (%s of the day); tidemark probes every resource every %s (ticket_sales, inventory_movements and transactions: probe.strategy delta, the delta read is the probe; settlements: a hashed GET of a one-record page; tax_summaries: rolling_hash, one 1000-record page per probe in rotation) and, after unchanged probes, backs off by half as long again each time up to %s (%s of the day) for ticket_sales, inventory_movements and transactions, %s (%s) for settlements and tax_summaries.",
		simTick, pollEvery, simTick, pollEvery, busyMaxEvery, simDur(busyMaxEvery, simTick), quietMaxEvery, simDur(quietMaxEvery, simTick))
	e.note("workload 5 changes: from 07:00 to 23:00 of the day, every interval, transactions 2 creates + 4 updates, ticket_sales 1 create + 2 updates, inventory_movements 1 create; at night one transaction created every 4th interval; settlements one batch of %d creates at 02:00; tax_summaries 1 update of a random summary at 12:00.",
		max(10, e.cfg.DayRecords/100))
	e.note("workload 5 freshness (mutation to the record's new version in Postgres, polled every 250 ms; real time, and in the day's time): %s.",
		d.lags.summary(simTick))
	if err := e.deepChangeNote(ctx, conn, simTick); err != nil {
		return err
	}
	e.requestBoundNote(c, ticks)
	return e.countsNote(ctx, db, d.s1)
}

// requestBoundNote explains the ratio's ceiling. Three resources change in
// every opening-hours interval (07:00 to 23:00, dayChanges): at one request
// each per interval, with the day's full reads, the day costs at least
// this much.
func (e *env) requestBoundNote(c economyCost, ticks float64) {
	floor := 3*ticks*16/24 + c.fullReads
	e.note("workload 5 request bound: a naive full read is about %.1f requests per resource; a delta probe spends 1 per interval, busy or quiet (before probe.strategy delta: 2 per interval in which a busy resource changed, the probe, then the delta read). Three resources change in each of the %.0f opening-hours intervals, so with the day's %.0f full-sync requests tidemark spends at least %.0f requests, and the day's ratio cannot pass about %.1fx however little the night and the quiet resources cost. More would need a busy resource to cost less than one request per interval: probing it less often than the poller reads (trading freshness: probe.every 2s would halve it), or one request that reads several resources' changes.",
		c.naiveReq/ticks/float64(len(dayResources)), ticks*16/24, c.fullReads, floor, c.naiveReq/floor)
}

// countsNote compares the live records in Postgres with the upstream's at
// the end of the day.
func (e *env) countsNote(ctx context.Context, db *database, s1 upstreamStats) error {
	if diff, err := compareCounts(ctx, db, s1); err != nil {
		return err
	} else if diff != "" {
		e.note("workload 5: live record counts in Postgres differ from upstream at the end of the day: %s", diff)
	} else {
		e.note("workload 5: at the end of the day Postgres held as many live records as the upstream for every resource (counts compared; contents are compared by the freshness figures above).")
	}
	return nil
}

// queuesIdle reports whether no task is pending, running or waiting for a
// retry.
func queuesIdle(insp *asynq.Inspector) bool {
	for _, q := range jobs.AllQueues() {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			continue // a queue never used does not exist
		}
		if info.Pending+info.Active+info.Retry > 0 {
			return false
		}
	}
	return true
}

// statusDelta renders the responses by status between two snapshots.
func statusDelta(after, before map[string]int64) string {
	parts := make([]string, 0, len(after))
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			parts = append(parts, fmt.Sprintf("%s: %d", k, d))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// simDur is a real duration in the compressed day's time.
func simDur(d, simTick time.Duration) time.Duration {
	return time.Duration(float64(simTick) * d.Seconds() / pollEvery.Seconds()).Round(time.Minute)
}

// pendingChange is a change made upstream that has not shown in Postgres yet.
type pendingChange struct {
	id string
	at time.Time
}

// lagTracker watches the day's changes arrive in Postgres: a change has
// arrived once its record's updated_at there (set when tidemark writes a
// new version) is not older than the mutation.
type lagTracker struct {
	mu      sync.Mutex
	pending map[string][]pendingChange // by resource
	lags    map[string][]time.Duration
}

func newLagTracker() *lagTracker {
	return &lagTracker{pending: map[string][]pendingChange{}, lags: map[string][]time.Duration{}}
}

func (l *lagTracker) add(resource string, ids []string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.pending[resource] = append(l.pending[resource], pendingChange{id, at})
	}
}

// watch runs the tracker in the background until the stop it returns is
// called; stop returns run's error, and later calls (a deferred one)
// return the same.
func (l *lagTracker) watch(ctx context.Context, conn *pgx.Conn) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	polled := make(chan error, 1)
	go func() { polled <- l.run(ctx, conn) }()
	return sync.OnceValue(func() error {
		cancel()
		return <-polled
	})
}

// run polls every 250 ms until ctx ends.
func (l *lagTracker) run(ctx context.Context, conn *pgx.Conn) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := l.poll(ctx, conn); err != nil && ctx.Err() == nil {
			return err
		}
	}
}

// poll checks the pending changes once.
func (l *lagTracker) poll(ctx context.Context, conn *pgx.Conn) error {
	l.mu.Lock()
	snapshot := make(map[string][]pendingChange, len(l.pending))
	for r, p := range l.pending {
		snapshot[r] = slices.Clone(p)
	}
	l.mu.Unlock()
	now := time.Now()
	for r, pend := range snapshot {
		if len(pend) == 0 {
			continue
		}
		ids := make([]string, len(pend))
		for i, p := range pend {
			ids[i] = p.id
		}
		rows, err := conn.Query(ctx, `SELECT external_id, updated_at FROM records WHERE resource = $1 AND external_id = ANY($2)`, r, ids)
		if err != nil {
			return err
		}
		written := map[string]time.Time{}
		for rows.Next() {
			var id string
			var at time.Time
			if err := rows.Scan(&id, &at); err != nil {
				rows.Close()
				return err
			}
			written[id] = at
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		l.mu.Lock()
		arrived := map[pendingChange]bool{}
		for _, p := range pend {
			if at, ok := written[p.id]; ok && !at.Before(p.at) {
				arrived[p] = true
				l.lags[r] = append(l.lags[r], now.Sub(p.at))
			}
		}
		l.pending[r] = slices.DeleteFunc(l.pending[r], func(p pendingChange) bool { return arrived[p] })
		l.mu.Unlock()
	}
	return nil
}

// summary renders each resource's lags: median and maximum, and the changes
// still missing.
func (l *lagTracker) summary(simTick time.Duration) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, r := range dayResources {
		lags := slices.Clone(l.lags[r])
		slices.Sort(lags)
		missing := len(l.pending[r])
		if len(lags) == 0 && missing == 0 {
			continue
		}
		part := fmt.Sprintf("%s %d changes", r, len(lags)+missing)
		if len(lags) > 0 {
			p50, top := percentile(lags, 50), lags[len(lags)-1]
			part += fmt.Sprintf(", p50 %.1f s (%s), max %.1f s (%s)", p50.Seconds(), simDur(p50, simTick), top.Seconds(), simDur(top, simTick))
		}
		if missing > 0 {
			part += fmt.Sprintf(", %d not in Postgres at the end of the day", missing)
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

type readCost struct{ requests, bytes int64 }

// naiveRead reads every page of every resource once, without validators,
// and returns what each cost according to demo-upstream's statistics.
func naiveRead(ctx context.Context, base string, src *config.Source) (map[string]readCost, error) {
	client, err := upstream.New(src, upstream.Options{AllowHosts: src.AllowHosts})
	if err != nil {
		return nil, err
	}
	out := map[string]readCost{}
	for _, name := range dayResources {
		res := src.Resource(name)
		s0, err := stats(ctx, base)
		if err != nil {
			return nil, err
		}
		pager := upstream.NewPager(client, res, upstream.Position{Next: upstream.FirstURL(client, res, nil)}, 0)
		for !pager.Done() {
			if _, err := pager.Next(ctx); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		s1, err := stats(ctx, base)
		if err != nil {
			return nil, err
		}
		out[name] = readCost{s1.Requests - s0.Requests, s1.BodyBytes - s0.BodyBytes}
	}
	return out, nil
}

// compareCounts compares live records per resource with the upstream's.
func compareCounts(ctx context.Context, db *database, s upstreamStats) (string, error) {
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var diffs []string
	for _, r := range dayResources {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM records WHERE resource = $1 AND deleted_at IS NULL`, r).Scan(&n); err != nil {
			return "", err
		}
		if want := s.Resources[r].Records; n != want {
			diffs = append(diffs, fmt.Sprintf("%s %d vs %d upstream", r, n, want))
		}
	}
	return strings.Join(diffs, ", "), nil
}

// readingProbes are the resources whose probe keeps no validator: delta
// and rolling_hash probes read the collection itself.
func readingProbes(src *config.Source) []string {
	var out []string
	for _, r := range src.Resources {
		if r.Probe.Strategy == config.ProbeDelta || r.Probe.Strategy == config.ProbeRollingHash {
			out = append(out, r.Name)
		}
	}
	return out
}

// deepChangeNote reports how long tax_summaries' amendment may take to
// show: its rolling_hash probe asks one of the pages the last full read
// recorded per probe, so the worst case is pages × max_every (the
// back-off's ceiling). Before rolling_hash, the hash of a one-record first
// page saw an amendment of the first summary only: any other waited for
// the next daily full sync, never within the day.
func (e *env) deepChangeNote(ctx context.Context, conn *pgx.Conn, simTick time.Duration) error {
	var pages int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM probe_pages WHERE resource = 'tax_summaries'`).Scan(&pages); err != nil {
		return err
	}
	worst := time.Duration(pages) * quietMaxEvery
	e.note("workload 5 deep change: tax_summaries has no change metadata and no count in its envelope; its rolling_hash probe hashes one of its %d pages per probe, so an amendment anywhere shows within %d × max_every = %s real (%s of the day), worst case, at one request per probe (its measured lag is in the freshness note); before (a hash of the one-record first page) an amendment past the first summary waited for the next daily full sync: never within the day.",
		pages, pages, worst, simDur(worst, simTick))
	return nil
}
