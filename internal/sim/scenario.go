package sim

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Scenario is everything a seed decides: how the upstream serves and
// misbehaves, what its records hold, and the steps the fleet is driven
// through. The same seed always gives the same scenario.
type Scenario struct {
	Seed    uint64
	API     API
	Content Content
	Records int // records at the start
	Limit   int // pagination.limit
	// TotalField has tidemark read the envelope's total (page, offset).
	TotalField  bool
	ProbeMethod string
	Skew        time.Duration // the upstream's clock against the fleet's
	StampRes    time.Duration // resolution of updated_at
	Overlap     time.Duration // delta.overlap
	// Window is delta.window.size (0: none); the reads walk windows from
	// an hour before the scenario's config is made.
	Window time.Duration
	Steps  []Step
}

// Step is one thing the driver does.
type Step struct {
	Op StepOp
	// N is how many changes a mutate step makes.
	N int
	// Faults are on for the length of the step (a run step).
	Faults Faults
	// Crash makes the CrashAt-th pass through failpoint Crash fail the
	// run (a crash between pages, in process).
	Crash   string
	CrashAt int
}

// StepOp is a step's kind.
type StepOp int

const (
	OpMutate StepOp = iota // change the upstream between runs
	OpProbe                // enqueue a probe (and the fetch it may start)
	OpDelta                // enqueue a delta fetch (full without a delta)
	OpFull                 // enqueue a full fetch
	OpTick                 // let the real scheduler enqueue what is due
)

func (o StepOp) String() string {
	return [...]string{"mutate", "probe", "delta", "full", "tick"}[o]
}

func (s Step) String() string {
	var b strings.Builder
	b.WriteString(s.Op.String())
	if s.Op == OpMutate {
		fmt.Fprintf(&b, "(%d)", s.N)
	}
	f := s.Faults
	for _, on := range []struct {
		ok   bool
		name string
	}{
		{f.Status5xx > 0, fmt.Sprintf("5xx×%d", f.Status5xx)}, {f.RateLimited > 0, fmt.Sprintf("429×%d", f.RateLimited)},
		{f.Truncate > 0, fmt.Sprintf("truncate×%d", f.Truncate)}, {f.Slow > 0, "slow"}, {f.IgnorePage, "ignore-page"},
		{f.Cycle, "cycle"}, {f.ExpireAfter > 0, "expiring-tokens"}, {f.SingleUse, "single-use-tokens"},
		{f.MidRead > 0, fmt.Sprintf("mid-read-changes:%.0f%%", f.MidRead*100)},
	} {
		if on.ok {
			b.WriteString(" +" + on.name)
		}
	}
	if s.Crash != "" {
		fmt.Fprintf(&b, " +crash:%s#%d", s.Crash, s.CrashAt)
	}
	return b.String()
}

// Styles are the pagination styles, in the order seeds cycle through them.
var Styles = []string{"none", "page", "offset", "cursor", "link", "next_url"}

// failpoints a step may crash at (internal/failpoint names).
var crashPoints = []string{"before_page_commit", "after_page_commit", "mid_pagination"}

