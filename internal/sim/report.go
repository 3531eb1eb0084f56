package sim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Table summarises a set of seeds: how many ran, the violations of each
// kind (all must be 0), and how many runs and seconds convergence took.
func Table(results []Result, took time.Duration) string {
	var b strings.Builder
	byKind := map[string]int{}
	failing := []uint64{}
	var runs []int
	var secs []time.Duration
	quarantined, emptySeeds, empties, notModified := 0, 0, 0, 0
	styles, probes := map[string]int{}, map[string]int{}
	for _, r := range results {
		styles[r.Scenario.Style()]++
		probes[r.Scenario.API.Probe]++
		if r.Scenario.API.EmptyStatus != 0 {
			emptySeeds++
			empties += r.EmptyAnswers
		}
		for _, v := range r.Violations {
			byKind[v.Kind]++
		}
		if len(r.Violations) > 0 {
			failing = append(failing, r.Seed)
		}
		if r.Converged {
			runs = append(runs, r.Runs)
			secs = append(secs, r.Took)
		}
		quarantined += r.Quarantined
		notModified += r.NotModified
	}
	fmt.Fprintf(&b, "\n| sim | |\n|---|---|\n")
	fmt.Fprintf(&b, "| seeds run | %d (%s) |\n", len(results), took.Round(time.Second))
	var per []string
	for _, st := range slices.Sorted(maps.Keys(styles)) {
		per = append(per, fmt.Sprintf("%s %d", st, styles[st]))
	}
	fmt.Fprintf(&b, "| seeds by style | %s |\n", strings.Join(per, ", "))
	per = per[:0]
	for _, p := range slices.Sorted(maps.Keys(probes)) {
		per = append(per, fmt.Sprintf("%s %d", p, probes[p]))
	}
	if len(probes) > 1 || probes[""] == 0 { // partition seeds draw no probe
		fmt.Fprintf(&b, "| seeds by probe strategy | %s |\n", strings.Join(per, ", "))
	}
	for _, k := range Kinds {
		fmt.Fprintf(&b, "| violations: %s | %d |\n", k, byKind[k])
	}
	fmt.Fprintf(&b, "| seeds converged | %d of %d |\n", len(runs), len(results))
	fmt.Fprintf(&b, "| runs to convergence p50 / p99 / max | %d / %d / %d |\n", pct(runs, 50), pct(runs, 99), pct(runs, 100))
	fmt.Fprintf(&b, "| seconds to convergence p50 / p99 | %.2f / %.2f |\n", pct(secs, 50).Seconds(), pct(secs, 99).Seconds())
	fmt.Fprintf(&b, "| records quarantined (all seeds) | %d |\n", quarantined)
	fmt.Fprintf(&b, "| seeds answering empty with 404 (on_status) / 404 answers | %d / %d |\n", emptySeeds, empties)
	if notModified > 0 {
		fmt.Fprintf(&b, "| conditional partition reads answered 304 | %d |\n", notModified)
	}
	if len(failing) > 0 {
		slices.Sort(failing)
		fmt.Fprintf(&b, "failing seeds (replay one with make sim SEED=N): %v\n", failing)
	}
	return b.String()
}

// pct is the p-th percentile (nearest rank) of xs; 0 for none.
func pct[T int | time.Duration](xs []T, p int) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100
	return s[max(i-1, 0)]
}
