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
		select {
		case <-ctx.Done():
			s.log.Info("scheduler stopped")
			return nil
		case <-t.C:
		}
	}
}

// Tick enqueues every resource whose current slot has no task yet. Until
// probes exist, a resource's fetch is a full read every probe.every.
func (s *Scheduler) Tick(ctx context.Context) error {
	states, err := s.store.States(ctx)
	if err != nil {
		return err
	}
	paused := make(map[store.Key]bool, len(states))
	for _, st := range states {
		paused[store.Key{Source: st.Source, Resource: st.Resource}] = st.Paused
	}
	now := s.cfg.Now()
	var errs []error
	s.conf.Each(func(src *config.Source, res *config.Resource) {
		if paused[store.Key{Source: src.Name, Resource: res.Name}] {
			return
		}
		every := res.Probe.Every.D()
		if every <= 0 {
			return
		}
		slot := now.UnixNano() / int64(every)
		id := SlotTaskID(jobs.TypeFetch, src.Name, res.Name, slot)
		task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: jobs.ModeFull, Trigger: jobs.TriggerSchedule},
			append(jobs.FetchOptions(res),
				asynq.TaskID(id),
				// Keep the finished task (and so its ID) for the rest of
				// the slot, so a replica ticking later cannot enqueue it
				// again after it completed.
				asynq.Retention(2*every),
			)...)
		if err != nil {
			errs = append(errs, err)
			return
		}
		_, err = s.client.EnqueueContext(ctx, task)
		switch {
		case err == nil:
			s.log.Debug("enqueued", "task_id", id)
		case errors.Is(err, asynq.ErrTaskIDConflict), errors.Is(err, asynq.ErrDuplicateTask):
			// Another replica (or an earlier tick) enqueued this slot.
		default:
			errs = append(errs, fmt.Errorf("enqueue %s: %w", id, err))
		}
	})
	return errors.Join(errs...)
}

// SlotTaskID is the deterministic ID of a resource's task for one slot.
func SlotTaskID(taskType, source, resource string, slot int64) string {
	return fmt.Sprintf("%s:%s:%s:%d", taskType, source, resource, slot)
}