// NewScenario derives a scenario from a seed.
func NewScenario(seed uint64) Scenario {
	rng := rand.New(rand.NewPCG(seed, 0x5ce7))
	pick := func(n int) int { return rng.IntN(n) }
	s := Scenario{Seed: seed}
	s.API.Style = Styles[seed%uint64(len(Styles))]
	s.API.Order = Order(pick(2)) // ByID or ByStamp
	s.API.Probe = []string{"etag", "etag_weak", "last_modified", "hash", "none"}[pick(5)]
	s.API.HeadUnsupported = pick(4) == 0
	s.ProbeMethod = []string{"GET", "HEAD"}[pick(2)]
	s.Limit = []int{3, 5, 8, 10, 20}[pick(5)]
	if pick(3) == 0 {
		s.API.Cap = max(1, s.Limit/2) // the upstream serves fewer than asked
	}
	s.TotalField = (s.API.Style == "page" || s.API.Style == "offset") && pick(2) == 0
	s.Records = []int{0, 1, 4, 12, 30, 60}[pick(6)]
	s.Skew = time.Duration(pick(9)-4) * time.Second
	s.StampRes = []time.Duration{time.Millisecond, time.Second}[pick(2)]

	s.Content.IDs = IDKind(pick(int(idKinds)))
	if pick(2) == 0 {
		s.Content.Hostile = 0.05 + rng.Float64()*0.15
	}
	s.Content.SeqBase = 1<<53 - 40 // number cursors cross 2^53 within a few changes
	switch pick(6) {
	case 0, 1:
		// no delta: every change is read by a full read
	case 2:
		s.Content.Format = "number"
		s.API.Order = BySeq // a change sequence lists in its own order
	default:
		s.Content.Format = []string{"rfc3339", "rfc3339", "unix", "unix_ms"}[pick(4)]
		s.Overlap = []time.Duration{0, time.Second, 5 * time.Second}[pick(3)]
		if s.Content.Format == "rfc3339" && pick(2) == 0 {
			s.Content.ZoneOffset = (pick(5) - 2) * 3600
		}
	}
	if s.Content.Format != "" {
		s.API.Format = s.Content.Format
		s.API.DeltaParam = "updated_since"
		if s.Content.Format == "number" {
			s.API.DeltaParam = "since_seq"
		}
		if pick(2) == 0 {
			s.Content.OddCursor = 0.05 + rng.Float64()*0.1
		}
	}

	// From a stream of its own, so that every other draw of a seed stays
	// what it was before on_status came.
	if rand.New(rand.NewPCG(seed, 0x404)).IntN(3) == 0 {
		s.API.EmptyStatus = http.StatusNotFound
	}
	s.drawShape(rand.New(rand.NewPCG(seed, 0x9057)))
	s.drawReadingProbe(rand.New(rand.NewPCG(seed, 0x7e1a)))
	s.drawWindow(rand.New(rand.NewPCG(seed, 0x3b1d)))

	for range 6 + pick(9) {
		s.Steps = append(s.Steps, s.step(rng))
	}
	return s
}

// drawShape draws the cursor style's shape (API.Shape) from a stream of
// its own, so that a seed's other draws stay what they were before shapes
// came; half the cursor seeds keep the plain cursor.
func (s *Scenario) drawShape(rng *rand.Rand) {
	if s.API.Style != "cursor" {
		return
	}
	switch rng.IntN(4) {
	case 0:
		s.API.Shape, s.API.Nodes = ShapeGraphQL, rng.IntN(2) == 0
		// A POST is not answered conditionally, and a hash of its first
		// page sees only that page: without a probe, each probe step is
		// a delta.
		s.API.Probe = "none"
	case 1:
		s.API.Shape = ShapeLastRecord
		// Stripe lists in an order nothing moves a record in (keyset
		// after a record that moved would skip what it passed).
		s.API.Order = ByID
	}
}

// drawReadingProbe replaces the probe, for two fifths of the seeds, by a
// strategy that reads the collection itself (from a stream of its own, so
// that a seed's other draws stay what they were before these came): delta
// where the resource has a delta, rolling_hash where its pages are GETs.
func (s *Scenario) drawReadingProbe(rng *rand.Rand) {
	switch rng.IntN(5) {
	case 0:
		if s.Content.Format != "" {
			s.API.Probe = "delta"
		}
	case 1:
		if s.API.Shape != ShapeGraphQL {
			s.API.Probe = "rolling_hash"
		}
	}
}

