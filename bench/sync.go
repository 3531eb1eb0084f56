package bench

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
)

// syncConfig is workloads 1-3's config: ticket_sales only, 1000 records a
// page, as docs/demo-upstream.md and examples/demo.yaml describe it.
const syncConfig = `sources:
  - name: bench
    base_url: %s
    allow_private: true
    headers: {Accept: application/json}
    max_concurrency: 4
    timeout: 60s
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        priority: critical
        freshness: 1h
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 1000}
        probe: {strategy: etag, method: HEAD, every: 1h}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h, detect_deletes: true}
`

// syncRun is one measured full sync.
type syncRun struct {
	wall       time.Duration // enqueue to the run's row saying succeeded
	runTook    time.Duration // the run row's own started_at..finished_at
	fetched    int64
	created    int64
	updated    int64
	requests   int64
	recIns     int64 // records: n_tup_ins delta
	recUpd     int64 // records: n_tup_upd delta
	auditIns   int64 // record_changes: n_tup_ins delta
	allWritten int64 // every user table: ins+upd+del delta
	workerCPU  time.Duration
	pgCPU      time.Duration
	peakRSS    int64
	wal        int64 // bytes of WAL Postgres wrote meanwhile (the whole server)
}

func (e *env) writeConfig(name, body string) (string, *config.Config, error) {
	path := filepath.Join(e.tmp, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return "", nil, err
	}
	conf, err := config.Load(path)
	if err != nil {
		return "", nil, fmt.Errorf("bench config %s: %w", name, err)
	}
	return path, conf, nil
}

// startRole runs `tidemark ROLE` on db and the bench's Redis database.
func (e *env) startRole(role, cfgPath string, db *database, name string, extra ...string) (*proc, error) {
	args := append([]string{role, "--config", cfgPath, "--database-url", db.url, "--redis-url", e.redis.url(), "--log-level", "info"}, extra...)
	return start(e.tidemark(), args, nil, e.tmp, name)
}

// syncRep is one repetition of workloads 1-3, each on a fresh database: the
// first sync, COPY of the same rows, an unchanged resync and, after 1% of
// the records changed upstream, a changed resync (the last two only when
// their workloads are asked for).
type syncRep struct {
	first, same, changed syncRun
	copyTook             time.Duration
	copyWAL              int64
	changes              int
}

func (e *env) syncWorkloads(ctx context.Context) error {
	n := e.cfg.Records
	up, err := startUpstream(ctx, e.upstream(), e.tmp, "upstream-sync", "--records", fmt.Sprint(n), "--seed", "1")
	if err != nil {
		return err
	}
	defer up.stop()
	cfgPath, conf, err := e.writeConfig("sync.yaml", fmt.Sprintf(syncConfig, up.base))
	if err != nil {
		return err
	}
	res := conf.Sources[0].Resource("ticket_sales")
	// The sides of each ratio alternate within a repetition (first sync,
	// COPY, unchanged, changed; then again), so the machine's load drifts
	// over all of them alike.
	reps := make([]syncRep, e.cfg.Reps)
	for i := range reps {
		if reps[i], err = e.syncRepetition(ctx, cfgPath, res, up, i); err != nil {
			return fmt.Errorf("repetition %d of %d: %w", i+1, len(reps), err)
		}
	}
	e.firstSyncRow(reps)
	if e.cfg.want(2) || e.cfg.want(3) {
		e.resyncRows(reps)
	}
	if e.cfg.want(7) {
		// The worst of the repetitions: a peak is a bound, not a rate.
		largest := slices.MaxFunc(reps, func(a, b syncRep) int { return cmp.Compare(a.first.peakRSS, b.first.peakRSS) })
		return e.memoryWorkload(ctx, largest.first)
	}
	return nil
}

