package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
)

// partitionsConfig is workload 9's config: accounts, and their items as a
// child resource, one partition per account, read for changed accounts only.
const partitionsConfig = `sources:
  - name: bench
    base_url: %s
    allow_private: true
    max_concurrency: 4
    timeout: 60s
    resources:
      - name: accounts
        path: /accounts
        records: {path: data, id: id}
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 1000}
        full_sync: {every: 24h, detect_deletes: true}
      - name: items
        path: /accounts/{parent.id}/items
        parent: {resource: accounts, changed_only: true}
        records: {path: data, id: id}
        full_sync: {every: 24h, detect_deletes: true}
`

// childrenPerParent is how many items each account holds in workload 9.
const childrenPerParent = 3

// accountsUpstream serves workload 9's accounts and items in-process,
// counting the items requests per account.
type accountsUpstream struct {
	mu       sync.Mutex
	version  []int // per account
	requests map[int]int
	total    atomic.Int64
}

func (u *accountsUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	u.mu.Lock()
	defer u.mu.Unlock()
	var id int
	if _, err := fmt.Sscanf(r.URL.Path, "/accounts/%d/items", &id); err == nil && id < len(u.version) {
		u.requests[id]++
		u.total.Add(1)
		items := make([]map[string]any, childrenPerParent)
		for j := range items {
			items[j] = map[string]any{"id": fmt.Sprintf("%d-%d", id, j), "account": id, "version": u.version[id], "name": strings.Repeat("x", 64)}
		}
		json.NewEncoder(w).Encode(map[string]any{"data": items})
		return
	}
	if r.URL.Path != "/accounts" {
		http.NotFound(w, r)
		return
	}
	from := 0
	fmt.Sscanf(r.URL.Query().Get("starting_after"), "%d", &from)
	if r.URL.Query().Get("starting_after") != "" {
		from++
	}
	to := min(from+1000, len(u.version))
	page := make([]map[string]any, 0, to-from)
	for i := from; i < to; i++ {
		page = append(page, map[string]any{"id": i, "name": fmt.Sprintf("account %d", i), "version": u.version[i]})
	}
	body := map[string]any{"data": page, "next_cursor": nil}
	if to < len(u.version) {
		body["next_cursor"] = fmt.Sprint(to - 1)
	}
	json.NewEncoder(w).Encode(body)
}

// touched is how many accounts' items were read since the last reset, and
// with how many requests.
func (u *accountsUpstream) touched() (accounts, requests int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range u.requests {
		accounts++
		requests += n
	}
	u.requests = map[int]int{}
	return accounts, requests
}

// partitionsWorkload is workload 9: a parent-child sync over Parents
// accounts. The first read of the accounts starts the items' read (a
// partition per account); then 1% of the accounts change, and the items'
// read that follows must touch those only. It measures both reads, the
// state rows, and the worker's peak RSS.
func (e *env) partitionsWorkload(ctx context.Context) error {
	n := e.cfg.Parents
	db, err := createDatabase(ctx, e.cfg.AdminDatabaseURL, "partitions")
	if err != nil {
		return err
	}
	if !e.cfg.Keep {
		defer db.drop(context.WithoutCancel(ctx))
	}
	up := &accountsUpstream{version: make([]int, n), requests: map[int]int{}}
	base, stop, err := serve(up)
	if err != nil {
		return err
	}
	defer stop()
	cfgPath, conf, err := e.writeConfig("partitions.yaml", fmt.Sprintf(partitionsConfig, base))
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	w, err := e.startRole("worker", cfgPath, db, "worker-partitions")
	if err != nil {
		return err
	}
	defer w.stop()
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: e.redis.addr, DB: e.redis.n})
	defer client.Close()
	read := func(what string, want func() (bool, error)) (time.Duration, error) {
		return readAccounts(ctx, client, conf.Sources[0].Resource("accounts"), w, what, want)
	}
	var first, second time.Duration
	if first, err = read("the first parent-child sync", e.itemsSettled(ctx, conn, n*childrenPerParent, 0)); err != nil {
		return err
	}
	accounts1, requests1 := up.touched()
	rows, walk, err := partitionState(ctx, conn)
	if err != nil {
		return err
	}
	changed := max(1, n/100)
	up.mu.Lock()
	for i := 0; i < n; i += n / changed {
		up.version[i]++
	}
	up.mu.Unlock()
	if second, err = read("the 1%-changed sync", e.itemsSettled(ctx, conn, n*childrenPerParent, changed*childrenPerParent)); err != nil {
		return err
	}
	accounts2, requests2 := up.touched()
	rows2, _, err := partitionState(ctx, conn)
	if err != nil {
		return err
	}
	peak := w.peakRSS()
	const limit = 150 << 20
	ok := rows == int64(n) && rows2 == int64(n) && accounts2 == changed && accounts1 == n && walk == 0 && peak < limit
	e.report.Rows = append(e.report.Rows, Row{
		ID: "9", Workload: fmt.Sprintf("parent-child sync, %s parents × %d children, changed_only", thousands(int64(n)), childrenPerParent),
		Tidemark: fmt.Sprintf("first %s (%s partitions read, %s requests); 1%% changed %s (%s read, %s requests); peak RSS %s",
			secs(first), thousands(int64(accounts1)), thousands(int64(requests1)), secs(second), thousands(int64(accounts2)), thousands(int64(requests2)), mib(peak)),
		Baseline: fmt.Sprintf("%s changed parents", thousands(int64(changed))),
		Ratio:    fmt.Sprintf("%s state rows (%s after); %d B of walk checkpoint left", thousands(rows), thousands(rows2), walk),
		Target:   "one row per partition, changed parents only, peak RSS < 150 MB", Met: met(ok),
	})
	e.partitionsNote(n, changed)
	return nil
}

