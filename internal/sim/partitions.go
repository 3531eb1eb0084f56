package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// A partition seed drives a parent collection and a child collection per
// parent (config parent), or one child collection per listed partition
// (config partitions), through mutations between and during reads and
// crashes, and checks the invariants per partition: no live child
// tombstoned (a child goes only when it or its parent is deleted), no
// lost update, no false event, bounded runs, nothing wedged. Its draws
// come from a stream of their own (0x9a27): the single-resource seeds
// keep theirs.

// PartitionScenario is everything a partition seed decides.
type PartitionScenario struct {
	Seed uint64
	// Static reads listed partitions; otherwise children belong to parents.
	Static      bool
	ChangedOnly bool
	Parents     int
	Children    int // per parent at the start, at most
	Style       string
	Limit       int
	MidRead     float64 // chance that serving a child page changes a child of its partition
	// ETags: each child page carries a strong ETag of its body, and a
	// request whose If-None-Match holds it is answered 304.
	ETags bool
	Steps []PartitionStep
}

// PartitionStep is one step of a partition seed.
type PartitionStep struct {
	Op      string // mutate, parents (a full read of the parents), children (a scheduled child read), children_full
	N       int
	Crash   string
	CrashAt int
}

// NewPartitionScenario derives a partition scenario from a seed.
func NewPartitionScenario(seed uint64) PartitionScenario {
	rng := rand.New(rand.NewPCG(seed, 0x9a27))
	s := PartitionScenario{Seed: seed, Static: rng.IntN(3) == 0, ChangedOnly: rng.IntN(2) == 0,
		Parents: 1 + rng.IntN(10), Children: rng.IntN(9), Style: []string{"none", "cursor"}[rng.IntN(2)], Limit: 2 + rng.IntN(3)}
	if s.Static {
		s.ChangedOnly = false
	}
	if rng.IntN(2) == 0 {
		s.MidRead = 0.1 + rng.Float64()*0.4
	}
	// From a stream of its own, so that every other draw stays what it was.
	s.ETags = rand.New(rand.NewPCG(seed, 0xe7a9)).IntN(2) == 0
	ops := []string{"mutate", "mutate", "parents", "children", "children_full"}
	for range 6 + rng.IntN(10) {
		st := PartitionStep{Op: ops[rng.IntN(len(ops))], N: 1 + rng.IntN(5)}
		if st.Op != "mutate" && rng.IntN(3) == 0 {
			st.Crash, st.CrashAt = crashPoints[rng.IntN(len(crashPoints))], 1+rng.IntN(4)
		}
		s.Steps = append(s.Steps, st)
	}
	return s
}

// Describe is the scenario in one line.
func (s PartitionScenario) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "static=%t changed_only=%t parents=%d children<=%d style=%s limit=%d mid_read=%.2f etags=%t steps:",
		s.Static, s.ChangedOnly, s.Parents, s.Children, s.Style, s.Limit, s.MidRead, s.ETags)
	for i, st := range s.Steps {
		fmt.Fprintf(&b, " %d:%s", i+1, st.Op)
		if st.Op == "mutate" {
			fmt.Fprintf(&b, "(%d)", st.N)
		}
		if st.Crash != "" {
			fmt.Fprintf(&b, "+crash:%s#%d", st.Crash, st.CrashAt)
		}
		b.WriteString(";")
	}
	return b.String()
}

