package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// takeoverLoop takes over the fetches of workers that are gone, every
// TakeoverCheck, until ctx ends. Without it a dead worker's resource waits
// for asynq to recover the task when the task's own lease runs out (about a
// minute); the fetch lock's shorter lease tells the fleet much sooner.
func (w *Worker) takeoverLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.TakeoverCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.takeOver(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("takeover check", "error", err)
		}
	}
}

// takeOver enqueues, for every fetch run still running whose fetch lock has
// lapsed (its worker died, or stalled and gave the lock up), a fetch that
// resumes it from its checkpoint. The task's id is the run's, so however
// many workers see the run at once, one task is enqueued. A lock exists
// whenever a live fetch's run is running (the lock is taken before the run
// row is written and released after its outcome is), so a lapsed one means
// nobody is working on the resource.
func (w *Worker) takeOver(ctx context.Context) error {
	runs, err := w.store.RunningFetches(ctx)
	if err != nil || len(runs) == 0 {
		return err
	}
	var errs []error
	for _, r := range runs {
		key := store.Key{Source: r.Source, Resource: r.Resource}
		held, err := w.rdb.Exists(ctx, fetchLockKey(key)).Result()
		if err != nil {
			return fmt.Errorf("fetch lock of %s: %w", key, err)
		}
		if held > 0 {
			continue
		}
		src, res, err := w.resource(r.Source, r.Resource)
		if err != nil {
			errs = append(errs, w.endRemoved(ctx, r))
			continue
		}
		id := "takeover:" + strconv.FormatInt(r.ID, 10)
		task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: r.Kind,
			Trigger: jobs.TriggerTakeover, Resume: true, TakeOver: r.ID},
			append(jobs.FetchOptions(res), asynq.TaskID(id), asynq.Retention(time.Hour))...)
		if err == nil {
			_, err = w.client.EnqueueContext(ctx, task)
		}
		switch {
		case err == nil:
			w.log.Warn("taking over a fetch whose worker is gone", "source", r.Source, "resource", r.Resource, "run_id", r.ID, "task_id", id)
		case jobs.AlreadyQueued(err):
			// Another worker enqueued it first.
		default:
			errs = append(errs, fmt.Errorf("take over run %d of %s: %w", r.ID, key, err))
		}
	}
	return errors.Join(errs...)
}

// endRemoved ends the abandoned run of a resource the config no longer
// has: nothing will take it over, and left running it would show so for
// ever. Interrupted, not failed: the resource did not fail, it went away.
func (w *Worker) endRemoved(ctx context.Context, r store.RunningFetch) error {
	err := w.store.FinishRun(ctx, r.ID, store.RunOutcome{Status: store.StatusInterrupted,
		Error: "abandoned: its worker stopped renewing the fetch lock, and its resource is no longer in the config"})
	switch {
	case errors.Is(err, store.ErrSuperseded):
		return nil // another worker ended it first
	case err != nil:
		return fmt.Errorf("end run %d of removed %s/%s: %w", r.ID, r.Source, r.Resource, err)
	}
	w.log.Info("ended the abandoned run of a resource no longer in the config", "source", r.Source, "resource", r.Resource, "run_id", r.ID)
	return nil
}
