package deploy_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
)

// exportedMetrics gathers the names of every metric family tidemark serves
// on /metrics: the process registry (each vector touched once, so that it
// has a sample) and the server role's collectors against a real store and
// Redis with one queue.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	conf, err := config.Parse("test.yaml", []byte(`
sources:
  - name: alerts_test
    base_url: http://127.0.0.1:1
    resources:
      - name: things
        path: /things
        freshness: 30s
        records: {path: data, id: id}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureStates(ctx, store.KeysOf(conf)); err != nil {
		t.Fatal(err)
	}
	// An unchanged probe: the resource is in sync now, so it has a lag.
	if err := st.RecordProbe(ctx, store.Key{Source: "alerts_test", Resource: "things"}, store.ProbeOutcome{Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(redisOpt)
	t.Cleanup(func() { client.Close() })
	if _, err := client.Enqueue(asynq.NewTask("noop", nil), asynq.Queue("default")); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(redisOpt)
	t.Cleanup(func() { insp.Close() })

	metrics.ObserveRun("alerts_test", "things", "full", "succeeded")
	metrics.ObserveRecords("alerts_test", "things", 1, 0, 0)
	metrics.ObserveUpstream("alerts_test", nil, os.ErrDeadlineExceeded, 0)
	metrics.ObserveProbe("alerts_test", "things", metrics.ProbeNotModified)
	metrics.ObserveRateLimitWait("alerts_test", 0)
	metrics.ObserveDrift("alerts_test", "things", 0)
	metrics.ObserveAuthRefresh("alerts_test", nil)
	metrics.ObserveAuthRefresh("alerts_test", os.ErrDeadlineExceeded)

	server := prometheus.NewRegistry()
	server.MustRegister(metrics.NewFreshness(conf, st), metrics.NewQueues(insp))
	families, err := prometheus.Gatherers{metrics.Registry, server}.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		if h := f.GetType().String(); h == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	exported := exportedMetrics(t)
	// The design's §4.6 names, which the exported set must hold.
	for _, name := range []string{"tidemark_runs_total", "tidemark_records_changed_total", "tidemark_upstream_requests_total",
		"tidemark_probes_total", "tidemark_freshness_lag_seconds", "tidemark_ratelimit_wait_seconds_bucket",
		"tidemark_drift_records_total", "tidemark_upstream_request_duration_seconds_bucket", "asynq_queue_size"} {
		if !exported[name] {
			t.Errorf("metric %s is not exported", name)
		}
	}
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			t.Run(r.Alert, func(t *testing.T) {
				if r.Alert == "" || r.Expr == "" {
					t.Fatalf("rule in group %s: alert and expr are required", g.Name)
				}
				if _, err := model.ParseDuration(r.For); r.For != "" && err != nil {
					t.Errorf("for %q: %v", r.For, err)
				}
				if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
					t.Error("want a severity label and a summary annotation")
				}
				expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
				if err != nil {
					t.Fatalf("expr does not parse: %v", err)
				}
				if tp := expr.Type(); tp != parser.ValueTypeVector && tp != parser.ValueTypeScalar {
					t.Errorf("expr is a %s, want an instant vector", tp)
				}
				named := 0
				for _, sel := range parser.ExtractSelectors(expr) {
					for _, m := range sel {
						if m.Name != "__name__" {
							continue
						}
						named++
						if !exported[m.Value] {
							t.Errorf("expr names %s, which tidemark does not export", m.Value)
						}
					}
				}
				if named == 0 {
					t.Error("expr names no metric")
				}
			})
		}
	}
	// The five alerts, at least.
	for _, want := range []string{"TidemarkResourceStale", "TidemarkSourceFailing", "TidemarkQueueBacklogGrowing", "TidemarkDeadTasks", "TidemarkDriftPersistent"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yaml has no %s rule", want)
		}
	}
}
