package deploy_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"gopkg.in/yaml.v3"
)

// TestAlertRulesFireOnlyWhenActionable evaluates rules of alerts.yaml with
// Prometheus's own engine against samples: a paused resource, however far
// behind, raises no stale alert, and archived probes (which are never work
// for an operator) raise no dead-task alert, while the same samples of an
// unpaused resource and of a fetch or webhook queue do.
func TestAlertRulesFireOnlyWhenActionable(t *testing.T) {
	t.Parallel()
	rules := alertExprs(t)
	gauge := func(name string, v float64, kv ...string) series {
		return series{labels: labels.FromStrings(append([]string{"__name__", name}, kv...)...), value: v}
	}
	// counter went from was, 10m before the evaluation, to v.
	counter := func(name string, was, v float64, kv ...string) series {
		s := gauge(name, v, kv...)
		s.was = &was
		return s
	}
	// stale is what the server reports (store.State.Freshness): 0 while
	// paused, and for a target after a resume however far behind.
	resource := func(source, res string, lag, target, paused, stale float64) []series {
		return []series{
			gauge("tidemark_freshness_lag_seconds", lag, "source", source, "resource", res),
			gauge("tidemark_freshness_target_seconds", target, "source", source, "resource", res),
			gauge("tidemark_resource_paused", paused, "source", source, "resource", res),
			gauge("tidemark_resource_stale", stale, "source", source, "resource", res),
		}
	}
	archived := func(queue string, n float64) series {
		return gauge("asynq_tasks_enqueued_total", n, "queue", queue, "state", "archived")
	}
	tests := []struct {
		name, alert string
		samples     []series
		want        []string // the firing series, as source/resource or queue
	}{
		{
			name:  "stale unless paused",
			alert: "TidemarkResourceStale",
			samples: slices.Concat(
				resource("box", "late", 600, 30, 0, 1),
				resource("box", "paused_late", 600, 30, 1, 0),
				resource("box", "just_resumed", 600, 30, 0, 0),
				resource("box", "fresh", 10, 30, 0, 0),
			),
			want: []string{"box/late"},
		},
		{
			name:  "dead tasks but not probes",
			alert: "TidemarkDeadTasks",
			samples: []series{
				archived("default", 2), archived("critical", 0), archived("probe_default", 40), archived("probe_critical", 3),
			},
			want: []string{"default"},
		},
		{
			name:  "token refreshes failing, none succeeding",
			alert: "TidemarkAuthRefreshFailing",
			samples: []series{
				// xero: refused every time; ledger: one failure, then
				// refreshed; quiet: nothing failed.
				counter("tidemark_auth_refresh_failures_total", 0, 4, "source", "xero"),
				counter("tidemark_auth_refreshes_total", 3, 3, "source", "xero"),
				counter("tidemark_auth_refresh_failures_total", 0, 1, "source", "ledger"),
				counter("tidemark_auth_refreshes_total", 3, 4, "source", "ledger"),
				counter("tidemark_auth_refresh_failures_total", 2, 2, "source", "quiet"),
			},
			want: []string{"xero/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expr, ok := rules[tt.alert]
			if !ok {
				t.Fatalf("alerts.yaml has no %s rule", tt.alert)
			}
			var got []string
			for _, s := range evalInstant(t, expr, tt.samples) {
				name := s.Metric.Get("queue")
				if src := s.Metric.Get("source"); src != "" {
					name = src + "/" + s.Metric.Get("resource")
				}
				got = append(got, name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("%s fires for %q, want %q\nexpr: %s", tt.alert, got, tt.want, expr)
			}
		})
	}
}

// alertExprs reads each alert's expression from alerts.yaml.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	out := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = strings.TrimSpace(r.Expr)
		}
	}
	return out
}

// series is one gauge with one sample, at evalAt; or a counter with a
// sample 10m earlier too.
type series struct {
	labels labels.Labels
	value  float64
	was    *float64
}

var evalAt = time.Unix(1_800_000_000, 0)

// evalInstant evaluates expr at evalAt over samples, held in memory.
func evalInstant(t *testing.T, expr string, samples []series) promql.Vector {
	t.Helper()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 10000, Timeout: 10 * time.Second, LookbackDelta: 5 * time.Minute})
	q, err := engine.NewInstantQuery(context.Background(), memQueryable(samples), nil, expr, evalAt)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%s: %v", expr, res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// memQueryable serves samples, each at evalAt, to the engine.
func memQueryable(samples []series) storage.Queryable {
	return storage.QueryableFunc(func(_, _ int64) (storage.Querier, error) {
		return &storage.MockQuerier{SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			var out []storage.Series
			for _, s := range samples {
				if matchAll(ms, s.labels) {
					points := []chunks.Sample{floatSample{evalAt.UnixMilli(), s.value}}
					if s.was != nil {
						points = slices.Insert(points, 0, chunks.Sample(floatSample{evalAt.Add(-10 * time.Minute).UnixMilli(), *s.was}))
					}
					out = append(out, storage.NewListSeries(s.labels, points))
				}
			}
			slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
			return &listSet{series: out, i: -1}
		}}, nil
	})
}

func matchAll(ms []*labels.Matcher, l labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}

type listSet struct {
	series []storage.Series
	i      int
}

func (s *listSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *listSet) At() storage.Series                { return s.series[s.i] }
func (s *listSet) Err() error                        { return nil }
func (s *listSet) Warnings() annotations.Annotations { return nil }

// floatSample is a float sample (chunks.Sample).
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }
