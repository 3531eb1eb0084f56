package main

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// budgetProxy fronts demo-upstream as an API with a fixed-window budget
// would: budget requests per window, counted from the proxy's start; past
// it, 429. Every answer announces the budget, in the IETF draft's form
// (RateLimit-Remaining, RateLimit-Reset in delta seconds; a 429 also says
// Retry-After) or GitHub's (X-RateLimit-*, Reset in epoch seconds; a 429
// has no Retry-After, as GitHub's primary rate limit has none).
type budgetProxy struct {
	srv    *httptest.Server
	budget int
	window time.Duration
	epoch  bool // GitHub's headers, else the IETF draft's

	mu      sync.Mutex
	began   time.Time
	current int64 // index of the current window
	used    int   // requests let through in it
	served  int
	limited int   // 429s
	tally   []int // requests served per window, for the log
}

func newBudgetProxy(t *testing.T, upstreamAddr string, budget int, window time.Duration, epoch bool) *budgetProxy {
	t.Helper()
	target, err := url.Parse("http://" + upstreamAddr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &budgetProxy{budget: budget, window: window, epoch: epoch, began: time.Now()}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remaining, end, ok := p.take(time.Now())
		p.announce(w.Header(), remaining, end)
		if !ok {
			if !p.epoch { // GitHub's primary limit sends no Retry-After: only X-RateLimit-Reset says when
				w.Header().Set("Retry-After", strconv.Itoa(ceilSeconds(time.Until(end))))
			}
			http.Error(w, `{"error":"API rate limit exceeded"}`, http.StatusTooManyRequests)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// take spends one request of the window at now, if any is left, and
// returns what remains and when the window ends.
func (p *budgetProxy) take(now time.Time) (remaining int, end time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	idx := int64(now.Sub(p.began) / p.window)
	if idx != p.current {
		p.current, p.used = idx, 0
	}
	end = p.began.Add(time.Duration(idx+1) * p.window)
	if p.used >= p.budget {
		p.limited++
		return 0, end, false
	}
	p.used++
	p.served++
	for int64(len(p.tally)) <= idx {
		p.tally = append(p.tally, 0)
	}
	p.tally[idx]++
	return p.budget - p.used, end, true
}

// announce writes the budget headers. Resets are rounded up, as an
// upstream must so that no client comes back before the window ends.
func (p *budgetProxy) announce(h http.Header, remaining int, end time.Time) {
	if p.epoch {
		h.Set("X-RateLimit-Limit", strconv.Itoa(p.budget))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(int64(math.Ceil(float64(end.UnixNano())/1e9)), 10))
		return
	}
	h.Set("RateLimit-Limit", strconv.Itoa(p.budget))
	h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(time.Until(end))))
}

func (p *budgetProxy) counts() (served, limited int, tally []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served, p.limited, append([]int(nil), p.tally...)
}

func ceilSeconds(d time.Duration) int {
	return max(int(math.Ceil(d.Seconds())), 0)
}

// budgetRun is what one fleet met: requests served and 429s per source,
// and how long it took to sync everything.
type budgetRun struct {
	served, limited map[string]int
	tally           map[string][]int
	took            time.Duration
}

// budgetScenario is an upstream budget and the fleet's demand on it.
type budgetScenario struct {
	name      string
	budget    int // requests per 5 s window, per source
	resources int // per source, each read in full: 30 pages of 20 records
	inFlight  int // the sources' max_concurrency
	latency   time.Duration
}

const (
	budgetWindow   = 5 * time.Second
	budgetRecords  = 600 // per resource
	budgetPage     = 20  // records per page: 30 pages a read
	budgetFleetLen = 3   // worker processes
)

