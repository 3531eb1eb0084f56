package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// ProbeState returns the columns of a resource's state that a probe reads:
// paused, the confirmed validators, the candidate, the probe interval and
// head_unsupported. The other fields are zero. It is State without the ORM
// and without the columns a probe never looks at: it runs once per probe.
func (s *Store) ProbeState(ctx context.Context, k Key) (State, error) {
	st := State{Source: k.Source, Resource: k.Resource}
	db, err := s.db.DB()
	if err != nil {
		return st, err
	}
	var candidateAt sql.NullTime
	err = db.QueryRowContext(ctx, `SELECT paused, etag, last_modified, probe_hash, probe_interval_ms,
			candidate_kind, candidate_validator, candidate_at, head_unsupported
		FROM sync_state WHERE source = $1 AND resource = $2`, k.Source, k.Resource).
		Scan(&st.Paused, &st.ETag, &st.LastModified, &st.ProbeHash, &st.ProbeIntervalMS,
			&st.CandidateKind, &st.CandidateValidator, &candidateAt, &st.HeadUnsupported)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return st, fmt.Errorf("sync state %s: %w", k, err)
	}
	if candidateAt.Valid {
		t := candidateAt.Time.UTC()
		st.CandidateAt = &t
	}
	return st, nil
}

// ProbeBatcher writes the bookkeeping of unchanged probes behind, coalesced:
// an unchanged probe only adds to counters and moves in_sync_at, its
// interval and next_probe_at, so the probes of a flush interval are summed
// per resource in memory and written in one statement per flush, instead of
// one synchronous commit per probe. A changed probe (or one whose outcome
// must be ordered after the unchanged ones, see FlushKey) is written at once.
//
// What a crash loses is the tally of the last flush interval: some probe
// counters, and an in_sync_at a few tens of milliseconds older than it could
// be. Both are harmless: the counters are statistics, and an older in_sync_at
// only overstates the lag until the next probe.
type ProbeBatcher struct {
	s     *Store
	every time.Duration
	onErr func(error)

	mu       sync.Mutex
	open     bool                // Run is flushing: Record may defer writes
	pending  map[Key]*probeTally // recorded, not yet being written
	flushing map[Key]*probeTally // being written by the flush in flight
	flushMu  sync.Mutex          // held for a whole write: one at a time
}

// probeTally is what the unchanged probes of one resource add up to.
type probeTally struct {
	n               int64         // unchanged probes
	at              time.Time     // the newest one's time
	interval        time.Duration // the interval the newest one chose
	headUnsupported bool
}