// drawWindow draws delta.window, from a stream of its own, for a third of
// the seeds with a time delta whose every record carries its time: a
// record without one is in no window, and with detect_deletes a windowed
// full read would tombstone it (config.Window says so).
func (s *Scenario) drawWindow(rng *rand.Rand) {
	timed := s.Content.Format != "" && s.Content.Format != "number"
	if !timed || s.Content.OddCursor > 0 || rng.IntN(3) != 0 {
		return
	}
	s.Window = []time.Duration{10 * time.Minute, 30 * time.Minute, 2 * time.Hour}[rng.IntN(3)]
	s.API.WindowParam = "updated_before"
}

// Style is the scenario's pagination style, its shape included: what the
// report's table and -sim.styles name.
func (s Scenario) Style() string { return cmp.Or(s.API.Shape, s.API.Style) }

// step draws one step.
func (s Scenario) step(rng *rand.Rand) Step {
	pick := func(n int) int { return rng.IntN(n) }
	var st Step
	switch r := pick(20); {
	case r < 6:
		return Step{Op: OpMutate, N: 1 + pick(6)}
	case r < 9:
		st.Op = OpProbe
	case r < 13:
		st.Op = OpDelta
	case r < 17:
		st.Op = OpFull
	default:
		st.Op = OpTick
	}
	if pick(2) == 0 {
		st.Faults.MidRead = 0.2 + rng.Float64()*0.5
	}
	if pick(3) == 0 {
		switch pick(8) {
		case 0:
			st.Faults.Status5xx = 1 + pick(4)
		case 1:
			st.Faults.RateLimited = 1 + pick(3)
		case 2:
			st.Faults.Truncate = 1 + pick(2)
		case 3:
			st.Faults.Slow = time.Duration(20+pick(80)) * time.Millisecond
		case 4:
			st.Faults.IgnorePage = true
		case 5:
			st.Faults.Cycle = true
		case 6:
			st.Faults.ExpireAfter = time.Duration(1+pick(30)) * time.Millisecond
			st.Faults.Slow = 5 * time.Millisecond
		default:
			st.Faults.SingleUse = true
		}
	}
	if pick(4) == 0 && st.Op != OpTick {
		st.Crash = crashPoints[pick(len(crashPoints))]
		st.CrashAt = 1 + pick(3)
	}
	return st
}

// Describe is the scenario in one paragraph, for a failing seed's report.
func (s Scenario) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "style=%s nodes=%t order=%d limit=%d cap=%d total_field=%t probe=%s/%s head_unsupported=%t records=%d ids=%s hostile=%.2f",
		s.Style(), s.API.Nodes, s.API.Order, s.Limit, s.API.Cap, s.TotalField, s.API.Probe, s.ProbeMethod, s.API.HeadUnsupported,
		s.Records, s.Content.IDs, s.Content.Hostile)
	if s.Content.Format != "" {
		fmt.Fprintf(&b, " delta=%s overlap=%s odd_cursors=%.2f zone=%+ds window=%s", s.Content.Format, s.Overlap, s.Content.OddCursor, s.Content.ZoneOffset, s.Window)
	} else {
		b.WriteString(" delta=none")
	}
	if s.API.EmptyStatus != 0 {
		fmt.Fprintf(&b, " empty_status=%d", s.API.EmptyStatus)
	}
	fmt.Fprintf(&b, " skew=%s stamp_res=%s\nsteps:", s.Skew, s.StampRes)
	for i, st := range s.Steps {
		fmt.Fprintf(&b, " %d:%s;", i+1, st)
	}
	return b.String()
}

