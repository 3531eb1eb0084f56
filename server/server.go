// Package server is tidemark's HTTP face: health endpoints for orchestrators
// and the admin API (resources with their sync state, runs).
package server

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// Config tunes a Server.
type Config struct {
	// Addr is the listen address. Default 127.0.0.1:8080.
	Addr string
	// AdminToken, when set, is required as a bearer token on /api/. Without
	// it the server refuses to listen on a non-loopback address.
	AdminToken string
}

// Server serves the admin API.
type Server struct {
	cfg   Config
	conf  *config.Config
	store *store.Store
	log   *slog.Logger
}

// New checks cfg and returns a server.
func New(cfg Config, conf *config.Config, st *store.Store, log *slog.Logger) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, conf: conf, store: st, log: log}, nil
}

// Check refuses an admin API open beyond loopback without a token.
func (cfg Config) Check() error {
	if cfg.AdminToken == "" && !loopback(cmp.Or(cfg.Addr, "127.0.0.1:8080")) {
		return fmt.Errorf("refusing to serve the admin API on %s without TIDEMARK_ADMIN_TOKEN (set it, or listen on 127.0.0.1)", cfg.Addr)
	}
	return nil
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handler is the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /api/resources", s.auth(http.HandlerFunc(s.resources)))
	mux.Handle("GET /api/runs", s.auth(http.HandlerFunc(s.runs)))
	return mux
}

// Run serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{Addr: s.cfg.Addr, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
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

func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.AdminToken == "" {
		return next
	}
	want := []byte("Bearer " + s.cfg.AdminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <TIDEMARK_ADMIN_TOKEN>")
			return
		}
		next.ServeHTTP(w, r)
	})
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
}

func (s *Server) resources(w http.ResponseWriter, r *http.Request) {
	views, err := Resources(r.Context(), s.conf, s.store)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, views)
}

// Resources joins the configured resources with their state, newest fetch
// run and record count, in config order.
func Resources(ctx context.Context, conf *config.Config, st *store.Store) ([]ResourceView, error) {
	states, err := st.States(ctx)
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
	byKey := make(map[store.Key]*store.State, len(states))
	for i := range states {
		byKey[store.Key{Source: states[i].Source, Resource: states[i].Resource}] = &states[i]
	}
	var out []ResourceView
	conf.Each(func(src *config.Source, res *config.Resource) {
		k := store.Key{Source: src.Name, Resource: res.Name}
		v := ResourceView{Source: src.Name, Resource: res.Name, Priority: res.Priority,
			Freshness: res.Freshness.D().String(), Records: counts[k], State: byKey[k]}
		if run, ok := last[k]; ok {
			v.LastRun = &run
		}
		out = append(out, v)
	})
	return out, nil
}

func (s *Server) runs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.RunFilter{Source: q.Get("source"), Resource: q.Get("resource"), Status: q.Get("status"), Kind: q.Get("kind")}
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
