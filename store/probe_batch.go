package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// ProbeBatcher writes the bookkeeping of unchanged probes behind, coalesced:
// an unchanged probe only adds to counters and moves in_sync_at, its
// interval and next_probe_at, so the probes of a flush interval are summed
// per resource in memory and written in one statement per flush, instead of
// one synchronous commit per probe. A changed probe (or one whose outcome
// must be ordered after the unchanged ones, see FlushKey) is written at once.
//
// An unchanged probe is one whose answer matched a validator (Kind,
// Validator): the one its task carried (jobs.ProbeBasis) or the one it read.
// The flush writes its tally only where that is still the resource's
// confirmed validator and the resource is not paused; a tally that does not
// match is stale (a fetch confirmed another validator, tidemark reset
// cleared it, an operator paused the resource) and goes to OnStale instead,
// uncounted: the probe compared the upstream with something the store no
// longer holds, so its answer says nothing about the store.
//
// What a crash loses is the tally of the last flush interval: some probe
// counters, and an in_sync_at a few tens of milliseconds older than it could
// be. Both are harmless: the counters are statistics, and an older in_sync_at
// only overstates the lag until the next probe.
type ProbeBatcher struct {
	s     *Store
	every time.Duration
	onErr func(error)
	hooks ProbeHooks

	mu       sync.Mutex
	open     bool                  // Run is flushing: Record may defer writes
	pending  map[Key][]*probeTally // recorded, not yet being written
	flushing map[Key][]*probeTally // being written by the flush in flight
	flushMu  sync.Mutex            // held for a whole write: one at a time
}

// ProbeHooks hear what a flush made of the tallies; each is called once per
// resource and flush, after the write committed. Set them before Run.
type ProbeHooks struct {
	// Applied: n unchanged probes of the resource were written.
	Applied func(k Key, n int64)
	// Stale: unchanged probes of the resource were dropped, their
	// validator no longer the confirmed one (or the resource paused or
	// gone). The resource should be probed again against its stored state.
	Stale func(k Key, n int64)
}

// probeTally is what the unchanged probes of one resource that matched one
// validator add up to.
type probeTally struct {
	kind, validator string        // what the probes matched ("": unchecked)
	n               int64         // unchanged probes
	at              time.Time     // the newest one's time
	interval        time.Duration // the interval the newest one chose
	headUnsupported bool
}

// NewProbeBatcher returns a batcher over s that flushes every every (default
// 50ms) while Run runs; onErr, when set, hears of failed flushes (their
// tallies are kept and retried with the next flush).
func (s *Store) NewProbeBatcher(every time.Duration, onErr func(error)) *ProbeBatcher {
	return &ProbeBatcher{s: s, every: cmp.Or(every, 50*time.Millisecond), onErr: onErr, pending: make(map[Key][]*probeTally)}
}

// SetHooks sets the hooks of b's flushes; call it before Run and Record.
func (b *ProbeBatcher) SetHooks(h ProbeHooks) { b.hooks = h }

