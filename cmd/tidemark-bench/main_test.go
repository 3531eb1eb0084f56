package main

import (
	"io"
	"testing"
)

// TestPartialRunKeepsResults: bench/results.md holds every workload's row,
// so a run of some workloads writes it only when -out says so.
func TestPartialRunKeepsResults(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "bench/results.md"},
		{[]string{"-quick"}, "bench/results.md"},
		{[]string{"-workloads", "9"}, ""},
		{[]string{"-workloads", "9", "-out", "w9.md"}, "w9.md"},
		{[]string{"-workloads", "9", "-out", "bench/results.md"}, "bench/results.md"},
	} {
		c, err := parse(tt.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if c.Results != tt.want {
			t.Errorf("%v: results written to %q, want %q", tt.args, c.Results, tt.want)
		}
	}
	if _, err := parse([]string{"extra"}, io.Discard); err == nil {
		t.Error("an unexpected argument was accepted")
	}
}

// -reps sets how many times each side of a wall-clock ratio is measured.
func TestRepsFlag(t *testing.T) {
	t.Parallel()
	c, err := parse([]string{"-reps", "5", "-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reps != 5 || !c.Quick {
		t.Errorf("reps %d, quick %v; want 5, true", c.Reps, c.Quick)
	}
}
