package sim_test

import (
	"context"
	"flag"
	"fmt"
	"os"
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
	list := []uint64{*only} // a replay: the one seed
	if *only == 0 {
		list = list[:0]
		for s := range n {
			list = append(list, uint64(s+1))
		}
	}
	results := runOnLanes(t, list, func(ctx context.Context, lane *sim.Lane, seed uint64) sim.Result {
		r, sc := sim.RunPartitionSeed(ctx, lane, seed)
		if len(r.Violations) > 0 {
			t.Errorf("partition seed %d broke %d invariant(s); replay: go test -run '^TestSimPartitions$' ./internal/sim -args -sim.seed=%d\n  %s\n  %s",
				seed, len(r.Violations), seed, sc.Describe(), violations(r))
		}
		return r
	})
	began := time.Now()
	var all []sim.Result
	for r := range results {
		all = append(all, r)
	}
	fmt.Fprint(os.Stderr, sim.Table(all, time.Since(began)))
}
