package server

import (
	"crypto/subtle"
	_ "embed"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// route is one endpoint. The table is also what the OpenAPI test checks
// /api/openapi.json against.
type route struct {
	pattern string // ServeMux pattern, "METHOD /path"
	open    bool   // served without the admin token
	handler func(*Server) http.HandlerFunc
}

var routes = []route{
	{"GET /healthz", true, func(*Server) http.HandlerFunc { return healthz }},
	{"GET /readyz", true, func(s *Server) http.HandlerFunc { return s.ready }},
	// Open like /healthz, for Prometheus scrapers without the token: it
	// carries counts per source and resource, no secrets, ids or URLs.
	{"GET /metrics", true, func(s *Server) http.HandlerFunc { return s.metrics.ServeHTTP }},
	{"GET /api/openapi.json", true, func(*Server) http.HandlerFunc { return openapi }},
	{"GET /api/resources", false, func(s *Server) http.HandlerFunc { return s.resources }},
	{"GET /api/runs", false, func(s *Server) http.HandlerFunc { return s.runs }},
	{"GET /api/events", false, func(s *Server) http.HandlerFunc { return s.events }},
	{"GET /api/resources/{source}/{resource}", false, func(s *Server) http.HandlerFunc { return s.resource }},
	{"GET /api/resources/{source}/{resource}/history", false, func(s *Server) http.HandlerFunc { return s.history }},
	{"GET /api/resources/{source}/{resource}/partitions", false, func(s *Server) http.HandlerFunc { return s.partitions }},
	{"POST /api/resources/{source}/{resource}/retry", false, func(s *Server) http.HandlerFunc { return s.retryDead }},
	{"POST /api/resources/{source}/{resource}/sync", false, func(s *Server) http.HandlerFunc { return s.sync }},
	{"POST /api/resources/{source}/{resource}/pause", false, func(s *Server) http.HandlerFunc { return s.pause(true) }},
	{"POST /api/resources/{source}/{resource}/resume", false, func(s *Server) http.HandlerFunc { return s.pause(false) }},
	// Inbound hooks check a signature or the token themselves: an
	// upstream calling them has the first, not the second.
	{"POST /api/hooks/{source}/{resource}", true, func(s *Server) http.HandlerFunc { return s.hook }},
}

// APIRoutes lists the "METHOD /path" patterns under /api/, for the OpenAPI
// document's test.
func APIRoutes() []string {
	var out []string
	for _, r := range routes {
		if strings.Contains(r.pattern, " /api/") {
			out = append(out, r.pattern)
		}
	}
	return out
}

// Handler is the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range routes {
		h := http.Handler(r.handler(s))
		if !r.open {
			h = s.auth(h)
		}
		mux.Handle(r.pattern, h)
	}
	mux.Handle("GET /{$}", s.auth(http.HandlerFunc(s.dashboard)))
	mux.Handle("GET /resources/{source}/{resource}", s.auth(http.HandlerFunc(s.resourcePage)))
	// The vendored chart library: public code, served without the token.
	mux.Handle("GET /static/", staticFiles())
	mux.HandleFunc("GET /login", loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	mux.Handle("/monitoring/", s.auth(s.monitor))
	mux.Handle("/api/", s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path+" (see /api/openapi.json)")
	})))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such page: "+r.URL.Path)
	})
	return mux
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

//go:embed openapi.json
var openapiJSON []byte

func openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openapiJSON)
}

//go:embed dashboard.html
var dashboardHTML []byte

// dashboardNoLogoutHTML is the dashboard without its log-out button, served
// when no admin token is configured, as there is no session to end.
var dashboardNoLogoutHTML = regexp.MustCompile(`<form id="logout".*?</form>`).ReplaceAll(dashboardHTML, nil)

func (s *Server) dashboard(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	page := dashboardHTML
	if s.cfg.AdminToken == "" {
		page = dashboardNoLogoutHTML
	}
	w.Write(page)
}

// authorized reports whether r carries the admin token as a bearer token,
// or the cookie of a dashboard session (always true when no token is
// configured).
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.AdminToken == "" {
		return true
	}
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && got != "" {
		return subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AdminToken)) == 1
	}
	return s.validSession(r)
}

func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <TIDEMARK_ADMIN_TOKEN>, or log in at /login")
	})
}