// syncRepetition measures repetition i of workloads 1-3 on a database of
// its own (the previous repetition's is dropped: a first sync needs an empty
// one).
func (e *env) syncRepetition(ctx context.Context, cfgPath string, res *config.Resource, up *upstreamProc, i int) (syncRep, error) {
	var r syncRep
	n := e.cfg.Records
	db, err := createDatabase(ctx, e.cfg.AdminDatabaseURL, "sync")
	if err != nil {
		return r, err
	}
	if !e.cfg.Keep {
		defer db.drop(context.WithoutCancel(ctx))
	}
	if r.first, err = e.fullSync(ctx, cfgPath, db, res, fmt.Sprintf("worker-first-%d", i+1)); err != nil {
		return r, fmt.Errorf("first sync: %w", err)
	}
	if r.first.fetched != int64(n) || r.first.created != int64(n) {
		return r, fmt.Errorf("first sync fetched %d and created %d records, want %d", r.first.fetched, r.first.created, n)
	}
	if r.copyTook, r.copyWAL, err = copyBaseline(ctx, db, e.tmp); err != nil {
		return r, fmt.Errorf("COPY baseline: %w", err)
	}
	if !e.cfg.want(2) && !e.cfg.want(3) {
		return r, nil
	}
	if r.same, err = e.fullSync(ctx, cfgPath, db, res, fmt.Sprintf("worker-unchanged-%d", i+1)); err != nil {
		return r, fmt.Errorf("unchanged resync: %w", err)
	}
	if !e.cfg.want(3) {
		return r, nil
	}
	r.changes = max(1, n/100)
	if err := mutate(ctx, up.base, map[string]any{"resource": "ticket_sales", "updates": r.changes}); err != nil {
		return r, err
	}
	if r.changed, err = e.fullSync(ctx, cfgPath, db, res, fmt.Sprintf("worker-changed-%d", i+1)); err != nil {
		return r, fmt.Errorf("1%% changed resync: %w", err)
	}
	return r, nil
}

// walls is the wall time of one sync of each repetition.
func walls(reps []syncRep, of func(syncRep) syncRun) spread {
	ds := make([]time.Duration, len(reps))
	for i, r := range reps {
		ds[i] = of(r).wall
	}
	return durations(ds)
}

// firstSyncRow is workload 1's row and note: the first sync against COPY.
func (e *env) firstSyncRow(reps []syncRep) {
	n := e.cfg.Records
	first := walls(reps, func(r syncRep) syncRun { return r.first })
	copies := make([]time.Duration, len(reps))
	for i, r := range reps {
		copies[i] = r.copyTook
	}
	cp := durations(copies)
	rate := func(s spread) string { return thousands(int64(float64(n) / s.median())) }
	ofCopy := pairRatios(first, cp)
	e.report.Rows = append(e.report.Rows, Row{
		ID: "1", Workload: fmt.Sprintf("first full sync, %s records, 1000/page", thousands(int64(n))),
		Tidemark: fmt.Sprintf("%s, %s rec/s", first.format(inSecs), rate(first)),
		Baseline: fmt.Sprintf("COPY %s, %s rec/s", cp.format(inSecs), rate(cp)),
		Ratio:    ofCopy.format(inTimes) + " of COPY time",
		Target:   "≤ 1.5x (goal 1.3x)", Met: met(ofCopy.median() <= 1.5),
	})
	m := reps[first.medianAt()]
	f := m.first
	e.note("workload 1, the median repetition: the run row says %s (enqueue to completion %s), %d requests; worker CPU %s, Postgres CPU %s (all postgres processes), worker peak RSS %s; rows written: records +%d ins, record_changes +%d ins, all tables %d (sync_seen, sync_runs, outbox included); write-ahead log %s, against COPY's %s (%s).",
		secs(f.runTook), secs(f.wall), f.requests, secs(f.workerCPU), secs(f.pgCPU), mib(f.peakRSS), f.recIns, f.auditIns, f.allWritten,
		mib(f.wal), mib(m.copyWAL), ratio(float64(f.wal), float64(m.copyWAL)))
}

// resyncRows are workloads 2 and 3's rows and notes: the unchanged resync
// against the first sync, the 1% changed one against the unchanged one.
func (e *env) resyncRows(reps []syncRep) {
	first := walls(reps, func(r syncRep) syncRun { return r.first })
	same := walls(reps, func(r syncRep) syncRun { return r.same })
	var written int64 // the most any repetition wrote: the target is none in each
	for _, r := range reps {
		written = max(written, r.same.recIns+r.same.recUpd)
	}
	faster := pairRatios(first, same)
	e.report.Rows = append(e.report.Rows, Row{
		ID: "2", Workload: "unchanged full resync",
		Tidemark: fmt.Sprintf("%s, %d records rows written", same.format(inSecs), written),
		Baseline: fmt.Sprintf("first sync %s", first.format(inSecs)),
		Ratio:    faster.format(inTimes) + " faster",
		Target:   "0 rows, ≥ 3x faster", Met: met(written == 0 && faster.median() >= 3),
	})
	s := reps[same.medianAt()].same
	e.note("workload 2, the median repetition: worker CPU %s, Postgres CPU %s, worker peak RSS %s; tuples written in all tables %d (sync_seen's seen-set of the pass and its delete included); write-ahead log %s.",
		secs(s.workerCPU), secs(s.pgCPU), mib(s.peakRSS), s.allWritten, mib(s.wal))
	if !e.cfg.want(3) {
		return
	}
	changed := walls(reps, func(r syncRep) syncRun { return r.changed })
	exact := true // each repetition wrote its changes and nothing else
	rows, audit := make(spread, len(reps)), make(spread, len(reps))
	for i, r := range reps {
		w := r.changed.recIns + r.changed.recUpd
		exact = exact && w == int64(r.changes) && r.changed.updated == int64(r.changes)
		rows[i], audit[i] = float64(w), float64(r.changed.auditIns)
	}
	changes := int64(reps[0].changes)
	e.report.Rows = append(e.report.Rows, Row{
		ID: "3", Workload: fmt.Sprintf("1%% changed full resync (%s updated upstream)", thousands(changes)),
		Tidemark: fmt.Sprintf("%s, %s records rows + %s audit rows", changed.format(inSecs), rows.format(inCount), audit.format(inCount)),
		Baseline: fmt.Sprintf("unchanged resync %s", same.format(inSecs)),
		Ratio:    pairRatios(changed, same).format(inTimes) + " of unchanged",
		Target:   fmt.Sprintf("rows = %s (+ audit) in each", thousands(changes)), Met: met(exact),
	})
	c := reps[changed.medianAt()].changed
	e.note("workload 3, the median repetition: run counted %d updated; worker CPU %s, Postgres CPU %s.", c.updated, secs(c.workerCPU), secs(c.pgCPU))
}

// memoryWorkload (7): the worker's peak RSS during the first sync against its
// peak during a sync a tenth the size, in a database and upstream of its
// own. A worker holds a few pages at a time, whatever the resource's size:
// the two should be about the same.
func (e *env) memoryWorkload(ctx context.Context, large syncRun) error {
	n := max(1, e.cfg.Records/10)
	rig, err := e.startRig(ctx, "memory", func(base string) string {
		return fmt.Sprintf(syncConfig, base)
	}, "--records", fmt.Sprint(n), "--seed", "1")
	if err != nil {
		return err
	}
	defer rig.close(ctx)
	small, err := e.fullSync(ctx, rig.cfgPath, rig.db, rig.src.Resource("ticket_sales"), "worker-memory")
	if err != nil {
		return fmt.Errorf("%s-record sync: %w", thousands(int64(n)), err)
	}
	const limit = 150 << 20
	growth := float64(large.peakRSS) / float64(small.peakRSS)
	e.report.Rows = append(e.report.Rows, Row{
		ID: "7", Workload: "worker peak RSS during a full sync",
		Tidemark: fmt.Sprintf("%s records: %s (the highest of %d)", thousands(int64(e.cfg.Records)), mib(large.peakRSS), e.cfg.Reps),
		Baseline: fmt.Sprintf("%s records: %s", thousands(int64(n)), mib(small.peakRSS)),
		Ratio:    fmt.Sprintf("%.2fx", growth),
		Target:   "< 150 MB and ≤ 1.2x", Met: met(large.peakRSS < limit && small.peakRSS < limit && growth <= 1.2),
	})
	return nil
}

