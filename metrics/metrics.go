package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds the metrics every tidemark process exports.
var Registry = prometheus.NewRegistry()

// Probe results (label result of tidemark_probes_total).
const (
	ProbeNotModified = "not_modified"
	ProbeChanged     = "changed"
	ProbeFailed      = "failed"
)

var (
	// Runs counts finished runs by kind (probe|delta|full) and status
	// (succeeded|not_modified|failed|dead).
	Runs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_runs_total",
		Help: "Finished sync runs by source, resource, kind and status.",
	}, []string{"source", "resource", "kind", "status"})
	// RecordsChanged counts records created, updated and deleted.
	RecordsChanged = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_records_changed_total",
		Help: "Records changed by fetches, by op (created|updated|deleted).",
	}, []string{"source", "resource", "op"})
	// UpstreamRequests counts HTTP requests to upstreams by status code;
	// code is "error" when no response came (refused, reset, timed out).
	UpstreamRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_upstream_requests_total",
		Help: "HTTP requests to upstream APIs by source and status code (\"error\": no response).",
	}, []string{"source", "code"})
	// UpstreamDuration is the latency of upstream requests.
	UpstreamDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tidemark_upstream_request_duration_seconds",
		Help:    "Latency of HTTP requests to upstream APIs, until the response headers.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"source"})
	// Probes counts probes by result (not_modified|changed|failed).
	Probes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_probes_total",
		Help: "Change probes by source, resource and result (not_modified|changed|failed).",
	}, []string{"source", "resource", "result"})
	// RateLimitWait is how long requests waited for the fleet-wide rate limit.
	RateLimitWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tidemark_ratelimit_wait_seconds",
		Help:    "Time requests waited for their source's fleet-wide rate limit or concurrency slot.",
		Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"source"})
	// RateLimitRemaining is the budget an upstream last announced
	// (RateLimit-Remaining, X-RateLimit-Remaining or RateLimit) to this
	// process; the fleet slows down as it nears zero.
	RateLimitRemaining = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tidemark_ratelimit_remaining",
		Help: "Requests left in the upstream's rate-limit window, as its last response to this process announced.",
	}, []string{"source"})
	// RateLimitHeadersIgnored counts rate-limit headers that were present
	// but unusable, by reason (malformed|absurd|no_reset).
	RateLimitHeadersIgnored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_ratelimit_headers_ignored_total",
		Help: "Upstream rate-limit headers ignored as malformed, absurd (reset too far away) or without a reset.",
	}, []string{"source", "reason"})
	// Drift counts changes full reads found that the deltas had missed.
	Drift = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_drift_records_total",
		Help: "Records a full read changed that the delta reads had missed.",
	}, []string{"source", "resource"})
	// AuthRefreshes counts OAuth2 access tokens bought from token
	// endpoints: about one per token lifetime for the whole fleet.
	AuthRefreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_auth_refreshes_total",
		Help: "OAuth2 access tokens a source's token endpoint issued to this process.",
	}, []string{"source"})
	// AuthRefreshFailures counts failed token requests: each fails the run
	// that needed the token (alert TidemarkAuthRefreshFailing).
	AuthRefreshFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_auth_refresh_failures_total",
		Help: "OAuth2 token requests that failed (the endpoint refused or did not answer).",
	}, []string{"source"})
)

func init() {
	Registry.MustRegister(Runs, RecordsChanged, UpstreamRequests, UpstreamDuration, Probes, RateLimitWait, RateLimitRemaining, RateLimitHeadersIgnored, Drift,
		AuthRefreshes, AuthRefreshFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// ObserveRun counts a finished run.
func ObserveRun(source, resource, kind, status string) {
	Runs.WithLabelValues(source, resource, kind, status).Inc()
}

// ObserveRecords counts a fetch's changes; zero counts add nothing (but
// make the series exist, so rate() sees its first increase).
func ObserveRecords(source, resource string, created, updated, deleted int) {
	RecordsChanged.WithLabelValues(source, resource, "created").Add(float64(created))
	RecordsChanged.WithLabelValues(source, resource, "updated").Add(float64(updated))
	RecordsChanged.WithLabelValues(source, resource, "deleted").Add(float64(deleted))
}

// ObserveProbe counts a probe by result.
func ObserveProbe(source, resource, result string) {
	Probes.WithLabelValues(source, resource, result).Inc()
}

// ObserveProbes counts n probes of one result at once (the unchanged probes
// a store.ProbeBatcher flush wrote).
func ObserveProbes(source, resource, result string, n int64) {
	Probes.WithLabelValues(source, resource, result).Add(float64(n))
}

// ObserveDrift counts the drift a full read found (0 makes the series exist).
func ObserveDrift(source, resource string, n int64) {
	Drift.WithLabelValues(source, resource).Add(float64(max(n, 0)))
}

// ObserveRateLimitWait records how long a request of source waited for the
// rate limiter.
func ObserveRateLimitWait(source string, d time.Duration) {
	RateLimitWait.WithLabelValues(source).Observe(d.Seconds())
}

// ObserveRateLimitRemaining records the budget an upstream announced.
func ObserveRateLimitRemaining(source string, remaining int) {
	RateLimitRemaining.WithLabelValues(source).Set(float64(remaining))
}

// ObserveRateLimitHeadersIgnored counts unusable rate-limit headers.
func ObserveRateLimitHeadersIgnored(source, reason string) {
	RateLimitHeadersIgnored.WithLabelValues(source, reason).Inc()
}

// ObserveAuthRefresh counts one OAuth2 token request of source, failed
// when err is set.
func ObserveAuthRefresh(source string, err error) {
	if err != nil {
		AuthRefreshFailures.WithLabelValues(source).Inc()
		return
	}
	AuthRefreshes.WithLabelValues(source).Inc()
}

// ObserveUpstream records one HTTP request to an upstream: its status code,
// or "error" when err is set and no response came, and its duration.
func ObserveUpstream(source string, res *http.Response, err error, d time.Duration) {
	code := "error"
	if err == nil && res != nil {
		code = strconv.Itoa(res.StatusCode)
	}
	UpstreamRequests.WithLabelValues(source, code).Inc()
	UpstreamDuration.WithLabelValues(source).Observe(d.Seconds())
}

// Handler serves Registry, plus extra collectors (the server role's
// freshness and queue collectors), in the Prometheus text format. A failing
// collector fails the scrape with its error, so a broken metric is visible
// rather than silently missing.
func Handler(extra ...prometheus.Collector) http.Handler {
	gs := prometheus.Gatherers{Registry}
	if len(extra) > 0 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(extra...)
		gs = append(gs, reg)
	}
	return promhttp.HandlerFor(gs, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// Serve serves /metrics (Registry only) and /healthz on addr until ctx is
// done, for the roles without an HTTP server of their own (worker,
// scheduler). An empty addr serves nothing and returns when ctx is done.
func Serve(ctx context.Context, addr string) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
