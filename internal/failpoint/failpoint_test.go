package failpoint_test

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tidemark/tidemark/internal/failpoint"
)

// helperEnv makes the re-executed test binary run hitMany instead of the
// tests.
const helperEnv = "FAILPOINT_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// Child: hit each point up to 5 times, printing progress, then exit 0.
		for i := 1; i <= 5; i++ {
			for _, name := range []string{failpoint.BeforePageCommit, failpoint.AfterPageCommit} {
				failpoint.Hit(name)
				os.Stdout.WriteString(name + " " + strconv.Itoa(i) + "\n")
			}
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestHitKillsOnNthHit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		env      string
		killed   bool
		lastLine string // the last progress line before the kill (or the end)
	}{
		{"unset", "", false, "after_page_commit 5"},
		{"other point", "mid_pagination:1", false, "after_page_commit 5"},
		{"first hit", "before_page_commit:1", true, ""},
		{"third hit", "after_page_commit:3", true, "before_page_commit 3"},
		{"list, earliest wins", "after_page_commit:4, before_page_commit:2", true, "after_page_commit 1"},
		{"name alone is :1", "after_page_commit", true, "before_page_commit 1"},
		{"beyond the hits", "before_page_commit:6", false, "after_page_commit 5"},
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"=1", failpoint.Env+"="+tt.env)
			out, err := cmd.Output()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			var ee *exec.ExitError
			switch {
			case tt.killed:
				if !errors.As(err, &ee) {
					t.Fatalf("want the child killed, got err %v", err)
				}
				ws, ok := ee.Sys().(syscall.WaitStatus)
				if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Fatalf("child ended by %v, want SIGKILL", ee)
				}
			case err != nil:
				t.Fatalf("child failed: %v (stdout %q)", err, out)
			}
			if last != tt.lastLine {
				t.Errorf("last line before the end = %q, want %q", last, tt.lastLine)
			}
		})
	}
}

func TestBadSpecExits2(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", failpoint.Env+"=after_page_commit:zero")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "must be an integer >= 1") {
		t.Fatalf("bad spec: err %v, output %q; want exit 2 naming the problem", err, out)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want map[string]failpoint.Spec
		err  bool
	}{
		{"one", "after_page_commit:3", map[string]failpoint.Spec{"after_page_commit": {At: 3}}, false},
		{"list", "a:1,b:2, c:10 ", map[string]failpoint.Spec{"a": {At: 1}, "b": {At: 2}, "c": {At: 10}}, false},
		{"bare name", "mid_pagination", map[string]failpoint.Spec{"mid_pagination": {At: 1}}, false},
		{"stop", "in_page_transaction:2:stop", map[string]failpoint.Spec{"in_page_transaction": {At: 2, Stop: true}}, false},
		{"zero", "a:0", nil, true},
		{"not a number", "a:x", nil, true},
		{"no name", ":3", nil, true},
		{"unknown action", "a:1:pause", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := failpoint.Parse(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("Parse(%q) err = %v, want error %v", tt.in, err, tt.err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("Parse(%q)[%s] = %+v, want %+v", tt.in, k, got[k], v)
				}
			}
		})
	}
}

func BenchmarkHitInactive(b *testing.B) {
	for b.Loop() {
		failpoint.Hit(failpoint.AfterPageCommit)
	}
}
