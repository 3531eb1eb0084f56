// Package failpoint kills the process at named points so that tests can
// prove a crash there loses and duplicates nothing. It is inert unless the
// environment variable TIDEMARK_FAILPOINT is set when the process starts:
//
//	TIDEMARK_FAILPOINT=after_page_commit:3,mid_pagination:1
//
// makes the 3rd call of Hit("after_page_commit") (and the 1st of
// Hit("mid_pagination")) send SIGKILL to the current process: no deferred
// functions, no shutdown, exactly like a node dying. A third field "stop"
// sends SIGSTOP instead (in_page_transaction:2:stop): the process freezes
// where it is, holding what it holds, as in a GC pause or a VM freeze, until
// a SIGCONT.
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
	// InPageTransaction is the end of a page's transaction, before its
	// commit: its locks (the outbox's among them) are held.
	InPageTransaction = "in_page_transaction"
)

type point struct {
	at   int64 // the hit that kills (or stops)
	stop bool  // SIGSTOP rather than SIGKILL
	hits atomic.Int64
}

var (
	once   sync.Once
	active bool
	points map[string]*point
	kill   = func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	freeze = func() { _ = syscall.Kill(os.Getpid(), syscall.SIGSTOP) }
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
		if p.stop {
			fmt.Fprintf(os.Stderr, "failpoint: %s hit %d: SIGSTOP\n", name, p.at)
			freeze()
			return
		}
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
	for name, sp := range ps {
		points[name] = &point{at: sp.At, stop: sp.Stop}
	}
	active = len(points) > 0
}

// Spec is what a failpoint does: on its At-th hit, SIGKILL the process, or
// SIGSTOP it when Stop.
type Spec struct {
	At   int64
	Stop bool
}

// Parse reads a TIDEMARK_FAILPOINT value: comma-separated name:N or
// name:N:stop items, N >= 1 (name alone means name:1).
func Parse(v string) (map[string]Spec, error) {
	out := map[string]Spec{}
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		name := strings.TrimSpace(parts[0])
		sp := Spec{At: 1}
		if len(parts) > 1 {
			n, err := strconv.ParseInt(strings.TrimSpace(parts[1]), 10, 64)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s: %q: the count must be an integer >= 1", Env, item)
			}
			sp.At = n
		}
		if len(parts) > 2 {
			if strings.TrimSpace(parts[2]) != "stop" || len(parts) > 3 {
				return nil, fmt.Errorf("%s: %q: the only action after the count is stop", Env, item)
			}
			sp.Stop = true
		}
		if name == "" {
			return nil, fmt.Errorf("%s: %q: missing failpoint name", Env, item)
		}
		out[name] = sp
	}
	return out, nil
}
