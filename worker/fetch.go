package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/failpoint"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// checkpoint is where an interrupted fetch resumes. It is saved with every
// applied page, in the page's transaction, so it is never ahead of the
// records. Each mode keeps its own (sync_state.checkpoint for deltas,
// full_checkpoint for full reads).
type checkpoint struct {
	Mode tidemark.RunKind `json:"mode"`
	// PassID names the full read's seen-set (the id of the run that began it).
	PassID int64 `json:"pass_id"`
	// TaskID is the task whose run began the read: only that task's later
	// attempts (retries, a hand-back, a shutdown's requeue) resume it, or a
	// task sent to resume it (jobs.FetchPayload.Resume).
	TaskID string `json:"task_id,omitempty"`
	// Pager is the walk's position: the next URL ("" once the last page is
	// applied) and what the walk knows of the pages before it.
	upstream.Position
	// First is the read's first URL (of its current window, with
	// delta.window), where a rejected continuation restarts it; FirstVars
	// are its body's values (method POST).
	First     string        `json:"first_url,omitempty"`
	FirstVars upstream.Vars `json:"first_vars,omitempty"`
	// WindowFrom and WindowTo bound the delta window the read is in
	// (delta.window); WindowEnd is where its last window ends: when the
	// read began. Zero without windows.
	WindowFrom time.Time `json:"window_from,omitzero"`
	WindowTo   time.Time `json:"window_to,omitzero"`
	WindowEnd  time.Time `json:"window_end,omitzero"`
	Pages      int       `json:"pages"`
	// SeenIDs counts the ids the pass's pages put in its seen-set: the
	// deletion check refuses a seen-set that holds fewer (a Postgres crash
	// empties the unlogged table).
	SeenIDs int64 `json:"seen_ids,omitempty"`
	// MaxCursor is the highest delta field value applied so far; the
	// watermark moves to it (never past ReadStart less delta.clock_skew)
	// only when the whole run succeeds.
	MaxCursor string `json:"max_cursor,omitempty"`
	// ReadStart is the upstream's time (its Date header) when the read's
	// first page was answered: a change made upstream after the read began
	// is never below the next delta's lower bound.
	ReadStart time.Time `json:"read_start,omitzero"`
	// DriftBase is the watermark when a full read began: a change the full
	// read applies to a record whose delta field is not after it is one the
	// deltas missed. Drift counts those.
	DriftBase string `json:"drift_base,omitempty"`
	Drift     int64  `json:"drift,omitempty"`
	// Shifted: an offset page showed records moving during the read, which
	// may have skipped some: the read moves no watermark and deletes nothing.
	Shifted bool `json:"shifted,omitempty"`
	// Unidentified counts records with no id at all in a full read: it
	// cannot tell which stored records they are, so it deletes nothing.
	Unidentified int `json:"unidentified,omitempty"`
	// SavedAt is when the checkpoint was stored: an older one than
	// pagination.resume_within is not resumed.
	SavedAt time.Time `json:"saved_at,omitzero"`
}

// fetchHandler runs fetch tasks.
type fetchHandler struct {
	*Worker
}

func (h fetchHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := jobs.ParseFetch(t)
	if err != nil {
		return err
	}
	src, res, err := h.resource(p.Source, p.Resource)
	if err != nil {
		return err
	}
	key := store.Key{Source: p.Source, Resource: p.Resource}
	taskID := runningTask(ctx).ID
	if done, err := h.nothingLeft(ctx, p, taskID); err != nil || done {
		return err
	}
	lock := newFetchLock(h.rdb, key, h.cfg.LockLease, cmp.Or(p.Read, taskID))
	mark := markOf(p)
	if p.TakeOver != 0 {
		mark = "" // a takeover finding the resource busy has nothing to add
	}
	ok, err := lock.Acquire(ctx, mark, p.Trigger)
	if err != nil {
		return err
	}
	if !ok {
		if p.TakeOver == 0 {
			// The follow-up is in the lock's mark (Redis); the request
			// keeps it should Redis lose the mark.
			if _, err := h.store.Request(ctx, p.Request()); err != nil {
				h.log.Warn("record the follow-up fetch", "source", p.Source, "resource", p.Resource, "error", err)
			}
		}
		h.log.Info("fetch already running: follow-up queued",
			"source", p.Source, "resource", p.Resource, "mode", p.Mode, "trigger", p.Trigger, "take_over", p.TakeOver)
		return nil
	}
	var handedBack time.Duration // > 0: the read goes back to its queue and keeps the lock
	defer func() { h.release(lock, src, res, handedBack) }()

	var progress atomic.Int64
	progress.Store(time.Now().UnixNano())
	// A fetch waits at most a source's timeout for a response; give it that
	// and a lease before calling it stalled.
	stall := src.Timeout.D() + h.cfg.LockLease
	lctx, stop := lock.Keep(ctx, func() time.Time { return time.Unix(0, progress.Load()) }, stall)
	defer stop()
	err = h.fetch(lctx, p, src, res, &progress)
	if d, ok := jobs.HandBack(err); ok {
		handedBack = d
	}
	return err
}

