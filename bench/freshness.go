package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// freshEvery is workload 6's probe interval; max_every is pinned to it so
// adaptive back-off never stretches the interval while a resource is quiet
// between changes.
const freshEvery = time.Second

// freshnessConfig is workload 6's config: the four demo resources that
// change in place or by appends, each probed every second with the
// strategy its API offers (ETag by HEAD, weak ETag, Last-Modified, content
// hash), deltas where the API has them.
const freshnessConfig = `sources:
  - name: bench
    base_url: %[1]s
    allow_private: true
    headers: {Accept: application/json}
    max_concurrency: 8
    timeout: 30s
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        priority: critical
        freshness: 30s
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 1000}
        probe: {strategy: etag, method: HEAD, every: %[2]s, max_every: %[2]s}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h, detect_deletes: true}
      - name: inventory_movements
        path: /v1/inventory_movements
        priority: critical
        freshness: 30s
        records: {path: "", id: id}
        pagination: {style: link, limit_param: limit, limit: 1000}
        probe: {strategy: etag, method: GET, every: %[2]s, max_every: %[2]s}
        delta: {param: after, field: id, format: number}
        full_sync: {every: 24h, detect_deletes: true}
      - name: transactions
        path: /api/transactions
        priority: critical
        freshness: 30s
        records: {path: transactions, id: txn_id}
        pagination: {style: page, page_param: page, start: 1, limit_param: per_page, limit: 1000, total_field: total}
        probe: {strategy: last_modified, method: GET, every: %[2]s, max_every: %[2]s}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 2s}
        full_sync: {every: 24h, detect_deletes: true}
      - name: settlements
        path: /settlements
        priority: critical
        freshness: 30s
        records: {path: results, id: settlement.id}
        pagination: {style: offset, offset_param: offset, limit_param: limit, limit: 1000, total_field: count}
        probe: {strategy: hash, method: GET, every: %[2]s, max_every: %[2]s}
        full_sync: {every: 24h, detect_deletes: true}
`

// freshChange is one change workload 6 makes: a record updated (or, for
// the append-only inventory, created) upstream, named by its id so that
// only an event listing that id can match it.
type freshChange struct {
	resource string
	id       string
	sent     time.Time // just before the POST /_mutate: the latency counts from here
	arrived  time.Time // its data.updated event read off the SSE stream; zero if none
	runID    int64
	commit   time.Time // the event's "at": when its page was committed
}

// freshMutation is what each resource's changes look like: updates of
// records never changed before in the run (ids from the prefix), or creates.
type freshMutation struct {
	resource string
	prefix   string // "ts_%06d"; empty: create a record instead
}

var freshMutations = []freshMutation{
	{"ticket_sales", "ts_%06d"},
	{"inventory_movements", ""},
	{"transactions", "txn_%06d"},
	{"settlements", "stl_%06d"},
}

// freshRecords is each resource's size upstream: more than the changes any
// one resource gets, so every update hits a record no earlier change touched.
const freshRecords = 1000