// Run flushes every flush interval until ctx is done, then once more.
// Records made while Run is not running are written at once.
func (b *ProbeBatcher) Run(ctx context.Context) {
	b.mu.Lock()
	b.open = true
	b.mu.Unlock()
	t := time.NewTicker(b.every)
	defer t.Stop()
	var failing time.Time // when the failure last reported began, or zero
	for {
		select {
		case <-t.C:
			// While Postgres is away every flush fails: report the first
			// failure and one a minute, not twenty a second.
			err := b.Flush(ctx)
			if err == nil {
				failing = time.Time{}
			} else if failing.IsZero() || time.Since(failing) >= time.Minute {
				failing = time.Now()
				b.report(err)
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	b.mu.Lock()
	b.open = false
	b.mu.Unlock()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b.report(b.Flush(fctx))
}

func (b *ProbeBatcher) report(err error) {
	if err != nil && b.onErr != nil {
		b.onErr(err)
	}
}

// Record records a probe's outcome: an unchanged probe is added to the
// resource's tally of the validator it matched (out.Kind, out.Validator)
// for the next flush; any other outcome is written at once, after the
// resource's pending tallies, so that the latest write is the latest
// probe's. Unchanged probes recorded while Run is not running are written
// at once, checked as a flush checks them.
func (b *ProbeBatcher) Record(ctx context.Context, k Key, out ProbeOutcome) error {
	if !out.Changed {
		t := &probeTally{kind: out.Kind, validator: out.Validator, n: 1, at: time.Now().UTC(),
			interval: out.Interval, headUnsupported: out.HeadUnsupported}
		b.mu.Lock()
		if b.open {
			b.pending[k] = addTally(b.pending[k], t)
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		if err := b.FlushKey(ctx, k); err != nil {
			return err
		}
		b.flushMu.Lock()
		defer b.flushMu.Unlock()
		return b.write(ctx, map[Key][]*probeTally{k: {t}})
	}
	if err := b.FlushKey(ctx, k); err != nil {
		return err
	}
	return b.s.RecordProbe(ctx, k, out)
}

// addTally adds t to the tally of the same validator in ts, or appends it:
// the newest probe's time and interval win, the counts add up.
func addTally(ts []*probeTally, t *probeTally) []*probeTally {
	for _, old := range ts {
		if old.kind == t.kind && old.validator == t.validator {
			old.n += t.n
			if !t.at.Before(old.at) {
				old.at, old.interval = t.at, t.interval
			}
			old.headUnsupported = old.headUnsupported || t.headUnsupported
			return ts
		}
	}
	return append(ts, t)
}

// newest is the most recent tally of ts (nil for none).
func newest(ts []*probeTally) *probeTally {
	var n *probeTally
	for _, t := range ts {
		if n == nil || t.at.After(n.at) {
			n = t
		}
	}
	return n
}

// Interval is the probe interval the newest of this process's unflushed
// unchanged probes of k chose, or 0 when there is none: newer than what
// the store (or a probe's basis) says until the next flush.
func (b *ProbeBatcher) Interval(k Key) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := newest(b.pending[k])
	if t == nil {
		t = newest(b.flushing[k])
	}
	if t == nil {
		return 0, false
	}
	return t.interval, t.headUnsupported
}

// State is ProbeState with this process's unflushed probes applied: the
// interval the newest of them chose (and head_unsupported). Counters and
// in_sync_at are not overlaid.
func (b *ProbeBatcher) State(ctx context.Context, k Key) (State, error) {
	// Looked up before the read: a flush that commits in between is then
	// seen twice, which is harmless for values that are set, not added.
	interval, head := b.Interval(k)
	st, err := b.s.ProbeState(ctx, k)
	if err != nil || interval == 0 {
		return st, err
	}
	st.ProbeIntervalMS = interval.Milliseconds()
	st.HeadUnsupported = st.HeadUnsupported || head
	return st, nil
}

// FlushKey writes the resource's pending tally now, after any flush in
// flight: call it before writing anything else about the resource's probes
// (a changed or failed probe) so that the writes land in probe order.
func (b *ProbeBatcher) FlushKey(ctx context.Context, k Key) error {
	b.mu.Lock()
	idle := b.pending[k] == nil && b.flushing[k] == nil
	b.mu.Unlock()
	if idle {
		return nil // the common case: nothing to order after
	}
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	ts := b.pending[k]
	delete(b.pending, k)
	b.mu.Unlock()
	if ts == nil {
		return nil
	}
	batch := map[Key][]*probeTally{k: ts}
	if err := b.write(ctx, batch); err != nil {
		b.restore(batch)
		return err
	}
	return nil
}

// Flush writes every pending tally in one statement. A failed write keeps
// the tallies for the next flush.
func (b *ProbeBatcher) Flush(ctx context.Context) error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	batch := b.pending
	if len(batch) == 0 {
		b.mu.Unlock()
		return nil
	}
	b.pending = make(map[Key][]*probeTally, len(batch))
	b.flushing = batch
	b.mu.Unlock()
	err := b.write(ctx, batch)
	b.mu.Lock()
	b.flushing = nil
	b.mu.Unlock()
	if err != nil {
		b.restore(batch)
	}
	return err
}

// write writes batch and tells the hooks what became of it. The caller
// holds flushMu.
func (b *ProbeBatcher) write(ctx context.Context, batch map[Key][]*probeTally) error {
	applied, err := b.s.writeProbeTallies(ctx, batch)
	if err != nil {
		return err
	}
	for k, ts := range batch {
		var done, stale int64
		for _, t := range ts {
			if applied[tallyID{k, t.kind, t.validator}] {
				done += t.n
			} else {
				stale += t.n
			}
		}
		if done > 0 && b.hooks.Applied != nil {
			b.hooks.Applied(k, done)
		}
		if stale > 0 && b.hooks.Stale != nil {
			b.hooks.Stale(k, stale)
		}
	}
	return nil
}

// restore puts back the tallies of a failed write, under any newer ones.
func (b *ProbeBatcher) restore(batch map[Key][]*probeTally) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, old := range batch {
		for _, t := range old {
			b.pending[k] = addTally(b.pending[k], t)
		}
	}
}

// tallyID names one tally: a resource and the validator its probes matched.
type tallyID struct {
	key             Key
	kind, validator string
}

// writeProbeTallies adds the tallies to sync_state in one statement and
// returns those it wrote. A tally is written only where its validator is
// still the confirmed one of its kind (a kind without a confirmed validator
// in sync_state is not checked)
// and the resource is not paused. The counters add up and in_sync_at only
// moves forward, whatever else wrote the row; the probe's view of the latest
// state (interval, next_probe_at, no consecutive failures) is taken only
// when nothing else wrote the row after the newest tallied probe (a changed
// or failed probe, a fetch).
func (s *Store) writeProbeTallies(ctx context.Context, batch map[Key][]*probeTally) (map[tallyID]bool, error) {
	keys := make([]Key, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	// One row order for every writer: concurrent batches of two workers
	// then lock rows in the same order.
	slices.SortFunc(keys, func(a, b Key) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Resource, b.Resource))
	})
	var c tallyColumns
	for _, k := range keys {
		for _, t := range batch[k] {
			c.add(k, t)
		}
	}
	db, err := s.db.DB()
	if err != nil {
		return nil, err
	}
	// probe_minutes is written by the same statement (a data-modifying
	// CTE), from the rows the update wrote: one round trip per flush. At
	// most one tally of a resource matches its one confirmed validator, so
	// each sync_state and probe_minutes row is written once.
	rows, err := db.QueryContext(ctx, `WITH v AS (
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bigint[], $6::boolean[], $7::text[], $8::text[])
				AS v(source, resource, n, at, interval_ms, head_unsupported, kind, validator)
		), applied AS (
			UPDATE sync_state AS s SET
				probes_total = s.probes_total + v.n,
				probes_not_modified = s.probes_not_modified + v.n,
				in_sync_at = greatest(s.in_sync_at, v.at),
				head_unsupported = s.head_unsupported OR v.head_unsupported,
				probe_interval_ms = CASE WHEN s.updated_at <= v.at THEN v.interval_ms ELSE s.probe_interval_ms END,
				next_probe_at = CASE WHEN s.updated_at <= v.at THEN v.at + v.interval_ms * interval '1 millisecond' ELSE s.next_probe_at END,
				consecutive_failures = CASE WHEN s.updated_at <= v.at THEN 0 ELSE s.consecutive_failures END,
				updated_at = greatest(s.updated_at, v.at)
			FROM v
			WHERE s.source = v.source AND s.resource = v.resource AND NOT s.paused
				-- Only kinds with a confirmed validator in sync_state are
				-- checked: "" (unchecked), delta (the watermark is its
				-- memory) and rolling_hash (probe_pages) have none.
				AND (v.kind NOT IN ('etag', 'last_modified', 'hash') OR v.validator = CASE v.kind WHEN 'etag' THEN s.etag
					WHEN 'last_modified' THEN s.last_modified WHEN 'hash' THEN s.probe_hash END)
			RETURNING v.source, v.resource, v.n, v.at, v.kind, v.validator
		), minutes AS (
			INSERT INTO probe_minutes AS m (source, resource, minute, unchanged, last_at)
			SELECT source, resource, date_trunc('minute', at), n, at FROM applied
			ON CONFLICT (source, resource, minute) DO UPDATE
			SET unchanged = m.unchanged + EXCLUDED.unchanged, last_at = greatest(m.last_at, EXCLUDED.last_at))
		SELECT source, resource, kind, validator FROM applied`,
		c.sources, c.resources, c.counts, c.ats, c.intervals, c.heads, c.kinds, c.validators)
	if err != nil {
		return nil, fmt.Errorf("record %d resources' unchanged probes: %w", len(keys), err)
	}
	defer rows.Close()
	applied := make(map[tallyID]bool, len(c.sources))
	for rows.Next() {
		var id tallyID
		if err := rows.Scan(&id.key.Source, &id.key.Resource, &id.kind, &id.validator); err != nil {
			return nil, fmt.Errorf("record unchanged probes: %w", err)
		}
		applied[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("record %d resources' unchanged probes: %w", len(keys), err)
	}
	return applied, nil
}

// tallyColumns are tallies as the arrays writeProbeTallies unnests.
type tallyColumns struct {
	sources, resources, kinds, validators []string
	counts, intervals                     []int64
	ats                                   []time.Time
	heads                                 []bool
}

func (c *tallyColumns) add(k Key, t *probeTally) {
	c.sources, c.resources = append(c.sources, k.Source), append(c.resources, k.Resource)
	c.kinds, c.validators = append(c.kinds, t.kind), append(c.validators, t.validator)
	c.counts, c.intervals = append(c.counts, t.n), append(c.intervals, t.interval.Milliseconds())
	c.ats, c.heads = append(c.ats, t.at), append(c.heads, t.headUnsupported)
}
