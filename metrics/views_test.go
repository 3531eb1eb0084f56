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

// A scrape reports the counts tidemark views stored.
func TestViewCastFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.DBForTests().Exec(`INSERT INTO records (source, resource, external_id, payload, content_hash) VALUES
		('shop', 'orders', '1', '{"amount": "x"}', 'h'), ('shop', 'orders', '2', '{"amount": "y"}', 'h'),
		('shop', 'orders', '3', '{"amount": 3}', 'h')`).Error; err != nil {
		t.Fatal(err)
	}
	conf, err := config.Parse("test.yaml", []byte(`
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - name: orders
        path: /orders
        records: {id: id}
        field_types: {amount: numeric}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RefreshViews(ctx, conf); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewViewCasts(st))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var failures float64
	var checked bool
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "tidemark_view_cast_failures":
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["source"] == "shop" && labels["resource"] == "orders" && labels["field"] == "amount" {
					failures = m.GetGauge().GetValue()
				}
			case "tidemark_view_cast_checked_timestamp_seconds":
				checked = m.GetGauge().GetValue() > 0
			}
		}
	}
	if failures != 2 || !checked {
		t.Errorf("tidemark_view_cast_failures{shop,orders,amount} = %v (want 2), checked timestamp present: %v", failures, checked)
	}
}