// freshnessWorkload (6): the time from a change upstream to its
// data.updated event on the server's SSE stream, with every resource
// probed every second, over 200 changes made on four resources at once at
// random moments. A change is matched to the first event that lists its
// record's id: that event's run wrote the changed record, which it can only
// have read after the change was made, so no event of an earlier read can
// count (and each change touches a record no other change touches).
func (e *env) freshnessWorkload(ctx context.Context) error {
	rig, err := e.startRig(ctx, "fresh", func(base string) string {
		return fmt.Sprintf(freshnessConfig, base, freshEvery)
	}, "--records", fmt.Sprint(freshRecords), "--seed", "1")
	if err != nil {
		return err
	}
	defer rig.close(ctx)
	fl, err := e.startFreshFleet(rig)
	if err != nil {
		return err
	}
	defer fl.stop()
	conn, err := pgx.Connect(ctx, rig.db.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// The initial full syncs first: their events are not what is measured.
	if err := waitFor(ctx, 2*time.Minute, 100*time.Millisecond, "the initial full syncs", func() (bool, error) {
		if err := fl.alive(); err != nil {
			return false, err
		}
		var k int
		err := conn.QueryRow(ctx, `SELECT count(DISTINCT resource) FROM sync_runs WHERE kind = 'full' AND status = 'succeeded'`).Scan(&k)
		return k == len(freshMutations), err
	}); err != nil {
		return err
	}
	stream, err := openEvents(ctx, "http://"+fl.addr, fl.token, fl.alive)
	if err != nil {
		return err
	}
	defer stream.close()
	return e.timeChanges(ctx, rig.up.base, conn, stream, fl.alive)
}

// freshFleet is workload 6's tidemark: a server (whose SSE stream is what
// is timed), a worker and a scheduler.
type freshFleet struct {
	addr, token string
	procs       []*proc // the server, the worker, the scheduler
	upstream    *proc
}

// startFreshFleet starts the server with a fresh admin token on a free
// address, then the worker and the scheduler. On an error it stops what it
// started.
func (e *env) startFreshFleet(rig *rig) (*freshFleet, error) {
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	fl := &freshFleet{addr: addr, token: token, upstream: rig.up.proc}
	// The token goes by environment, not argv, so no process listing shows it.
	srv, err := start(e.tidemark(), []string{"server", "--config", rig.cfgPath, "--database-url", rig.db.url, "--redis-url", e.redis.url(), "--log-level", "info", "--addr", addr},
		[]string{"TIDEMARK_ADMIN_TOKEN=" + token}, e.tmp, "server-fresh")
	if err != nil {
		return nil, err
	}
	fl.procs = append(fl.procs, srv)
	for _, role := range []string{"worker", "scheduler"} {
		p, err := e.startRole(role, rig.cfgPath, rig.db, role+"-fresh")
		if err != nil {
			fl.stop()
			return nil, err
		}
		fl.procs = append(fl.procs, p)
	}
	return fl, nil
}

// alive reports the first of the fleet's processes (or the upstream) that
// has exited.
func (fl *freshFleet) alive() error {
	for _, p := range fl.procs {
		if err := p.exited(); err != nil {
			return err
		}
	}
	return fl.upstream.exited()
}

// stop stops the scheduler, the worker and the server, in that order (the
// upstream is the rig's to stop).
func (fl *freshFleet) stop() {
	for _, p := range slices.Backward(fl.procs) {
		p.stop()
	}
}

// timeChanges makes the workload's changes while the bare poller polls
// alongside, waits for their events and reports both sides.
func (e *env) timeChanges(ctx context.Context, base string, conn *pgx.Conn, stream *eventStream, alive func() error) error {
	loadBefore := loadAvg()
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	bare := startBarePoll(pollCtx, base)
	changes, err := makeChanges(ctx, base, e.cfg.FreshChanges, alive)
	if err != nil {
		return err
	}
	// Every change's event, or 10 s past the last change (ten probe
	// intervals) for the stragglers.
	last := changes[len(changes)-1].sent
	_ = waitFor(ctx, time.Until(last.Add(10*time.Second)), 50*time.Millisecond, "every change's event", func() (bool, error) {
		if err := stream.failed(); err != nil {
			return false, err
		}
		return stream.matchAll(changes) == len(changes), alive()
	})
	if err := alive(); err != nil {
		return err
	}
	if err := stream.failed(); err != nil {
		return err
	}
	fig, err := freshFiguresOf(changes, stream.matchAll(changes))
	if err != nil {
		return err
	}
	// The baseline's first poll after the last change is in two intervals after it.
	if err := sleepUntil(ctx, last.Add(2*freshEvery)); err != nil {
		return err
	}
	stopPoll()
	e.freshnessReport(ctx, conn, changes, fig, bare, loadBefore)
	return nil
}

// freshFigures are tidemark's side of workload 6.
type freshFigures struct {
	lat         []time.Duration // the matched changes', sorted
	matched     int
	p50, p99All time.Duration
}

// freshFiguresOf computes tidemark's latencies. A change that never
// arrived counts as slower than any that did: the p99 is taken over all
// changes, the missing ones at +Inf.
func freshFiguresOf(changes []*freshChange, matched int) (freshFigures, error) {
	lat := latencies(changes)
	if len(lat) == 0 {
		return freshFigures{}, fmt.Errorf("none of %d changes reached the SSE stream within 10s", len(changes))
	}
	f := freshFigures{lat: lat, matched: matched, p50: percentile(lat, 50), p99All: percentile(lat, 99)}
	if matched < len(changes) {
		all := append(slices.Clone(lat), slices.Repeat([]time.Duration{time.Duration(1<<63 - 1)}, len(changes)-matched)...)
		f.p99All = percentile(all, 99)
	}
	return f, nil
}

// freshnessReport is workload 6's row and notes.
func (e *env) freshnessReport(ctx context.Context, conn *pgx.Conn, changes []*freshChange, f freshFigures, bare *barePoll, loadBefore string) {
	bareLat, bareMissed := bare.latencies(changes)
	bare99 := percentile(bareLat, 99)
	target := freshEvery + 250*time.Millisecond
	span := changes[len(changes)-1].sent.Sub(changes[0].sent)
	e.report.Rows = append(e.report.Rows, Row{
		ID: "6", Workload: fmt.Sprintf("freshness: change upstream → data.updated on SSE, %d changes on %d resources in %s, probe every %s (max_every %s)", len(changes), len(freshMutations), span.Round(time.Second), freshEvery, freshEvery),
		Tidemark: fmt.Sprintf("p50 %s, p99 %s, max %s (%d/%d arrived)", ms(f.p50), ms(f.p99All), ms(f.lat[len(f.lat)-1]), f.matched, len(changes)),
		Baseline: fmt.Sprintf("bare %s poller: p50 %s, p99 %s (%d missed)", freshEvery, ms(percentile(bareLat, 50)), ms(bare99), bareMissed),
		Ratio:    fmt.Sprintf("p99 = interval + %s (%s of the bare poller's p99)", ms(f.p99All-freshEvery), ratio(f.p99All.Seconds(), bare99.Seconds())),
		Target:   "p99 ≤ interval + 250 ms", Met: met(f.matched == len(changes) && f.p99All <= target),
	})
	e.note("workload 6: a change is timed from just before its POST /_mutate to the arrival of the first data.updated event listing its record's id (each change touches a record no other change touches, so that event's run read the record after the change); per resource p50/p99: %s; load average (1 min) %s before the changes, %s after.", perResource(changes), loadBefore, loadAvg())
	if b, err := freshBreakdown(ctx, conn, changes); err != nil {
		e.note("workload 6: no stage breakdown: %v", err)
	} else {
		e.note("workload 6: where the time goes (p50 / p99 per stage): %s.", b)
	}
}

// makeChanges makes n changes, spread over the resources of
// freshMutations, each resource's changes one at a time at random gaps
// (uniform 0.2-2.2 s, mean 1.2 s), so their moments are unrelated to the
// probe schedule. It returns them in the order they were sent.
func makeChanges(ctx context.Context, base string, n int, alive func() error) ([]*freshChange, error) {
	var (
		mu   sync.Mutex
		out  []*freshChange
		errs = make(chan error, len(freshMutations))
		wg   sync.WaitGroup
	)
	for i, m := range freshMutations {
		count := n / len(freshMutations)
		if i < n%len(freshMutations) {
			count++
		}
		wg.Go(func() {
			for k := range count {
				gap := 200*time.Millisecond + time.Duration(mrand.Int64N(int64(2*time.Second)))
				select {
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				case <-time.After(gap):
				}
				if err := alive(); err != nil {
					errs <- err
					return
				}
				c, err := makeChange(ctx, base, m, k)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				out = append(out, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *freshChange) int { return a.sent.Compare(b.sent) })
	return out, nil
}

// makeChange makes the k-th change of m: an update of the k-th record from
// the top (the initial sync's events list only the first ids of each page,
// and a match needs an event after the change anyway), or a create.
func makeChange(ctx context.Context, base string, m freshMutation, k int) (*freshChange, error) {
	body := map[string]any{"resource": m.resource, "creates": 1}
	if m.prefix != "" {
		body = map[string]any{"resource": m.resource, "updates": 1, "ids": []string{fmt.Sprintf(m.prefix, freshRecords-k)}}
	}
	c := &freshChange{resource: m.resource, sent: time.Now()}
	got, err := mutateIDs(ctx, base, body)
	if err != nil {
		return nil, err
	}
	ids := append(got.Created, got.Updated...)
	if len(ids) != 1 {
		return nil, fmt.Errorf("POST /_mutate %v changed %d records, want 1", body, len(ids))
	}
	c.id = ids[0]
	return c, nil
}

type mutated struct {
	Created []string `json:"created"`
	Updated []string `json:"updated"`
	Deleted []string `json:"deleted"`
}

// mutateIDs is mutate that also returns the ids demo-upstream changed.
func mutateIDs(ctx context.Context, base string, body map[string]any) (mutated, error) {
	var m mutated
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/_mutate", bytes.NewReader(b))
	if err != nil {
		return m, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m, fmt.Errorf("POST %s/_mutate: %w", base, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("POST %s/_mutate %s: %s: %s", base, b, resp.Status, out)
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return m, fmt.Errorf("POST %s/_mutate: answer %q: %w", base, out, err)
	}
	return m, nil
}

// eventStream reads data.updated events off GET /api/events and notes when
// each listed id first arrived.
type eventStream struct {
	resp *http.Response
	mu   sync.Mutex
	seen map[string]arrival // resource + "/" + id
	err  error
}

type arrival struct {
	at     time.Time
	runID  int64
	commit time.Time
}

// openEvents subscribes to the server's event stream with the admin token,
// retrying while the server starts.
func openEvents(ctx context.Context, base, token string, alive func() error) (*eventStream, error) {
	var resp *http.Response
	err := waitFor(ctx, time.Minute, 100*time.Millisecond, "the server's event stream", func() (bool, error) {
		if err := alive(); err != nil {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/events", nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil // not listening yet
		}
		if r.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == http.StatusUnauthorized {
				return false, fmt.Errorf("GET /api/events: %s: %s", r.Status, b)
			}
			return false, nil
		}
		resp = r
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	s := &eventStream{resp: resp, seen: map[string]arrival{}}
	go s.read()
	return s, nil
}

func (s *eventStream) read() {
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	typ := ""
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			typ = ""
			continue
		}
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			typ = v
			continue
		}
		v, ok := strings.CutPrefix(line, "data: ")
		if !ok || typ != "data.updated" {
			continue
		}
		at := time.Now()
		var d struct {
			Resource string    `json:"resource"`
			RunID    int64     `json:"run_id"`
			IDs      []string  `json:"ids"`
			At       time.Time `json:"at"`
		}
		if err := json.Unmarshal([]byte(v), &d); err != nil {
			s.fail(fmt.Errorf("data.updated event %q: %w", v, err))
			return
		}
		s.mu.Lock()
		for _, id := range d.IDs {
			k := d.Resource + "/" + id
			if _, ok := s.seen[k]; !ok {
				s.seen[k] = arrival{at: at, runID: d.RunID, commit: d.At}
			}
		}
		s.mu.Unlock()
	}
	s.fail(fmt.Errorf("event stream ended: %v", sc.Err()))
}

func (s *eventStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// matchAll fills in the arrival of every change whose id an event listed
// after the change was sent, and returns how many have one.
func (s *eventStream) matchAll(changes []*freshChange) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range changes {
		if a, ok := s.seen[c.resource+"/"+c.id]; ok && a.at.After(c.sent) {
			c.arrived, c.runID, c.commit = a.at, a.runID, a.commit
		}
		if !c.arrived.IsZero() {
			n++
		}
	}
	return n
}

func (s *eventStream) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *eventStream) close() { s.resp.Body.Close() }

// latencies are the matched changes' latencies, sorted.
func latencies(changes []*freshChange) []time.Duration {
	var out []time.Duration
	for _, c := range changes {
		if !c.arrived.IsZero() {
			out = append(out, c.arrived.Sub(c.sent))
		}
	}
	slices.Sort(out)
	return out
}

// percentile is the nearest-rank p-th percentile of sorted durations: the
// smallest value at least p% of them do not exceed. 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100 + 0.999999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func ms(d time.Duration) string {
	if d == time.Duration(1<<63-1) {
		return "never"
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func perResource(changes []*freshChange) string {
	var parts []string
	for _, m := range freshMutations {
		var sub []*freshChange
		for _, c := range changes {
			if c.resource == m.resource {
				sub = append(sub, c)
			}
		}
		lat := latencies(sub)
		parts = append(parts, fmt.Sprintf("%s %s / %s (%d/%d)", m.resource, ms(percentile(lat, 50)), ms(percentile(lat, 99)), len(lat), len(sub)))
	}
	return strings.Join(parts, ", ")
}

// freshBreakdown splits each matched change's latency into stages from the
// run rows and the event: waiting for the probe that found it (change →
// probe start, the probe row being the newest of its resource started
// before the fetch), the probe and the wait for its fetch (→ fetch start),
// the fetch up to the commit of the page with the change (the event's
// "at") and the outbox's way to the SSE client (→ arrival).
func freshBreakdown(ctx context.Context, conn *pgx.Conn, changes []*freshChange) (string, error) {
	stages := [4][]time.Duration{}
	early := 0
	for _, c := range changes {
		if c.arrived.IsZero() || c.runID == 0 {
			continue
		}
		var fetchStart, probeStart time.Time
		err := conn.QueryRow(ctx, `
			SELECT f.started_at, coalesce(
				(SELECT max(p.started_at) FROM sync_runs p
				 WHERE p.source = f.source AND p.resource = f.resource AND p.kind = 'probe' AND p.started_at <= f.started_at),
				f.started_at)
			FROM sync_runs f WHERE f.id = $1`, c.runID).Scan(&fetchStart, &probeStart)
		if err != nil {
			return "", fmt.Errorf("run %d: %w", c.runID, err)
		}
		if fetchStart.Before(c.sent) {
			early++
		}
		for i, d := range []time.Duration{probeStart.Sub(c.sent), fetchStart.Sub(probeStart), c.commit.Sub(fetchStart), c.arrived.Sub(c.commit)} {
			stages[i] = append(stages[i], d)
		}
	}
	var parts []string
	for i, name := range []string{"change → probe start", "probe start → fetch start", "fetch start → commit", "commit → SSE"} {
		slices.Sort(stages[i])
		parts = append(parts, fmt.Sprintf("%s %s / %s", name, ms(percentile(stages[i], 50)), ms(percentile(stages[i], 99))))
	}
	return fmt.Sprintf("%s; %d of %d events came from a fetch that had begun before its change was made and read the changed page after it", strings.Join(parts, ", "), early, len(stages[0])), nil
}

// randomToken is a fresh admin token for the bench's server.
func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// barePoll is workload 6's baseline, run alongside tidemark on the same
// upstream: a bare loop in the bench process that asks each resource every
// freshEvery whether it changed (the validator or body tidemark's probe
// looks at) and does nothing else. Its latency is the wait for the next
// poll plus one request on this machine under this load: what any 1 s
// poller pays before it has written or announced anything.
type barePoll struct {
	mu    sync.Mutex
	polls map[string][]poll
}

type poll struct {
	start, end time.Time
	changed    bool // the answer differs from the previous poll's
}

// barePollURLs is what the baseline polls per resource: the page the new
// or changed records are on, read for its ETag, Last-Modified or body.
var barePollURLs = map[string]struct{ method, path string }{
	"ticket_sales":        {http.MethodHead, "/v1/ticket_sales?limit=1000"},
	"inventory_movements": {http.MethodGet, fmt.Sprintf("/v1/inventory_movements?limit=1000&after=%d", freshRecords)},
	"transactions":        {http.MethodGet, "/api/transactions?page=1&per_page=1000"},
	"settlements":         {http.MethodGet, "/settlements?offset=0&limit=1000"},
}

// startBarePoll polls until ctx is done.
func startBarePoll(ctx context.Context, base string) *barePoll {
	b := &barePoll{polls: map[string][]poll{}}
	for res, u := range barePollURLs {
		go func() {
			t := time.NewTicker(freshEvery)
			defer t.Stop()
			prev := ""
			for {
				start := time.Now()
				v, err := answer(ctx, u.method, base+u.path)
				if err == nil {
					b.mu.Lock()
					b.polls[res] = append(b.polls[res], poll{start: start, end: time.Now(), changed: prev != "" && v != prev})
					b.mu.Unlock()
					prev = v
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	return b
}

// answer is what a poll compares: the ETag, else Last-Modified, else the body.
func answer(ctx context.Context, method, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	if v := resp.Header.Get("ETag"); v != "" {
		return v, nil
	}
	return string(body), nil
}

// latencies are the baseline's latencies of the changes, sorted: a change
// is seen by the first poll that began after it was made. missed counts
// changes whose first poll after them found nothing new (there should be
// none) or that no poll followed.
func (b *barePoll) latencies(changes []*freshChange) (lat []time.Duration, missed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range changes {
		polls := b.polls[c.resource]
		i, _ := slices.BinarySearchFunc(polls, c.sent, func(p poll, t time.Time) int {
			if p.start.After(t) {
				return 1
			}
			return -1
		})
		if i == len(polls) || !polls[i].changed {
			missed++
			continue
		}
		lat = append(lat, polls[i].end.Sub(c.sent))
	}
	slices.Sort(lat)
	return lat, missed
}