// nothingLeft reports a fetch task with nothing to do: a takeover of a run
// that has ended meanwhile, or a task whose run another took over (asynq
// recovering a dead worker's task after the fleet took its work over).
func (h fetchHandler) nothingLeft(ctx context.Context, p jobs.FetchPayload, taskID string) (bool, error) {
	if p.TakeOver != 0 {
		ended, err := h.takeoverEnded(ctx, p.TakeOver, taskID)
		if err != nil || ended {
			if ended {
				h.log.Info("nothing to take over: the run has ended", "source", p.Source, "resource", p.Resource, "run_id", p.TakeOver)
			}
			return ended, err
		}
	}
	by, taken, err := h.store.TakenOver(ctx, taskID)
	if err != nil || !taken {
		return false, err
	}
	h.log.Info("the task's run was taken over: nothing left to do", "source", p.Source, "resource", p.Resource, "task_id", taskID, "taken_over_by", by)
	return true, nil
}

// takeoverEnded reports whether run, which the takeover task taskID was
// sent to take over, has ended other than by the task's own hand: a later
// attempt of the task (after a hand-back, say) finds it ended by the run
// its first attempt began, and goes on with that read (unless that run was
// taken over in turn, which nothingLeft checks next).
func (h fetchHandler) takeoverEnded(ctx context.Context, run int64, taskID string) (bool, error) {
	r, err := h.store.Run(ctx, run)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return true, nil
	case err != nil:
		return false, err
	case r.Status == store.StatusRunning:
		return false, nil
	case r.TakenOverBy == nil:
		return true, nil
	}
	mine, err := h.store.Run(ctx, *r.TakenOverBy)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return true, nil
	case err != nil:
		return false, err
	}
	goesOn := mine.TaskID == taskID && (mine.Status == store.StatusInterrupted || mine.Status == store.StatusRunning)
	return !goesOn, nil
}

// markOf is the mode a fetch leaves in the lock's pending mark when
// another holds the lock: a full read that confirms deletions says so.
func markOf(p jobs.FetchPayload) string {
	if p.Mode == tidemark.RunFull && p.ConfirmDeletes {
		return string(tidemark.RunFull) + "+confirm"
	}
	return string(p.Mode)
}

// release frees the lock and enqueues the one follow-up fetch asked for while
// this one ran. A read handed back for handedBack keeps the lock instead
// (fetchLock.Hold), for as long as its task may take to come back: the
// delay, the fetch pool's check for tasks whose delay is over, and a
// minute in its queue behind other tasks.
func (h fetchHandler) release(lock *fetchLock, src *config.Source, res *config.Resource, handedBack time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if handedBack > 0 {
		hold := handedBack + cmp.Or(h.cfg.RetryCheckInterval, 5*time.Second) + h.cfg.LockLease + time.Minute
		if err := lock.Hold(ctx, hold); err != nil {
			h.log.Error("keep the fetch lock for the handed-back read", "source", src.Name, "resource", res.Name, "error", err)
		}
		return
	}
	mode, trigger, err := lock.Release(ctx)
	if err != nil {
		h.log.Error("release fetch lock", "source", src.Name, "resource", res.Name, "error", err)
		return
	}
	if mode == "" {
		return
	}
	mode, confirm := strings.CutSuffix(mode, "+confirm")
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: tidemark.RunKind(mode), Trigger: trigger, ConfirmDeletes: confirm}, jobs.FetchOptions(res)...)
	if err == nil {
		_, err = h.client.EnqueueContext(ctx, task)
	}
	if err != nil {
		h.log.Error("enqueue follow-up fetch", "source", src.Name, "resource", res.Name, "error", err)
	}
}

// fetch is one attempt of a fetch task, in three steps: begin (the sync
// state, the run row, the checkpoint to resume or a new one), read (the
// pages, each applied with the checkpoint that follows it), finish (deletes,
// watermark, version hash). Whatever happens after the run row exists ends
// in end, which records the outcome.
func (h fetchHandler) fetch(ctx context.Context, p jobs.FetchPayload, src *config.Source, res *config.Resource, progress *atomic.Int64) error {
	f, err := h.begin(ctx, p, src, res)
	if err != nil {
		return err
	}
	f.progress = progress
	if res.Partitioned() {
		err = f.walkPartitions(ctx)
	} else {
		err = f.read(ctx)
	}
	if err == nil {
		err = f.finish(ctx)
	}
	if err = f.end(ctx, err); err == nil && f.n.created+f.n.updated+f.n.deleted > 0 {
		h.startChildren(ctx, src, res)
	}
	return err
}

// run is the state of one fetch attempt.
type run struct {
	h      fetchHandler
	p      jobs.FetchPayload
	src    *config.Source
	res    *config.Resource
	key    store.Key
	client *upstream.Client
	began  time.Time
	mode   tidemark.RunKind
	st     store.State
	row    store.Run
	cp     checkpoint
	// resumed: the attempt continues an interrupted read; restarted: the
	// upstream rejected a continuation and the read started again from its
	// first page (once per attempt, so that a checkpoint whose continuation
	// has expired since never wedges the resource).
	resumed, restarted bool
	// basis is what this run's watermark and ids are made under; rekey: the
	// id path changed, and this full read re-keys every record.
	basis        basis
	ignoreMark   bool // the stored watermark was made under another basis
	rekey        bool
	requests     int // made since the last applied page: not yet on the run row
	quarantining bool
	// progress is when the fetch last received a page or applied one (the
	// fetch lock's stall check).
	progress *atomic.Int64
	n        counts
	cursors  cursorStats
	notes    []string
	outcome  store.RunOutcome
	// partition, in the read of one partition of a partitioned resource,
	// is its name; walk is a partitioned run's position among them
	// (partitions.go).
	partition string
	// summarizeCreates: the run belongs to its resource's first load,
	// audited as a summary (firstLoadSummarized).
	summarizeCreates bool
	// partitionVars are the partition's {partition} and {parent.FIELD}
	// values, for a POST body.
	partitionVars  map[string]string
	walk           walkCheckpoint
	partitionNotes int
	// ifNoneMatch makes a partition's first request conditional; its
	// answer: notModified (304), or firstETag (the first page's ETag).
	ifNoneMatch, firstETag string
	notModified            bool
}

