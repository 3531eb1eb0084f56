package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/upstream"
)

// TestAPIEconomy runs a compressed hour against the demo upstream: the
// scheduler's clock moves in 30 s steps while about 1% of the records change
// per simulated minute (ticket sales and transactions busy, inventory
// appended, settlements in one nightly batch, one tax summary amended). It
// compares the requests tidemark made with a naive poller that re-reads every
// resource at the same interval, and prints the ratio. The probes are
// demo.yaml's: one-record pages (probe.limit), backing off to max_every when
// unchanged; the naive poller reads at probe.every. The safety-net full
// sync runs hourly, as it would in production (the demo config's 10 minutes
// are for showing it quickly).
func TestAPIEconomy(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates an hour of scheduling")
	}
	t.Parallel()
	const (
		records = 10000
		step    = 30 * time.Second
		steps   = 120 // one simulated hour
	)
	// One simulated clock for the scheduler and the upstream, so that
	// updated_at, the delta overlap and the probe intervals share a timeline.
	var nowNS atomic.Int64
	nowNS.Store(time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, nowNS.Load()).UTC() }
	advance := func() { nowNS.Add(int64(step)) }
	up := demoapi.New(demoapi.Options{Seed: 9, Records: records, Now: clock})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := demoConfig(t, srv.URL)
	for i := range conf.Sources[0].Resources {
		conf.Sources[0].Resources[i].FullSync.Every = config.Duration(time.Hour)
	}
	f := startFleetWith(t, conf, up)
	sched := scheduler.New(scheduler.Config{Now: clock}, conf, f.store, f.client, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	tick := func() {
		t.Helper()
		if err := sched.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		// The first full reads of 50,000 records and the hourly ones are
		// slow under -race on a busy machine.
		f.waitIdleFor(3 * time.Minute)
	}

	// Warm up: the first full reads, and the probes that learn validators.
	for range 3 {
		tick()
		advance()
	}
	before := up.Stats()

	// 1% of 50,000 records per minute is 250 changes per 30 s step.
	mutate := func(m demoapi.Mutation) {
		t.Helper()
		if _, err := up.Mutate(m); err != nil {
			t.Fatal(err)
		}
	}
	// The busy resources' changes come spread over the step, in 5 bursts
	// 6 s apart, not all in one millisecond: a delta's 2 s overlap then
	// re-reads the last burst, as it re-reads the last 2 s of a real stream
	// of changes, not the whole previous step.
	const bursts = 5
	for i := range steps {
		for range bursts {
			mutate(demoapi.Mutation{Resource: "ticket_sales", Creates: 20 / bursts, Updates: 100 / bursts})
			mutate(demoapi.Mutation{Resource: "transactions", Creates: 20 / bursts, Updates: 80 / bursts})
			mutate(demoapi.Mutation{Resource: "inventory_movements", Creates: 30 / bursts})
			nowNS.Add(int64(step / bursts))
		}
		if i == steps/2 {
			mutate(demoapi.Mutation{Resource: "settlements", Creates: 200}) // the nightly batch
		}
		if i == steps*3/4 {
			mutate(demoapi.Mutation{Resource: "tax_summaries", Updates: 1, IDs: []string{"tax_000001"}})
		}
		tick()
	}
	after := up.Stats()
	spentRequests := after.Requests - before.Requests
	spentBytes := after.BodyBytes - before.BodyBytes

	// The naive poller reads each resource in full at its probe interval
	// (no faster than the step): what one full read costs now, times reads.
	var naiveRequests, naiveBytes int64
	for _, name := range demoapi.Resources {
		res := conf.Sources[0].Resource(name)
		spent := after.Resources[name].Requests - before.Resources[name].Requests
		spentBytes := after.Resources[name].BodyBytes - before.Resources[name].BodyBytes
		reqs, bytes := fullReadCost(t, up, conf.Sources[0], res)
		reads := int64(steps * step / max(res.Probe.Every.D(), step))
		naiveRequests += reads * reqs
		naiveBytes += reads * bytes
		t.Logf("%-20s tidemark %5d requests / %9d bytes, naive %6d / %10d (%d full reads of %d requests)",
			name, spent, spentBytes, reads*reqs, reads*bytes, reads, reqs)
	}
	var runs []struct {
		Resource, Kind, Trigger string
		N, Requests             int64
	}
	f.store.DBForTests().Raw(`SELECT resource, kind, trigger, count(*) AS n, sum(http_requests) AS requests FROM sync_runs
		GROUP BY resource, kind, trigger ORDER BY resource, kind, trigger`).Scan(&runs)
	for _, r := range runs {
		t.Logf("runs: %-20s %-5s %-8s %4d runs %6d requests", r.Resource, r.Kind, r.Trigger, r.N, r.Requests)
	}
	reqRatio := float64(naiveRequests) / float64(spentRequests)
	byteRatio := float64(naiveBytes) / float64(spentBytes)
	t.Logf("compressed hour, %d records per resource: tidemark %d requests / %d body bytes; naive poller %d requests / %d bytes; %.1fx fewer requests, %.1fx fewer bytes",
		records, spentRequests, spentBytes, naiveRequests, naiveBytes, reqRatio, byteRatio)
	fmt.Printf("API economy: %.1fx fewer requests, %.1fx fewer bytes than a naive poller (tidemark %d requests, naive %d)\n",
		reqRatio, byteRatio, spentRequests, naiveRequests)
	if reqRatio < 20 {
		t.Errorf("tidemark made %d requests, the naive poller %d: %.1fx, want at least 20x fewer", spentRequests, naiveRequests, reqRatio)
	}
	f.assertInStep()
}

