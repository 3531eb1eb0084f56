package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"

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
		dead, err = jobs.Archived(insp)
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
		fresh, what, err := jobs.Retry(e.ctx, conf, insp, client, info)
		if err != nil {
			if fresh == nil { // not re-enqueued: still in the archive
				fmt.Fprintf(e.stdout, "skipped task %s (%s): %v\n", info.ID, what, err)
			}
			errs = append(errs, fmt.Errorf("task %s: %w", info.ID, err))
			continue
		}
		fmt.Fprintf(e.stdout, "retried task %s (%s, queue %s) as task %s with %d retries; it had failed: %s\n",
			info.ID, what, info.Queue, fresh.ID, fresh.MaxRetry, oneLine(info.LastErr))
	}
	return errors.Join(errs...)
}

// queueNames are the queues tasks live in, in a stable order.
func queueNames() []string { return jobs.AllQueues() }

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

// oneLine keeps a task's last error to one short line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
