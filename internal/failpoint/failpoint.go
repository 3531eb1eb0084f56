// Package failpoint kills the process at named points so that tests can
// prove a crash there loses and duplicates nothing. It is inert unless the
// environment variable TIDEMARK_FAILPOINT is set when the process starts:
//
//	TIDEMARK_FAILPOINT=after_page_commit:3,mid_pagination:1
//
// makes the 3rd call of Hit("after_page_commit") (and the 1st of
// Hit("mid_pagination")) send SIGKILL to the current process: no deferred
// functions, no shutdown, exactly like a node dying.
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Env is the environment variable read once, on the first Hit.
const Env = "TIDEMARK_FAILPOINT"

// The failpoints the worker places.
const (
	BeforePageCommit         = "before_page_commit"
	AfterPageCommit          = "after_page_commit"
	AfterCommitBeforePublish = "after_commit_before_publish"
	MidPagination            = "mid_pagination"
)

type point struct {
	at   int64 // the hit that kills
	hits atomic.Int64
}

var (
	once   sync.Once
	active bool
	points map[string]*point
	kill   = func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }
)

// Hit counts a pass through the named point and kills the process on the
// hit the environment asks for. Without TIDEMARK_FAILPOINT it costs one
// atomic load.
func Hit(name string) {
	once.Do(setup)
	if !active {
		return
	}
	p := points[name]
	if p == nil {
		return
	}
	if p.hits.Add(1) == p.at {
		fmt.Fprintf(os.Stderr, "failpoint: %s hit %d: SIGKILL\n", name, p.at)
		kill()
	}
}

func setup() {
	v := os.Getenv(Env)
	if v == "" {
		return
	}
	ps, err := Parse(v)
	if err != nil {
		// A mistyped failpoint must not pass silently as "no crash".
		fmt.Fprintf(os.Stderr, "failpoint: %v\n", err)
		os.Exit(2)
	}
	points = make(map[string]*point, len(ps))
	for name, n := range ps {
		points[name] = &point{at: n}
	}
	active = len(points) > 0
}

// Parse reads a TIDEMARK_FAILPOINT value: comma-separated name:N pairs,
// N >= 1 (name alone means name:1).
func Parse(v string) (map[string]int64, error) {
	out := map[string]int64{}
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, count, found := strings.Cut(item, ":")
		n := int64(1)
		if found {
			var err error
			n, err = strconv.ParseInt(strings.TrimSpace(count), 10, 64)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s: %q: the count must be an integer >= 1", Env, item)
			}
		}
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("%s: %q: missing failpoint name", Env, item)
		}
		out[name] = n
	}
	return out, nil
}
