package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// scrapeTimeout bounds the queries a scrape makes.
const scrapeTimeout = 5 * time.Second

var (
	lagDesc = prometheus.NewDesc("tidemark_freshness_lag_seconds",
		"Seconds since the resource was last known in step with its upstream (an unchanged probe or a successful fetch); never synced yet, since it was configured.",
		[]string{"source", "resource"}, nil)
	targetDesc = prometheus.NewDesc("tidemark_freshness_target_seconds",
		"The resource's freshness target: lag beyond it is stale.",
		[]string{"source", "resource"}, nil)
	staleDesc = prometheus.NewDesc("tidemark_resource_stale",
		"1 while the resource is stale (lag beyond its freshness target, as the scheduler's resource.stale judges it); 0 while it is paused, and for a target after a resume.",
		[]string{"source", "resource"}, nil)
	pausedDesc = prometheus.NewDesc("tidemark_resource_paused",
		"1 while the resource is paused (tidemark pause): nothing syncs it, and its lag raises no alert.",
		[]string{"source", "resource"}, nil)
	failuresDesc = prometheus.NewDesc("tidemark_consecutive_failures",
		"Failed runs of the resource since its last success.",
		[]string{"source", "resource"}, nil)
	quarantinedDesc = prometheus.NewDesc("tidemark_records_quarantined",
		"Records set aside because tidemark cannot store them (record_quarantine), by resource.",
		[]string{"source", "resource"}, nil)
	deletesHeldDesc = prometheus.NewDesc("tidemark_deletes_held",
		"Deletions a full read left for the next to agree on; reason mass: held by the max_delete_fraction brake (act: confirm or wait), second_read: waiting as delete_after_reads asks.",
		[]string{"source", "resource", "reason"}, nil)
)

// Freshness reads every configured resource's sync state at scrape time.
// Register it in the server role only: it reports what Postgres knows, the
// same on every replica.
type Freshness struct {
	conf  config.Provider
	store *store.Store
	now   func() time.Time
}

// NewFreshness returns the freshness collector for conf's resources, read
// afresh at every scrape.
func NewFreshness(conf config.Provider, st *store.Store) *Freshness {
	return &Freshness{conf: conf, store: st, now: time.Now}
}

var _ prometheus.Collector = (*Freshness)(nil)

// Describe implements prometheus.Collector.
func (f *Freshness) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagDesc
	ch <- targetDesc
	ch <- staleDesc
	ch <- pausedDesc
	ch <- failuresDesc
	ch <- quarantinedDesc
	ch <- deletesHeldDesc
}

// Collect implements prometheus.Collector. A resource never in sync yet
// has a lag too, since it was configured: one whose first sync never
// finishes turns stale like any other.
func (f *Freshness) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	states, err := f.store.States(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(lagDesc, fmt.Errorf("freshness: %w", err))
		return
	}
	byKey := make(map[store.Key]store.State, len(states))
	for _, st := range states {
		byKey[store.Key{Source: st.Source, Resource: st.Resource}] = st
	}
	now := f.now()
	f.conf.Current().Each(func(src *config.Source, res *config.Resource) {
		st, ok := byKey[store.Key{Source: src.Name, Resource: res.Name}]
		ch <- prometheus.MustNewConstMetric(targetDesc, prometheus.GaugeValue, res.Freshness.D().Seconds(), src.Name, res.Name)
		if !ok {
			return
		}
		// store.State.Freshness is the rule the scheduler's events follow:
		// a paused resource is not stale (an operator paused it to stop the
		// noise; its lag still shows, for the dashboard's sake).
		fr := st.Freshness(res.Freshness.D(), now)
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, fr.Lag.Seconds(), src.Name, res.Name)
		stale, paused := 0.0, 0.0
		if fr.Stale {
			stale = 1
		}
		if st.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, stale, src.Name, res.Name)
		ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, paused, src.Name, res.Name)
		ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.GaugeValue, float64(st.ConsecutiveFailures), src.Name, res.Name)
		ch <- prometheus.MustNewConstMetric(quarantinedDesc, prometheus.GaugeValue, float64(st.Quarantined), src.Name, res.Name)
		mass, second := 0.0, float64(st.DeletesHeld)
		if st.DeletesHeldMass {
			mass, second = second, 0
		}
		ch <- prometheus.MustNewConstMetric(deletesHeldDesc, prometheus.GaugeValue, mass, src.Name, res.Name, "mass")
		ch <- prometheus.MustNewConstMetric(deletesHeldDesc, prometheus.GaugeValue, second, src.Name, res.Name, "second_read")
	})
}

var (
	queueSizeDesc = prometheus.NewDesc("asynq_queue_size",
		"Tasks in the queue, all states together.", []string{"queue"}, nil)
	queueTasksDesc = prometheus.NewDesc("asynq_tasks_enqueued_total",
		"Tasks in the queue by state (pending|active|scheduled|retry|archived|completed|aggregating); archived = dead.",
		[]string{"queue", "state"}, nil)
	queueLatencyDesc = prometheus.NewDesc("asynq_queue_latency_seconds",
		"Age of the oldest pending task in the queue.", []string{"queue"}, nil)
	queueProcessedDesc = prometheus.NewDesc("asynq_tasks_processed_total",
		"Tasks processed from the queue, succeeded and failed (cumulative).", []string{"queue"}, nil)
	queueFailedDesc = prometheus.NewDesc("asynq_tasks_failed_total",
		"Tasks whose processing failed (cumulative).", []string{"queue"}, nil)
	queuePausedDesc = prometheus.NewDesc("asynq_queue_paused_total",
		"1 while the queue is paused.", []string{"queue"}, nil)
)

// Queues reports asynq's queues from Redis at scrape time. Register it in
// the server role only, so the fleet reports each queue once. (asynq's own
// x/metrics collector is in a module that does not resolve alongside asynq
// v0.26.0 here; this one keeps its metric names.)
type Queues struct {
	inspector *asynq.Inspector
}

// NewQueues returns the queue collector; inspector is owned by the caller.
func NewQueues(inspector *asynq.Inspector) *Queues { return &Queues{inspector: inspector} }

var _ prometheus.Collector = (*Queues)(nil)

// Describe implements prometheus.Collector.
func (q *Queues) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueSizeDesc, queueTasksDesc, queueLatencyDesc, queueProcessedDesc, queueFailedDesc, queuePausedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (q *Queues) Collect(ch chan<- prometheus.Metric) {
	names, err := q.inspector.Queues()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueSizeDesc, fmt.Errorf("asynq queues: %w", err))
		return
	}
	for _, name := range names {
		info, err := q.inspector.GetQueueInfo(name)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(queueSizeDesc, fmt.Errorf("asynq queue %s: %w", name, err))
			return
		}
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{name}, labels...)...)
		}
		gauge(queueSizeDesc, float64(info.Size))
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed, "aggregating": info.Aggregating} {
			gauge(queueTasksDesc, float64(n), state)
		}
		gauge(queueLatencyDesc, info.Latency.Seconds())
		ch <- prometheus.MustNewConstMetric(queueProcessedDesc, prometheus.CounterValue, float64(info.ProcessedTotal), name)
		ch <- prometheus.MustNewConstMetric(queueFailedDesc, prometheus.CounterValue, float64(info.FailedTotal), name)
		paused := 0.0
		if info.Paused {
			paused = 1
		}
		gauge(queuePausedDesc, paused)
	}
}