// fullSync starts a worker, enqueues one full fetch of res, waits for its
// run to finish, stops the worker (its backends exit, which flushes their
// table statistics) and returns what it measured.
func (e *env) fullSync(ctx context.Context, cfgPath string, db *database, res *config.Resource, name string) (syncRun, error) {
	var r syncRun
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return r, err
	}
	defer conn.Close(ctx)
	var lastRun int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM sync_runs`).Scan(&lastRun); err != nil {
		return r, err
	}
	before, err := tableStats(ctx, db)
	if err != nil {
		return r, err
	}
	w, err := e.startRole("worker", cfgPath, db, name)
	if err != nil {
		return r, err
	}
	defer w.stop()
	// The worker is up once it has ensured its sync_state rows.
	if err := waitFor(ctx, time.Minute, 20*time.Millisecond, "worker start", func() (bool, error) {
		if err := w.exited(); err != nil {
			return false, err
		}
		var k int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM sync_state`).Scan(&k)
		return k > 0, err
	}); err != nil {
		return r, err
	}
	if err := e.measureFullFetch(ctx, conn, w, res, lastRun, &r); err != nil {
		return r, err
	}
	if err := w.stop(); err != nil {
		return r, err
	}
	e.logf("%s: %s in %s (run row %s)", name, thousands(r.fetched), secs(r.wall), secs(r.runTook))
	after, err := waitStats(ctx, db, before)
	if err != nil {
		return r, err
	}
	r.countWrites(before, after)
	return r, nil
}

// measureFullFetch enqueues one full fetch of res to the running worker w
// and waits for the first full run after lastRun to end, measuring its
// wall time, the CPU of the worker and of Postgres, the worker's peak RSS
// and the write-ahead log written meanwhile.
func (e *env) measureFullFetch(ctx context.Context, conn *pgx.Conn, w *proc, res *config.Resource, lastRun int64, r *syncRun) error {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n})
	defer client.Close()
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "bench", Resource: res.Name, Mode: jobs.ModeFull, Trigger: jobs.TriggerManual}, jobs.FetchOptions(res)...)
	if err != nil {
		return err
	}
	cpu0, pg0 := w.cpu(), postgresCPU()
	wal0, err := walLSN(ctx, conn)
	if err != nil {
		return err
	}
	began := time.Now()
	if _, err := client.EnqueueContext(ctx, task); err != nil {
		return fmt.Errorf("enqueue fetch: %w", err)
	}
	var status, runErr string
	err = waitFor(ctx, 2*time.Hour, 50*time.Millisecond, "the full sync's run", func() (bool, error) {
		if err := w.exited(); err != nil {
			return false, err
		}
		err := conn.QueryRow(ctx, `
			SELECT status, coalesce(error, ''), coalesce(finished_at - started_at, '0'), records_fetched, records_created, records_updated, http_requests
			FROM sync_runs WHERE id > $1 AND kind = 'full' AND status <> 'running' ORDER BY id LIMIT 1`, lastRun).
			Scan(&status, &runErr, &r.runTook, &r.fetched, &r.created, &r.updated, &r.requests)
		if err == pgx.ErrNoRows {
			return false, nil
		}
		return err == nil, err
	})
	r.wall = time.Since(began)
	r.workerCPU, r.pgCPU, r.peakRSS = w.cpu()-cpu0, postgresCPU()-pg0, w.peakRSS()
	if err != nil {
		return err
	}
	if r.wal, err = walSince(ctx, conn, wal0); err != nil {
		return err
	}
	if status != "succeeded" {
		return fmt.Errorf("run ended %s: %s (worker log %s)", status, runErr, w.log)
	}
	return nil
}