func (e *env) partitionsNote(n, changed int) {
	e.note("workload 9: the first read of the accounts starts the items' read, which walks %s partitions (parents streamed from Postgres %d at a time); after %s accounts change, the accounts' read starts an items read that visits only their partitions.",
		thousands(int64(n)), 500, thousands(int64(changed)))
}

// serve serves h on a free local port until stop.
func serve(h http.Handler) (base string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// readAccounts enqueues a full read of the accounts and waits until want
// (the items' read it starts has settled); it returns how long that took.
func readAccounts(ctx context.Context, client *asynq.Client, res *config.Resource, w *proc, what string, want func() (bool, error)) (time.Duration, error) {
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "bench", Resource: res.Name, Mode: tidemark.RunFull, Trigger: jobs.TriggerManual},
		jobs.FetchOptions(res)...)
	if err != nil {
		return 0, err
	}
	began := time.Now()
	if _, err := client.EnqueueContext(ctx, task); err != nil {
		return 0, err
	}
	err = waitFor(ctx, time.Hour, 100*time.Millisecond, what, func() (bool, error) {
		if err := w.exited(); err != nil {
			return false, err
		}
		return want()
	})
	return time.Since(began), err
}

// itemsSettled is true once no run is running, the items' last run has
// succeeded, n items are live, and updated of them carry a version above 0.
func (e *env) itemsSettled(ctx context.Context, conn *pgx.Conn, n, updated int) func() (bool, error) {
	return func() (bool, error) {
		var running, live, bumped int64
		var status string
		err := conn.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM sync_runs WHERE status = 'running'),
			(SELECT count(*) FROM records WHERE resource = 'items' AND deleted_at IS NULL),
			(SELECT count(*) FROM records WHERE resource = 'items' AND (payload->>'version')::int > 0),
			coalesce((SELECT status FROM sync_runs WHERE resource = 'items' ORDER BY id DESC LIMIT 1), '')`).Scan(&running, &live, &bumped, &status)
		if err != nil {
			return false, err
		}
		if status == "failed" || status == "dead" {
			return false, fmt.Errorf("the items' run %s", status)
		}
		return running == 0 && status == "succeeded" && live == int64(n) && bumped == int64(updated), nil
	}
}

// partitionState counts the items' partition rows and the bytes of the
// resource's walk checkpoint left after the run.
func partitionState(ctx context.Context, conn *pgx.Conn) (rows, walk int64, err error) {
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM sync_partitions WHERE resource = 'items'),
		(SELECT coalesce(pg_column_size(checkpoint), 0) + coalesce(pg_column_size(full_checkpoint), 0) FROM sync_state WHERE resource = 'items')`).Scan(&rows, &walk)
	return rows, walk, err
}