// fullReadCost reads a resource in full, as a naive poller would, and
// returns the requests and body bytes it took at the upstream.
func fullReadCost(t *testing.T, up *demoapi.Server, src config.Source, res *config.Resource) (requests, bytes int64) {
	t.Helper()
	c, err := upstream.New(&src, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	before := up.Stats().Resources[res.Name]
	p := upstream.NewPager(c, res, upstream.Position{Next: upstream.FirstURL(c, res, nil)}, 0)
	for !p.Done() {
		if _, err := p.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	after := up.Stats().Resources[res.Name]
	return after.Requests - before.Requests, after.BodyBytes - before.BodyBytes
}

// TestProbeReadsOneRecord: demo.yaml's probes ask for a one-record page
// (probe.limit: 1), so a GET probe that finds a change, and every hash
// probe, reads a few hundred bytes instead of a full page. The smaller page
// must still show the changes each resource's probe is there for: any
// change behind a collection-wide ETag or Last-Modified, a settlements
// batch through the envelope's count, an amended first tax summary.
func TestProbeReadsOneRecord(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 11, Records: 250})
	var mu sync.Mutex
	probeBytes := map[string][]int{} // path → body bytes of each one-record request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		up.ServeHTTP(cw, r)
		if q := r.URL.Query(); q.Get("limit") == "1" || q.Get("per_page") == "1" {
			mu.Lock()
			probeBytes[r.URL.Path] = append(probeBytes[r.URL.Path], cw.n)
			mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	f := startFleetWith(t, demoConfig(t, srv.URL), up)
	f.fullSync(0)
	mutations := map[string]demoapi.Mutation{
		"ticket_sales":        {Creates: 1, Updates: 1},
		"inventory_movements": {Creates: 1},
		"transactions":        {Creates: 1, Updates: 1},
		"settlements":         {Creates: 1},
		"tax_summaries":       {Updates: 1, IDs: []string{"tax_000001"}},
	}
	for _, name := range demoapi.Resources {
		func() {
			t := &named{t, name}
			res := f.resource(name)
			if s := res.Probe.Strategy; s == config.ProbeDelta || s == config.ProbeRollingHash {
				return // reads the delta's or the full read's page by design (TestDeltaProbe, TestRollingProbeSeesDeepAmendment)
			}
			if res.Probe.Limit != 1 {
				t.Fatalf("demo.yaml: probe.limit %d, want 1", res.Probe.Limit)
			}
			f.probe(name) // learns the validator: a change, and a fetch
			m := mutations[name]
			m.Resource = name
			changed, err := up.Mutate(m)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			clear(probeBytes)
			mu.Unlock()
			f.probe(name)

			mu.Lock()
			got := slices.Clone(probeBytes[res.Path])
			mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("the probe made %d one-record requests, want 1", len(got))
			}
			if got[0] > 1024 {
				t.Errorf("the probe read %d body bytes, want a one-record page (< 1 KiB)", got[0])
			}
			if res.Probe.Method == http.MethodGet && got[0] == 0 {
				t.Errorf("the GET probe of a changed resource read no body: no 200?")
			}
			if ids := append(changed.Created, changed.Updated...); !f.inStep(name, ids) {
				t.Errorf("the probe missed the change of %v", ids)
			}
		}()
	}
}

// countingWriter counts the body bytes of a response.
type countingWriter struct {
	http.ResponseWriter
	n int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += n
	return n, err
}