func (s PartitionScenario) config(source, base string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sources:\n  - name: %s\n    base_url: %s\n    allow_private: true\n    timeout: 2s\n    resources:\n", source, base)
	// Every creation audited in a row of its own, first load included, as
	// the checks count them (checkHistory, checkFamily).
	b.WriteString("      - name: parents\n        path: /parents\n        records: {path: data, id: id}\n")
	b.WriteString("        full_sync: {every: 24h, detect_deletes: true, max_delete_fraction: 1}\n        audit: {initial_load: records}\n")
	b.WriteString("      - name: children\n        records: {path: data, id: id}\n        on_status: {404: empty}\n")
	b.WriteString("        full_sync: {every: 24h, detect_deletes: true, max_delete_fraction: 1}\n        audit: {initial_load: records}\n")
	if s.Static {
		ids := make([]string, s.Parents)
		for i := range ids {
			ids[i] = "p" + strconv.Itoa(i)
		}
		fmt.Fprintf(&b, "        path: /parents/{partition}/children\n        partitions: [%s]\n", strings.Join(ids, ", "))
	} else {
		fmt.Fprintf(&b, "        path: /parents/{parent.id}/children\n        parent: {resource: parents, changed_only: %t}\n", s.ChangedOnly)
	}
	fmt.Fprintf(&b, "        pagination: {style: %s", s.Style)
	if s.Style == "cursor" {
		fmt.Fprintf(&b, ", cursor_param: after, next_field: next, limit_param: limit, limit: %d", s.Limit)
	}
	b.WriteString("}\n")
	return b.String()
}

// family is the partition seed's upstream and model in one: parents and
// their children, every version a child ever had, and which are deleted.
type family struct {
	mu       sync.Mutex
	rng      *rand.Rand
	sc       PartitionScenario
	parents  map[string]int // id → version; deleted ones absent
	gone     map[string]bool
	children map[string]*child
	nextID   int
	requests int
	// notModified counts the 304s served (ETags).
	notModified int
}

type child struct {
	parent  string
	version int
	deleted bool
}

func newFamily(sc PartitionScenario) *family {
	f := &family{rng: rand.New(rand.NewPCG(sc.Seed, 0x9a28)), sc: sc, parents: map[string]int{}, gone: map[string]bool{}, children: map[string]*child{}}
	for i := range sc.Parents {
		p := "p" + strconv.Itoa(i)
		f.parents[p] = 1
		for range f.rng.IntN(sc.Children + 1) {
			f.addChild(p)
		}
	}
	return f
}

func (f *family) addChild(p string) {
	f.nextID++
	f.children[strconv.Itoa(f.nextID)] = &child{parent: p, version: 1}
}

// mutate makes n changes: children created, updated, deleted; parents
// created, updated, deleted (not with static partitions). A child's change
// changes its parent too (as GitHub's issue updated_at moves with a new
// comment): parent.changed_only relies on it.
func (f *family) mutate(n int, only string) {
	for range n {
		live := f.liveParents()
		switch r := f.rng.IntN(10); {
		case r < 1 && !f.sc.Static && only == "":
			p := "p" + strconv.Itoa(len(f.parents)+len(f.gone)+100)
			f.parents[p] = 1
			f.addChild(p)
		case r < 2 && !f.sc.Static && only == "" && len(live) > 0:
			p := live[f.rng.IntN(len(live))]
			delete(f.parents, p)
			f.gone[p] = true
		case r < 4 && len(live) > 0:
			p := live[f.rng.IntN(len(live))]
			if only != "" {
				p = only
			}
			f.addChild(p)
			f.parents[p]++
		default:
			ids := f.liveChildren(only)
			if len(ids) == 0 {
				continue
			}
			c := f.children[ids[f.rng.IntN(len(ids))]]
			if f.rng.IntN(3) == 0 {
				c.deleted = true
			} else {
				c.version++
			}
			if _, ok := f.parents[c.parent]; ok {
				f.parents[c.parent]++
			}
		}
	}
}

