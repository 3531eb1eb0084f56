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
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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
	// Recheck is how long a replica trusts its memory that it has enqueued
	// a slot's task before asking Redis again (which re-enqueues the task
	// if someone deleted it). Default 1m.
	Recheck time.Duration
	// Redis, when set, is watched for losing its data (an epoch key gone:
	// a restart without persistence, a failover to an empty replica): the
	// scheduler then enqueues at once what was asked for and not done
	// (sync_requests) and every slot's task, instead of at the next
	// Recheck. Default none.
	Redis redis.UniversalClient
}

// Scheduler enqueues each resource's fetch once per interval slot.
type Scheduler struct {
	cfg    Config
	live   config.Provider
	store  *store.Store
	client *asynq.Client
	log    *slog.Logger
	// sent remembers, per resource and task kind, the slot whose task this
	// replica last saw in Redis (enqueued by it or by another replica).
	// Without it every tick sends every resource's task again only to be
	// told it is a duplicate: one Redis round trip per resource per
	// second, most of the scheduler's CPU at 10,000 resources.
	sent map[sentKey]sentSlot
	// resources is how many resources the config has.
	resources int
	// known is the config whose resources have sync_state rows: a reload
	// that adds resources gets theirs at the next tick.
	known *config.Config
	// epoch is the value of EpochKey this replica last saw.
	epoch string
}

// EpochKey holds a random value that a Redis which lost its data no longer
// has.
const EpochKey = "tidemark:epoch"

type sentKey struct {
	key  store.Key
	kind string // "probe", or "fetch:" and the fetch's slot kind
}

type sentSlot struct {
	every time.Duration
	slot  int64
	at    time.Time // when this replica saw it in Redis
}

// New returns a scheduler for the resources of conf, read afresh every
// tick; client is owned by the caller.
func New(cfg Config, conf config.Provider, st *store.Store, client *asynq.Client, log *slog.Logger) *Scheduler {
	cfg.Tick = cmp.Or(cfg.Tick, time.Second)
	cfg.FailureThreshold = cmp.Or(cfg.FailureThreshold, 3)
	cfg.Recheck = cmp.Or(cfg.Recheck, time.Minute)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := 0
	conf.Current().Each(func(*config.Source, *config.Resource) { n++ })
	return &Scheduler{cfg: cfg, live: conf, store: st, client: client, log: log, sent: make(map[sentKey]sentSlot, n), resources: n}
}

// Run ticks until ctx is done.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.follow(ctx); err != nil {
		return err
	}
	s.log.Info("scheduler started", "tick", s.cfg.Tick.String())
	t := time.NewTimer(0)
	defer t.Stop()
	var collected time.Time
	for {
		select {
		case <-ctx.Done():
			s.log.Info("scheduler stopped")
			return nil
		case <-t.C:
		}
		began := time.Now()
		if err := s.checkRedis(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("scheduler: check whether Redis lost its data", "error", err)
		}
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("scheduler tick", "error", err)
		}
		if err := s.CheckAlerts(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("scheduler alerts", "error", err)
		}
		if time.Since(collected) >= time.Minute {
			// Seen-sets of full reads that started over are garbage, and
			// requests done a day ago are history.
			if n, err := s.store.CollectSeen(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("collect seen-sets", "error", err)
			} else if n > 0 {
				s.log.Info("collected abandoned seen-sets", "pages", n)
			}
			if _, err := s.store.PruneRequests(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("prune sync requests", "error", err)
			}
			if _, err := s.store.PruneProbeMinutes(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("prune probe minutes", "error", err)
			}
			collected = time.Now()
		}
		if took := time.Since(began); took > s.cfg.Tick {
			s.log.Warn("scheduler tick took longer than the tick interval", "took", took.String(), "tick", s.cfg.Tick.String())
		}
		t.Reset(time.Until(NextTick(time.Now(), s.cfg.Tick)))
	}
}

