package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
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
}

// fetchHandler runs fetch tasks.
type fetchHandler struct {
	*Worker
}

func (h fetchHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	h.inflight.Add(1)
	defer h.inflight.Done()
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

	st, err := h.store.State(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		if err = h.store.EnsureStates(ctx, []store.Key{key}); err == nil {
			st, err = h.store.State(ctx, key)
		}
	}
	if err != nil {
		return err
	}
	run := store.Run{Source: p.Source, Resource: p.Resource, Kind: p.Mode, Trigger: p.Trigger, TaskID: taskID, Attempt: retried + 1}
	if err := h.store.StartRun(ctx, &run); err != nil {
		return err
	}

	// Resume an interrupted read of the same mode from its checkpoint.
	cp := checkpoint{Mode: p.Mode, PassID: run.ID}
	var saved checkpoint
	resumed := false
	if len(st.Checkpoint) > 0 && json.Unmarshal(st.Checkpoint, &saved) == nil && saved.Mode == p.Mode && saved.PassID != 0 {
		cp, resumed = saved, true
	} else {
		cp.NextURL = upstream.FirstURL(client, res, nil)
	}

	var (
		requests int // made since the last applied page: not yet on the run row
		n        counts
		pager    = upstream.NewPager(client, res, cp.NextURL)
	)
	fail := func(err error) error {
		status := store.StatusFailed
		if jobs.Permanent(err) || retried >= maxRetry {
			status = store.StatusDead
		}
		msg := err.Error()
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

	for !pager.Done() {
		page, err := pager.Next(ctx)
		if err != nil {
			requests += upstream.Requests(err)
			return fail(err)
		}
		cp.NextURL = page.Next
		cp.Pages++
		cpJSON, _ := json.Marshal(cp)
		recs := make([]store.Record, len(page.Records))
		for i, r := range page.Records {
			recs[i] = store.Record{ExternalID: r.ID, Payload: r.Payload, Hash: r.Hash}
		}
		pass := int64(0)
		if p.Mode == jobs.ModeFull {
			pass = cp.PassID
		}
		pr, err := h.store.ApplyPage(ctx, store.Page{
			Key: key, RunID: run.ID, Records: recs, PassID: pass,
			Checkpoint: cpJSON, Requests: requests + page.Requests,
		})
		if err != nil {
			requests += page.Requests
			return fail(err)
		}
		requests = 0
		n.fetched += len(recs)
		n.created += pr.Created
		n.updated += pr.Updated
	}

	if p.Mode == jobs.ModeFull {
		deleted, err := h.store.FinishFullRead(ctx, key, run.ID, cp.PassID, res.FullSync.DetectDeletes)
		if err != nil {
			return fail(err)
		}
		n.deleted = deleted
	}
	vh, err := h.store.VersionHash(ctx, key)
	if err != nil {
		return fail(err)
	}
	if err := h.store.FinishRun(ctx, run.ID, store.RunOutcome{Status: store.StatusSucceeded, VersionHash: vh}); err != nil {
		return fail(err)
	}
	h.summary(run, store.StatusSucceeded, began, n, nil, slog.Bool("resumed", resumed))
	return nil
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
