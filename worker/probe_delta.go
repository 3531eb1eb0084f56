package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// deltaProbe is the probe of strategy delta: the delta read of the changes
// since the watermark is the probe. Its first page, empty, means unchanged
// (no run row, the bookkeeping of an unchanged probe); non-empty, it is the
// delta's first page, applied as a fetch applies it, and the probe goes on
// as the delta read to its last page, so that the page is never asked
// twice. A resource then costs one request per interval, busy or quiet.
//
// It keeps every guarantee of a delta fetch because it is one: it holds
// the resource's fetch lock for the whole read (no other read of the
// resource races it), the lower bound is the watermark less delta.overlap,
// each page is applied with its checkpoint and outbox event, the
// watermark moves only when the read succeeds (never past its start less
// delta.clock_skew), and the read has its run row like any fetch's. What
// it does not do is a first read (no watermark yet) or a re-keying full
// read: those go to the fetch pool as a changed probe's fetch does.
func (h probeHandler) deltaProbe(ctx context.Context, p jobs.ProbePayload, src *config.Source, res *config.Resource, st store.State, began time.Time) error {
	key := store.Key{Source: p.Source, Resource: p.Resource}
	taskID := runningTask(ctx).ID
	lock := newFetchLock(h.rdb, key, h.cfg.LockLease, "")
	// No pending mark: a probe that finds a fetch running has no fetch to
	// ask for (below).
	ok, err := lock.Acquire(ctx, "", p.Trigger)
	if err != nil {
		return err
	}
	if !ok {
		// A fetch of the resource runs. Its watermark stays behind the
		// moment its read began (less clock_skew), so the next probe's
		// delta covers whatever changed since: nothing is lost by not
		// asking now, and asking would race it.
		return h.tally.Record(ctx, key, store.ProbeOutcome{Kind: tidemark.ValidatorDelta, Changed: true, Known: true,
			Interval: nextInterval(res.Probe, st.ProbeInterval(res.Probe.Every.D()), false)})
	}
	fh := fetchHandler(h)
	defer func() { fh.release(lock, src, res, 0) }()
	var progress atomic.Int64
	progress.Store(time.Now().UnixNano())
	lctx, stop := lock.Keep(ctx, func() time.Time { return time.Unix(0, progress.Load()) }, src.Timeout.D()+h.cfg.LockLease)
	defer stop()

	f, why, err := fh.probedDelta(lctx, src, res, taskID)
	if err != nil {
		return h.failed(ctx, p, key, 0, began, err)
	}
	if f == nil && why == firstFullDue {
		// Nothing to ask for: the scheduler enqueues the first full read
		// until it succeeds, and a fetch asked for now could take the
		// resource before it and read the whole collection twice.
		return h.tally.Record(ctx, key, store.ProbeOutcome{Kind: tidemark.ValidatorDelta, Changed: true, Known: true,
			Interval: nextInterval(res.Probe, st.ProbeInterval(res.Probe.Every.D()), false)})
	}
	if f == nil {
		h.log.Info("delta probe: a fetch reads this time", "source", p.Source, "resource", p.Resource, "reason", why)
		return h.handToFetch(ctx, p, res, key, began)
	}
	pager := upstream.NewPager(f.client, res, f.cp.Position, 0)
	first, err := pager.Next(lctx)
	if err != nil {
		return h.failed(ctx, p, key, upstream.Requests(err), began, err)
	}
	progress.Store(time.Now().UnixNano())
	same, err := f.nothingNew(lctx, first, pager)
	if err != nil {
		return h.failed(ctx, p, key, first.Requests, began, err)
	}
	if same {
		metrics.ObserveProbe(p.Source, p.Resource, metrics.ProbeNotModified)
		return h.tally.Record(ctx, key, store.ProbeOutcome{Kind: tidemark.ValidatorDelta,
			Interval: nextInterval(res.Probe, st.ProbeInterval(res.Probe.Every.D()), false)})
	}
	metrics.ObserveProbe(p.Source, p.Resource, metrics.ProbeChanged)
	// Changed and, being read now, known: no candidate to confirm, no
	// fetch to ask for.
	if err := h.tally.Record(ctx, key, store.ProbeOutcome{Kind: tidemark.ValidatorDelta, Changed: true, Known: true,
		Interval: nextInterval(res.Probe, 0, true)}); err != nil {
		return err
	}
	f.progress = &progress
	return f.readFrom(lctx, first, pager.Position())
}