// checkRedis notices that Redis lost its data: EpochKey is gone, or another
// replica set it anew. The queues went with it, so it forgets which slots it
// enqueued (the next Tick enqueues them all again) and enqueues every
// outstanding sync request (manual syncs, probes' fetches, follow-ups). The
// tasks' ids carry the epoch, so replicas recovering together enqueue each
// once. A replica's first check does the same: it cannot tell a new Redis
// from an emptied one, and what is still queued refuses the duplicates.
func (s *Scheduler) checkRedis(ctx context.Context) error {
	if s.cfg.Redis == nil {
		return nil
	}
	v, err := s.cfg.Redis.Get(ctx, EpochKey).Result()
	if errors.Is(err, redis.Nil) {
		fresh := strconv.FormatInt(time.Now().UnixNano(), 36)
		if err := s.cfg.Redis.SetNX(ctx, EpochKey, fresh, 0).Err(); err != nil {
			return err
		}
		if v, err = s.cfg.Redis.Get(ctx, EpochKey).Result(); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if v == s.epoch {
		return nil
	}
	if s.epoch != "" {
		s.log.Warn("Redis lost its data (epoch changed): enqueuing again what was asked for and what is due", "epoch", v)
	}
	s.epoch = v
	clear(s.sent)
	reqs, err := s.store.OutstandingRequests(ctx)
	if err != nil {
		return err
	}
	conf := s.conf()
	var errs []error
	for _, r := range reqs {
		src := conf.Source(r.Source)
		if src == nil {
			continue
		}
		res := src.Resource(r.Resource)
		if res == nil {
			continue
		}
		id := fmt.Sprintf("request:%d:%s", r.ID, v)
		task, err := jobs.NewFetch(jobs.Requested(r), append(jobs.FetchOptions(res), asynq.TaskID(id), asynq.Retention(time.Hour))...)
		if err == nil {
			_, err = s.client.EnqueueContext(ctx, task)
		}
		if err != nil && !jobs.AlreadyQueued(err) {
			errs = append(errs, fmt.Errorf("enqueue request %d: %w", r.ID, err))
		}
	}
	if len(reqs) > 0 {
		s.log.Info("enqueued outstanding sync requests", "requests", len(reqs), "epoch", v)
	}
	return errors.Join(errs...)
}

// conf is the config in force.
func (s *Scheduler) conf() *config.Config { return s.live.Current() }

// follow takes up a config a reload put in force: its new resources get
// their sync_state rows (and so their first probe and fetch this tick),
// and what this replica remembers of removed ones is forgotten.
func (s *Scheduler) follow(ctx context.Context) error {
	conf := s.conf()
	if conf == s.known {
		return nil
	}
	keys := store.KeysOf(conf)
	if err := s.store.EnsureStates(ctx, keys); err != nil {
		return err
	}
	live := make(map[store.Key]bool, len(keys))
	for _, k := range keys {
		live[k] = true
	}
	for k := range s.sent {
		if !live[k.key] {
			delete(s.sent, k)
		}
	}
	s.known, s.resources = conf, len(keys)
	return nil
}

// NextTick is the first tick after now: ticks fall a tenth of a tick past
// the multiples of tick since the Unix epoch, where slots begin. A tick at
// a random phase of its own would, when that phase is close to a slot's
// end, now and then slip (on a busy machine) past the boundary and skip
// that slot's probe, leaving a gap of two intervals. Just past the
// boundary, a tick can be late by most of a tick and still enqueue its own
// slot; the tenth keeps a timer that fires a little early by the wall
// clock (which NTP may slew against the monotonic clock timers run on)
// from ticking in the slot before.
func NextTick(now time.Time, tick time.Duration) time.Time {
	n, t := now.UnixNano(), int64(tick)
	next := (n/t)*t + t/10
	if next <= n {
		next += t
	}
	return time.Unix(0, next)
}

// Tick enqueues what is due for every resource that is not paused:
//   - a full read when the last one is older than full_sync.every (or there
//     has been none);
//   - a probe per probe interval (adaptive, from sync_state), or, with
//     strategy none, a delta fetch per probe.every (pure pull).
//
// Each task's ID names its slot, so replicas enqueue it once. Ticks of one
// Scheduler must not run concurrently (Run ticks one at a time).
func (s *Scheduler) Tick(ctx context.Context) error {
	if err := s.follow(ctx); err != nil {
		return err
	}
	byKey, err := s.states(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	var errs []error
	var batch []dueTask
	add := func(d dueTask, ok bool, err error) {
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			batch = append(batch, d)
		}
		if len(batch) == enqueueBatch {
			errs = append(errs, s.enqueueAll(ctx, batch))
			batch = batch[:0]
		}
	}
	s.conf().Each(func(src *config.Source, res *config.Resource) {
		key := store.Key{Source: src.Name, Resource: res.Name}
		st := byKey[key]
		if st.paused {
			return
		}
		if full := res.FullSync.Every.D(); full > 0 && (st.lastFullSyncAt == nil || now.Sub(*st.lastFullSyncAt) >= full) {
			add(s.fetchDue(now, src, res, jobs.ModeFull, "full", full))
		}
		every := res.Probe.Every.D()
		if every <= 0 {
			return
		}
		if res.Probe.Strategy == config.ProbeNone || res.Probe.Strategy == "" {
			mode := jobs.ModeFor(res, false)
			add(s.fetchDue(now, src, res, mode, mode, every))
			return
		}
		interval := store.State{ProbeIntervalMS: st.probeIntervalMS}.ProbeInterval(every)
		add(s.probeDue(now, src, res, interval, st))
	})
	return errors.Join(append(errs, s.enqueueAll(ctx, batch))...)
}

// dueTask is a slot's task a tick found due and not yet seen in Redis.
type dueTask struct {
	task *asynq.Task
	id   string
	key  sentKey
	slot sentSlot
}

// probeDue is the probe of res for the slot of now, unless this replica
// saw it in Redis lately.
func (s *Scheduler) probeDue(now time.Time, src *config.Source, res *config.Resource, interval time.Duration, st schedState) (dueTask, bool, error) {
	slot := now.UnixNano() / int64(interval)
	sk := sentKey{key: store.Key{Source: src.Name, Resource: res.Name}, kind: jobs.TypeProbe}
	if s.seen(sk, interval, slot, now) {
		return dueTask{}, false, nil
	}
	id := SlotTaskID(jobs.TypeProbe, src.Name, res.Name, interval.String(), slot)
	// The payload says when the next slot's probe comes: the worker
	// retries a failed probe only before it.
	next := time.Unix(0, (slot+1)*int64(interval)).UTC()
	// It carries the state the probe compares with, read by this tick
	// already: the probe needs no read of its own (jobs.ProbeBasis).
	basis := jobs.BasisOf(res, store.State{ETag: st.etag, LastModified: st.lastModified, ProbeHash: st.probeHash,
		ProbeIntervalMS: st.probeIntervalMS, HeadUnsupported: st.headUnsupported})
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: src.Name, Resource: res.Name, Trigger: jobs.TriggerSchedule, NextProbeAt: next, Basis: basis},
		append(jobs.ProbeOptions(res), asynq.TaskID(id), asynq.Retention(interval))...)
	if err != nil {
		return dueTask{}, false, err
	}
	return dueTask{task: task, id: id, key: sk, slot: sentSlot{every: interval, slot: slot, at: now}}, true, nil
}

