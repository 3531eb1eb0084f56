package bench

import (
	"os"
	"strings"
	"testing"
	"time"
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
	out := Table([]Row{
		{ID: "1", Workload: "a", Ratio: "1.2x", Target: "≤ 1.5x", Met: met(true)},
		{ID: "2", Workload: "b", Ratio: "0.7x", Target: "≥ 3x", Met: met(false)},
		{ID: "3", Workload: "c", Ratio: "n/a"},
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("table has %d lines, want header, rule and 3 rows:\n%s", len(lines), out)
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

// The day's schedule has one nightly settlement batch and one tax amendment.
func TestDayChanges(t *testing.T) {
	t.Parallel()
	const seconds = 40
	count := map[string]int{}
	for s := range seconds {
		for _, m := range dayChanges(s, seconds, 2000) {
			count[m["resource"].(string)]++
		}
	}
	want := map[string]int{"transactions": seconds, "ticket_sales": seconds, "inventory_movements": seconds, "settlements": 1, "tax_summaries": 1}
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