// counts are a fetch's record counts, for its summary line.
// digestPages counts the pages the store matched by digest, without
// comparing their records (store.PageResult.DigestMatched).
type counts struct{ fetched, created, updated, deleted, quarantined, held, digestPages int }

// add adds o's counts to c's.
func (c *counts) add(o counts) {
	c.fetched += o.fetched
	c.created += o.created
	c.updated += o.updated
	c.deleted += o.deleted
	c.quarantined += o.quarantined
	c.held += o.held
	c.digestPages += o.digestPages
}

// basis is what a resource's watermark and stored ids were made under: a
// change in the config of either must not strand them.
type basis struct {
	ID          string `json:"id"`
	DeltaField  string `json:"delta_field,omitempty"`
	DeltaFormat string `json:"delta_format,omitempty"`
}

func basisOf(res *config.Resource) basis {
	b := basis{ID: res.Records.ID}
	if res.Delta != nil {
		b.DeltaField, b.DeltaFormat = res.Delta.Field, res.Delta.Format
	}
	return b
}

// begin reads the resource's sync state, records the run, and sets up the
// read: resumed from a checkpoint of the same mode, or new.
func (h fetchHandler) begin(ctx context.Context, p jobs.FetchPayload, src *config.Source, res *config.Resource) (*run, error) {
	client, err := h.clientFor(src)
	if err != nil {
		return nil, err
	}
	f := &run{h: h, p: p, src: src, res: res, key: store.Key{Source: p.Source, Resource: p.Resource},
		client: client, began: time.Now(), basis: basisOf(res)}
	st, err := h.store.State(ctx, f.key)
	if errors.Is(err, store.ErrNotFound) {
		if err = h.store.EnsureStates(ctx, []store.Key{f.key}); err == nil {
			st, err = h.store.State(ctx, f.key)
		}
	}
	if err != nil {
		return nil, err
	}
	f.st = st
	f.summarizeCreates = firstLoadSummarized(res, st)
	f.checkBasis()
	f.mode = jobs.ModeFor(res, p.Mode == tidemark.RunFull || f.rekey)

	task := runningTask(ctx)
	f.row = store.Run{Source: p.Source, Resource: p.Resource, Kind: f.mode, Trigger: p.Trigger, TaskID: task.ID, Attempt: task.Attempt()}
	if err := h.store.StartRun(ctx, &f.row); err != nil {
		return nil, err
	}
	if err := h.store.AbandonRunning(ctx, f.key, f.row.ID); err != nil {
		return f, f.end(ctx, err)
	}
	f.quarantining = st.Quarantined > 0
	if res.Partitioned() {
		f.setWalk()
	} else if err := f.setCheckpoint(ctx); err != nil {
		return f, f.end(ctx, err)
	}
	return f, nil
}

// checkBasis compares what the stored watermark and ids were made under
// with the config: a watermark of another delta field or format is not
// used (the delta reads from the start and a new watermark is taken), and
// a new id path makes this read a full one that re-keys the records.
func (f *run) checkBasis() {
	var was basis
	if len(f.st.Basis) == 0 || json.Unmarshal(f.st.Basis, &was) != nil {
		return // none yet (a first sync, or state from before bases were kept)
	}
	if f.st.Watermark != "" && (was.DeltaField != f.basis.DeltaField || was.DeltaFormat != f.basis.DeltaFormat) {
		f.ignoreMark = true
		f.note("the delta field or format changed (was %q as %s, now %q as %s): the stored watermark %q is not used, and a new one is taken from this read",
			was.DeltaField, was.DeltaFormat, f.basis.DeltaField, f.basis.DeltaFormat, f.st.Watermark)
	}
	if was.ID != f.basis.ID {
		f.rekey = true
		f.note("the id path changed (was %q, now %q): this full read re-keys every record (records under the old ids are tombstoned)", was.ID, f.basis.ID)
	}
}

func (f *run) note(format string, args ...any) {
	f.notes = append(f.notes, fmt.Sprintf(format, args...))
}

// setCheckpoint resumes the interrupted read of this mode, when it can, or
// starts a new one.
func (f *run) setCheckpoint(ctx context.Context) error {
	saved, ok, why := f.resumable(ctx)
	if ok {
		f.cp, f.resumed = saved, true
		if f.cp.First == "" { // a checkpoint from before first URLs were kept
			f.cp.First = f.firstPosition("").Next
		}
		f.note("resumed the interrupted read at page %d (pass %d)%s", saved.Pages+1, saved.PassID, f.windowNote())
		return nil
	}
	if why != "" {
		f.note("the interrupted read was not resumed (%s): it starts over", why)
	}
	if saved.PassID != 0 {
		// The abandoned pass's seen-set is of no further use.
		if err := f.h.store.DropPass(ctx, saved.PassID); err != nil {
			return err
		}
	}
	f.cp = checkpoint{Mode: f.mode, TaskID: f.row.TaskID}
	if f.mode == tidemark.RunFull {
		f.cp.PassID = f.row.ID
		if f.partition != "" {
			// One run reads many partitions, each with its own seen-set.
			id, err := f.h.store.NewPassID(ctx)
			if err != nil {
				return err
			}
			f.cp.PassID = id
		}
		if f.res.Delta != nil && !f.ignoreMark {
			if _, err := f.storedMark(); err != nil {
				f.note("%v: this full read measures no drift", err)
			} else {
				f.cp.DriftBase = f.st.Watermark
			}
		}
	}
	f.cp.Position = f.beginning()
	f.cp.First, f.cp.FirstVars = f.cp.Next, f.cp.Vars
	return nil
}

