// Package scheduler decides what is due and enqueues it. Any number of
// scheduler replicas may run: time is cut into slots per resource, and each
// slot's task has a deterministic ID, so asynq accepts it once however many
// replicas try (asynq.Scheduler has no such guarantee with several replicas).
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// Config tunes a Scheduler.
type Config struct {
	// Tick is how often the scheduler looks for due work. Default 1s.
	Tick time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// FailureThreshold is the failure streak (consecutive failed runs of a
	// resource) that fires a run.failed event. Default 3.
	FailureThreshold int
}

// Scheduler enqueues each resource's fetch once per interval slot.
type Scheduler struct {
	cfg    Config
	conf   *config.Config
	store  *store.Store
	client *asynq.Client
	log    *slog.Logger
}

// New returns a scheduler; client is owned by the caller.
func New(cfg Config, conf *config.Config, st *store.Store, client *asynq.Client, log *slog.Logger) *Scheduler {
	cfg.Tick = cmp.Or(cfg.Tick, time.Second)
	cfg.FailureThreshold = cmp.Or(cfg.FailureThreshold, 3)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Scheduler{cfg: cfg, conf: conf, store: st, client: client, log: log}
}

// Run ticks until ctx is done.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.store.EnsureStates(ctx, store.KeysOf(s.conf)); err != nil {
		return err
	}
	s.log.Info("scheduler started", "tick", s.cfg.Tick.String())
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("scheduler tick", "error", err)
		}
		if err := s.CheckAlerts(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("scheduler alerts", "error", err)
		}
		select {
		case <-ctx.Done():
			s.log.Info("scheduler stopped")
			return nil
		case <-t.C:
		}
	}
}

// Tick enqueues what is due for every resource that is not paused:
//   - a full read when the last one is older than full_sync.every (or there
//     has been none);
//   - a probe per probe interval (adaptive, from sync_state), or, with
//     strategy none, a delta fetch per probe.every (pure pull).
//
// Each task's ID names its slot, so replicas enqueue it once.
func (s *Scheduler) Tick(ctx context.Context) error {
	states, err := s.store.States(ctx)
	if err != nil {
		return err
	}
	byKey := make(map[store.Key]store.State, len(states))
	for _, st := range states {
		byKey[store.Key{Source: st.Source, Resource: st.Resource}] = st
	}
	now := s.cfg.Now()
	var errs []error
	s.conf.Each(func(src *config.Source, res *config.Resource) {
		st := byKey[store.Key{Source: src.Name, Resource: res.Name}]
		if st.Paused {
			return
		}
		if full := res.FullSync.Every.D(); full > 0 && (st.LastFullSyncAt == nil || now.Sub(*st.LastFullSyncAt) >= full) {
			slot := now.UnixNano() / int64(full)
			errs = append(errs, s.enqueueFetch(ctx, src, res, jobs.ModeFull, SlotTaskID(jobs.TypeFetch, src.Name, res.Name, "full", slot), full))
		}
		every := res.Probe.Every.D()
		if every <= 0 {
			return
		}
		if res.Probe.Strategy == config.ProbeNone || res.Probe.Strategy == "" {
			slot := now.UnixNano() / int64(every)
			mode := jobs.ModeFor(res, false)
			errs = append(errs, s.enqueueFetch(ctx, src, res, mode, SlotTaskID(jobs.TypeFetch, src.Name, res.Name, mode, slot), every))
			return
		}
		interval := st.ProbeInterval(every)
		slot := now.UnixNano() / int64(interval)
		id := SlotTaskID(jobs.TypeProbe, src.Name, res.Name, interval.String(), slot)
		task, err := jobs.NewProbe(jobs.ProbePayload{Source: src.Name, Resource: res.Name, Trigger: jobs.TriggerSchedule},
			append(jobs.ProbeOptions(res), asynq.TaskID(id), asynq.Retention(interval))...)
		if err == nil {
			err = s.enqueue(ctx, task, id)
		}
		errs = append(errs, err)
	})
	return errors.Join(errs...)
}

func (s *Scheduler) enqueueFetch(ctx context.Context, src *config.Source, res *config.Resource, mode, id string, slot time.Duration) error {
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: mode, Trigger: jobs.TriggerSchedule},
		append(jobs.FetchOptions(res),
			asynq.TaskID(id),
			// Keep the finished task (and so its ID) for the rest of the
			// slot, so a replica ticking later cannot enqueue it again.
			asynq.Retention(slot),
		)...)
	if err != nil {
		return err
	}
	return s.enqueue(ctx, task, id)
}

func (s *Scheduler) enqueue(ctx context.Context, task *asynq.Task, id string) error {
	_, err := s.client.EnqueueContext(ctx, task)
	switch {
	case err == nil:
		s.log.Debug("enqueued", "task_id", id)
		return nil
	case errors.Is(err, asynq.ErrTaskIDConflict), errors.Is(err, asynq.ErrDuplicateTask):
		return nil // another replica (or an earlier tick) enqueued this slot
	default:
		return fmt.Errorf("enqueue %s: %w", id, err)
	}
}

// SlotTaskID is the deterministic ID of a resource's task for one slot;
// kind tells apart the tasks of one resource (full, delta, a probe interval).
func SlotTaskID(taskType, source, resource, kind string, slot int64) string {
	return fmt.Sprintf("%s:%s:%s:%s:%d", taskType, source, resource, kind, slot)
}

// CheckAlerts fires the fleet's alert events: resource.stale when a
// resource's lag passes its freshness target, resource.recovered when it is
// back within it, and run.failed when a failure streak reaches
// FailureThreshold. Each transition is decided and written in one SQL
// statement (store.CheckFreshness, store.CheckFailures), so with any number
// of scheduler replicas each fires exactly once; the outbox carries it to
// SSE and webhooks.
func (s *Scheduler) CheckAlerts(ctx context.Context) error {
	var targets []store.Target
	s.conf.Each(func(src *config.Source, res *config.Resource) {
		if f := res.Freshness.D(); f > 0 {
			targets = append(targets, store.Target{Source: src.Name, Resource: res.Name, Freshness: f})
		}
	})
	fresh, err := s.store.CheckFreshness(ctx, targets)
	failed, ferr := s.store.CheckFailures(ctx, s.cfg.FailureThreshold)
	for _, t := range append(fresh, failed...) {
		s.log.Warn("alert", "event", t.Event, "source", t.Source, "resource", t.Resource, "event_id", t.OutboxID)
	}
	return errors.Join(err, ferr)
}
