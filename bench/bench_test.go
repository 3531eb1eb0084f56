package bench

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
)

func TestThousands(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   int64
		want string
	}{
		{"zero", 0, "0"},
		{"three digits", 999, "999"},
		{"four digits", 1000, "1,000"},
		{"million", 1_000_000, "1,000,000"},
		{"negative", -12345, "-12,345"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := thousands(tc.in); got != tc.want {
				t.Errorf("thousands(%d) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTableShowsWhetherTargetsAreMet(t *testing.T) {
	t.Parallel()
	// In the order they ran (7 with 1): the table lists them by number.
	out := Table([]Row{
		{ID: "1", Workload: "a", Ratio: "1.2x", Target: "≤ 1.5x", Met: met(true)},
		{ID: "10", Workload: "c", Ratio: "n/a"},
		{ID: "2", Workload: "b", Ratio: "0.7x", Target: "≥ 3x", Met: met(false)},
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("table has %d lines, want header, rule and 3 rows:\n%s", len(lines), out)
	}
	for i, want := range []string{"| 1 | a |", "| 2 | b |", "| 10 | c |"} {
		if !strings.HasPrefix(lines[2+i], want) {
			t.Errorf("row %d = %q, want it to begin with %q", i+1, lines[2+i], want)
		}
	}
	for i, want := range []string{"| yes |", "| no |", "| - |"} {
		if !strings.HasSuffix(lines[2+i], want) {
			t.Errorf("row %d = %q, want it to end in %q", i+1, lines[2+i], want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		in      Config
		records int
		day     time.Duration
	}{
		{"full", Config{}, 1_000_000, 3 * time.Minute},
		{"quick", Config{Quick: true}, 50_000, 40 * time.Second},
		{"quick with records", Config{Quick: true, Records: 7}, 7, 40 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.in
			c.setDefaults()
			if c.Records != tc.records || c.Day != tc.day {
				t.Errorf("records %d, day %s; want %d, %s", c.Records, c.Day, tc.records, tc.day)
			}
		})
	}
}

func TestWant(t *testing.T) {
	t.Parallel()
	c := Config{Workloads: "1, 4"}
	for n, want := range map[int]bool{1: true, 2: false, 4: true, 5: false} {
		if got := c.want(n); got != want {
			t.Errorf("want(%d) = %v with %q", n, got, c.Workloads)
		}
	}
	if !(&Config{}).want(5) {
		t.Error("an empty selection must run every workload")
	}
}

// The day's schedule: the busy resources change every interval of the
// opening hours (07:00 to 23:00: seconds 11 to 37 of 40), transactions also
// every 4th interval of the night (0, 4, 8), one nightly settlement batch
// and one tax amendment.
func TestDayChanges(t *testing.T) {
	t.Parallel()
	const seconds = 40
	count := map[string]int{}
	for s := range seconds {
		for _, m := range dayChanges(s, seconds, 2000) {
			count[m["resource"].(string)]++
		}
	}
	want := map[string]int{"transactions": 27 + 3, "ticket_sales": 27, "inventory_movements": 27, "settlements": 1, "tax_summaries": 1}
	for r, n := range want {
		if count[r] != n {
			t.Errorf("%s changes in %d seconds, want %d", r, count[r], n)
		}
	}
}

func TestProcCPU(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for procCPU(os.Getpid()) == 0 {
		for i := range 1_000_000 {
			x += i
		}
		if time.Now().After(deadline) {
			t.Fatalf("procCPU of this busy process stayed 0 (%d)", x)
		}
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	upTo := func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = i + 1
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"none", nil, 99, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"median of even", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 100", ms(upTo(100)...), 99, 99 * time.Millisecond},
		{"p99 of 200 is the third largest", ms(upTo(200)...), 99, 198 * time.Millisecond},
		{"p100", ms(1, 2, 3), 100, 3 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sorted := slices.Clone(tc.sorted)
			slices.Sort(sorted)
			if got := percentile(sorted, tc.p); got != tc.want {
				t.Errorf("percentile(p%v) = %s, want %s", tc.p, got, tc.want)
			}
		})
	}
}

func TestMidSlot(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ at, want int64 }{{100, 105}, {101, 115}, {109, 115}, {110, 115}} {
		if got := midSlot(time.Unix(tc.at, 0), 10*time.Second); !got.Equal(time.Unix(tc.want, 0)) {
			t.Errorf("midSlot(%d) = %d, want %d", tc.at, got.Unix(), tc.want)
		}
	}
}

// The generated configs are valid and as large as asked.
func TestGeneratedConfigs(t *testing.T) {
	t.Parallel()
	c, err := config.Parse("schedule.yaml", []byte(scheduleConfig(250)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	c.Each(func(*config.Source, *config.Resource) { n++ })
	if n != 250 || len(c.Sources) != 3 {
		t.Errorf("schedule config: %d resources in %d sources, want 250 in 3", n, len(c.Sources))
	}
	c, err = config.Parse("fresh.yaml", []byte(fmt.Sprintf(freshnessConfig, "http://127.0.0.1:9", freshEvery)))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range freshMutations {
		r := c.Sources[0].Resource(m.resource)
		if r == nil {
			t.Fatalf("fresh config has no %s", m.resource)
		}
		if r.Probe.Every.D() != freshEvery || r.Probe.MaxEvery.D() != freshEvery {
			t.Errorf("%s probes every %s up to %s, want %s flat", m.resource, r.Probe.Every.D(), r.Probe.MaxEvery.D(), freshEvery)
		}
	}
}

// The bare poller's latency of a change runs to the end of the first poll
// that began after it; a change that poll did not see is missed.
func TestBarePollLatencies(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	b := &barePoll{polls: map[string][]poll{"r": {
		{start: at(0), end: at(10)},
		{start: at(1000), end: at(1010), changed: true},
		{start: at(2000), end: at(2010)},
	}}}
	changes := []*freshChange{
		{resource: "r", sent: at(300)},  // seen by the poll at 1000
		{resource: "r", sent: at(1000)}, // the poll at 1000 began with it: the next one, which saw nothing
		{resource: "r", sent: at(2500)}, // no poll after it
	}
	lat, missed := b.latencies(changes)
	if len(lat) != 1 || lat[0] != 710*time.Millisecond || missed != 2 {
		t.Errorf("latencies %v, %d missed; want [710ms], 2 missed", lat, missed)
	}
}

// A figure taken three times is reported by its median and range, and the
// median repetition's details stand for the run.
func TestSpread(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		in     spread
		median float64
		at     int
		shown  string
	}{
		{"three", spread{27.4, 25.0, 31.2}, 27.4, 0, "27.4 s (25.0 s–31.2 s)"},
		{"median last", spread{3, 1, 2}, 2, 2, "2.0 s (1.0 s–3.0 s)"},
		{"one", spread{7}, 7, 0, "7.0 s"},
		{"even", spread{4, 1, 2, 3}, 2.5, 2, "2.5 s (1.0 s–4.0 s)"},
		{"ties", spread{5, 5, 1}, 5, 0, "5.0 s (1.0 s–5.0 s)"},
		{"all alike", spread{500, 500, 500}, 500, 1, "500.0 s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.in.median(); got != tc.median {
				t.Errorf("median %v, want %v", got, tc.median)
			}
			if got := tc.in.medianAt(); got != tc.at {
				t.Errorf("medianAt %d, want %d", got, tc.at)
			}
			if got := tc.in.format(inSecs); got != tc.shown {
				t.Errorf("format %q, want %q", got, tc.shown)
			}
		})
	}
	if got := (spread{}).format(inSecs); got != "n/a" {
		t.Errorf("no repetitions shown as %q", got)
	}
}

// Ratios pair the repetitions taken in turn: A[i] with B[i], not the
// median of one side with the median of the other.
func TestPairRatios(t *testing.T) {
	t.Parallel()
	a, b := durations([]time.Duration{30 * time.Second, 20 * time.Second, 40 * time.Second}), spread{10, 10, 0}
	got := pairRatios(a, b)
	if want := (spread{3, 2, 0}); !slices.Equal(got, want) {
		t.Errorf("pairRatios = %v, want %v", got, want)
	}
	if got.format(inTimes) != "2.00x (0.00x–3.00x)" {
		t.Errorf("shown as %q", got.format(inTimes))
	}
}

// Workload 8 runs a hundredth, a tenth and all of the largest schedule,
// never less than one source's worth.
func TestScheduleSizes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   Config
		want []int
	}{
		{Config{}, []int{1_000, 10_000, 100_000}},
		{Config{Quick: true}, []int{100, 200, 2_000}},
	} {
		c := tc.in
		c.setDefaults()
		if got := c.scheduleSizes(); !slices.Equal(got, tc.want) {
			t.Errorf("quick=%v: sizes %v, want %v", tc.in.Quick, got, tc.want)
		}
		if c.Reps != 3 {
			t.Errorf("quick=%v: %d repetitions, want 3", tc.in.Quick, c.Reps)
		}
	}
}
