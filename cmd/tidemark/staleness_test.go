package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/store"
)

// TestOneStalenessRule: the scheduler's resource.stale event, the
// tidemark_resource_stale metric, the API's health and `tidemark status`
// agree on which resources are stale: one ten minutes behind its target
// (late); one whose first sync never finished, configured two minutes ago
// against a one-minute target (never), with a lag counted from then; but
// not one configured a moment ago with a one-hour target (starting), nor
// one resumed a moment ago after a pause that left it behind (resumed).
func TestOneStalenessRule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	confYAML := `
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - {name: late, path: /late, records: {id: id}, freshness: 30s}
      - {name: never, path: /never, records: {id: id}, freshness: 1m}
      - {name: starting, path: /starting, records: {id: id}, freshness: 1h}
      - {name: resumed, path: /resumed, records: {id: id}, freshness: 30s}
`
	conf, st, redisOpt, env := statusRig(t, confYAML)
	for _, q := range []string{
		`UPDATE sync_state SET in_sync_at = now() - interval '10 minutes' WHERE resource IN ('late', 'resumed')`,
		`UPDATE sync_state SET created_at = now() - interval '2 minutes' WHERE resource = 'never'`,
	} {
		if err := st.DBForTests().Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	for _, paused := range []bool{true, false} {
		if _, err := st.SetPaused(ctx, "shop", "resumed", paused); err != nil {
			t.Fatal(err)
		}
	}
	wantStale := []string{"late", "never"}

	// The scheduler's events.
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	sched := scheduler.New(scheduler.Config{}, conf, st, client, slog.New(slog.DiscardHandler))
	if err := sched.CheckAlerts(ctx); err != nil {
		t.Fatal(err)
	}
	evs, err := st.OutboxAfter(ctx, store.OutboxFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, ev := range evs {
		if ev.Event != store.EventResourceStale {
			continue
		}
		events = append(events, ev.Resource)
		var p struct {
			LagSeconds  float64 `json:"lag_seconds"`
			NeverSynced bool    `json:"never_synced"`
		}
		if err := json.Unmarshal(ev.Payload, &p); err != nil {
			t.Fatal(err)
		}
		if ev.Resource == "never" && (!p.NeverSynced || p.LagSeconds < 120 || p.LagSeconds > 180) {
			t.Errorf("resource.stale of never: %s, want never_synced and a lag of about 120 s", ev.Payload)
		}
	}
	if !slices.Equal(events, wantStale) {
		t.Errorf("scheduler: resource.stale for %q, want %q", events, wantStale)
	}

	// The metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewFreshness(conf, st))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gauges := map[string]map[string]float64{} // metric → resource → value
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "resource" {
					if gauges[f.GetName()] == nil {
						gauges[f.GetName()] = map[string]float64{}
					}
					gauges[f.GetName()][l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	var metricStale []string
	for res, v := range gauges["tidemark_resource_stale"] {
		if v == 1 {
			metricStale = append(metricStale, res)
		}
	}
	slices.Sort(metricStale)
	if !slices.Equal(metricStale, wantStale) {
		t.Errorf("tidemark_resource_stale is 1 for %q, want %q", metricStale, wantStale)
	}
	if lag, ok := gauges["tidemark_freshness_lag_seconds"]["never"]; !ok || lag < 120 {
		t.Errorf("tidemark_freshness_lag_seconds{resource=never} = %v (present %t), want the 120 s since it was configured", lag, ok)
	}

	// The API.
	views, err := server.Resources(ctx, conf, st)
	if err != nil {
		t.Fatal(err)
	}
	health := map[string]string{}
	for _, v := range views {
		health[v.Resource] = v.Health
	}
	for res, want := range map[string]string{"late": server.HealthStale, "never": server.HealthStale,
		"starting": server.HealthSyncing, "resumed": server.HealthSyncing} {
		if health[res] != want {
			t.Errorf("API health of %s = %q, want %q", res, health[res], want)
		}
	}

	// tidemark status.
	code, out, errOut := runCmd(t, env, "status")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("tidemark status:\n%s", out)
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || !strings.HasPrefix(fields[0], "shop/") {
			continue
		}
		res := strings.TrimPrefix(fields[0], "shop/")
		if stale := fields[1] == "stale"; stale != slices.Contains(wantStale, res) {
			t.Errorf("status says %s is %q", res, fields[1])
		}
		if res == "starting" && !strings.Contains(line, "never synced") {
			t.Errorf("status row of starting does not say it never synced:\n%s", line)
		}
	}
}
