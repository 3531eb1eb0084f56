package worker

import (
	"context"
	"errors"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/jobs"
)

// TaskInfo is what asynq tells a handler about the task it runs, beside the
// task: its id, the queue it came from, how many times it was retried, and
// its retry budget. Work passes it where asynq would.
type TaskInfo struct {
	ID       string
	Queue    string
	Retried  int
	MaxRetry int
}

// Attempt is the attempt's number: 1 for the first, 2 for the first retry.
func (i TaskInfo) Attempt() int { return i.Retried + 1 }

// RetriesLeft is how many more attempts the task gets after a failure.
func (i TaskInfo) RetriesLeft() int { return max(i.MaxRetry-i.Retried, 0) }

// taskInfoKey is the context key of the TaskInfo Work passes.
type taskInfoKey struct{}

// runningTask is what ctx says of the task its handler runs: the TaskInfo
// of Work, or what asynq put there. Handlers read it here, never from asynq
// directly, so that Work can run them.
func runningTask(ctx context.Context) TaskInfo {
	if info, ok := ctx.Value(taskInfoKey{}).(TaskInfo); ok {
		return info
	}
	var info TaskInfo
	info.ID, _ = asynq.GetTaskID(ctx)
	info.Queue, _ = asynq.GetQueueName(ctx)
	info.Retried, _ = asynq.GetRetryCount(ctx)
	info.MaxRetry, _ = asynq.GetMaxRetry(ctx)
	return info
}

// Work runs task here and now, through the handler and middleware its pool
// would run it with (same store, same Redis locks and limits), as the
// attempt info describes, and returns the handler's error: the synchronous
// way for tests (internal/workertest) to run one task, with no queue to
// wait on. Write-behind bookkeeping (the probe tally) is flushed before it
// returns, so what the task wrote is in Postgres. Tasks the handler enqueues
// (a changed probe's fetch, a hand-back's copy) go to the queues as ever.
// It works on a worker that Runs and on one that never does (then Close it).
func (w *Worker) Work(ctx context.Context, task *asynq.Task, info TaskInfo) error {
	fetches, probes := w.muxes()
	mux := fetches
	if task.Type() == jobs.TypeProbe {
		mux = probes
	}
	err := mux.ProcessTask(context.WithValue(ctx, taskInfoKey{}, info), task)
	if ferr := w.tally.Flush(context.WithoutCancel(ctx)); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}

// Close releases what New took, for a worker that only Works tasks: Run
// releases it itself when it returns.
func (w *Worker) Close() error {
	w.limiter.FreeReleased()
	return w.rdb.Close()
}
