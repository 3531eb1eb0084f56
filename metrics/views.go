package metrics

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidemark/tidemark/store"
)

var (
	viewCastDesc = prometheus.NewDesc("tidemark_view_cast_failures",
		"Stored values of a typed view column that do not cast to its type and read as NULL in the view, as tidemark views (or migrate) last counted them.",
		[]string{"source", "resource", "field"}, nil)
	viewCheckedDesc = prometheus.NewDesc("tidemark_view_cast_checked_timestamp_seconds",
		"When tidemark views (or migrate) last counted the resource's values that do not cast.",
		[]string{"source", "resource"}, nil)
)

// ViewCasts reports the counts of values that do not cast in the typed
// views. Counting takes a pass over a resource's records, too much for every
// scrape, so tidemark views counts and stores them and a scrape reads the
// stored counts (one small table). Register it in the server role only.
type ViewCasts struct {
	store *store.Store
}

// NewViewCasts returns the view cast failure collector.
func NewViewCasts(st *store.Store) *ViewCasts { return &ViewCasts{store: st} }

var _ prometheus.Collector = (*ViewCasts)(nil)

// Describe implements prometheus.Collector.
func (v *ViewCasts) Describe(ch chan<- *prometheus.Desc) {
	ch <- viewCastDesc
	ch <- viewCheckedDesc
}

// Collect implements prometheus.Collector.
func (v *ViewCasts) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	counts, err := v.store.CastFailures(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(viewCastDesc, fmt.Errorf("view cast failures: %w", err))
		return
	}
	checked := map[store.Key]float64{}
	for _, c := range counts {
		ch <- prometheus.MustNewConstMetric(viewCastDesc, prometheus.GaugeValue, float64(c.Failures), c.Source, c.Resource, c.Field)
		k := store.Key{Source: c.Source, Resource: c.Resource}
		checked[k] = max(checked[k], float64(c.CheckedAt.UnixNano())/1e9)
	}
	for k, at := range checked {
		ch <- prometheus.MustNewConstMetric(viewCheckedDesc, prometheus.GaugeValue, at, k.Source, k.Resource)
	}
}
