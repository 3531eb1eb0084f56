package sim_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/internal/sim"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/store"
)

var (
	seeds  = flag.Int("sim.seeds", 0, "run seeds 1..N instead of the fixed set (make sim SEEDS=N)")
	first  = flag.Int("sim.from", 1, "the first seed of -sim.seeds")
	only   = flag.Uint64("sim.seed", 0, "replay this one seed (make sim SEED=N)")
	lanes  = flag.Int("sim.lanes", 3, "seeds run side by side, each lane on its own Postgres and Redis database")
	logs   = flag.Bool("sim.log", false, "show the fleet's logs (with -v)")
	window = flag.Bool("sim.window", false, "with -sim.seeds: only seeds whose reads walk delta windows")
	style  = flag.String("sim.styles", "", "with -sim.seeds: run the first N seeds from -sim.from whose style (shape included: graphql, last_record) is one of these, comma-separated")
)

// fixedSeeds run in make test: every pagination style several times over
// (a seed's style is seed mod 6), with the probe strategies, delta formats
// and faults their scenarios draw. A few hundred steps in all. 95 and 285
// are rolling_hash probes whose recorded continuations expire or are
// single-use (they wedged the probe once).
var fixedSeeds = []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 95, 285}

// TestSim drives the real worker and scheduler, on real Postgres and
// Redis, against the simulated upstream of each seed, and fails with the
// seed's replay command when an invariant breaks.
func TestSim(t *testing.T) {
	list := fixedSeeds
	switch {
	case *only != 0:
		list = []uint64{*only}
	case *seeds > 0:
		list = seedList(*first, *seeds, *style, *window)
	}
	if testing.Short() {
		list = list[:min(len(list), 6)]
	}
	results := runOnLanes(t, list, sim.RunSeed)
	began := time.Now()
	var all []sim.Result
	for r := range results {
		all = append(all, r)
		t.Logf("seed %d (%s): converged %t after %d runs, %.2fs; %d requests, %d quarantined, %d violations",
			r.Seed, r.Scenario.Style(), r.Converged, r.Runs, r.Took.Seconds(), r.Requests, r.Quarantined, len(r.Violations))
		if len(r.Violations) > 0 {
			t.Errorf("seed %d broke %d invariant(s); replay: make sim SEED=%d\n  %s\n  %s", r.Seed, len(r.Violations), r.Seed,
				r.Scenario.Describe(), violations(r))
		}
		if *seeds > 0 && len(all)%100 == 0 {
			fmt.Fprintf(os.Stderr, "sim: %d of %d seeds, %s\n", len(all), len(list), time.Since(began).Round(time.Second))
		}
	}
	fmt.Fprint(os.Stderr, sim.Table(all, time.Since(began)))
}

// runOnLanes runs each seed of list on one of at most -sim.lanes lanes and
// sends back each result as it comes.
func runOnLanes(t *testing.T, list []uint64, run func(context.Context, *sim.Lane, uint64) sim.Result) <-chan sim.Result {
	work := make(chan uint64)
	results := make(chan sim.Result)
	var wg sync.WaitGroup
	for range min(*lanes, len(list)) {
		lane := newLane(t)
		wg.Go(func() {
			for seed := range work {
				results <- run(context.Background(), lane, seed)
			}
		})
	}
	go func() {
		for _, s := range list {
			work <- s
		}
		close(work)
		wg.Wait()
		close(results)
	}()
	return results
}

// seedList is n seeds from first on; with styles, the first n whose
// scenario's style is one of them; with windows, whose reads walk delta
// windows.
func seedList(first, n int, styles string, windows bool) []uint64 {
	var list []uint64
	want := strings.Split(styles, ",")
	for s := uint64(first); len(list) < n; s++ {
		sc := sim.NewScenario(s)
		if (styles == "" || slices.Contains(want, sc.Style())) && (!windows || sc.Window > 0) {
			list = append(list, s)
		}
	}
	return list
}

func violations(r sim.Result) string {
	var b strings.Builder
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "%s: %s\n  ", v.Kind, v.Detail)
	}
	return b.String()
}

// newLane gives a lane its own migrated database and Redis database.
func newLane(t *testing.T) *sim.Lane {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := opt.MakeRedisClient().(*redis.Client)
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { insp.Close(); rdb.Close() })
	log := slog.New(slog.DiscardHandler)
	if *logs {
		log = workertest.Logger()
	}
	return &sim.Lane{Store: st, RedisOpt: opt, Redis: rdb, Insp: insp, Log: log}
}
