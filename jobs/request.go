package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// Request is the durable record of a fetch asked for (sync_requests): the
// scheduler enqueues it again should Redis lose the task that carries it.
func (p FetchPayload) Request() store.SyncRequest {
	return store.SyncRequest{Source: p.Source, Resource: p.Resource, Mode: p.Mode, Trigger: p.Trigger,
		ConfirmDeletes: p.ConfirmDeletes, Resume: p.Resume}
}

// Requested is the fetch a durable request asks for.
func Requested(r store.SyncRequest) FetchPayload {
	return FetchPayload{Source: r.Source, Resource: r.Resource, Mode: r.Mode, Trigger: r.Trigger,
		ConfirmDeletes: r.ConfirmDeletes, Resume: r.Resume}
}

// RequestFetch asks for a fetch of res: it records the request in
// Postgres first, so that it outlives Redis, then enqueues its task.
func RequestFetch(ctx context.Context, st *store.Store, client *asynq.Client, p FetchPayload, res *config.Resource) (*asynq.TaskInfo, error) {
	if _, err := st.Request(ctx, p.Request()); err != nil {
		return nil, err
	}
	task, err := NewFetch(p, FetchOptions(res)...)
	if err != nil {
		return nil, err
	}
	info, err := client.EnqueueContext(ctx, task)
	if err != nil {
		return nil, fmt.Errorf("enqueue %s fetch of %s/%s: %w", p.Mode, p.Source, p.Resource, err)
	}
	return info, nil
}

// AlreadyQueued reports an enqueue refused because the same task (its id,
// or its uniqueness key) is queued already: what the caller asked for is
// asked for.
func AlreadyQueued(err error) bool {
	return errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask)
}