// runBudgetFleet starts budgetFleetLen worker processes over two sources
// with their own budget (source "ietf" announcing it in the IETF draft's
// headers, "github" in GitHub's), asks for a full read of every resource,
// and waits until all have succeeded.
func runBudgetFleet(t *testing.T, sc budgetScenario, headers string) budgetRun {
	_, upBin := binaries(t)
	upAddr := freeAddr(t)
	start(t, "demo-upstream", nil, upBin, "--addr", upAddr, "--records", strconv.Itoa(budgetRecords), "--latency", sc.latency.String())
	waitTCP(t, upAddr)
	proxies := map[string]*budgetProxy{
		"ietf":   newBudgetProxy(t, upAddr, sc.budget, budgetWindow, false),
		"github": newBudgetProxy(t, upAddr, sc.budget, budgetWindow, true),
	}
	var b strings.Builder
	b.WriteString("sources:\n")
	for _, name := range []string{"ietf", "github"} {
		// No rate_limit: the upstream's announced budget is all tidemark knows.
		fmt.Fprintf(&b, "  - name: %s\n    base_url: %s\n    allow_private: true\n    max_concurrency: %d\n    rate_limit_headers: %s\n    resources:\n",
			name, proxies[name].srv.URL, sc.inFlight, headers)
		for i := range sc.resources {
			fmt.Fprintf(&b, `      - name: r%d
        path: /v1/ticket_sales
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: %d}
        probe: {strategy: none, every: 1h}
        full_sync: {every: 24h, detect_deletes: false}
`, i, budgetPage)
		}
	}
	conf := filepath.Join(t.TempDir(), "tidemark.yaml")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newLimFleet(t, conf)
	var metricsAddrs []string
	for i := range budgetFleetLen {
		addr := freeAddr(t)
		metricsAddrs = append(metricsAddrs, addr)
		f.start(fmt.Sprintf("worker-%d", i), "worker", "--fetch-concurrency", strconv.Itoa(2*sc.resources/budgetFleetLen+1),
			"--metrics-addr", addr)
	}
	began := time.Now()
	for _, src := range []string{"ietf", "github"} {
		for i := range sc.resources {
			f.command("sync", fmt.Sprintf("%s/r%d", src, i), "--full")
		}
	}
	want := 2 * sc.resources
	limWait(t, 120*time.Second, "every resource read in full", func() (bool, string) {
		var n int
		f.st.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE status = 'succeeded'`).Scan(&n)
		return n >= want, fmt.Sprintf("%d of %d reads succeeded", n, want)
	})
	run := budgetRun{served: map[string]int{}, limited: map[string]int{}, tally: map[string][]int{}, took: time.Since(began)}
	for name, p := range proxies {
		run.served[name], run.limited[name], run.tally[name] = p.counts()
	}
	var records int
	f.st.DBForTests().Raw(`SELECT count(*) FROM records WHERE deleted_at IS NULL`).Scan(&records)
	if records != want*budgetRecords {
		t.Errorf("%d records, want %d", records, want*budgetRecords)
	}
	f.assertNoFailures()
	if headers == "honour" {
		assertRemainingGauge(t, metricsAddrs)
	}
	return run
}

// assertRemainingGauge checks that the workers export the budget the
// upstreams announced: tidemark_ratelimit_remaining for both sources, from
// one worker or another.
func assertRemainingGauge(t *testing.T, addrs []string) {
	t.Helper()
	var all strings.Builder
	for _, addr := range addrs {
		res, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Errorf("scrape worker at %s: %v", addr, err)
			continue
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		all.Write(body)
	}
	for _, src := range []string{"ietf", "github"} {
		if series := `tidemark_ratelimit_remaining{source="` + src + `"}`; !strings.Contains(all.String(), series) {
			t.Errorf("no worker exports %s", series)
		}
	}
}

// TestFleetRateLimitHeaders: three worker processes read resources of two
// sources (30 pages each) whose upstreams allow a budget per 5 s window,
// answer 429 beyond it, and announce the budget (IETF draft headers with
// delta-seconds resets and a Retry-After on the 429; GitHub's with epoch
// resets and none). With the headers honoured (the default), the fleet
// slows down before the budget runs out: at most 2 requests of either
// source meet a 429 (none, unless a response from the previous window
// races a new one). With rate_limit_headers: ignore, only a 429's
// Retry-After (or the default 1 s cooldown) holds the fleet back, and the
// upstream answers 429s. Both finish the sync.
//
// Scenario "busy" has up to 16 requests in flight (max_concurrency): more
// than the fixed low mark of 10 remaining, so slowing down only from there
// could overrun the budget with the requests already on the wire; twice
// max_concurrency (32) is the low mark instead.
func TestFleetRateLimitHeaders(t *testing.T) {
	t.Parallel()
	const allowed429 = 2
	scenarios := []budgetScenario{
		{name: "30 per 5s", budget: 30, resources: 3, inFlight: 4},
		{name: "busy 100 per 5s", budget: 100, resources: 8, inFlight: 16, latency: 100 * time.Millisecond},
	}
	for _, sc := range scenarios {
		for _, headers := range []string{"honour", "ignore"} {
			t.Run(sc.name+"/"+headers, func(t *testing.T) {
				t.Parallel()
				run := runBudgetFleet(t, sc, headers)
				t.Logf("%s, rate_limit_headers: %s: synced in %s; requests served %v, per 5 s window %v; 429s %v",
					sc.name, headers, run.took.Round(100*time.Millisecond), run.served, run.tally, run.limited)
				for src, n := range run.limited {
					switch {
					case headers == "honour" && n > allowed429:
						t.Errorf("source %s: %d requests met a 429 with the budget headers honoured, want at most %d", src, n, allowed429)
					case headers == "ignore" && n == 0:
						// Proves the upstream enforces its budget, so that
						// "no 429s" above means something.
						t.Errorf("source %s: no 429 with the headers ignored: the budget was never reached", src)
					}
				}
			})
		}
	}
}
