package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
)

// retry re-enqueues dead (archived) tasks with a fresh retry budget.
// asynq's Inspector.RunTask would move the task back keeping its retry
// count, so a task that died at its limit would die again on its first
// failure; instead each task is enqueued anew (same type, payload and
// queue, trigger "retry", the options its type gets today) and the
// archived one deleted.
func (e env) retry(args []string) error {
	var s settings
	fs := e.flags("retry", &s)
	all := fs.Bool("all", false, "retry every archived task of every queue")
	if err := parse(fs, reorder(args)); err != nil {
		return err
	}
	if *all == (fs.NArg() > 0) {
		return usagef("usage: tidemark retry [--all | TASK_ID...]")
	}
	conf, err := s.loadConfig()
	if err != nil {
		return err
	}
	redisOpt, err := s.redisOpt()
	if err != nil {
		return err
	}
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()

	var dead []*asynq.TaskInfo
	if *all {
		dead, err = archived(insp)
		if err != nil {
			return err
		}
		if len(dead) == 0 {
			fmt.Fprintln(e.stdout, "no archived tasks")
			return nil
		}
	} else {
		for _, id := range fs.Args() {
			info, err := findArchived(insp, id)
			if err != nil {
				return err
			}
			dead = append(dead, info)
		}
	}

	client := asynq.NewClient(redisOpt)
	defer client.Close()
	var errs []error
	for _, info := range dead {
		task, what, err := retryTask(conf, info)
		if err != nil {
			fmt.Fprintf(e.stdout, "skipped task %s (%s): %v\n", info.ID, what, err)
			errs = append(errs, fmt.Errorf("task %s: %w", info.ID, err))
			continue
		}
		fresh, err := client.EnqueueContext(e.ctx, task)
		if err != nil {
			errs = append(errs, fmt.Errorf("task %s: enqueue: %w", info.ID, err))
			continue
		}
		if err := insp.DeleteTask(info.Queue, info.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			errs = append(errs, fmt.Errorf("task %s: re-enqueued as %s but not deleted from the archive: %w", info.ID, fresh.ID, err))
			continue
		}
		fmt.Fprintf(e.stdout, "retried task %s (%s, queue %s) as task %s with %d retries; it had failed: %s\n",
			info.ID, what, info.Queue, fresh.ID, fresh.MaxRetry, oneLine(info.LastErr))
	}
	return errors.Join(errs...)
}

// queueNames are the queues tasks live in, in a stable order.
func queueNames() []string { return jobs.AllQueues() }

// archived lists every archived task of every queue.
func archived(insp *asynq.Inspector) ([]*asynq.TaskInfo, error) {
	var out []*asynq.TaskInfo
	for _, q := range queueNames() {
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

// findArchived finds an archived task by id in any queue; an unknown id or
// a task that is not dead is a usage error.
func findArchived(insp *asynq.Inspector, id string) (*asynq.TaskInfo, error) {
	for _, q := range queueNames() {
		info, err := insp.GetTaskInfo(q, id)
		if errors.Is(err, asynq.ErrQueueNotFound) || errors.Is(err, asynq.ErrTaskNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up task %s in queue %s: %w", id, q, err)
		}
		if info.State != asynq.TaskStateArchived {
			return nil, usagef("task %s in queue %s is %s, not archived", id, q, info.State)
		}
		return info, nil
	}
	return nil, usagef("no task %s in queues %s", id, strings.Join(queueNames(), ", "))
}

// retryTask builds the fresh task for an archived one, and says what it is.
func retryTask(conf *config.Config, info *asynq.TaskInfo) (*asynq.Task, string, error) {
	switch info.Type {
	case jobs.TypeFetch:
		var p jobs.FetchPayload
		if err := json.Unmarshal(info.Payload, &p); err != nil {
			return nil, "fetch", fmt.Errorf("fetch payload: %w", err)
		}
		what := fmt.Sprintf("%s fetch of %s/%s", p.Mode, p.Source, p.Resource)
		res, err := resource(conf, p.Source, p.Resource)
		if err != nil {
			return nil, what, err
		}
		p.Trigger, p.Resume = jobs.TriggerRetry, true // continue where it stopped
		t, err := jobs.NewFetch(p, append(jobs.FetchOptions(res), asynq.Queue(info.Queue))...)
		return t, what, err
	case jobs.TypeProbe:
		var p jobs.ProbePayload
		if err := json.Unmarshal(info.Payload, &p); err != nil {
			return nil, "probe", fmt.Errorf("probe payload: %w", err)
		}
		what := fmt.Sprintf("probe of %s/%s", p.Source, p.Resource)
		res, err := resource(conf, p.Source, p.Resource)
		if err != nil {
			return nil, what, err
		}
		p.Trigger = jobs.TriggerRetry
		t, err := jobs.NewProbe(p, append(jobs.ProbeOptions(res), asynq.Queue(info.Queue))...)
		return t, what, err
	default:
		// Other tasks (webhook deliveries) keep their payload and the
		// options they were enqueued with, minus the spent retries.
		opts := []asynq.Option{asynq.Queue(info.Queue), asynq.MaxRetry(info.MaxRetry)}
		if info.Timeout > 0 {
			opts = append(opts, asynq.Timeout(info.Timeout))
		}
		return asynq.NewTaskWithHeaders(info.Type, info.Payload, info.Headers, opts...), info.Type, nil
	}
}

func resource(conf *config.Config, src, res string) (*config.Resource, error) {
	if s := conf.Source(src); s != nil {
		if r := s.Resource(res); r != nil {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%s/%s is no longer in the config: left in the archive", src, res)
}

// oneLine keeps a task's last error to one short line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