// beginning is a new read's first position: from the delta's lower bound,
// in its first window where it has windows.
func (f *run) beginning() upstream.Position {
	since, _ := f.lowerBound()
	if f.startWindows(since) {
		since = f.format(f.cp.WindowFrom)
	}
	return f.firstPosition(since)
}

// firstPosition is where the read, or its current window, begins: with
// the delta's lower bound since ("" for none) and the window's end, as
// query parameters (GET) or as the body's {since} and {until} (POST).
func (f *run) firstPosition(since string) upstream.Position {
	vars := upstream.Vars{}
	for k, v := range f.partitionVars {
		vars[k] = v
	}
	d := f.res.Delta
	if d == nil {
		return upstream.FirstPosition(f.client, f.res, nil, vars)
	}
	params := url.Values{}
	vars["since"] = since
	if since == "" {
		vars["since"] = noLowerBound(d)
	} else if d.Param != "" {
		params.Set(d.Param, since)
	}
	if !f.cp.WindowTo.IsZero() {
		until := f.format(f.cp.WindowTo)
		vars["until"] = until
		if d.Window.EndParam != "" {
			params.Set(d.Window.EndParam, until)
		}
	}
	return upstream.FirstPosition(f.client, f.res, params, vars)
}

// resumable returns the saved checkpoint of this mode, and whether to
// resume it; when not, why ("" when there is nothing to say).
func (f *run) resumable(ctx context.Context) (checkpoint, bool, string) {
	raw := f.st.Checkpoint
	if f.mode == tidemark.RunFull {
		raw = f.st.FullCheckpoint
	}
	var saved checkpoint
	if len(raw) == 0 || json.Unmarshal(raw, &saved) != nil || saved.Mode != f.mode || saved.Next == "" && !saved.windowsLeft() {
		return saved, false, ""
	}
	if f.mode == tidemark.RunFull && saved.PassID == 0 {
		return saved, false, ""
	}
	switch {
	case saved.TaskID != f.row.TaskID && !f.p.Resume:
		// Another task's read: a new request for what the upstream holds
		// now, which the old read's first pages predate. Only the task's
		// own later attempts (a retry, a hand-back, a shutdown's requeue)
		// and an explicit resumption (tidemark retry, sync --resume, a
		// takeover) continue it.
		return saved, false, fmt.Sprintf("it was begun by another task (%s); a new request reads afresh", cmp.Or(saved.TaskID, "unknown"))
	case !saved.SavedAt.IsZero() && time.Since(saved.SavedAt) > f.res.Pagination.ResumeWithin.D():
		return saved, false, fmt.Sprintf("its checkpoint is %s old, older than pagination.resume_within (%s)",
			time.Since(saved.SavedAt).Round(time.Second), f.res.Pagination.ResumeWithin.D())
	case f.rekey || f.ignoreMark:
		return saved, false, "the config of its ids or cursor changed"
	}
	if f.mode == tidemark.RunFull && saved.Pages > 0 {
		// The seen-set is unlogged: a Postgres crash empties it, and the
		// deletion check would then tombstone every record read before.
		seen, err := f.h.store.SeenCount(ctx, saved.PassID)
		if err != nil || seen != saved.SeenIDs {
			return saved, false, fmt.Sprintf("its seen-set holds %d of the %d ids its pages stored (lost in a Postgres crash or failover?)", seen, saved.SeenIDs)
		}
	}
	return saved, true, ""
}

// lowerBound is a delta's lower bound: the watermark less the overlap;
// without a watermark, delta.start. A full read has none.
func (f *run) lowerBound() (string, bool) {
	if f.mode != tidemark.RunDelta {
		return "", false
	}
	if f.st.Watermark == "" || f.ignoreMark {
		return f.start()
	}
	lb, err := DeltaLowerBound(f.res.Delta, f.st.Watermark)
	if err != nil {
		f.note("%v: the delta reads from the start", err)
		return "", false
	}
	return lb, true
}

// DeltaLowerBound is the lower bound a delta read sends for a stored
// watermark: the watermark less delta.overlap, in the delta's format.
func DeltaLowerBound(d *config.Delta, watermark string) (string, error) {
	wm, err := readMark(d, watermark)
	if err != nil {
		return "", err
	}
	return wm.minus(d.Overlap.D()).format(d.Format), nil
}

