package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// toggleUpstream serves one record per resource (path /r/NAME) whose
// content is one of three states, with the state's ETag: a state can come
// back, so an old ETag can be the upstream's current one again (ABA), the
// case where a stale validator would answer 304 to a changed copy.
type toggleUpstream struct {
	mu    sync.Mutex
	state map[string]int
}

func (u *toggleUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/r/")
	u.mu.Lock()
	s := u.state[name]
	u.mu.Unlock()
	etag := fmt.Sprintf(`"s%d"`, s)
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, `{"data":[{"id":1,"v":%d}]}`, s)
}

func (u *toggleUpstream) get(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state[name]
}

func (u *toggleUpstream) set(name string, s int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.state[name] = s
}

// basisSeeds is how many seeded interleavings TestStaleProbeBasis runs,
// one resource each.
const basisSeeds = 12

// TestStaleProbeBasis: a probe runs with the basis (the validator) the
// scheduler read when it enqueued it, which may be stale by then: a probe
// seen a change since, its fetch confirmed a newer validator, the upstream
// went back to the old one, an operator reset the validators. Over seeded
// interleavings of those steps, every probe with any basis read so far
// must leave the copy equal to the upstream (never a missed change), and
// cost at most one fetch; none when the copy was already in step and a
// validator is confirmed (a stale basis costs no needless fetch at all: its
// 200 is judged against the stored validator). Seed 0 is the scripted
// case that only the flush's check of the validator catches: basis "s0"
// read, the upstream goes to s1 and is synced, goes back to s0, and the
// probe with basis "s0" gets a 304.
func TestStaleProbeBasis(t *testing.T) {
	t.Parallel()
	up := &toggleUpstream{state: map[string]int{}}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	var b strings.Builder
	fmt.Fprintf(&b, "sources:\n  - name: demo\n    base_url: %s\n    allow_private: true\n    resources:\n", srv.URL)
	for seed := range basisSeeds {
		fmt.Fprintf(&b, `      - name: r%02d
        path: /r/r%02d
        records: {path: data, id: id}
        probe: {strategy: etag, method: HEAD, every: 1h}
`, seed, seed)
	}
	conf, err := config.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	f := startFleetWith(t, conf, nil)
	var stale304 int // probes whose stale basis the upstream answered 304
	for seed := range basisSeeds {
		name := fmt.Sprintf("r%02d", seed)
		stale304 += runBasisSeed(t, f, up, name, uint64(seed))
	}
	t.Logf("%d probes had a stale basis the upstream answered 304 to", stale304)
	if stale304 == 0 {
		t.Error("no probe had a stale basis answered 304: the interleavings miss the case that matters")
	}
}

// runBasisSeed runs one seeded interleaving on resource name and returns
// how many probes had a stale basis that matched the upstream.
func runBasisSeed(t *testing.T, f *fleet, up *toggleUpstream, name string, seed uint64) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 17))
	res := f.resource(name)
	up.set(name, 0)
	f.probe(name) // the first sync: a validator confirmed, the copy in step
	bases := []*jobs.ProbeBasis{jobs.BasisOf(res, f.state(name))}
	steps := []string{"change", "sync", "change", "probe"} // seed 0: the ABA case
	if seed > 0 {
		steps = nil
		ops := []string{"read", "change", "sync", "probe", "probe", "reset"}
		for range 14 {
			steps = append(steps, ops[rng.IntN(len(ops))])
		}
	}
	stale304 := 0
	for i, op := range steps {
		switch op {
		case "read": // the scheduler's tick reads the state
			bases = append(bases, jobs.BasisOf(res, f.state(name)))
		case "change":
			next := (up.get(name) + 1 + rng.IntN(2)) % 3
			if seed == 0 {
				next = 1 - up.get(name) // 0 → 1, then back to 0
			}
			up.set(name, next)
		case "sync": // another probe, with no basis, and its fetch
			f.probe(name)
		case "reset":
			if err := f.store.ResetState(context.Background(), f.key(name), store.Reset{Validators: true}); err != nil {
				t.Fatal(err)
			}
		case "probe":
			basis := bases[rng.IntN(len(bases))] // often an old one
			st := f.state(name)
			if basis.Validator != st.ETag && basis.Validator == fmt.Sprintf(`"s%d"`, up.get(name)) {
				stale304++
			}
			inStep := storedValue(t, f, name) == up.get(name)
			fetches := fetchRuns(t, f, name)
			probeWithBasis(t, f, name, basis)
			n := fetchRuns(t, f, name) - fetches
			where := fmt.Sprintf("seed %d step %d (%v): basis %q, stored %q, upstream s%d", seed, i, steps, basis.Validator, st.ETag, up.get(name))
			if got := storedValue(t, f, name); got != up.get(name) {
				t.Fatalf("%s: a change missed: the copy holds s%d", where, got)
			}
			if n > 1 {
				t.Errorf("%s: %d fetches for one probe, want at most 1", where, n)
			}
			if inStep && st.ETag != "" && n != 0 {
				t.Errorf("%s: the copy was in step, yet the probe cost %d fetches", where, n)
			}
		}
	}
	return stale304
}

// probeWithBasis runs a scheduled probe carrying basis synchronously, then
// waits for whatever it led to on the queues: its re-probe, when the flush
// found the basis stale, and a fetch.
func probeWithBasis(t *testing.T, f *fleet, name string, basis *jobs.ProbeBasis) {
	t.Helper()
	before := f.state(name).ProbesTotal
	if err := f.worker.Probe(t, jobs.ProbePayload{Source: "demo", Resource: name, Trigger: jobs.TriggerSchedule, Basis: basis}); err != nil {
		t.Fatalf("probe of %s: %v", name, err)
	}
	f.waitIdle()
	// Every probe ends counted once: written unchanged, recorded as a
	// change, or (a stale basis) not counted while its re-probe is, which
	// the queues ran, and whose count the tally writes behind.
	waitFor(t, 10*time.Second, "the probe of "+name+" counted", func() (bool, string) {
		n := f.state(name).ProbesTotal
		return n > before, fmt.Sprintf("%d probes counted", n-before)
	})
}

func storedValue(t *testing.T, f *fleet, name string) int {
	t.Helper()
	var v int
	if err := f.store.DBForTests().Raw(`SELECT (payload->>'v')::int FROM records WHERE source = 'demo' AND resource = ? AND deleted_at IS NULL`, name).
		Scan(&v).Error; err != nil {
		t.Fatal(err)
	}
	return v
}

func fetchRuns(t *testing.T, f *fleet, name string) int {
	t.Helper()
	var n int
	if err := f.store.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE source = 'demo' AND resource = ? AND kind <> 'probe'`, name).
		Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}
