package bench

import (
	"fmt"
	"slices"
	"time"
)

// A wall-clock figure on a machine other processes share moves with their
// load. So each side of a wall-clock ratio is measured Config.Reps times in
// the same run, interleaved (A B A B A B: a change in the load falls on both
// sides alike), and the table shows the median with the range; a target is
// judged on the median of the paired ratios A[i]/B[i].

// spread is one figure measured once per repetition, in the order measured.
type spread []float64

// durations is the spread of ds in seconds.
func durations(ds []time.Duration) spread {
	s := make(spread, len(ds))
	for i, d := range ds {
		s[i] = d.Seconds()
	}
	return s
}

// median is the middle value (the mean of the two middle ones for an even
// count); 0 for none.
func (s spread) median() float64 {
	if len(s) == 0 {
		return 0
	}
	v := slices.Sorted(slices.Values(s))
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// medianAt is the index of the repetition whose value is the median (the
// lower middle one for an even count): its details stand for the run's.
func (s spread) medianAt() int {
	idx := make([]int, len(s))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case s[a] < s[b]:
			return -1
		case s[a] > s[b]:
			return 1
		}
		return 0
	})
	return idx[(len(idx)-1)/2]
}

// pairRatios is a[i]/b[i] for each repetition (0 where b[i] is 0).
func pairRatios(a, b spread) spread {
	out := make(spread, min(len(a), len(b)))
	for i := range out {
		if b[i] != 0 {
			out[i] = a[i] / b[i]
		}
	}
	return out
}

// format renders the median and, when the repetitions differ, the range:
// "27.1 s (26.5 s–28.0 s)", each value through unit.
func (s spread) format(unit func(float64) string) string {
	if len(s) == 0 {
		return "n/a"
	}
	m := unit(s.median())
	if slices.Min(s) == slices.Max(s) {
		return m // one repetition, or all alike
	}
	return fmt.Sprintf("%s (%s–%s)", m, unit(slices.Min(s)), unit(slices.Max(s)))
}

// Units for spread.format.
func inSecs(v float64) string  { return fmt.Sprintf("%.1f s", v) }
func inTimes(v float64) string { return fmt.Sprintf("%.2fx", v) }
func inCount(v float64) string { return thousands(int64(v)) }