// NewProbeBatcher returns a batcher over s that flushes every every (default
// 50ms) while Run runs; onErr, when set, hears of failed flushes (their
// tallies are kept and retried with the next flush).
func (s *Store) NewProbeBatcher(every time.Duration, onErr func(error)) *ProbeBatcher {
	return &ProbeBatcher{s: s, every: cmp.Or(every, 50*time.Millisecond), onErr: onErr, pending: make(map[Key]*probeTally)}
}

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
// resource's tally for the next flush; any other outcome is written at
// once, after the resource's pending tally, so that the latest write is the
// latest probe's.
func (b *ProbeBatcher) Record(ctx context.Context, k Key, out ProbeOutcome) error {
	if !out.Changed {
		b.mu.Lock()
		if b.open {
			t := b.pending[k]
			if t == nil {
				t = &probeTally{}
				b.pending[k] = t
			}
			t.n++
			t.at = time.Now().UTC()
			t.interval = out.Interval
			t.headUnsupported = t.headUnsupported || out.HeadUnsupported
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
	}
	if err := b.FlushKey(ctx, k); err != nil {
		return err
	}
	return b.s.RecordProbe(ctx, k, out)
}

// State is ProbeState with this process's unflushed probes applied: the
// interval the newest of them chose (and head_unsupported). Counters and
// in_sync_at are not overlaid.
func (b *ProbeBatcher) State(ctx context.Context, k Key) (State, error) {
	// Looked up before the read: a flush that commits in between is then
	// seen twice, which is harmless for values that are set, not added.
	b.mu.Lock()
	t := b.pending[k]
	if t == nil {
		t = b.flushing[k]
	}
	var over probeTally
	if t != nil {
		over = *t
	}
	b.mu.Unlock()
	st, err := b.s.ProbeState(ctx, k)
	if err != nil || over.n == 0 {
		return st, err
	}
	st.ProbeIntervalMS = over.interval.Milliseconds()
	st.HeadUnsupported = st.HeadUnsupported || over.headUnsupported
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
	t := b.pending[k]
	delete(b.pending, k)
	b.mu.Unlock()
	if t == nil {
		return nil
	}
	batch := map[Key]*probeTally{k: t}
	if err := b.s.writeProbeTallies(ctx, batch); err != nil {
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
	b.pending = make(map[Key]*probeTally, len(batch))
	b.flushing = batch
	b.mu.Unlock()
	err := b.s.writeProbeTallies(ctx, batch)
	b.mu.Lock()
	b.flushing = nil
	b.mu.Unlock()
	if err != nil {
		b.restore(batch)
	}
	return err
}

// restore puts back the tallies of a failed write, under any newer ones.
func (b *ProbeBatcher) restore(batch map[Key]*probeTally) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, old := range batch {
		if t := b.pending[k]; t != nil {
			t.n += old.n
			t.headUnsupported = t.headUnsupported || old.headUnsupported
			continue
		}
		b.pending[k] = old
	}
}

// writeProbeTallies adds the tallies to sync_state in one statement. The
// counters add up and in_sync_at only moves forward, whatever else wrote the
// row; the probe's view of the latest state (interval, next_probe_at, no
// consecutive failures) is taken only when nothing else wrote the row after
// the newest tallied probe (a changed or failed probe, a fetch).
func (s *Store) writeProbeTallies(ctx context.Context, batch map[Key]*probeTally) error {
	keys := make([]Key, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	// One row order for every writer: concurrent batches of two workers
	// then lock rows in the same order.
	slices.SortFunc(keys, func(a, b Key) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Resource, b.Resource))
	})
	n := len(keys)
	sources, resources := make([]string, n), make([]string, n)
	counts, intervals := make([]int64, n), make([]int64, n)
	ats, heads := make([]time.Time, n), make([]bool, n)
	for i, k := range keys {
		t := batch[k]
		sources[i], resources[i] = k.Source, k.Resource
		counts[i], intervals[i], ats[i], heads[i] = t.n, t.interval.Milliseconds(), t.at, t.headUnsupported
	}
	db, err := s.db.DB()
	if err != nil {
		return err
	}
	// probe_minutes is written by the same statement (a data-modifying
	// CTE): one round trip per flush, as before it existed.
	_, err = db.ExecContext(ctx, `WITH minutes AS (
			INSERT INTO probe_minutes AS m (source, resource, minute, unchanged, last_at)
			SELECT source, resource, date_trunc('minute', at), n, at
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) AS v(source, resource, n, at)
			ON CONFLICT (source, resource, minute) DO UPDATE
			SET unchanged = m.unchanged + EXCLUDED.unchanged, last_at = greatest(m.last_at, EXCLUDED.last_at))
		UPDATE sync_state AS s SET
			probes_total = s.probes_total + v.n,
			probes_not_modified = s.probes_not_modified + v.n,
			in_sync_at = greatest(s.in_sync_at, v.at),
			head_unsupported = s.head_unsupported OR v.head_unsupported,
			probe_interval_ms = CASE WHEN s.updated_at <= v.at THEN v.interval_ms ELSE s.probe_interval_ms END,
			next_probe_at = CASE WHEN s.updated_at <= v.at THEN v.at + v.interval_ms * interval '1 millisecond' ELSE s.next_probe_at END,
			consecutive_failures = CASE WHEN s.updated_at <= v.at THEN 0 ELSE s.consecutive_failures END,
			updated_at = greatest(s.updated_at, v.at)
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bigint[], $6::boolean[])
			AS v(source, resource, n, at, interval_ms, head_unsupported)
		WHERE s.source = v.source AND s.resource = v.resource`,
		sources, resources, counts, ats, intervals, heads)
	if err != nil {
		return fmt.Errorf("record %d resources' unchanged probes: %w", n, err)
	}
	return nil
}
