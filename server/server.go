// Package server is tidemark's HTTP face: health endpoints for orchestrators,
// the admin API (resources and why they fail, runs, history, sync now,
// pause, resume, retry dead tasks), the live event stream (SSE), inbound
// upstream webhooks, the dashboard, the resource pages and Asynqmon.
package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
)

// Config tunes a Server.
type Config struct {
	// Addr is the listen address. Default AddrDefault (127.0.0.1:8080).
	Addr string
	// AdminToken, when set, is required on /api/, /monitoring/ and the
	// dashboard: as a bearer token, or through the session /login opens.
	// Without it the server refuses to listen on a non-loopback address.
	AdminToken string
	// PublishAddr is the address (host, or host:port) the server is
	// published on when that is not Addr: a container listens on 0.0.0.0
	// inside its network and is published on the host by Docker
	// (docker-compose.yml sets TIDEMARK_PUBLISH_ADDR). Beyond loopback the
	// server refuses to start with no token or DemoAdminToken. Default ""
	// (Addr is where it is reachable).
	PublishAddr string
	// TrustProxy says a TLS-terminating proxy is in front: X-Forwarded-Proto:
	// https then marks a request as TLS, so the session cookie is Secure.
	// Without it the header is ignored: anyone can send it. Default false.
	TrustProxy bool
	// SessionTTL is how long a dashboard session lasts after /login.
	// Default SessionTTLDefault (12h).
	SessionTTL time.Duration
	// HookWindow is how often, at most, inbound hooks of one resource
	// enqueue a probe; hooks in between are coalesced. Default
	// HookWindowDefault (250ms).
	HookWindow time.Duration
	// Heartbeat is how often an idle event stream gets a comment line, so
	// proxies keep it open. Default HeartbeatDefault (15s).
	Heartbeat time.Duration
	// Now is the clock of inbound hooks (webhook-timestamp, HookWindow).
	// Default time.Now.
	Now func() time.Time
	// HookSecret returns the secret that signs inbound webhooks of a source
	// ("" = none). Default: the environment variable
	// TIDEMARK_HOOK_SECRET_<SOURCE> (source name upper-cased).
	HookSecret func(source string) string
}

// Config's defaults not defined beside their feature (SessionTTLDefault,
// HookWindowDefault), filled in by New; cmd/tidemark's flags start from them.
const (
	// AddrDefault is Config.Addr's default: loopback, where the admin API
	// needs no token.
	AddrDefault = "127.0.0.1:8080"
	// HeartbeatDefault is Config.Heartbeat's default.
	HeartbeatDefault = 15 * time.Second
)

// HookSecretEnv is the environment variable holding the inbound webhook
// secret of source.
func HookSecretEnv(source string) string {
	return "TIDEMARK_HOOK_SECRET_" + strings.ToUpper(source)
}

// DemoAdminToken is the admin token of the demo stacks (docker-compose.yml,
// the Kubernetes demo overlay): public, so never acceptable where anyone
// else can reach the server.
const DemoAdminToken = "tidemark-demo-token"

// Server serves the admin API.
type Server struct {
	cfg    Config
	live   config.Provider
	store  *store.Store
	hub    *events.Hub
	client *asynq.Client
	// rdb keeps dashboard sessions and inbound webhook ids seen.
	rdb     redis.UniversalClient
	monitor *asynqmon.HTTPHandler
	// inspector and metrics serve /metrics: the fleet-wide collectors
	// (freshness from Postgres, queues from Redis) live in the server role.
	inspector *asynq.Inspector
	metrics   http.Handler
	log       *slog.Logger
}

// New checks cfg and returns a server. redisOpt reaches the task queues
// (sync now, inbound hooks, Asynqmon); hub feeds /api/events and must be
// running for it to answer. Close the server (Run does) to free its Redis
// connections.
func New(cfg Config, conf config.Provider, st *store.Store, redisOpt asynq.RedisConnOpt, hub *events.Hub, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if redisOpt == nil || hub == nil {
		return nil, errors.New("server: a Redis connection and an event hub are required")
	}
	rdb, ok := redisOpt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("server: unsupported Redis connection option %T", redisOpt)
	}
	inspector := asynq.NewInspector(redisOpt)
	return &Server{
		cfg: cfg, live: conf, store: st, hub: hub, log: log,
		inspector: inspector,
		metrics:   metrics.Handler(metrics.NewFreshness(conf, st), metrics.NewQueues(inspector), metrics.NewViewCasts(st)),
		client:    asynq.NewClientFromRedisClient(rdb),
		rdb:       rdb,
		monitor: asynqmon.New(asynqmon.Options{
			RootPath:     "/monitoring",
			RedisConnOpt: redisOpt,
			// Without an admin token nobody is authenticated, so nobody
			// may delete, archive or run tasks from the UI.
			ReadOnly: cfg.AdminToken == "",
		}),
	}, nil
}