// nothingNew reports a delta probe's first page that says nothing changed
// since the last read: the last page (and no delta window after it: an
// empty window says nothing of the next), and no record in it the store
// does not hold as it is. A delta always re-reads a few records (its lower
// bound is the watermark less delta.overlap, and the watermark stays
// delta.clock_skew behind a read's start), so "empty" cannot mean no
// records; it means nothing to apply, which a read of the page would have
// found too. The watermark such a read might have moved on stays where it
// is, which only keeps the next lower bound earlier: safe.
func (f *run) nothingNew(ctx context.Context, first *upstream.Page, pager *upstream.Pager) (bool, error) {
	if !pager.Done() || !f.cp.WindowTo.IsZero() || len(first.Rejected) > 0 {
		return false, nil
	}
	recs := make([]store.Record, len(first.Records))
	for i, r := range first.Records {
		recs[i] = store.Record{ExternalID: r.ID, Hash: r.Hash}
	}
	return f.h.store.StoredAsIs(ctx, f.key, recs)
}

// firstFullDue is probedDelta's reason when the resource was never read
// and the scheduler has its first full read due: that read is the first.
const firstFullDue = "the scheduled first full read reads it first"

// probedDelta sets up the delta read a delta probe begins, with the fetch
// lock held: the sync state as the last read left it, and the read's first
// position. It returns nil and why when a fetch must read instead: there is
// no usable watermark yet (the first read may be the whole collection, a
// fetch pool's work; firstFullDue when the scheduler's full read is that
// read), or the id path changed (a full read re-keys).
func (h fetchHandler) probedDelta(ctx context.Context, src *config.Source, res *config.Resource, taskID string) (*run, string, error) {
	client, err := h.clientFor(src)
	if err != nil {
		return nil, "", err
	}
	f := &run{h: h, p: jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: tidemark.RunDelta, Trigger: jobs.TriggerProbe},
		src: src, res: res, key: store.Key{Source: src.Name, Resource: res.Name}, client: client,
		began: time.Now(), basis: basisOf(res), mode: tidemark.RunDelta}
	// Read under the lock, not from the probe's cached state: the
	// watermark is the one the last read left.
	if f.st, err = h.store.State(ctx, f.key); err != nil {
		return nil, "", err
	}
	f.checkBasis()
	switch {
	case f.rekey:
		return nil, "the id path changed: a full read re-keys the records", nil
	case f.st.Watermark == "" && f.st.LastFullSyncAt == nil && res.FullSync.Every.D() > 0:
		return nil, firstFullDue, nil
	case f.st.Watermark == "" || f.ignoreMark:
		return nil, "no watermark yet: the first read may be the whole collection", nil
	}
	f.notes = nil // checkBasis's notes belong to the fetch that acts on them
	f.cp = checkpoint{Mode: tidemark.RunDelta, TaskID: taskID}
	f.cp.Position = f.beginning()
	f.cp.First, f.cp.FirstVars = f.cp.Next, f.cp.Vars
	return f, "", nil
}

// readFrom is the delta read of a delta probe whose first page, first,
// had changes: the run row, then the pages from first on (first is applied
// as read, never asked again), then the watermark, through the fetch's own
// steps, ending in end like any fetch.
func (f *run) readFrom(ctx context.Context, first *upstream.Page, pos upstream.Position) error {
	task := runningTask(ctx)
	f.row = store.Run{Source: f.key.Source, Resource: f.key.Resource, Kind: tidemark.RunDelta, Trigger: jobs.TriggerProbe,
		TaskID: task.ID, Attempt: task.Attempt()}
	if err := f.h.store.StartRun(ctx, &f.row); err != nil {
		return err
	}
	if err := f.h.store.AbandonRunning(ctx, f.key, f.row.ID); err != nil {
		return f.end(ctx, err)
	}
	f.quarantining = f.st.Quarantined > 0
	expectChanged := false
	err := f.apply(ctx, first, pos, &expectChanged)
	if err == nil {
		err = f.read(ctx)
	}
	if err == nil {
		err = f.finish(ctx)
	}
	if err = f.end(ctx, err); err == nil && f.n.created+f.n.updated+f.n.deleted > 0 {
		f.h.startChildren(ctx, f.src, f.res)
	}
	return err
}

// handToFetch ends a probe that leaves the read to a fetch task, as a
// changed probe does: its run row, and the fetch asked for.
func (h probeHandler) handToFetch(ctx context.Context, p jobs.ProbePayload, res *config.Resource, key store.Key, began time.Time) error {
	out := store.ProbeOutcome{Kind: tidemark.ValidatorDelta, Changed: true, Known: true, Interval: nextInterval(res.Probe, 0, true)}
	if err := h.tally.Record(ctx, key, out); err != nil {
		return err
	}
	metrics.ObserveProbe(p.Source, p.Resource, metrics.ProbeChanged)
	h.recordProbeRun(ctx, p, store.RunOutcome{Status: store.StatusSucceeded}, began, nil)
	fp := jobs.FetchPayload{Source: p.Source, Resource: p.Resource, Mode: jobs.ModeFor(res, false), Trigger: jobs.TriggerProbe}
	_, err := jobs.RequestFetch(ctx, h.store, h.client, fp, res)
	return err
}