func (f *family) liveParents() []string {
	var out []string
	for p := range f.parents {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// liveChildren lists the ids of live children (of parent, when given), by id.
func (f *family) liveChildren(parent string) []string {
	var out []string
	for id, c := range f.children {
		if !c.deleted && (parent == "" || c.parent == parent) {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	return out
}

func (f *family) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/parents" {
		var data []map[string]any
		for _, p := range f.liveParents() {
			data = append(data, map[string]any{"id": p, "version": f.parents[p]})
		}
		json.NewEncoder(w).Encode(map[string]any{"data": data})
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/parents/")
	p, ok2 := strings.CutSuffix(rest, "/children")
	if _, live := f.parents[p]; !ok || !ok2 || !live {
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		return
	}
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	limit := 1 << 30
	if f.sc.Style == "cursor" {
		limit = f.sc.Limit
	}
	var data []map[string]any
	next := any(nil)
	for _, id := range f.liveChildren(p) {
		if n, _ := strconv.Atoi(id); n <= after {
			continue
		}
		if len(data) == limit {
			next = data[len(data)-1]["id"]
			break
		}
		data = append(data, map[string]any{"id": id, "parent": p, "version": f.children[id].version})
	}
	body, _ := json.Marshal(map[string]any{"data": data, "next": next})
	if f.sc.ETags {
		sum := sha256.Sum256(body)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			f.notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Write(body)
	if f.sc.MidRead > 0 && f.rng.Float64() < f.sc.MidRead {
		f.mutate(1, p) // a change in the partition being read, between its pages
	}
}

// RunPartitionSeed drives the fleet through a partition seed and checks
// the invariants along the way and at the end.
func RunPartitionSeed(ctx context.Context, lane *Lane, seed uint64) (Result, PartitionScenario) {
	sc := NewPartitionScenario(seed)
	d := &driver{lane: lane, source: fmt.Sprintf("ps%d", seed), began: time.Now(), out: Result{Seed: seed}}
	// The table's style column: which kind of partitions, paged how.
	d.out.Scenario.API.Style = "parent-child/" + sc.Style
	if sc.Static {
		d.out.Scenario.API.Style = "static/" + sc.Style
	}
	fam := newFamily(sc)
	if err := d.runPartitions(ctx, sc, fam); err != nil {
		d.violate(Wedged, "%v", err)
	}
	d.out.Requests, d.out.NotModified = fam.requests, fam.notModified
	d.out.Took = time.Since(d.began)
	return d.out, sc
}

func (d *driver) runPartitions(ctx context.Context, sc PartitionScenario, fam *family) error {
	srv := httptest.NewServer(fam)
	defer srv.Close()
	conf, err := config.Parse(d.source+".yaml", []byte(sc.config(d.source, srv.URL)))
	if err != nil {
		return fmt.Errorf("scenario config: %w", err)
	}
	d.conf = conf
	if err := d.lane.Redis.FlushDB(ctx).Err(); err != nil {
		return err
	}
	d.client = asynq.NewClient(d.lane.RedisOpt)
	defer d.client.Close()
	w, err := worker.New(worker.Config{Concurrency: 2, ProbeConcurrency: 1, PollInterval: 10 * time.Millisecond, ShutdownTimeout: 2 * time.Second,
		RetryDelay: fastRetry, RetryCheckInterval: 20 * time.Millisecond, CrashHook: d.crash.hit}, conf, d.lane.Store, d.lane.RedisOpt, d.lane.Log)
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()
	keys := []store.Key{{Source: d.source, Resource: "parents"}, {Source: d.source, Resource: "children"}}
	if err := d.lane.Store.EnsureStates(ctx, keys); err != nil {
		return err
	}
	for i, st := range sc.Steps {
		if err := d.partitionStep(ctx, fam, st); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, st.Op, err)
		}
		if err := d.checkFamily(ctx, fam, false); err != nil {
			return err
		}
	}
	// Converge, with nothing changing any more: the parents' read starts
	// the children's, twice, then the children's scheduled read (static:
	// two scheduled reads). A read that finds every parent (or a
	// partition's every child) gone holds those deletions until a second
	// read agrees (the max_delete_fraction brake).
	fam.mu.Lock()
	fam.sc.MidRead = 0
	fam.mu.Unlock()
	converge := []string{"parents", "parents", "children"}
	if sc.Static {
		converge = []string{"children", "children"}
	}
	for _, op := range converge {
		if err := d.partitionStep(ctx, fam, PartitionStep{Op: op}); err != nil {
			return fmt.Errorf("converge: %w", err)
		}
	}
	d.out.Converged = true
	return d.checkFamily(ctx, fam, true)
}

func (d *driver) partitionStep(ctx context.Context, fam *family, st PartitionStep) error {
	if st.Op == "mutate" {
		fam.mu.Lock()
		fam.mutate(st.N, "")
		fam.mu.Unlock()
		return nil
	}
	before, err := d.lastRunID(ctx)
	if err != nil {
		return err
	}
	d.crash.set(st.Crash, st.CrashAt)
	defer d.crash.set("", 0)
	resource, mode, trigger := "children", jobs.ModeFull, jobs.TriggerSchedule
	switch st.Op {
	case "parents":
		resource = "parents"
	case "children_full":
		trigger = jobs.TriggerManual // every partition, changed or not
	}
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: d.source, Resource: resource, Mode: mode, Trigger: trigger},
		jobs.FetchOptions(d.conf.Sources[0].Resource(resource))...)
	if err != nil {
		return err
	}
	if _, err := d.client.EnqueueContext(ctx, task); err != nil {
		return err
	}
	if err := d.waitQuiet(ctx); err != nil {
		return err
	}
	d.out.Runs++
	return d.checkRuns(ctx, before, Step{})
}

