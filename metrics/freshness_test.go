package metrics_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
)

// TestPausedResourceIsNotStale scrapes the freshness collector for two
// resources that went stale, one of them paused since: the paused one
// reports paused and not stale, the other stale.
func TestPausedResourceIsNotStale(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	conf, err := config.Parse("test.yaml", []byte(`
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - name: late
        path: /late
        freshness: 30s
        records: {id: id}
      - name: paused_late
        path: /paused_late
        freshness: 30s
        records: {id: id}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureStates(ctx, store.KeysOf(conf)); err != nil {
		t.Fatal(err)
	}
	// Both went stale (the scheduler flagged them), then one was paused.
	if err := st.DBForTests().Exec(`UPDATE sync_state SET in_sync_at = now() - interval '10 minutes', stale = true, stale_since = now()`).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetPaused(ctx, "shop", "paused_late", true); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewFreshness(conf, st))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{} // metric → resource → value
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "resource" {
					if got[f.GetName()] == nil {
						got[f.GetName()] = map[string]float64{}
					}
					got[f.GetName()][l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	for _, c := range []struct {
		metric, resource string
		want             float64
	}{
		{"tidemark_resource_stale", "late", 1},
		{"tidemark_resource_stale", "paused_late", 0},
		{"tidemark_resource_paused", "late", 0},
		{"tidemark_resource_paused", "paused_late", 1},
	} {
		v, ok := got[c.metric][c.resource]
		if !ok || v != c.want {
			t.Errorf("%s{resource=%q} = %v (present %t), want %v", c.metric, c.resource, v, ok, c.want)
		}
	}
}
