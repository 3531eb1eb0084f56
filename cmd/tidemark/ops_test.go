package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// commands are the operator's and the roles' commands with flags.
var commands = [][]string{
	{"migrate"}, {"scheduler"}, {"worker"}, {"server"}, {"run"}, {"status"}, {"runs"}, {"sync"},
	{"reset"}, {"retry"}, {"pause"}, {"resume"}, {"discover"}, {"preview"}, {"config", "check"}, {"views"},
}

// TestDurationFlags finds every duration flag of every command in its -h
// and gives it a number without a unit: each says what a duration looks
// like, naming the flag and the value, not Go's "parse error".
func TestDurationFlags(t *testing.T) {
	t.Parallel()
	durationFlag := regexp.MustCompile(`(?m)^  -(\S+) duration$`)
	found := 0
	for _, cmd := range commands {
		code, _, usage := runCmd(t, nil, append(cmd, "-h")...)
		if code != 0 {
			t.Fatalf("tidemark %s -h: exit %d\n%s", strings.Join(cmd, " "), code, usage)
		}
		for _, m := range durationFlag.FindAllStringSubmatch(usage, -1) {
			found++
			for value, want := range map[string]string{
				"5":    `--` + m[1] + ` "5": a duration needs a unit: want e.g. 5m, 30s or 1h30m`,
				"soon": `--` + m[1] + ` "soon": not a duration: want e.g. 5m, 30s or 1h30m`,
			} {
				args := append(append([]string{}, cmd...), "--"+m[1], value)
				code, _, errOut := runCmd(t, nil, args...)
				if code != 2 || !strings.Contains(errOut, "tidemark: "+want+"\n") || strings.Contains(errOut, "parse error") {
					t.Errorf("tidemark %s: exit %d, want 2 and %q\n%s", strings.Join(args, " "), code, want, errOut)
				}
			}
		}
	}
	if found < 3 { // status --wait, --hook-window and --shutdown-timeout at least
		t.Errorf("found %d duration flags: is the usage format not the one this test reads?", found)
	}
}

// A duration variable without a unit gets the same words as a flag.
func TestDurationVariables(t *testing.T) {
	t.Parallel()
	for role, name := range map[string]string{
		"worker":    "TIDEMARK_SHUTDOWN_TIMEOUT",
		"server":    "TIDEMARK_HOOK_WINDOW",
		"scheduler": "TIDEMARK_CONFIG_POLL",
	} {
		code, _, errOut := runCmd(t, map[string]string{name: "10"}, role)
		want := name + `="10": a duration needs a unit: want e.g. 5m, 30s or 1h30m`
		if code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("%s=10 tidemark %s: exit %d, want 2 and %q\n%s", name, role, code, want, errOut)
		}
	}
}

func TestRunsStatusFilter(t *testing.T) {
	t.Parallel()
	code, _, errOut := runCmd(t, nil, "runs", "--status", "faild")
	want := `--status "faild": no run has that status; want one of running, succeeded, not_modified, failed, dead, interrupted`
	if code != 2 || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, want 2 and %q\n%s", code, want, errOut)
	}
}

// TestRunsShowTaskID checks that `tidemark runs` shows each run's task, the
// id `tidemark retry` takes, and that every status the store writes is one
// --status takes.
func TestRunsShowTaskID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.Database(t)
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key := store.Key{Source: "demo", Resource: "ticket_sales"}
	if err := st.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TIDEMARK_DATABASE_URL": dbURL}
	for _, status := range runStatuses[1:] { // every status a run ends with
		r := store.Run{Source: key.Source, Resource: key.Resource, Kind: tidemark.RunDelta, Trigger: jobs.TriggerSchedule,
			TaskID: "task-" + status, Attempt: 1}
		if err := st.StartRun(ctx, &r); err != nil {
			t.Fatal(err)
		}
		if err := st.FinishRun(ctx, r.ID, store.RunOutcome{Status: status}); err != nil {
			t.Fatalf("finish a run %s: %v", status, err)
		}
		code, out, errOut := runCmd(t, env, "runs", "--status", status)
		row := regexp.MustCompile(fmt.Sprintf(`(?m)^%d +task-%s +demo/ticket_sales +delta `, r.ID, status))
		if code != 0 || !strings.HasPrefix(out, "ID  TASK ") || !row.MatchString(out) {
			t.Errorf("runs --status %s: exit %d, want the run with its task:\n%s%s", status, code, out, errOut)
		}
	}
}