// schedState is what a tick needs of a resource's sync_state row.
type schedState struct {
	paused          bool
	lastFullSyncAt  *time.Time
	probeIntervalMS int64
	// The probe's basis (jobs.ProbeBasis): the confirmed validators and
	// whether the upstream refused HEAD.
	etag, lastModified, probeHash string
	headUnsupported               bool
}

// states reads what a tick needs of every resource's sync_state row
// (store.ScheduleStateColumns): every tick reads every row. It keeps those
// fields, not the whole store.State: at 100,000 resources a map of whole
// States made a tick allocate 59 MB rather than 27.
func (s *Scheduler) states(ctx context.Context) (map[store.Key]schedState, error) {
	out := make(map[store.Key]schedState, s.resources)
	err := s.store.EachState(ctx, store.ScheduleStateColumns, func(st *store.State) {
		out[store.Key{Source: st.Source, Resource: st.Resource}] = schedState{
			paused: st.Paused, lastFullSyncAt: st.LastFullSyncAt, probeIntervalMS: st.ProbeIntervalMS,
			etag: st.ETag, lastModified: st.LastModified, probeHash: st.ProbeHash, headUnsupported: st.HeadUnsupported,
		}
	})
	return out, err
}

// fetchDue is the slot's fetch of res, unless this replica saw it in Redis
// lately; kind tells apart a resource's fetch slots (full, or the mode of a
// pure-pull fetch).
func (s *Scheduler) fetchDue(now time.Time, src *config.Source, res *config.Resource, mode, kind string, every time.Duration) (dueTask, bool, error) {
	slot := now.UnixNano() / int64(every)
	sk := sentKey{key: store.Key{Source: src.Name, Resource: res.Name}, kind: jobs.TypeFetch + ":" + kind}
	if s.seen(sk, every, slot, now) {
		return dueTask{}, false, nil
	}
	id := SlotTaskID(jobs.TypeFetch, src.Name, res.Name, kind, slot)
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: mode, Trigger: jobs.TriggerSchedule},
		append(jobs.FetchOptions(res),
			asynq.TaskID(id),
			// Keep the finished task (and so its ID) for the rest of the
			// slot, so a replica ticking later cannot enqueue it again.
			asynq.Retention(every),
		)...)
	if err != nil {
		return dueTask{}, false, err
	}
	return dueTask{task: task, id: id, key: sk, slot: sentSlot{every: every, slot: slot, at: now}}, true, nil
}