// storedMark is the resource's stored watermark as a cursor: nil when
// there is none, or it is not used (ignoreMark). An unreadable one is an
// error, which callers say on the run's note: it must never compare as
// "before everything" unremarked.
func (f *run) storedMark() (*cursor, error) {
	if f.ignoreMark || f.st.Watermark == "" || f.res.Delta == nil {
		return nil, nil
	}
	c, err := readMark(f.res.Delta, f.st.Watermark)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// readMark reads a stored watermark in the delta's format.
func readMark(d *config.Delta, watermark string) (cursor, error) {
	c, err := parseCursor(watermark, d.Format)
	if err != nil {
		return cursor{}, fmt.Errorf("the stored watermark %q is unreadable as %s (%v)", watermark, d.Format, err)
	}
	return c, nil
}

// read walks the pages from the checkpoint, applying each with the
// checkpoint that follows it. A continuation the upstream rejects (an
// expired cursor, say) restarts the read from its first page, once.
func (f *run) read(ctx context.Context) error {
	progress := events.NewThrottle(f.h.runProgress, time.Second)
	// expectChanged: the previous page's records all differed from what
	// was stored (store.Page.ExpectChanged).
	expectChanged := false
	for {
		if f.notModified || f.cp.Next == "" && !f.nextWindow() {
			return nil
		}
		pager := upstream.NewPager(f.client, f.res, f.cp.Position, f.cp.Pages)
		if f.ifNoneMatch != "" && f.cp.Pages == 0 {
			pager.IfNoneMatch(f.ifNoneMatch)
		}
		err := f.readPages(ctx, pager, progress, &expectChanged)
		if err == nil {
			if !pager.Done() {
				// The reader stops early only when ctx ends; the read is then
				// not complete, and ending it as one would tombstone the
				// unread records.
				return fmt.Errorf("reading stopped before the last page: %w", cmp.Or(context.Cause(ctx), errors.New("unknown reason")))
			}
			continue
		}
		if !f.continuationRejected(err) {
			return err
		}
		f.restarted = true
		f.cp.Position = upstream.Position{Next: f.cp.First, Vars: f.cp.FirstVars}
		f.note("the read started again from its first page%s: the upstream rejected the continuation (%v)", f.windowNote(), err)
	}
}

// continuationRejected: a request that is not the read's first answered a
// client error other than 408 and 429 (the continuation expired, was used
// once already, or is unknown) that on_status does not map, and the read
// has not restarted already.
func (f *run) continuationRejected(err error) bool {
	continuing := f.cp.Next != f.cp.First || f.cp.Vars["cursor"] != nil
	return !f.restarted && continuing && positionRefused(err)
}

// readPages applies the pager's pages until the last, or the first error.
func (f *run) readPages(ctx context.Context, pager *upstream.Pager, progress *events.Throttle, expectChanged *bool) error {
	pages, stopReading := readAhead(ctx, pager)
	defer func() { f.requests += stopReading() }()
	for {
		if f.cp.Pages > 0 {
			if err := f.h.crashAt(failpoint.MidPagination); err != nil {
				return err
			}
		}
		r, more := <-pages
		if !more {
			return nil
		}
		if r.err != nil {
			f.requests += upstream.Requests(r.err)
			return r.err
		}
		f.progress.Store(time.Now().UnixNano())
		if err := f.apply(ctx, r.page, r.pos, expectChanged); err != nil {
			return err
		}
		f.progress.Store(time.Now().UnixNano())
		f.h.progress(ctx, progress, f.row, f.cp.Pages, f.n)
	}
}

// apply applies one page with the checkpoint that follows it, in one
// transaction, then counts it.
func (f *run) apply(ctx context.Context, page *upstream.Page, pos upstream.Position, expectChanged *bool) error {
	f.requests += page.Requests
	if page.NotModified {
		// Nothing to apply, nothing to delete: the read is over.
		f.notModified, f.cp.Position = true, pos
		return nil
	}
	if f.cp.Pages == 0 {
		f.firstETag = page.Header.Get("ETag")
	}
	from := f.cp.Position
	next := f.nextCheckpoint(page, pos)
	recs, cursors := f.pageRecords(page, &next)
	rejected := f.pageRejected(page, &next)
	if err := f.h.crashAt(failpoint.BeforePageCommit); err != nil {
		return err
	}
	pc := &pageCheckpoint{next: next, cursors: cursors, driftBase: f.driftBase()}
	pr, err := f.h.store.ApplyPage(ctx, f.storePage(recs, rejected, *expectChanged, pc))
	if err != nil {
		return err
	}
	if err := f.h.crashAt(failpoint.AfterPageCommit); err != nil {
		return err
	}
	f.cp = pc.stored
	f.requests = 0
	if err := f.recordPage(ctx, from, page); err != nil {
		return err
	}
	*expectChanged = f.countPage(pr, len(recs), len(rejected))
	return nil
}

// nextCheckpoint is the checkpoint after page, which ends at pos, before
// its records are looked at: the read's start, the position, the page
// count and whether records shifted.
func (f *run) nextCheckpoint(page *upstream.Page, pos upstream.Position) checkpoint {
	next := f.cp
	if next.ReadStart.IsZero() {
		next.ReadStart = cmp.Or(page.Date, f.began).UTC()
	}
	next.Position = pos
	next.Pages++
	next.Shifted = next.Shifted || page.Shifted
	return next
}

// pageRecords are the page's records as the store takes them, and the delta
// cursor of each record that has one; next's MaxCursor rises to the highest.
func (f *run) pageRecords(page *upstream.Page, next *checkpoint) ([]store.Record, map[string]cursor) {
	cursors := make(map[string]cursor, len(page.Records))
	recs := make([]store.Record, len(page.Records))
	top, hasTop := cursor{}, false
	if d := f.res.Delta; d != nil && next.MaxCursor != "" {
		if c, err := parseCursor(next.MaxCursor, d.Format); err == nil {
			top, hasTop = c, true
		}
	}
	for i, r := range page.Records {
		recs[i] = store.Record{ExternalID: r.ID, Payload: r.Payload, Hash: r.Hash}
		if f.res.Delta == nil {
			continue
		}
		c, ok := f.cursors.take(r, f.res.Delta, next.ReadStart)
		if !ok {
			continue
		}
		cursors[r.ID] = c
		if !hasTop || c.After(top) {
			top, hasTop = c, true
			next.MaxCursor = c.format(f.res.Delta.Format)
		}
	}
	return recs, cursors
}

// pageRejected are the page's records set aside, for the quarantine; a full
// read counts those without any id in next (it then deletes nothing).
func (f *run) pageRejected(page *upstream.Page, next *checkpoint) []store.Rejected {
	rejected := make([]store.Rejected, len(page.Rejected))
	for i, r := range page.Rejected {
		rejected[i] = rejectedRecord(r, next.Pages)
		if r.Unidentified && f.mode == tidemark.RunFull {
			next.Unidentified++
		}
	}
	return rejected
}

// driftBase is the watermark a full read measures drift against, or nil
// when there is none.
func (f *run) driftBase() *cursor {
	if f.cp.DriftBase == "" {
		return nil
	}
	c, err := parseCursor(f.cp.DriftBase, f.res.Delta.Format)
	if err != nil {
		return nil
	}
	return &c
}

// storePage is the page as the store applies it, with pc making the
// checkpoint stored in the page's transaction.
func (f *run) storePage(recs []store.Record, rejected []store.Rejected, expectChanged bool, pc *pageCheckpoint) store.Page {
	pass := int64(0)
	if f.mode == tidemark.RunFull {
		pass = f.cp.PassID
	}
	return store.Page{Key: f.key, RunID: f.row.ID, Records: recs, Rejected: rejected, PassID: pass, Requests: f.requests,
		ExpectChanged: expectChanged, Quarantined: f.quarantining, Partition: f.partition, SummarizeCreates: f.summarizeCreates,
		BeforeCommit: func() { failpoint.Hit(failpoint.InPageTransaction) },
		Checkpoint:   pc.build}
}

// pageCheckpoint makes the checkpoint a page's transaction stores: the
// drift and the seen ids are only known inside it (the ids it changed and
// saw), so the store calls back (store.Page.Checkpoint).
type pageCheckpoint struct {
	next      checkpoint
	cursors   map[string]cursor // the page's records' delta cursors
	driftBase *cursor
	stored    checkpoint // what build made: the run's checkpoint once the page commits
}

// build is next with the ids the page saw, the changes that were drift
// (a change to a record not after the drift base, which the deltas
// missed), and the time.
func (pc *pageCheckpoint) build(changed []string, seenIDs int) json.RawMessage {
	pc.stored = pc.next
	pc.stored.SeenIDs += int64(seenIDs)
	if pc.driftBase != nil {
		for _, id := range changed {
			if c, ok := pc.cursors[id]; ok && !c.After(*pc.driftBase) {
				pc.stored.Drift++
			}
		}
	}
	pc.stored.SavedAt = time.Now().UTC()
	b, _ := json.Marshal(pc.stored)
	return b
}

// countPage adds an applied page to the run's counts, and says whether the
// next page is expected to be all new records too.
func (f *run) countPage(pr store.PageResult, records, rejected int) (expectChanged bool) {
	f.quarantining = f.quarantining || pr.Quarantined > 0
	f.n.fetched += records + rejected
	f.n.created += pr.Created
	f.n.updated += pr.Updated
	f.n.quarantined += pr.Quarantined
	if pr.DigestMatched {
		f.n.digestPages++
	}
	// A page of nothing but new records (a first sync) suggests the next
	// is too: skip its hash comparison, and try to copy it (store.copyNew).
	// A page of updates does not: a COPY of it would be refused.
	return pr.Created == records && records > 0
}

// rejectedRecord is an extracted record set aside, as the quarantine keeps
// it. A record without a usable id is told apart by what is wrong with it
// and its content.
func rejectedRecord(r extract.Rejected, page int) store.Rejected {
	_, why, ok := strings.Cut(r.Reason, ": ")
	if !ok {
		why = r.Reason
	}
	out := store.Rejected{ExternalID: r.ID, Reason: fmt.Sprintf("page %d, %s", page, r.Reason), Raw: r.Raw}
	if r.ID == "" {
		out.Key = why + "\x00" + string(r.Raw)
	}
	return out
}

// finish ends a read whose every page is applied: a full read's deletions,
// the watermark, and the version hash.
func (f *run) finish(ctx context.Context) error {
	out := store.RunOutcome{Status: store.StatusSucceeded}
	if f.cp.Shifted {
		f.note("records moved between the offset pages of this read (a page did not begin with the record the page before ended with), so it may have missed some: it deletes nothing and moves no watermark, and the next read covers the same ground")
	}
	if f.mode == tidemark.RunFull && !f.res.Partitioned() { // a partition's pass ends with it
		if err := f.finishPass(ctx); err != nil {
			return err
		}
		if err := f.trimPages(ctx); err != nil {
			return err
		}
		if f.cp.DriftBase != "" {
			out.Drift = &f.cp.Drift
		}
	}
	out.Watermark, out.ForgetWatermark = f.watermark(), f.ignoreMark
	out.ConfirmedDeletes = f.p.ConfirmDeletes || f.rekey
	b, _ := json.Marshal(f.basis)
	out.Basis = b
	vh, err := f.h.store.VersionHash(ctx, f.key)
	if err != nil {
		return err
	}
	out.VersionHash = vh
	f.outcome = out
	return nil
}

// finishPass ends a full read's pass: the deletions its policy allows
// (store.DeletePolicy) and what it held back, on the run's note.
func (f *run) finishPass(ctx context.Context) error {
	fs := f.res.FullSync
	pol := store.DeletePolicy{Detect: fs.DetectDeletes, Confirmed: f.p.ConfirmDeletes || f.rekey,
		AfterReads: fs.DeleteAfterReads, MaxFraction: fs.MaxDeleteFraction}
	if f.cp.Pages <= 1 && !f.restarted && !f.resumed {
		pol.AfterReads = 1 // one response: a snapshot, nothing could shift
	}
	positional := f.res.Pagination.Style == config.PaginationPage || f.res.Pagination.Style == config.PaginationLink ||
		f.res.Pagination.Style == config.PaginationNextURL || f.cp.Unproven
	switch {
	case f.cp.Shifted:
		pol.Hold = "records moved between the offset pages of this read, so it may have missed some"
	case f.cp.Changed && positional && f.cp.Pages > 1:
		// Page numbers cannot show what slid past them; a collection
		// validator or total that moved says something may have.
		pol.Hold = "the collection changed while it was read (its ETag, Last-Modified or total moved between pages), so a record may have slid past a page boundary"
	case f.cp.Unidentified > 0:
		pol.Hold = fmt.Sprintf("%d records had no usable id, and may be stored ones", f.cp.Unidentified)
		// (Records whose id is there but invalid are not: no stored record
		// has such an id.)
	}
	res, err := f.h.store.FinishFullRead(ctx, store.FullRead{Key: f.key, RunID: f.row.ID, PassID: f.cp.PassID, SeenIDs: f.cp.SeenIDs, Policy: pol, Partition: f.partition})
	if err != nil {
		return err
	}
	f.n.deleted, f.n.held = res.Deleted, res.Held
	if fs.DetectDeletes {
		switch {
		case pol.Hold != "" && !f.cp.Shifted && res.Unseen > 0:
			f.note("deletions held: %s; %d unseen records stay", pol.Hold, res.Unseen)
		case res.Mass && res.Held > 0:
			f.note("deletions held: %d of %d live records unseen, more than full_sync.max_delete_fraction (%g): they go when the next full read agrees, or with tidemark sync %s --full --confirm-deletes",
				res.Held, res.Live, pol.MaxFraction, f.key)
		case res.Held > 0:
			f.note("%d deletions wait for the next full read to agree (full_sync.delete_after_reads: %d)", res.Held, pol.AfterReads)
		}
	}
	if f.cp.DriftBase != "" {
		metrics.ObserveDrift(f.key.Source, f.key.Resource, f.cp.Drift)
	}
	return nil
}

// watermark is the run's new watermark, or "" to keep the stored one. It is
// the highest cursor read, but never later than the read's start (the
// upstream's clock) less delta.clock_skew: a change made during a
// multi-page read to a page already read has a cursor after that, and the
// next delta's lower bound must not pass it. A stored watermark later than
// that (left by a release that let a future cursor through) moves back to
// it. A read that saw records shift keeps the old watermark: it may have
// skipped some below the highest.
func (f *run) watermark() string {
	d := f.res.Delta
	if d == nil || f.cp.Shifted {
		return "" // a shifted read may have skipped records below its highest cursor (see finish)
	}
	stored, err := f.storedMark()
	if err != nil {
		f.note("%v: the read's highest cursor, when it has one, replaces it", err)
	}
	top, err := parseCursor(f.cp.MaxCursor, d.Format)
	if !f.cp.WindowTo.IsZero() {
		// Every window is read to its end: nothing below that end is left
		// unread, whether or not a record carried a cursor that high.
		if end := timeCursor(f.cp.WindowTo); err != nil || end.After(top) {
			top, err = end, nil
		}
	}
	switch {
	case err == nil && stored != nil && !top.After(*stored):
		top = *stored
	case err != nil && stored == nil:
		return ""
	case err != nil:
		top = *stored
	}
	if !top.numeric() && !f.cp.ReadStart.IsZero() {
		if ceiling := timeCursor(f.cp.ReadStart.Add(-d.ClockSkew.D())); top.After(ceiling) {
			if stored != nil && stored.After(ceiling) {
				f.note("the stored watermark %s was later than the upstream's clock allows: it moves back to %s", f.st.Watermark, ceiling.format(d.Format))
			}
			top = ceiling
		}
	}
	if w := top.format(d.Format); w != f.st.Watermark || f.ignoreMark {
		return w
	}
	return ""
}

// end records how the attempt ended: the one exit of fetch once the run
// row exists. A hand-back (the source's limits), a graceful shutdown and a
// lost lock are interruptions, not failures: the task resumes from its
// checkpoint.
func (f *run) end(ctx context.Context, err error) error {
	out := f.outcome
	if err != nil {
		out = f.failure(ctx, err)
	}
	out.HTTPRequests = f.requests
	out.Note = strings.Join(append(f.notes, f.cursors.notes(f.res)...), "; ")
	if !f.cp.ReadStart.IsZero() {
		t := f.cp.ReadStart
		out.ReadStartedAt = &t
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeRetry)
	defer cancel()
	// The outcome must land: retried while Postgres is away, the fetch lock
	// kept meanwhile (progress), so that the run is not taken over and
	// recorded as abandoned, which it was not.
	ferr := backoff.Retry(func() error {
		if f.progress != nil {
			f.progress.Store(time.Now().UnixNano())
		}
		err := f.h.store.FinishRun(fctx, f.row.ID, out)
		if errors.Is(err, store.ErrSuperseded) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second)), fctx))
	switch {
	case errors.Is(ferr, store.ErrSuperseded):
		f.h.log.Warn("run taken over by another: its outcome is not recorded", "run_id", f.row.ID, "status", out.Status)
	case ferr != nil && err == nil:
		err = ferr
	case ferr != nil:
		f.h.log.Error("record the run's outcome", "run_id", f.row.ID, "error", ferr)
	}
	f.h.summary(f.row, out.Status, f.began, f.n, err, slog.Bool("resumed", f.resumed), slog.Int64("drift", f.cp.Drift))
	return err
}

