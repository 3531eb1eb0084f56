package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/store"
)

func (e env) configCheck(args []string) error {
	var s settings
	fs := e.flags("config check", &s)
	if err := parse(fs, args); err != nil {
		return err
	}
	path := s.configPath
	switch fs.NArg() {
	case 0:
	case 1:
		path = fs.Arg(0)
	default:
		return usagef("usage: tidemark config check [FILE]")
	}
	conf, err := config.Load(path)
	if err != nil {
		return usageError{err}
	}
	n := 0
	conf.Each(func(*config.Source, *config.Resource) { n++ })
	fmt.Fprintf(e.stdout, "%s: ok (%d sources, %d resources)\n", path, len(conf.Sources), n)
	// Valid, but worth a word: a receiver cannot tell an unsigned delivery
	// from a forged one.
	for i, hook := range conf.Webhooks {
		if hook.SecretEnv == "" {
			fmt.Fprintf(e.stderr, "%s: warning: webhooks[%d] has no secret_env: its deliveries are not signed\n", path, i)
		}
	}
	return nil
}

func (e env) status(args []string) error {
	var s settings
	fs := e.flags("status", &s)
	wait := fs.Duration("wait", 0, "first wait up to this long until every resource shown has synced successfully after this command started (exit 1 if not)")
	partitions := fs.Bool("partitions", false, "also list the partitions of the partitioned resources shown, one line each")
	if err := parse(fs, reorder(fs, args)); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("usage: tidemark status [--wait D] [--partitions] [SOURCE[/RESOURCE]]")
	}
	conf, err := s.loadConfig()
	if err != nil {
		return err
	}
	var only []store.Key // the resources named, shown and waited for; nil: all
	if fs.NArg() == 1 {
		if only, err = s.configuredKeys(conf, fs.Arg(0)); err != nil {
			return err
		}
	}
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()

	began := time.Now()
	views, err := resourceViews(e, conf, st, only)
	if *wait > 0 {
		deadline := began.Add(*wait)
		for err == nil && len(unsynced(views, began)) > 0 && time.Now().Before(deadline) {
			select {
			case <-e.ctx.Done():
				return e.ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
			views, err = resourceViews(e, conf, st, only)
		}
	}
	if err != nil {
		return err
	}
	fillNext(s, conf, views)
	printStatus(e, conf, views)
	if *partitions {
		if err := printPartitions(e, st, views); err != nil {
			return err
		}
	}
	if missing := unsynced(views, began); *wait > 0 && len(missing) > 0 {
		return fmt.Errorf("not synced after %s: %s", *wait, strings.Join(missing, ", "))
	}
	return nil
}

// resourceViews are the views of the resources only lists, or of all when
// it is nil.
func resourceViews(e env, conf *config.Config, st *store.Store, only []store.Key) ([]server.ResourceView, error) {
	views, err := server.Resources(e.ctx, conf, st)
	if err != nil || only == nil {
		return views, err
	}
	return slices.DeleteFunc(views, func(v server.ResourceView) bool {
		return !slices.Contains(only, store.Key{Source: v.Source, Resource: v.Resource})
	}), nil
}

// unsynced lists the resources without a successful sync since since.
func unsynced(views []server.ResourceView, since time.Time) []string {
	var out []string
	for _, v := range views {
		if v.State == nil || v.State.LastSuccessAt == nil || v.State.LastSuccessAt.Before(since) {
			out = append(out, v.Source+"/"+v.Resource)
		}
	}
	return out
}

// fillNext asks the task queues what happens next to failing resources.
// Without Redis the table says what their runs say.
func fillNext(s settings, conf *config.Config, views []server.ResourceView) {
	if !slices.ContainsFunc(views, func(v server.ResourceView) bool { return v.Cause != nil }) {
		return
	}
	redisOpt, err := s.redisOpt()
	if err != nil {
		return
	}
	if opt, ok := redisOpt.(asynq.RedisClientOpt); ok {
		// A Redis that is down must not hold the table for long: it is
		// what an operator runs when things are broken.
		opt.DialTimeout, opt.ReadTimeout = 2*time.Second, 2*time.Second
		redisOpt = opt
	}
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()
	server.FillNext(conf, insp, views)
}