// TestNotConfigured names a source or resource the config lacks to every
// command that takes one: each says so and lists what is configured, all
// of it when there is little, the source's resources when it exists.
func TestNotConfigured(t *testing.T) {
	t.Parallel()
	demo := map[string]string{"TIDEMARK_CONFIG": "../../examples/demo.yaml"}
	big := map[string]string{"TIDEMARK_CONFIG": bigConfig(t, 20, 50)}
	const demoAll = `: there is no source "nosuch"; the configured resources:
  demo/ticket_sales, demo/inventory_movements, demo/transactions,
  demo/settlements, demo/tax_summaries
`
	const demoSource = `: source demo has no resource "nosuch"; its 5 resources:
  ticket_sales, inventory_movements, transactions, settlements, tax_summaries
`
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"sync, no source", demo, []string{"sync", "nosuch/x"}, "nosuch/x is not configured in ../../examples/demo.yaml" + demoAll},
		{"sync, no resource", demo, []string{"sync", "demo/nosuch", "--full"}, "demo/nosuch is not configured in ../../examples/demo.yaml" + demoSource},
		{"reset", demo, []string{"reset", "demo/nosuch", "--watermark"}, "demo/nosuch is not configured in ../../examples/demo.yaml" + demoSource},
		{"pause a source", demo, []string{"pause", "nosuch"}, "nosuch is not configured in ../../examples/demo.yaml" + demoAll},
		{"resume a resource", demo, []string{"resume", "demo/nosuch"}, "demo/nosuch is not configured in ../../examples/demo.yaml" + demoSource},
		{"status", demo, []string{"status", "nosuch"}, "nosuch is not configured in ../../examples/demo.yaml" + demoAll},
		{"a typo of a resource", demo, []string{"sync", "demo/ticket_sale"}, `demo/ticket_sale is not configured in ../../examples/demo.yaml: source demo has no resource "ticket_sale" (did you mean "ticket_sales"?); its 5 resources:`},
		{"a typo of a source", demo, []string{"pause", "dmeo"}, `dmeo is not configured in ../../examples/demo.yaml: there is no source "dmeo" (did you mean "demo"?); the configured resources:`},
		{"many sources: the sources", big, []string{"sync", "nosuch/x"}, `: there is no source "nosuch"; the 20 sources, with their number of resources (` + "`tidemark status`" + ` lists all 69):
  s00 (50), s01 (1), s02 (1), s03 (1), s04 (1), s05 (1), s06 (1), s07 (1),
  s08 (1), s09 (1), s10 (1), s11 (1), s12 (1), s13 (1), s14 (1), s15 (1),
  s16 (1), s17 (1), s18 (1), s19 (1)
`},
		{"many resources: the source's", big, []string{"pause", "s00/nosuch"}, `: source s00 has no resource "nosuch"; its 50 resources:
  resource_with_a_long_name_00, resource_with_a_long_name_01,
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := runCmd(t, tt.env, tt.args...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d, want 2 and\n%s\ngot\n%s", code, tt.want, errOut)
			}
			for _, line := range strings.Split(errOut, "\n")[1:] {
				if len(line) > 84 {
					t.Errorf("line of %d characters:\n%s", len(line), line)
				}
			}
		})
	}
}

// bigConfig writes a config of n sources, the first with first resources.
func bigConfig(t *testing.T, n, first int) string {
	var b strings.Builder
	b.WriteString("sources:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: s%02d\n    base_url: http://127.0.0.1:9000\n    resources:\n", i)
		for j := range max(1, first*(1-min(i, 1))) {
			fmt.Fprintf(&b, "      - {name: resource_with_a_long_name_%02d, path: /r%d, records: {id: id}}\n", j, j)
		}
	}
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestStatusWaitFor waits for some resources only: the one named syncs
// while the command waits, the others never do.
func TestStatusWaitFor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.Database(t)
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	env := map[string]string{"TIDEMARK_DATABASE_URL": dbURL, "TIDEMARK_CONFIG": "../../examples/demo.yaml"}
	ticketSales := store.Key{Source: "demo", Resource: "ticket_sales"}
	if err := st.EnsureStates(ctx, []store.Key{ticketSales, {Source: "demo", Resource: "settlements"}}); err != nil {
		t.Fatal(err)
	}

	type result struct {
		code        int
		out, errOut string
	}
	done := make(chan result, 1)
	go func() {
		// The argument after the flag works too.
		code, out, errOut := runCmd(t, env, "status", "demo/ticket_sales", "--wait", "1m")
		done <- result{code, out, errOut}
	}()
	// ticket_sales syncs, again and again, until the command sees it: it
	// counts only a sync after it started.
	var got result
	deadline := time.After(time.Minute)
	for waiting := true; waiting; {
		r := store.Run{Source: ticketSales.Source, Resource: ticketSales.Resource, Kind: tidemark.RunDelta, Trigger: jobs.TriggerSchedule, Attempt: 1}
		if err := st.StartRun(ctx, &r); err != nil {
			t.Fatal(err)
		}
		if err := st.FinishRun(ctx, r.ID, store.RunOutcome{Status: store.StatusSucceeded}); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-done:
			waiting = false
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("status --wait demo/ticket_sales did not return within a minute of its sync")
		}
	}
	if got.code != 0 || !strings.Contains(got.out, "demo/ticket_sales") || strings.Contains(got.out, "demo/settlements") {
		t.Errorf("exit %d, want 0 and a table of demo/ticket_sales only:\n%s%s", got.code, got.out, got.errOut)
	}

	code, out, errOut := runCmd(t, env, "status", "--wait", "300ms", "demo/settlements")
	if want := "tidemark: not synced after 300ms: demo/settlements\n"; code != 1 || !strings.HasSuffix(errOut, want) {
		t.Errorf("exit %d, want 1 and %q:\n%s%s", code, want, out, errOut)
	}
	code, out, errOut = runCmd(t, env, "status", "demo")
	if code != 0 || strings.Count(out, "\ndemo/") != 5 {
		t.Errorf("status demo: exit %d, want the 5 resources of demo:\n%s%s", code, out, errOut)
	}
}

func TestReorder(t *testing.T) {
	t.Parallel()
	fs := env{getenv: func(string) string { return "" }, stderr: io.Discard}.flags("test", &settings{})
	fs.Duration("wait", 0, "")
	fs.Bool("full", false, "")
	tests := []struct {
		name string
		args string
		want string
	}{
		{"flags first already", "--full demo/x", "--full demo/x"},
		{"a bool flag after", "demo/x --full", "--full demo/x"},
		{"a flag and its value after", "demo --wait 5m", "--wait 5m demo"},
		{"a value with =", "demo --wait=5m", "--wait=5m demo"},
		{"a value flag in between", "a --config c.yaml b --full", "--config c.yaml --full a b"},
		{"after --, all positional", "--full -- -odd demo", "--full -- -odd demo"},
	}
	for _, tt := range tests {
		if got := strings.Join(reorder(fs, strings.Fields(tt.args)), " "); got != tt.want {
			t.Errorf("%s: reorder(%s) = %s, want %s", tt.name, tt.args, got, tt.want)
		}
	}
}