// withDefaults returns cfg with every unset field that has a default set
// to it.
func (cfg Config) withDefaults() Config {
	cfg.Addr = cmp.Or(cfg.Addr, AddrDefault)
	cfg.Heartbeat = cmp.Or(cfg.Heartbeat, HeartbeatDefault)
	cfg.SessionTTL = cmp.Or(cfg.SessionTTL, SessionTTLDefault)
	cfg.HookWindow = cmp.Or(cfg.HookWindow, HookWindowDefault)
	if cfg.HookSecret == nil {
		cfg.HookSecret = func(source string) string { return os.Getenv(HookSecretEnv(source)) }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// conf is the config in force: read it once per request.
func (s *Server) conf() *config.Config { return s.live.Current() }

// Close frees the server's Redis connections.
func (s *Server) Close() error {
	// The asynq client shares rdb: asynq leaves closing it to us.
	return errors.Join(s.monitor.Close(), s.inspector.Close(), s.rdb.Close())
}

// Check refuses an admin API open beyond loopback without a token, or,
// published beyond loopback, with the public demo token.
func (cfg Config) Check() error {
	if cfg.AdminToken == "" && !loopback(cmp.Or(cfg.Addr, AddrDefault)) {
		return fmt.Errorf("refusing to serve the admin API on %s without TIDEMARK_ADMIN_TOKEN (set it, or listen on 127.0.0.1)", cfg.Addr)
	}
	if cfg.PublishAddr != "" && !loopback(cfg.PublishAddr) && (cfg.AdminToken == "" || cfg.AdminToken == DemoAdminToken) {
		return fmt.Errorf("refusing to serve the admin API published on %s with the demo admin token %q (or none): anyone who has read the README could use it; "+
			"set TIDEMARK_ADMIN_TOKEN to a secret of your own (openssl rand -hex 32), or publish on 127.0.0.1", cfg.PublishAddr, DemoAdminToken)
	}
	if cfg.SessionTTL < 0 {
		return fmt.Errorf("session TTL %s: want a positive duration", cfg.SessionTTL)
	}
	if cfg.HookWindow < 0 {
		return fmt.Errorf("hook window (TIDEMARK_HOOK_WINDOW) %s: want a positive duration", cfg.HookWindow)
	}
	return nil
}

// loopback reports whether addr, host:port or a bare host (an IPv6 one
// possibly in brackets), is a loopback address.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	defer s.Close()
	srv := &http.Server{
		Addr: s.cfg.Addr, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		// Requests inherit ctx, so event streams end when the server stops
		// instead of holding Shutdown to its timeout.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.log.Info("server listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server shutdown: %w", err)
	}
	return nil
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "database: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// ResourceView is a resource as /api/resources shows it.
type ResourceView struct {
	Source    string       `json:"source"`
	Resource  string       `json:"resource"`
	Priority  string       `json:"priority"`
	Freshness string       `json:"freshness"`
	Records   int64        `json:"records"`
	State     *store.State `json:"state"`
	LastRun   *store.Run   `json:"last_run"`
	// FreshnessSeconds is the freshness target in seconds.
	FreshnessSeconds float64 `json:"freshness_seconds"`
	// LagSeconds is the time since the resource was last known in step
	// with its upstream (an unchanged probe or a successful fetch); never
	// synced yet, since it was configured. Null without a sync state.
	LagSeconds *float64 `json:"lag_seconds"`
	// Health is paused, syncing, failing, stale or fresh (first that
	// applies): syncing while a fetch runs, or while a resource catches
	// up inside its target (never synced yet, or just resumed after a
	// pause); stale as store.State.Freshness
	// judges it (as the scheduler's resource.stale and the metrics do).
	Health string `json:"health"`
	// Cause says why the resource is failing and what happens next; null
	// while its last runs succeed.
	Cause *Cause `json:"cause"`
	// Partitions rolls up a partitioned resource's partitions (config
	// parent or partitions); absent for others.
	Partitions *store.PartitionSummary `json:"partitions,omitempty"`
	// FirstLoad is the resource's first load as its audit trail
	// summarizes it (audit.initial_load: summary); absent when it was
	// audited per record or has not begun.
	FirstLoad *store.FirstLoad `json:"first_load,omitempty"`
}

// Health values of a ResourceView.
const (
	HealthPaused  = "paused"
	HealthSyncing = "syncing"
	HealthFailing = "failing"
	HealthStale   = "stale"
	HealthFresh   = "fresh"
)

func (v *ResourceView) judge(freshness time.Duration, now time.Time) {
	v.FreshnessSeconds = freshness.Seconds()
	var f store.Freshness
	if v.State != nil {
		f = v.State.Freshness(freshness, now)
		lag := f.Lag.Seconds()
		v.LagSeconds = &lag
	}
	switch {
	case v.State != nil && v.State.Paused:
		v.Health = HealthPaused
	case v.LastRun != nil && v.LastRun.Status == store.StatusRunning:
		v.Health = HealthSyncing
	case v.State != nil && v.State.ConsecutiveFailures > 0:
		v.Health = HealthFailing
	case f.Stale:
		v.Health = HealthStale
	case !f.Synced || f.Lag > freshness:
		// Catching up, not (yet) stale: its first sync, inside its
		// target; or a target after a resume.
		v.Health = HealthSyncing
	default:
		v.Health = HealthFresh
	}
}

func (s *Server) resources(w http.ResponseWriter, r *http.Request) {
	conf := s.conf()
	views, err := Resources(r.Context(), conf, s.store)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	FillNext(conf, s.inspector, views)
	writeJSON(w, http.StatusOK, views)
}

// Resources joins the configured resources with their state, newest fetch
// run, record count and the cause of their failures, in config order. What
// happens next to a failing resource is said from its last run alone:
// FillNext asks the task queues.
func Resources(ctx context.Context, conf *config.Config, st *store.Store) ([]ResourceView, error) {
	states, err := st.States(ctx)
	if err != nil {
		return nil, err
	}
	streaks, err := st.FailureStreaks(ctx)
	if err != nil {
		return nil, err
	}
	last, err := st.LastRuns(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := st.LiveRecords(ctx)
	if err != nil {
		return nil, err
	}
	firstLoads, err := st.FirstLoads(ctx)
	if err != nil {
		return nil, err
	}
	var parts map[store.Key]store.PartitionSummary
	if partitioned(conf) { // most configs have none: no query for them
		if parts, err = st.PartitionSummaries(ctx); err != nil {
			return nil, err
		}
	}
	byKey := make(map[store.Key]*store.State, len(states))
	for i := range states {
		byKey[store.Key{Source: states[i].Source, Resource: states[i].Resource}] = &states[i]
	}
	var out []ResourceView
	now := time.Now()
	conf.Each(func(src *config.Source, res *config.Resource) {
		k := store.Key{Source: src.Name, Resource: res.Name}
		v := ResourceView{Source: src.Name, Resource: res.Name, Priority: res.Priority,
			Freshness: res.Freshness.D().String(), Records: counts[k], State: byKey[k]}
		if run, ok := last[k]; ok {
			v.LastRun = &run
		}
		if streak, ok := streaks[k]; ok && v.State != nil && v.State.ConsecutiveFailures > 0 {
			v.Cause = newCause(streak)
			if v.State.Paused {
				v.Cause.Next = fmt.Sprintf("paused: nothing runs until `tidemark resume %s/%s`", src.Name, res.Name)
			}
		}
		if fl, ok := firstLoads[k]; ok {
			v.FirstLoad = &fl
		}
		if res.Partitioned() {
			sum := parts[k]
			v.Partitions = &sum
		}
		v.judge(res.Freshness.D(), now)
		out = append(out, v)
	})
	return out, nil
}

// partitioned reports whether conf has a partitioned resource.
func partitioned(conf *config.Config) bool {
	found := false
	conf.Each(func(_ *config.Source, res *config.Resource) { found = found || res.Partitioned() })
	return found
}

func (s *Server) runs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.RunFilter{Source: q.Get("source"), Resource: q.Get("resource"), Status: q.Get("status"), Kind: tidemark.RunKind(q.Get("kind"))}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want a non-negative integer", v))
			return
		}
		f.Limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("before=%q: want a run id", v))
			return
		}
		f.BeforeID = n
	}
	runs, err := s.store.Runs(r.Context(), f)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