func printStatus(e env, conf *config.Config, views []server.ResourceView) {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE\tSTATE\tRECORDS\tQUARANTINED\tDELETES HELD\tPROBE\tLAST CHANGE\tLAG / TARGET\tWATERMARK\tLAST FULL (DRIFT)\tLAST FETCH\tFAILURES\tWHY / NEXT")
	now := time.Now()
	for _, v := range views {
		res := conf.Source(v.Source).Resource(v.Resource)
		state, probe, change, lag, watermark, full, lastRun, failures := "never synced", string(res.Probe.Strategy), "-", "-", "-", "-", "-", 0
		quarantined, held := "0", "0"
		if v.LastRun != nil {
			lastRun = fmt.Sprintf("%s %s %s ago", v.LastRun.Kind, v.LastRun.Status, ago(now, v.LastRun.StartedAt))
			if v.LastRun.Status == store.StatusRunning { // progress so far, updated per page
				lastRun = fmt.Sprintf("%s running for %s: %d pages, %d records", v.LastRun.Kind, ago(now, v.LastRun.StartedAt), v.LastRun.Pages, v.LastRun.RecordsFetched)
			}
		}
		if st := v.State; st != nil {
			failures = st.ConsecutiveFailures
			quarantined = fmt.Sprint(st.Quarantined)
			held = fmt.Sprint(st.DeletesHeld)
			if st.DeletesHeldMass {
				held += " (mass: confirm or wait)"
			}
			if res.Probe.Strategy != tidemark.ProbeNone {
				probe += " every " + st.ProbeInterval(res.Probe.Every.D()).String()
			}
			if st.LastChangeAt != nil {
				change = ago(now, *st.LastChangeAt) + " ago"
			}
			if st.Watermark != "" {
				watermark = st.Watermark
			}
			if res.Partitioned() {
				watermark = "per partition"
			}
			if st.LastFullSyncAt != nil {
				full = ago(now, *st.LastFullSyncAt) + " ago"
				if st.LastDrift != nil {
					full += fmt.Sprintf(" (%d)", *st.LastDrift)
				}
			}
			// The rule the scheduler's resource.stale, the metrics and the
			// API follow; a resource never synced counts from when it was
			// configured, and reads "never synced" inside its target.
			f := st.Freshness(res.Freshness.D(), now)
			lag = fmt.Sprintf("%s / %s", round(f.Lag), res.Freshness.D())
			switch {
			case f.Synced && f.Lag > res.Freshness.D():
				state = "catching up" // a target after its resume
			case f.Synced:
				state = "fresh"
			}
			if f.Stale {
				state = "stale"
			}
			if st.ConsecutiveFailures > 0 {
				state = "failing"
			}
			if st.Paused {
				state = "paused"
			}
		}
		why := "-"
		switch {
		case v.Cause != nil:
			why = v.Cause.Text()
		case v.LastRun != nil && v.LastRun.Status == store.StatusInterrupted && v.LastRun.Error != "":
			// Not a failure, but why it may lag: handed back (rate
			// limited) or taken over; it resumes from its checkpoint.
			why = "last fetch interrupted: " + oneLine(v.LastRun.Error)
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			v.Source, v.Resource, state, v.Records, quarantined, held, probe, change, lag, watermark, full, lastRun, failures, why)
	}
	tw.Flush()
	printPartitionSummaries(e, views, now)
	printFirstLoads(e, views)
}

func ago(now, t time.Time) string { return round(now.Sub(t)).String() }

