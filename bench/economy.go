package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/upstream"
)

// economyConfig is workload 5's config: the five demo resources as
// examples/demo.yaml has them, except that every resource is probed at the
// same interval the naive poller polls at (no adaptive back-off), pages are
// 1000 records (the fewest requests for the poller), and the daily full sync
// is the initial one.
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
        probe: {strategy: etag, method: HEAD, every: %[2]s}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h, detect_deletes: true}
      - name: inventory_movements
        path: /v1/inventory_movements
        priority: critical
        freshness: 30s
        records: {path: "", id: id}
        pagination: {style: link, limit_param: limit, limit: 1000}
        probe: {strategy: etag, method: GET, every: %[2]s}
        delta: {param: after, field: id, format: number}
        full_sync: {every: 24h, detect_deletes: true}
      - name: transactions
        path: /api/transactions
        priority: critical
        freshness: 30s
        records: {path: transactions, id: txn_id}
        pagination: {style: page, page_param: page, start: 1, limit_param: per_page, limit: 1000}
        probe: {strategy: last_modified, method: GET, every: %[2]s}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h, detect_deletes: true}
      - name: settlements
        path: /settlements
        priority: low
        freshness: 10m
        records: {path: results, id: settlement.id}
        pagination: {style: offset, offset_param: offset, limit_param: limit, limit: 1000}
        probe: {strategy: hash, method: GET, every: %[2]s}
        full_sync: {every: 24h, detect_deletes: true}
      - name: tax_summaries
        path: /v2/tax/summaries
        priority: low
        freshness: 1h
        records: {path: result.items, id: id}
        pagination: {style: next_url, next_field: next_url, limit_param: per_page, limit: 1000}
        probe: {strategy: hash, method: GET, every: %[2]s}
        full_sync: {every: 24h, detect_deletes: true}
