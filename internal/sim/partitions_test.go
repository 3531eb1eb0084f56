package sim_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark/internal/sim"
)

var partitionSeeds = flag.Int("sim.partition_seeds", 0, "run partition seeds 1..N instead of the fixed set")

// TestSimPartitions drives partitioned resources (parent-child and static
// partitions) through each seed's mutations, mid-read changes and crashes,
// and fails with the seed when an invariant breaks.
func TestSimPartitions(t *testing.T) {
	n := 12
	if *partitionSeeds > 0 {
		n = *partitionSeeds
	}
	if testing.Short() {
		n = min(n, 4)
	}
	work := make(chan uint64)
	results := make(chan sim.Result)
	var wg sync.WaitGroup
	for range min(*lanes, n) {
		lane := newLane(t)
		wg.Go(func() {
			for seed := range work {
				r, sc := sim.RunPartitionSeed(context.Background(), lane, seed)
				if len(r.Violations) > 0 {
					t.Errorf("partition seed %d broke %d invariant(s); replay: go test -run '^TestSimPartitions$' ./internal/sim -args -sim.seed=%d\n  %s\n  %s",
						seed, len(r.Violations), seed, sc.Describe(), violations(r))
				}
				results <- r
			}
		})
	}
	go func() {
		for s := range n {
			if *only != 0 {
				work <- *only // a replay: the one seed
				break
			}
			work <- uint64(s + 1)
		}
		close(work)
		wg.Wait()
		close(results)
	}()
	began := time.Now()
	var all []sim.Result
	for r := range results {
		all = append(all, r)
	}
	fmt.Fprint(os.Stderr, sim.Table(all, time.Since(began)))
}