// ConfigYAML is the tidemark config of the scenario's one resource.
func (s Scenario) ConfigYAML(source, baseURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sources:\n  - name: %s\n    base_url: %s\n    allow_private: true\n    timeout: 2s\n    resources:\n", source, baseURL)
	b.WriteString("      - name: items\n        path: /items\n        freshness: 1h\n")
	if s.API.Shape == ShapeGraphQL {
		s.graphQLYAML(&b)
	} else {
		b.WriteString("        records: {path: data, id: id}\n")
	}
	b.WriteString("        ignore_fields: [meta.fetched_at]\n")
	b.WriteString("        pagination:\n")
	fmt.Fprintf(&b, "          style: %s\n", s.API.Style)
	if s.API.Style != "none" {
		// max_pages bounds a read far below the default: a scenario has a
		// few hundred records at most.
		fmt.Fprintf(&b, "          limit_param: limit\n          limit: %d\n          max_pages: 1000\n", s.Limit)
	}
	switch s.API.Style {
	case "page":
		b.WriteString("          page_param: page\n")
	case "offset":
		b.WriteString("          offset_param: offset\n")
	case "cursor":
		switch s.API.Shape {
		case ShapeGraphQL:
			b.WriteString("          next_field: data.items.pageInfo.endCursor\n          has_more_field: data.items.pageInfo.hasNextPage\n")
		case ShapeLastRecord:
			b.WriteString("          cursor_param: starting_after\n          cursor_from: last_record\n          has_more_field: has_more\n")
		default:
			b.WriteString("          cursor_param: cursor\n          next_field: next_cursor\n")
		}
	case "next_url":
		b.WriteString("          next_field: next_url\n")
	}
	if s.TotalField {
		b.WriteString("          total_field: total\n")
	}
	strategy := s.API.Probe
	if strategy == "etag_weak" {
		strategy = "etag"
	}
	fmt.Fprintf(&b, "        probe:\n          strategy: %s\n          every: 1m\n", strategy)
	if strategy == "etag" || strategy == "last_modified" {
		fmt.Fprintf(&b, "          method: %s\n", s.ProbeMethod)
	}
	if strategy == "hash" {
		fmt.Fprintf(&b, "          path: %q\n", ProbePath)
	}
	if s.Content.Format != "" {
		b.WriteString("        delta:\n")
		if s.API.Shape != ShapeGraphQL { // a POST carries it in the body's {since}
			fmt.Fprintf(&b, "          param: %s\n", s.API.DeltaParam)
		}
		fmt.Fprintf(&b, "          field: %s\n          format: %s\n", s.Content.cursorField(), s.Content.Format)
		if s.Overlap > 0 {
			fmt.Fprintf(&b, "          overlap: %s\n", s.Overlap)
		}
		if s.Window > 0 {
			fmt.Fprintf(&b, "          start: %q\n          window: {size: %s", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), s.Window)
			if s.API.Shape != ShapeGraphQL {
				fmt.Fprintf(&b, ", end_param: %s", s.API.WindowParam)
			}
			b.WriteString("}\n")
		}
	}
	b.WriteString("        full_sync: {every: 24h, detect_deletes: true}\n")
	// Every creation audited in a row of its own, first load included:
	// checkHistory holds each event to the audit rows of its transaction.
	b.WriteString("        audit: {initial_load: records}\n")
	if s.API.EmptyStatus != 0 {
		fmt.Fprintf(&b, "        on_status: {%d: empty}\n", s.API.EmptyStatus)
	}
	return b.String()
}

// graphQLYAML writes a graphql shape's method, body and records.
func (s Scenario) graphQLYAML(b *strings.Builder) {
	b.WriteString("        method: POST\n        body:\n")
	b.WriteString("          query: \"query($first: Int!, $after: String, $since: String) { items(first: $first, after: $after, since: $since) { pageInfo { hasNextPage endCursor } } }\"\n")
	b.WriteString("          variables: {first: \"{limit}\", after: \"{cursor}\"")
	if s.Content.Format != "" {
		b.WriteString(", since: \"{since}\"")
	}
	if s.Window > 0 {
		b.WriteString(", before: \"{until}\"")
	}
	b.WriteString("}\n")
	if s.API.Nodes {
		b.WriteString("        records: {path: data.items.nodes, id: id}\n")
	} else {
		b.WriteString("        records: {path: data.items.edges, item: node, id: id}\n")
	}
}