func round(d time.Duration) time.Duration {
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

func (e env) runs(args []string) error {
	var s settings
	fs := e.flags("runs", &s)
	var f store.RunFilter
	fs.StringVar(&f.Source, "source", "", "only this source")
	fs.StringVar(&f.Resource, "resource", "", "only this resource")
	fs.StringVar(&f.Status, "status", "", "only this status: "+strings.Join(runStatuses, " | "))
	fs.IntVar(&f.Limit, "limit", 20, "how many runs")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if f.Status != "" && !slices.Contains(runStatuses, f.Status) {
		return usagef("--status %q: no run has that status; want one of %s", f.Status, strings.Join(runStatuses, ", "))
	}
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	runs, err := st.Runs(e.ctx, f)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTASK\tRESOURCE\tKIND\tTRIGGER\tATTEMPT\tSTATUS\tSTARTED\tDURATION\tREQUESTS\tPAGES\tFETCHED\t+NEW\t~UPD\t-DEL\tHELD\tQUARANTINED\tERROR / NOTE")
	for _, r := range runs {
		fmt.Fprintf(tw, "%d\t%s\t%s/%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n",
			r.ID, cmp.Or(r.TaskID, "-"), r.Source, r.Resource, r.Kind, r.Trigger, r.Attempt, r.Status,
			r.StartedAt.Local().Format(time.DateTime), round(r.Duration()), r.HTTPRequests, r.Pages,
			r.RecordsFetched, r.RecordsCreated, r.RecordsUpdated, r.RecordsDeleted, r.DeletesHeld, r.RecordsQuarantined,
			strings.Join(nonEmpty(r.Error, r.Note), "; "))
	}
	return tw.Flush()
}

func (e env) sync(args []string) error {
	var s settings
	fs := e.flags("sync", &s)
	full := fs.Bool("full", false, "read everything (and detect deletions) instead of a delta")
	confirm := fs.Bool("confirm-deletes", false, "with --full: tombstone every record the read does not see, past the max_delete_fraction brake and the second read delete_after_reads waits for")
	resume := fs.Bool("resume", false, "with --full: continue an interrupted full read from its checkpoint instead of starting a new one")
	if err := parse(fs, reorder(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("usage: tidemark sync SOURCE/RESOURCE [--full [--confirm-deletes] [--resume]]")
	}
	if (*confirm || *resume) && !*full {
		return usagef("--confirm-deletes and --resume go with --full")
	}
	key, res, err := s.configuredResource(fs.Arg(0))
	if err != nil {
		return err
	}
	redisOpt, err := s.redisOpt()
	if err != nil {
		return err
	}
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	p := jobs.FetchPayload{Source: key.Source, Resource: key.Resource, Mode: jobs.ModeFor(res, *full), Trigger: jobs.TriggerManual,
		ConfirmDeletes: *confirm, Resume: *resume}
	info, err := jobs.RequestFetch(e.ctx, st, client, p, res)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "enqueued %s fetch of %s: task %s in queue %s\n", p.Mode, key, info.ID, info.Queue)
	if *confirm {
		fmt.Fprintln(e.stdout, "its full read tombstones every record it does not see")
	}
	return nil
}

// reset forgets pieces of a resource's sync state, for what the sync
// cannot get past by itself: a checkpoint the upstream keeps rejecting, a
// watermark that is wrong, validators that no longer mean anything.
func (e env) reset(args []string) error {
	var s settings
	fs := e.flags("reset", &s)
	var r store.Reset
	fs.BoolVar(&r.Checkpoint, "checkpoint", false, "forget interrupted reads (delta and full): the next starts from the first page")
	fs.BoolVar(&r.Watermark, "watermark", false, "forget the watermark: the next delta reads everything")
	fs.BoolVar(&r.Validators, "validators", false, "forget the probe's ETag, Last-Modified and hash: the next probe sees a change")
	if err := parse(fs, reorder(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 || !r.Checkpoint && !r.Watermark && !r.Validators {
		return usagef("usage: tidemark reset SOURCE/RESOURCE --checkpoint|--watermark|--validators (one or more)")
	}
	key, _, err := s.configuredResource(fs.Arg(0))
	if err != nil {
		return err
	}
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if runs, err := st.Runs(e.ctx, store.RunFilter{Source: key.Source, Resource: key.Resource, Status: store.StatusRunning, Limit: 1}); err == nil && len(runs) > 0 && runs[0].Kind != tidemark.RunProbe {
		fmt.Fprintf(e.stderr, "warning: run %d of %s is running: it stores its own checkpoint with its next page (pause the resource first)\n", runs[0].ID, key)
	}
	if err := st.ResetState(e.ctx, key, r); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return usagef("%s has no sync state yet: nothing to reset", key)
		}
		return err
	}
	var what []string
	for _, p := range []struct {
		on   bool
		name string
	}{{r.Checkpoint, "checkpoint"}, {r.Watermark, "watermark"}, {r.Validators, "validators"}} {
		if p.on {
			what = append(what, p.name)
		}
	}
	fmt.Fprintf(e.stdout, "reset %s: %s\n", key, strings.Join(what, ", "))
	return nil
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// reorder puts flags (with their values) before positional arguments, so
// that "sync demo/x --full" and "status demo --wait 5m" work as well as
// "sync --full demo/x". Arguments after "--" stay positional.
func reorder(fs *flag.FlagSet, args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append([]string{"--"}, append(rest, args[i+1:]...)...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") || i+1 == len(args) {
			continue
		}
		if f := fs.Lookup(name); f != nil && !isBoolFlag(f) {
			i++
			flags = append(flags, args[i]) // its value
		}
	}
	return append(flags, rest...)
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// runStatuses are the statuses the store gives runs: runs --status takes
// only these, so a typo is an error rather than an empty list.
var runStatuses = []string{store.StatusRunning, store.StatusSucceeded, store.StatusNotModified,
	store.StatusFailed, store.StatusDead, store.StatusInterrupted}

func (e env) pause(cmd string, args []string) error {
	var s settings
	fs := e.flags(cmd, &s)
	if err := parse(fs, reorder(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("usage: tidemark %s SOURCE[/RESOURCE]", cmd)
	}
	conf, err := s.loadConfig()
	if err != nil {
		return err
	}
	keys, err := s.configuredKeys(conf, fs.Arg(0))
	if err != nil {
		return err
	}
	src, res, _ := strings.Cut(fs.Arg(0), "/")
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.EnsureStates(e.ctx, keys); err != nil {
		return err
	}
	n, err := st.SetPaused(e.ctx, src, res, cmd == "pause")
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%sd %d resource(s) of %s\n", cmd, n, fs.Arg(0))
	return nil
}
