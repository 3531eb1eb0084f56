package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/failpoint"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// checkpoint is where an interrupted fetch resumes. It is saved with every
// applied page, in the page's transaction, so it is never ahead of the
// records.
type checkpoint struct {
	Mode string `json:"mode"`
	// PassID names the full read's seen-set (the id of the run that began it).
	PassID int64 `json:"pass_id"`
	// NextURL is the next page to read; "" once the last page is applied.
	NextURL string `json:"next_url"`
	Pages   int    `json:"pages"`
	// MaxCursor is the highest delta field value applied so far; the
	// watermark moves to it only when the whole run succeeds.
	MaxCursor string `json:"max_cursor,omitempty"`
	// DriftBase is the watermark when a full read began: a change the full
	// read applies to a record whose delta field is not after it is one the
	// deltas missed. Drift counts those.
	DriftBase string `json:"drift_base,omitempty"`
	Drift     int64  `json:"drift,omitempty"`
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
		return jobs.Classify(err)
	}
	key := store.Key{Source: p.Source, Resource: p.Resource}
	lock := newFetchLock(h.rdb, key, h.cfg.LockLease)
	ok, err := lock.Acquire(ctx, p.Mode, p.Trigger)
	if err != nil {
		return err
	}
	if !ok {
		h.log.Info("fetch already running: follow-up queued",
			"source", p.Source, "resource", p.Resource, "mode", p.Mode, "trigger", p.Trigger)
		return nil
	}
	defer h.release(lock, src, res, p)

	lctx, stop := lock.Keep(ctx)
	defer stop()
	return jobs.Classify(h.fetch(lctx, t, p, src, res))
}

// release frees the lock and enqueues the one follow-up fetch asked for while
// this one ran.
func (h fetchHandler) release(lock *fetchLock, src *config.Source, res *config.Resource, p jobs.FetchPayload) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mode, trigger, err := lock.Release(ctx)
	if err != nil {
		h.log.Error("release fetch lock", "source", src.Name, "resource", res.Name, "error", err)
		return
	}
	if mode == "" {
		return
	}
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: mode, Trigger: trigger}, jobs.FetchOptions(res)...)
	if err == nil {
		_, err = h.client.EnqueueContext(ctx, task)
	}
	if err != nil {
		h.log.Error("enqueue follow-up fetch", "source", src.Name, "resource", res.Name, "error", err)
	}
}