// seen reports whether this replica saw the task of slot (of length every)
// in Redis less than Recheck ago: then it is there for the rest of its
// slot, kept by its retention, and need not be sent again.
func (s *Scheduler) seen(k sentKey, every time.Duration, slot int64, now time.Time) bool {
	t, ok := s.sent[k]
	return ok && t.every == every && t.slot == slot && now.Sub(t.at) < s.cfg.Recheck
}

// enqueueConcurrency is how many enqueues a tick keeps in flight. Each is a
// Redis round trip; one at a time, a slot of 100,000 resources probed every
// 10 s took longer than the slot on a loaded 2-core machine, and half the
// probes were never sent.
const enqueueConcurrency = 16

// enqueueBatch is how many due tasks a tick gathers before sending them:
// enough to keep enqueueConcurrency busy, few enough that a slot of 100,000
// resources does not hold all its tasks in memory at once.
const enqueueBatch = 1024

// enqueueAll sends the due tasks, enqueueConcurrency at a time, and
// remembers each one Redis now holds. Sending them concurrently is safe:
// each task's ID names its slot, so Redis accepts each once in whatever
// order they arrive, and sent is written only here, after they are all back.
func (s *Scheduler) enqueueAll(ctx context.Context, batch []dueTask) error {
	errs := make([]error, len(batch))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(enqueueConcurrency, len(batch)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(batch); i = int(next.Add(1) - 1) {
				errs[i] = s.enqueue(ctx, batch[i])
			}
		})
	}
	wg.Wait()
	for i, d := range batch {
		if errs[i] == nil {
			s.sent[d.key] = d.slot
		}
	}
	return errors.Join(errs...)
}

// enqueue sends one task; a task Redis already holds (another replica, or
// an earlier tick, enqueued this slot) is no error.
func (s *Scheduler) enqueue(ctx context.Context, d dueTask) error {
	_, err := s.client.EnqueueContext(ctx, d.task)
	switch {
	case err == nil:
		s.log.Debug("enqueued", "task_id", d.id)
		return nil
	case jobs.AlreadyQueued(err):
		return nil
	default:
		return fmt.Errorf("enqueue %s: %w", d.id, err)
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
// FailureThreshold. Staleness is store.State.Freshness's to judge, the
// rule the metrics, the API and `tidemark status` follow too. Each
// transition is written, flag and event, in one SQL statement
// (store.CheckFreshness, store.CheckFailures), so with any number of
// scheduler replicas each fires exactly once; the outbox carries it to SSE
// and webhooks.
func (s *Scheduler) CheckAlerts(ctx context.Context) error {
	var targets []store.Target
	s.conf().Each(func(src *config.Source, res *config.Resource) {
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
