package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
)

// Archived lists every archived (dead) task of every queue.
func Archived(insp *asynq.Inspector) ([]*asynq.TaskInfo, error) {
	var out []*asynq.TaskInfo
	for _, q := range AllQueues() {
		for page := 1; ; page++ {
			infos, err := insp.ListArchivedTasks(q, asynq.PageSize(100), asynq.Page(page))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("list archived tasks of queue %s: %w", q, err)
			}
			out = append(out, infos...)
			if len(infos) < 100 {
				break
			}
		}
	}
	return out, nil
}

// TaskResource names the resource a probe or fetch task is about; ok is
// false for other tasks (webhook deliveries) and unreadable payloads.
func TaskResource(info *asynq.TaskInfo) (source, resource string, ok bool) {
	var p struct{ Source, Resource string }
	if info.Type != TypeFetch && info.Type != TypeProbe || json.Unmarshal(info.Payload, &p) != nil {
		return "", "", false
	}
	return p.Source, p.Resource, true
}

// Retry re-enqueues a dead (archived) task with a fresh retry budget and
// deletes the archived one. asynq's Inspector.RunTask would move the task
// back keeping its retry count, so a task that died at its limit would die
// again on its first failure; instead it is enqueued anew (same type,
// payload and queue, trigger "retry", the options its type gets today). It
// returns the new task and says in words what the task is.
func Retry(ctx context.Context, conf *config.Config, insp *asynq.Inspector, client *asynq.Client, info *asynq.TaskInfo) (*asynq.TaskInfo, string, error) {
	task, what, err := retryTask(conf, info)
	if err != nil {
		return nil, what, err
	}
	fresh, err := client.EnqueueContext(ctx, task)
	if err != nil {
		return nil, what, fmt.Errorf("could not enqueue: %w", err)
	}
	if err := insp.DeleteTask(info.Queue, info.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
		return fresh, what, fmt.Errorf("re-enqueued as %s but not deleted from the archive: %w", fresh.ID, err)
	}
	return fresh, what, nil
}

// retryTask builds the fresh task for an archived one, and says what it is.
func retryTask(conf *config.Config, info *asynq.TaskInfo) (*asynq.Task, string, error) {
	switch info.Type {
	case TypeFetch:
		var p FetchPayload
		if err := json.Unmarshal(info.Payload, &p); err != nil {
			return nil, "fetch", fmt.Errorf("fetch payload: %w", err)
		}
		what := fmt.Sprintf("%s fetch of %s/%s", p.Mode, p.Source, p.Resource)
		res, err := configured(conf, p.Source, p.Resource)
		if err != nil {
			return nil, what, err
		}
		p.Trigger, p.Resume = TriggerRetry, true // continue where it stopped
		t, err := NewFetch(p, append(FetchOptions(res), asynq.Queue(info.Queue))...)
		return t, what, err
	case TypeProbe:
		var p ProbePayload
		if err := json.Unmarshal(info.Payload, &p); err != nil {
			return nil, "probe", fmt.Errorf("probe payload: %w", err)
		}
		what := fmt.Sprintf("probe of %s/%s", p.Source, p.Resource)
		res, err := configured(conf, p.Source, p.Resource)
		if err != nil {
			return nil, what, err
		}
		p.Trigger = TriggerRetry
		p.NextProbeAt = time.Time{} // its slot is past: retried as an operator's probe
		t, err := NewProbe(p, append(ProbeOptions(res), asynq.Queue(info.Queue))...)
		return t, what, err
	default:
		// Other tasks (webhook deliveries) keep their payload and the
		// options they were enqueued with, minus the spent retries.
		opts := []asynq.Option{asynq.Queue(info.Queue), asynq.MaxRetry(info.MaxRetry)}
		if info.Timeout > 0 {
			opts = append(opts, asynq.Timeout(info.Timeout))
		}
		return asynq.NewTaskWithHeaders(info.Type, info.Payload, info.Headers, opts...), info.Type + " task", nil
	}
}

func configured(conf *config.Config, src, res string) (*config.Resource, error) {
	if s := conf.Source(src); s != nil {
		if r := s.Resource(res); r != nil {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%s/%s is no longer in the config", src, res)
}
