package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// retry re-enqueues dead (archived) tasks with a fresh retry budget.
// asynq's Inspector.RunTask would move the task back keeping its retry
// count, so a task that died at its limit would die again on its first
// failure; instead each task is enqueued anew (same type, payload and
// queue, trigger "retry", the options its type gets today) and the
// archived one deleted. A task is named by its id or by the id of one of
// its runs, as `tidemark runs` shows both.
func (e env) retry(args []string) error {
	var s settings
	fs := e.flags("retry", &s)
	all := fs.Bool("all", false, "retry every dead task of every queue")
	if err := parse(fs, reorder(fs, args)); err != nil {
		return err
	}
	if *all == (fs.NArg() > 0) {
		return usagef("usage: tidemark retry [--all | TASK_ID|RUN_ID...]")
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
			fmt.Fprintln(e.stdout, "no dead tasks: nothing to retry")
			return nil
		}
	} else if dead, err = e.namedDead(s, insp, fs.Args()); err != nil {
		return err
	}

	client := asynq.NewClient(redisOpt)
	defer client.Close()
	var errs []error
	for _, info := range dead {
		if err := e.retryOne(conf, insp, client, info); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// retryOne re-enqueues one dead task and says what it did in plain words.
func (e env) retryOne(conf *config.Config, insp *asynq.Inspector, client *asynq.Client, info *asynq.TaskInfo) error {
	fresh, what, err := jobs.Retry(e.ctx, conf, insp, client, info)
	switch {
	case err != nil && fresh == nil:
		return fmt.Errorf("not re-enqueued: the %s (dead task %s): %w; the dead task is left as it is (delete it at /monitoring/ if it is no longer wanted)",
			what, info.ID, err)
	case err != nil:
		return fmt.Errorf("re-enqueued the %s as task %s, but could not remove dead task %s (delete it at /monitoring/, or the next retry --all runs it again): %w",
			what, fresh.ID, info.ID, err)
	}
	fmt.Fprintf(e.stdout, "re-enqueued the %s as task %s (queue %s, up to %d retries) in place of dead task %s, which %s\n",
		what, fresh.ID, fresh.Queue, fresh.MaxRetry, info.ID, howItFailed(info))
	return nil
}

// skipRetry is what asynq's SkipRetry adds to a task's last error: words
// about asynq, not about the failure.
var skipRetry = ": " + asynq.SkipRetry.Error()

// howItFailed says how a dead task failed, without asynq's vocabulary.
func howItFailed(info *asynq.TaskInfo) string {
	if strings.Contains(info.LastErr, skipRetry) {
		return "had failed in a way retrying alone does not fix: " + oneLine(strings.ReplaceAll(info.LastErr, skipRetry, ""))
	}
	if strings.TrimSpace(info.LastErr) == "" {
		return "has no error recorded (it was moved to the dead tasks by hand?)"
	}
	if info.Retried == 0 {
		return "had failed once: " + oneLine(info.LastErr)
	}
	return fmt.Sprintf("had failed %d times, last: %s", info.Retried+1, oneLine(info.LastErr))
}

// queueNames are the queues tasks live in, in a stable order.
func queueNames() []string { return jobs.AllQueues() }

// namedDead finds the dead task each argument names: a task id, or a run
// id (a number) whose task it looks up. An argument naming no dead task is
// a usage error that says why, and then nothing is retried.
func (e env) namedDead(s settings, insp *asynq.Inspector, args []string) ([]*asynq.TaskInfo, error) {
	var st *store.Store
	if slices.ContainsFunc(args, isRunID) {
		var err error
		if st, err = s.openStore(e.ctx); err != nil {
			return nil, err
		}
		defer st.Close()
	}
	var dead []*asynq.TaskInfo
	seen := map[string]bool{}
	for _, arg := range args {
		var info *asynq.TaskInfo
		var err error
		if isRunID(arg) {
			info, err = e.deadTaskOfRun(st, insp, arg)
		} else {
			info, err = deadTask(insp, arg)
		}
		if err != nil {
			return nil, err
		}
		if !seen[info.ID] { // a task and its run, or two runs of one task
			seen[info.ID] = true
			dead = append(dead, info)
		}
	}
	return dead, nil
}

// isRunID tells a run id (sync_runs.id, a number) from a task id (asynq's
// are UUIDs; webhook deliveries' start with "webhook-").
func isRunID(arg string) bool {
	_, err := strconv.ParseInt(arg, 10, 64)
	return err == nil
}

// deadTask finds the dead task with this id.
func deadTask(insp *asynq.Inspector, id string) (*asynq.TaskInfo, error) {
	info, err := lookupTask(insp, id)
	switch {
	case err != nil:
		return nil, err
	case info == nil:
		return nil, usagef("no task %s in any queue (%s): it succeeded, was retried already, or expired from the dead tasks; task ids are the TASK column of `tidemark runs`",
			id, strings.Join(queueNames(), ", "))
	case info.State != asynq.TaskStateArchived:
		return nil, usagef("task %s is not dead: it %s (queue %s); nothing to retry", id, doing(info), info.Queue)
	}
	return info, nil
}

// deadTaskOfRun finds the dead task that ran the run with this id.
func (e env) deadTaskOfRun(st *store.Store, insp *asynq.Inspector, arg string) (*asynq.TaskInfo, error) {
	id, _ := strconv.ParseInt(arg, 10, 64)
	run, err := st.Run(e.ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, usagef("no run %d: run ids are the ID column of `tidemark runs`", id)
	}
	if err != nil {
		return nil, fmt.Errorf("look up run %d: %w", id, err)
	}
	what := run.Kind + " fetch"
	if run.Kind == tidemark.RunProbe {
		what = "probe"
	}
	label := fmt.Sprintf("run %d (%s of %s/%s, %s)", run.ID, what, run.Source, run.Resource, run.Status)
	if run.TaskID == "" {
		return nil, usagef("%s has no task recorded: nothing to retry; to read now: %s", label, syncCommand(run))
	}
	info, err := lookupTask(insp, run.TaskID)
	switch {
	case err != nil:
		return nil, err
	case info == nil:
		return nil, usagef("%s ran as task %s, which is in no queue any more: it succeeded, was retried already, or expired from the dead tasks; to read now: %s",
			label, run.TaskID, syncCommand(run))
	case info.State != asynq.TaskStateArchived:
		return nil, usagef("%s ran as task %s, which is not dead: it %s (queue %s); nothing to retry", label, run.TaskID, doing(info), info.Queue)
	}
	return info, nil
}

// lookupTask finds a task by id in any queue: nil if it is in none.
func lookupTask(insp *asynq.Inspector, id string) (*asynq.TaskInfo, error) {
	for _, q := range queueNames() {
		info, err := insp.GetTaskInfo(q, id)
		if errors.Is(err, asynq.ErrQueueNotFound) || errors.Is(err, asynq.ErrTaskNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up task %s in queue %s: %w", id, q, err)
		}
		return info, nil
	}
	return nil, nil
}

// syncCommand is the command that reads what run r read, now.
func syncCommand(r store.Run) string {
	cmd := "tidemark sync " + r.Source + "/" + r.Resource
	if r.Kind == tidemark.RunFull {
		cmd += " --full"
	}
	return cmd
}

// doing says in words what a task that is not dead is doing.
func doing(info *asynq.TaskInfo) string {
	switch info.State {
	case asynq.TaskStatePending:
		return "is waiting in its queue to run"
	case asynq.TaskStateActive:
		return "is running now"
	case asynq.TaskStateScheduled:
		return "is scheduled to run at " + info.NextProcessAt.Local().Format(time.DateTime)
	case asynq.TaskStateRetry:
		return fmt.Sprintf("failed %d time(s) and will be tried again at %s", info.Retried, info.NextProcessAt.Local().Format(time.DateTime))
	case asynq.TaskStateCompleted:
		return "has completed"
	default:
		return "is " + info.State.String()
	}
}

// oneLine keeps a task's last error to one short line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