// outcomeRetry is how long a run's final status write is retried before
// the run is left to the takeover, which records it as abandoned.
const outcomeRetry = 2 * time.Minute

// failure is the outcome of an attempt that ended with err.
func (f *run) failure(ctx context.Context, err error) store.RunOutcome {
	out := store.RunOutcome{Status: store.StatusFailed, Error: err.Error()}
	if jobs.Final(err, runningTask(ctx).RetriesLeft()) {
		out.Status = store.StatusDead
	}
	if d, ok := jobs.HandBack(err); ok {
		// Not a failure: the task goes back to its queue (the retry
		// budget untouched) and resumes from its checkpoint.
		out.Status = store.StatusInterrupted
		out.Error = fmt.Sprintf("rate limited: handed back for %s: %s", d.Round(time.Millisecond), err)
	}
	if ctx.Err() != nil {
		out.Status = store.StatusInterrupted
		if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() {
			out.Error = cause.Error() // the fetch lock's lease was lost
		} else if errors.Is(ctx.Err(), context.Canceled) {
			out.Error = "interrupted (worker shutting down): the task resumes from its last checkpoint"
		}
	}
	return out
}

// crashAt passes a failpoint: the process dies there when the environment
// asks (internal/failpoint), and an in-process test's CrashHook may fail
// the fetch there instead.
func (h fetchHandler) crashAt(point string) error {
	failpoint.Hit(point)
	if h.cfg.CrashHook != nil {
		return h.cfg.CrashHook(point)
	}
	return nil
}