`

// pollEvery is both tidemark's probe interval and the naive poller's.
const pollEvery = time.Second

// dayChanges is the compressed day's change schedule, per real second:
// transactions and ticket sales busy all day, inventory appended steadily,
// settlements in one nightly batch (at two thirds of the day), tax
// summaries amended once.
func dayChanges(second, daySeconds, records int) []map[string]any {
	out := []map[string]any{
		{"resource": "transactions", "creates": 2, "updates": 4},
		{"resource": "ticket_sales", "creates": 1, "updates": 2},
		{"resource": "inventory_movements", "creates": 1},
	}
	if second == daySeconds*2/3 {
		out = append(out, map[string]any{"resource": "settlements", "creates": max(10, records/100)})
	}
	if second == daySeconds/2 {
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
func (e *env) economyWorkload(ctx context.Context) error {
	day := e.cfg.Day
	db, err := createDatabase(ctx, e.cfg.AdminDatabaseURL, "economy")
	if err != nil {
		return err
	}
	if !e.cfg.Keep {
		defer db.drop(context.WithoutCancel(ctx))
	}
	up, err := startUpstream(ctx, e.upstream(), e.tmp, "upstream-economy", "--records", fmt.Sprint(e.cfg.DayRecords), "--seed", "1")
	if err != nil {
		return err
	}
	defer up.stop()
	cfgPath, conf, err := e.writeConfig("economy.yaml", fmt.Sprintf(economyConfig, up.base, pollEvery))
	if err != nil {
		return err
	}
	src := &conf.Sources[0]

	naiveBefore, err := naiveRead(ctx, up.base, src)
	if err != nil {
		return fmt.Errorf("naive read before the day: %w", err)
	}
	s0, err := stats(ctx, up.base)
	if err != nil {
		return err
	}
	w, err := e.startRole("worker", cfgPath, db, "worker-economy")
	if err != nil {
		return err
	}
	defer w.stop()
	sch, err := e.startRole("scheduler", cfgPath, db, "scheduler-economy")
	if err != nil {
		return err
	}
	defer sch.stop()

	daySeconds := int(day / time.Second)
	began := time.Now()
	tick := time.NewTicker(time.Second)
	for s := range daySeconds {
		for _, m := range dayChanges(s, daySeconds, e.cfg.DayRecords) {
			if err := mutate(ctx, up.base, m); err != nil {
				tick.Stop()
				return err
			}
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
	tick.Stop()
	// The day is over: stop scheduling, let the last fetches finish.
	if err := sch.stop(); err != nil {
		return err
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n})
	defer insp.Close()
	if err := waitFor(ctx, time.Minute, 100*time.Millisecond, "the queues to drain", func() (bool, error) {
		for _, q := range jobs.AllQueues() {
			info, err := insp.GetQueueInfo(q)
			if err != nil {
				continue // a queue never used does not exist
			}
			if info.Pending+info.Active+info.Retry > 0 {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	if err := w.stop(); err != nil {
		return err
	}
	elapsed := time.Since(began)
	s1, err := stats(ctx, up.base)
	if err != nil {
		return err
	}
	naiveAfter, err := naiveRead(ctx, up.base, src)
	if err != nil {
		return fmt.Errorf("naive read after the day: %w", err)
	}

	ticks := float64(day / pollEvery)
	var naiveReq, naiveBytes float64
	var per []string
	for _, r := range dayResources {
		nr := ticks * float64(naiveBefore[r].requests+naiveAfter[r].requests) / 2
		nb := ticks * float64(naiveBefore[r].bytes+naiveAfter[r].bytes) / 2
		naiveReq += nr
		naiveBytes += nb
		tr := s1.Resources[r].Requests - s0.Resources[r].Requests
		tb := s1.Resources[r].BodyBytes - s0.Resources[r].BodyBytes
		per = append(per, fmt.Sprintf("%s %s req / %s (naive %s req / %s)", r, thousands(tr), mib(tb), thousands(int64(nr)), mib(int64(nb))))
	}
	tReq := float64(s1.Requests - s0.Requests)
	tBytes := float64(s1.BodyBytes - s0.BodyBytes)
	reqX, bytesX := naiveReq/tReq, naiveBytes/tBytes
	e.report.Rows = append(e.report.Rows, Row{
		ID: "5", Workload: fmt.Sprintf("API economy, compressed day (%s real, 5 resources × %s records, every %s)", day, thousands(int64(e.cfg.DayRecords)), pollEvery),
		Tidemark: fmt.Sprintf("%s requests, %s", thousands(int64(tReq)), mib(int64(tBytes))),
		Baseline: fmt.Sprintf("naive poller %s requests, %s", thousands(int64(naiveReq)), mib(int64(naiveBytes))),
		Ratio:    fmt.Sprintf("%.1fx fewer requests, %.1fx fewer bytes", reqX, bytesX),
		Target:   "≥ 20x requests, ≥ 50x bytes", Met: met(reqX >= 20 && bytesX >= 50),
	})
	status := make([]string, 0, len(s1.ByStatus))
	for k, v := range s1.ByStatus {
		status = append(status, fmt.Sprintf("%s: %d", k, v-s0.ByStatus[k]))
	}
	sort.Strings(status)
	e.note("workload 5: day of %s real (%s with the drain), the initial full sync of each resource included; tidemark's responses by status {%s}; per resource: %s.",
		day, elapsed.Round(time.Second), strings.Join(status, ", "), strings.Join(per, "; "))
	e.note("workload 5 changes per real second: transactions 2 creates + 4 updates, ticket_sales 1 create + 2 updates, inventory_movements 1 create; settlements one batch of %d creates at 2/3 of the day; tax_summaries 1 update at 1/2. Each 1 s interval stands for %s of a real day.",
		max(10, e.cfg.DayRecords/100), (24 * time.Hour / time.Duration(ticks)).Round(time.Second))
	if diff, err := compareCounts(ctx, db, s1); err != nil {
		return err
	} else if diff != "" {
		e.note("workload 5: live records in Postgres differ from upstream at the end of the day: %s", diff)
	} else {
		e.note("workload 5: at the end of the day Postgres held exactly the upstream's live records of every resource.")
	}
	return nil
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
		pager := upstream.NewPager(client, res, upstream.FirstURL(client, res, nil))
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