func (h fetchHandler) fetch(ctx context.Context, t *asynq.Task, p jobs.FetchPayload, src *config.Source, res *config.Resource) error {
	key := store.Key{Source: p.Source, Resource: p.Resource}
	client := h.clients[src.Name]
	taskID, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	began := time.Now()
	mode := jobs.ModeFor(res, p.Mode == jobs.ModeFull)

	st, err := h.store.State(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		if err = h.store.EnsureStates(ctx, []store.Key{key}); err == nil {
			st, err = h.store.State(ctx, key)
		}
	}
	if err != nil {
		return err
	}
	run := store.Run{Source: p.Source, Resource: p.Resource, Kind: mode, Trigger: p.Trigger, TaskID: taskID, Attempt: retried + 1}
	if err := h.store.StartRun(ctx, &run); err != nil {
		return err
	}
	if err := h.store.AbandonRunning(ctx, key, run.ID); err != nil {
		return err
	}

	// Resume an interrupted read of the same mode from its checkpoint.
	var cp, saved checkpoint
	resumed := len(st.Checkpoint) > 0 && json.Unmarshal(st.Checkpoint, &saved) == nil && saved.Mode == mode && saved.PassID != 0
	if resumed && mode == jobs.ModeFull && saved.Pages > 0 {
		// The seen-set is unlogged: after a Postgres crash it is empty, and
		// resuming would tombstone every record of the pages read before.
		seen, err := h.store.PassSeen(ctx, saved.PassID)
		if err != nil {
			return err
		}
		if !seen {
			h.log.Warn("full read's seen-set was lost (Postgres crash?): starting the read over",
				"source", p.Source, "resource", p.Resource, "pass_id", saved.PassID, "pages", saved.Pages)
			resumed = false
		}
	}
	if resumed {
		cp = saved
	} else {
		cp = checkpoint{Mode: mode, PassID: run.ID}
		params := url.Values{}
		if mode == jobs.ModeDelta && st.Watermark != "" {
			wm, err := parseCursor(st.Watermark, res.Delta.Format)
			if err != nil {
				return fmt.Errorf("stored watermark %q: %w", st.Watermark, err)
			}
			params.Set(res.Delta.Param, wm.minus(res.Delta.Overlap.D()).format(res.Delta.Format))
		}
		if mode == jobs.ModeFull && res.Delta != nil {
			cp.DriftBase = st.Watermark
		}
		cp.NextURL = upstream.FirstURL(client, res, params)
	}
	var driftBase cursor
	if cp.DriftBase != "" {
		driftBase, _ = parseCursor(cp.DriftBase, res.Delta.Format)
	}

	var (
		progress = events.NewThrottle(h.rdb, time.Second)
		requests int // made since the last applied page: not yet on the run row
		// expectChanged: the previous page's records all differed from
		// what was stored (store.Page.ExpectChanged).
		expectChanged bool
		n             counts
		pager         = upstream.NewPager(client, res, cp.NextURL)
	)
	fail := func(err error) error {
		status := store.StatusFailed
		if jobs.Permanent(err) || retried >= maxRetry {
			status = store.StatusDead
		}
		msg := err.Error()
		if d, ok := jobs.HandBack(err); ok {
			// Not a failure: the task goes back to its queue (the retry
			// budget untouched) and resumes from its checkpoint. The row
			// stays, as every attempt's does, saying so plainly.
			status = store.StatusFailed
			msg = fmt.Sprintf("rate limited: handed back for %s: %s", d.Round(time.Millisecond), err)
		}
		if ctx.Err() != nil {
			if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() {
				msg = cause.Error() // the fetch lock's lease was lost
			} else if errors.Is(ctx.Err(), context.Canceled) {
				msg = "interrupted (worker shutting down): the task resumes from its last checkpoint"
			}
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if ferr := h.store.FinishRun(fctx, run.ID, store.RunOutcome{Status: status, Error: msg, HTTPRequests: requests}); ferr != nil {
			h.log.Error("record failed run", "run_id", run.ID, "error", ferr)
		}
		h.summary(run, status, began, n, err)
		return err
	}

	pages, stopReading := readAhead(ctx, pager)
	defer stopReading()
	for {
		if cp.Pages > 0 {
			failpoint.Hit(failpoint.MidPagination)
		}
		r, more := <-pages
		if !more {
			break
		}
		page, err := r.page, r.err
		if err != nil {
			requests += upstream.Requests(err)
			return fail(err)
		}
		requests += page.Requests
		cursors := make(map[string]cursor, len(page.Records))
		recs := make([]store.Record, len(page.Records))
		for i, r := range page.Records {
			recs[i] = store.Record{ExternalID: r.ID, Payload: r.Payload, Hash: r.Hash}
			if res.Delta == nil {
				continue
			}
			c, err := parseCursor(r.Cursor, res.Delta.Format)
			if err != nil {
				return fail(fmt.Errorf("GET %s: %w: record %d: delta field %q: %w", page.URL, upstream.ErrBadResponse, i, res.Delta.Field, err))
			}
			cursors[r.ID] = c
			if cp.MaxCursor == "" || c.After(mustCursor(cp.MaxCursor, res.Delta.Format)) {
				cp.MaxCursor = c.format(res.Delta.Format)
			}
		}
		pass := int64(0)
		if mode == jobs.ModeFull {
			pass = cp.PassID
		}
		next := cp
		next.NextURL = page.Next
		next.Pages++
		// Drift is only known after the page applied; count it on a copy of
		// the checkpoint that the page's transaction stores.
		failpoint.Hit(failpoint.BeforePageCommit)
		sp := store.Page{Key: key, RunID: run.ID, Records: recs, PassID: pass, Requests: requests, ExpectChanged: expectChanged}
		pr, err := h.applyPage(ctx, sp, &next, func(changed []string) int64 {
			if cp.DriftBase == "" {
				return 0
			}
			var d int64
			for _, id := range changed {
				if c, ok := cursors[id]; ok && !c.After(driftBase) {
					d++
				}
			}
			return d
		})
		if err != nil {
			return fail(err)
		}
		failpoint.Hit(failpoint.AfterPageCommit)
		cp = next
		requests = 0
		// A page of nothing but new or changed records (a first sync)
		// suggests the next is too: skip its hash comparison.
		expectChanged = pr.Unchanged == 0 && len(recs) > 0
		n.fetched += len(recs)
		n.created += pr.Created
		n.updated += pr.Updated
		h.progress(ctx, progress, run, cp.Pages, n)
	}

	// The reader stops early only when ctx ends; the read is then not
	// complete, and ending it as one would tombstone the unread records.
	if !pager.Done() {
		return fail(fmt.Errorf("reading stopped before the last page: %w", cmp.Or(context.Cause(ctx), errors.New("unknown reason"))))
	}
	out := store.RunOutcome{Status: store.StatusSucceeded}
	if mode == jobs.ModeFull {
		deleted, err := h.store.FinishFullRead(ctx, key, run.ID, cp.PassID, res.FullSync.DetectDeletes)
		if err != nil {
			return fail(err)
		}
		n.deleted = deleted
		if cp.DriftBase != "" {
			out.Drift = &cp.Drift
			defer metrics.ObserveDrift(run.Source, run.Resource, cp.Drift)
		}
	}
	if cp.MaxCursor != "" && (st.Watermark == "" || mustCursor(cp.MaxCursor, res.Delta.Format).After(mustCursor(st.Watermark, res.Delta.Format))) {
		out.Watermark = cp.MaxCursor
	}
	vh, err := h.store.VersionHash(ctx, key)
	if err != nil {
		return fail(err)
	}
	out.VersionHash = vh
	if err := h.store.FinishRun(ctx, run.ID, out); err != nil {
		return fail(err)
	}
	h.summary(run, store.StatusSucceeded, began, n, nil, slog.Bool("resumed", resumed), slog.Int64("drift", cp.Drift))
	return nil
}

// readResult is one page read ahead, or the error that ended the reading.
type readResult struct {
	page *upstream.Page
	err  error
}

// readAhead reads the pager's pages in a goroutine, one page ahead of the
// caller: the next page's request, decoding and hashing overlap the current
// page's transaction, which keeps both the worker's CPU and Postgres busy
// (a first sync spends about as long in each). The channel closes after the
// last page or the first error. stop cancels the reading and waits for the
// goroutine, so no request outlives the fetch.
func readAhead(ctx context.Context, pager *upstream.Pager) (pages <-chan readResult, stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan readResult)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for !pager.Done() {
			page, err := pager.Next(ctx)
			select {
			case ch <- readResult{page, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch, func() {
		cancel()
		<-done
	}
}

// applyPage applies a page with the checkpoint that follows it. The
// checkpoint's drift is counted from the ids the page changed, which are
// known only inside the page's transaction: the store calls back.
func (h fetchHandler) applyPage(ctx context.Context, page store.Page, cp *checkpoint, drift func(changed []string) int64) (store.PageResult, error) {
	page.Checkpoint = func(changed []string) json.RawMessage {
		cp.Drift += drift(changed)
		b, _ := json.Marshal(cp)
		return b
	}
	return h.store.ApplyPage(ctx, page)
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

// counts are a fetch's record counts, for its summary line.
type counts struct{ fetched, created, updated, deleted int }

// summary is the one log line per task.
func (h fetchHandler) summary(run store.Run, status string, began time.Time, n counts, err error, extra ...any) {
	attrs := []any{
		"task", jobs.TypeFetch, "source", run.Source, "resource", run.Resource, "kind", run.Kind,
		"trigger", run.Trigger, "attempt", run.Attempt, "run_id", run.ID, "status", status,
		"fetched", n.fetched, "created", n.created, "updated", n.updated, "deleted", n.deleted,
		"duration_ms", time.Since(began).Milliseconds(),
	}
	attrs = append(attrs, extra...)
	metrics.ObserveRun(run.Source, run.Resource, run.Kind, status)
	metrics.ObserveRecords(run.Source, run.Resource, n.created, n.updated, n.deleted)
	if err != nil {
		h.log.Warn("task finished", append(attrs, "error", err.Error())...)
		return
	}
	h.log.Info("task finished", attrs...)
}

func (w *Worker) resource(source, resource string) (*config.Source, *config.Resource, error) {
	src := w.conf.Source(source)
	if src == nil {
		return nil, nil, fmt.Errorf("%w: source %q is not in the config", jobs.ErrBadInput, source)
	}
	res := src.Resource(resource)
	if res == nil {
		return nil, nil, fmt.Errorf("%w: resource %s/%s is not in the config", jobs.ErrBadInput, source, resource)
	}
	return src, res, nil
}