// checkFamily checks what Postgres holds against the family: no child is
// tombstoned while it and its parent live; no audit row beyond what
// changed; at the end, every live child of a live parent stored, at its
// version, under its parent's partition, and nothing else.
func (d *driver) checkFamily(ctx context.Context, fam *family, final bool) error {
	fam.mu.Lock()
	defer fam.mu.Unlock()
	var rows []struct {
		ExternalID, Partition string
		Version               int
		Deleted               bool
		Created, Updated      int
	}
	err := d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT r.external_id, r.partition, (r.payload->>'version')::int AS version,
		r.deleted_at IS NOT NULL AS deleted,
		(SELECT count(*) FROM record_changes c WHERE c.source = r.source AND c.resource = r.resource AND c.external_id = r.external_id AND c.op = 'created') AS created,
		(SELECT count(*) FROM record_changes c WHERE c.source = r.source AND c.resource = r.resource AND c.external_id = r.external_id AND c.op = 'updated') AS updated
		FROM records r WHERE r.source = ? AND r.resource = 'children'`, d.source).Scan(&rows).Error
	if err != nil {
		return err
	}
	stored := map[string]bool{}
	for _, r := range rows {
		c := fam.children[r.ExternalID]
		_, parentLive := fam.parents[c.parent]
		stored[r.ExternalID] = !r.Deleted
		switch {
		case r.Deleted && !c.deleted && parentLive:
			d.violate(FalseDelete, "child %s of live parent %s tombstoned while live upstream", r.ExternalID, c.parent)
		case r.Created > 1 && !fam.gone[c.parent]:
			d.violate(FalseEvent, "child %s created %d times", r.ExternalID, r.Created)
		case r.Updated > c.version-1:
			d.violate(FalseEvent, "child %s has %d update rows, upstream changed it %d times", r.ExternalID, r.Updated, c.version-1)
		case r.Partition != c.parent:
			d.violate(FalseEvent, "child %s stored under partition %q, its parent is %s", r.ExternalID, r.Partition, c.parent)
		}
		if final && !r.Deleted && parentLive && !c.deleted && r.Version != c.version {
			d.violate(LostUpdate, "child %s at version %d, upstream %d", r.ExternalID, r.Version, c.version)
		}
		if final && !r.Deleted && (c.deleted || !parentLive) {
			d.violate(LostUpdate, "child %s still live, deleted upstream (or its parent %s)", r.ExternalID, c.parent)
		}
	}
	if !final {
		return nil
	}
	for _, id := range fam.liveChildren("") {
		if _, live := fam.parents[fam.children[id].parent]; live && !stored[id] {
			d.violate(LostUpdate, "child %s of %s never stored", id, fam.children[id].parent)
		}
	}
	var rowsN int64
	d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT count(*) FROM sync_partitions WHERE source = ? AND resource = 'children'`, d.source).Scan(&rowsN)
	if !fam.sc.Static && rowsN != int64(len(fam.parents)) {
		d.violate(LostUpdate, "%d partition rows for %d live parents", rowsN, len(fam.parents))
	}
	return nil
}
