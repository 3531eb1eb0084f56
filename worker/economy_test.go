package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
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
// resource at the same interval, and prints the ratio. The safety-net full
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
	for i := range steps {
		mutate(demoapi.Mutation{Resource: "ticket_sales", Creates: 20, Updates: 100})
		mutate(demoapi.Mutation{Resource: "transactions", Creates: 20, Updates: 80})
		mutate(demoapi.Mutation{Resource: "inventory_movements", Creates: 30})
		if i == steps/2 {
			mutate(demoapi.Mutation{Resource: "settlements", Creates: 200}) // the nightly batch
		}
		if i == steps*3/4 {
			mutate(demoapi.Mutation{Resource: "tax_summaries", Updates: 1, IDs: []string{"tax_000001"}})
		}
		advance()
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
		reqs, bytes := fullReadCost(t, up, conf.Sources[0], res)
		reads := int64(steps * step / max(res.Probe.Every.D(), step))
		naiveRequests += reads * reqs
		naiveBytes += reads * bytes
		t.Logf("%-20s tidemark %5d requests, naive %6d (%d full reads of %d requests)", name, spent, reads*reqs, reads, reqs)
	}
	var runs []struct {
		Resource, Kind, Trigger string
		N, Requests             int64
	}
	f.store.DB().Raw(`SELECT resource, kind, trigger, count(*) AS n, sum(http_requests) AS requests FROM sync_runs
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
	p := upstream.NewPager(c, res, upstream.FirstURL(c, res, nil))
	for !p.Done() {
		if _, err := p.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	after := up.Stats().Resources[res.Name]
	return after.Requests - before.Requests, after.BodyBytes - before.BodyBytes
}