// countWrites fills in the tuples the sync wrote, from the table
// statistics before and after it.
func (r *syncRun) countWrites(before, after map[string]tupStats) {
	r.recIns = after["records"].ins - before["records"].ins
	r.recUpd = after["records"].upd - before["records"].upd
	r.auditIns = after["record_changes"].ins - before["record_changes"].ins
	for t, a := range after {
		b := before[t]
		r.allWritten += a.ins + a.upd + a.del - b.ins - b.upd - b.del
	}
}

type tupStats struct{ ins, upd, del int64 }

func tableStats(ctx context.Context, db *database) (map[string]tupStats, error) {
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables`)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_user_tables: %w", err)
	}
	out := map[string]tupStats{}
	for rows.Next() {
		var name string
		var s tupStats
		if err := rows.Scan(&name, &s.ins, &s.upd, &s.del); err != nil {
			return nil, err
		}
		out[name] = s
	}
	return out, rows.Err()
}

// waitStats reads the table statistics once they have settled: the worker's
// backends flush theirs when they exit, which they do shortly after the
// worker closes its pool, so wait until two reads a second apart agree.
func waitStats(ctx context.Context, db *database, before map[string]tupStats) (map[string]tupStats, error) {
	var last map[string]tupStats
	var out map[string]tupStats
	err := waitFor(ctx, 30*time.Second, time.Second, "table statistics to settle", func() (bool, error) {
		cur, err := tableStats(ctx, db)
		if err != nil {
			return false, err
		}
		same := last != nil && len(cur) == len(last)
		for k, v := range cur {
			if last[k] != v {
				same = false
			}
		}
		last, out = cur, cur
		return same, nil
	})
	return out, err
}

// copyBaseline copies the synced records out to a file, then times COPY of
// that file into an empty table shaped like records (LIKE ... INCLUDING
// ALL: same columns, defaults, primary key).
func copyBaseline(ctx context.Context, db *database, dir string) (took time.Duration, wal int64, err error) {
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	path := filepath.Join(dir, "records.copy")
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	if _, err := conn.PgConn().CopyTo(ctx, f, `COPY records TO STDOUT`); err != nil {
		return 0, 0, fmt.Errorf("copy records out: %w", err)
	}
	if _, err := conn.Exec(ctx, `DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE records INCLUDING ALL)`); err != nil {
		return 0, 0, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return 0, 0, err
	}
	wal0, err := walLSN(ctx, conn)
	if err != nil {
		return 0, 0, err
	}
	began := time.Now()
	_, err = conn.PgConn().CopyFrom(ctx, f, `COPY bench_copy FROM STDIN`)
	took = time.Since(began)
	if err != nil {
		return 0, 0, fmt.Errorf("copy into bench_copy: %w", err)
	}
	if wal, err = walSince(ctx, conn, wal0); err != nil {
		return 0, 0, err
	}
	if _, err := conn.Exec(ctx, `DROP TABLE bench_copy`); err != nil {
		return 0, 0, err
	}
	return took, wal, nil
}

// walLSN is Postgres' current write-ahead log position.
func walLSN(ctx context.Context, conn *pgx.Conn) (string, error) {
	var lsn string
	err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn)
	return lsn, err
}

// walSince is how many bytes of write-ahead log Postgres wrote since lsn:
// the volume of what was written, full-page images included.
func walSince(ctx context.Context, conn *pgx.Conn, lsn string) (int64, error) {
	var n int64
	err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`, lsn).Scan(&n)
	return n, err
}