// readResult is one page read ahead with the walk's position after it, or
// the error that ended the reading.
type readResult struct {
	page *upstream.Page
	pos  upstream.Position
	err  error
}

// readAhead reads the pager's pages in a goroutine, one page ahead of the
// caller: the next page's request, decoding and hashing overlap the current
// page's transaction, which keeps both the worker's CPU and Postgres busy
// (a first sync spends about as long in each). The channel closes after the
// last page or the first error. stop cancels the reading and waits for the
// goroutine, so no request outlives the fetch; it returns the requests of
// the page read but never handed over (the caller stopped first), which
// the run still made.
func readAhead(ctx context.Context, pager *upstream.Pager) (pages <-chan readResult, stop func() int) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan readResult)
	unused := 0 // written by the goroutine, read after done
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for !pager.Done() {
			page, err := pager.Next(ctx)
			select {
			case ch <- readResult{page, pager.Position(), err}:
			case <-ctx.Done():
				unused = upstream.Requests(err)
				if page != nil {
					unused = page.Requests
				}
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch, func() int {
		cancel()
		<-done
		return unused
	}
}

// progress announces a running fetch's progress (run.progress, at most once
// a second). The counts are this attempt's; pages count from the checkpoint,
// like the run row's.
func (h fetchHandler) progress(ctx context.Context, t *events.Throttle, run store.Run, pages int, n counts) {
	err := t.Publish(ctx, events.Progress{RunID: run.ID, Source: run.Source, Resource: run.Resource, Kind: run.Kind,
		Pages: pages, RecordsFetched: int64(n.fetched), Created: int64(n.created), Updated: int64(n.updated)})
	if err != nil && ctx.Err() == nil {
		h.log.Debug("run progress", "run_id", run.ID, "error", err)
	}
}

// summary is the one log line per task.
func (h fetchHandler) summary(run store.Run, status string, began time.Time, n counts, err error, extra ...any) {
	attrs := []any{
		"task", jobs.TypeFetch, "source", run.Source, "resource", run.Resource, "kind", run.Kind,
		"trigger", run.Trigger, "attempt", run.Attempt, "run_id", run.ID, "status", status,
		"fetched", n.fetched, "created", n.created, "updated", n.updated, "deleted", n.deleted,
		"quarantined", n.quarantined, "deletes_held", n.held, "pages_matched_by_digest", n.digestPages,
		"duration_ms", time.Since(began).Milliseconds(),
	}
	attrs = append(attrs, extra...)
	metrics.ObserveRun(run.Source, run.Resource, string(run.Kind), status)
	metrics.ObserveRecords(run.Source, run.Resource, n.created, n.updated, n.deleted)
	if err != nil {
		h.log.Warn("task finished", append(attrs, "error", err.Error())...)
		return
	}
	h.log.Info("task finished", attrs...)
}

func (w *Worker) resource(source, resource string) (*config.Source, *config.Resource, error) {
	if src := w.conf().Source(source); src != nil {
		if res := src.Resource(resource); res != nil {
			return src, res, nil
		}
	}
	return nil, nil, fmt.Errorf("%w: %w", jobs.ErrBadInput, notConfiguredError{source, resource})
}
