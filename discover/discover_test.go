package discover_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/discover"
	"github.com/tidemark/tidemark/internal/demoapi"
)

func serve(t *testing.T, h http.Handler) (*counter, string) {
	t.Helper()
	c := count(h)
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func TestNotUnderstood(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		status  int
		ctype   string
		body    string
		header  map[string]string
		wantAll []string
	}{
		{name: "no ids", status: 200, ctype: "application/json",
			body:    `{"data":[{"name":"a","email":"a@x"},{"name":"b","email":"b@x"},{"name":"c","email":"c@x"}]}`,
			wantAll: []string{"no field named like an id", "unique fields: email, name", "needs a stable unique id"}},
		{name: "non-JSON", status: 200, ctype: "text/plain", body: "hello, world",
			wantAll: []string{"not JSON", "text/plain", "hello, world"}},
		{name: "HTML error page", status: 502, ctype: "text/html", body: "<html><head><title>Bad Gateway</title></head><body>oops</body></html>",
			wantAll: []string{"HTTP 502", "HTML page", `"Bad Gateway"`, "answers 200 with a JSON list"}},
		{name: "HTML login page with 200", status: 200, ctype: "text/html; charset=utf-8", body: "<!doctype html><title>Sign in</title>",
			wantAll: []string{"an HTML page", `"Sign in"`, "not a web page"}},
		{name: "401", status: 401, ctype: "application/json", body: `{"error":"unauthorized"}`,
			header:  map[string]string{"WWW-Authenticate": `Bearer realm="api"`},
			wantAll: []string{"HTTP 401 Unauthorized", `Bearer realm="api"`, "--auth-env"}},
		{name: "empty collection", status: 200, ctype: "application/json", body: `{"items":[]}`,
			wantAll: []string{"arrays (items) are empty", "at least one record"}},
		{name: "single object", status: 200, ctype: "application/json", body: `{"status":"ok","version":"1.2"}`,
			wantAll: []string{"no array of objects", "collection endpoint"}},
		{name: "array of strings", status: 200, ctype: "application/json", body: `["a","b"]`,
			wantAll: []string{"array of strings"}},
		{name: "more pages it cannot walk", status: 200, ctype: "application/json",
			body:    `{"data":[{"id":1},{"id":2},{"id":3}],"has_more":true}`,
			wantAll: []string{`"has_more" is true`, "a way to walk the pages"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, base := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			res, err := discover.Discover(context.Background(), base+"/things", discover.Options{})
			var nu *discover.NotUnderstoodError
			if !errors.As(err, &nu) {
				t.Fatalf("err = %v, want a NotUnderstoodError", err)
			}
			for _, w := range tt.wantAll {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%s", w, err)
				}
			}
			assertReadOnly(t, c, 12, res)
		})
	}
}

// TestBudget counts at the upstream: never more than MaxRequests, only GET
// and HEAD, and the proposal still parses with what the budget allowed.
func TestBudget(t *testing.T) {
	t.Parallel()
	for _, max := range []int{1, 2, 3, 5, 12} {
		for _, path := range []string{"/v1/ticket_sales", "/v1/inventory_movements", "/api/transactions", "/settlements", "/v2/tax/summaries"} {
			t.Run(fmt.Sprintf("%d%s", max, path), func(t *testing.T) {
				t.Parallel()
				c, base := serve(t, demoapi.New(demoapi.Options{Seed: 3, Records: 150}))
				res, err := discover.Discover(context.Background(), base+path, discover.Options{MaxRequests: max})
				assertReadOnly(t, c, max, res)
				if err != nil {
					// Page and offset styles need a second request to be confirmed:
					// without it discover must refuse, not guess "none".
					if !discover.IsNotUnderstood(err) || max > 2 {
						t.Fatalf("max %d: %v", max, err)
					}
					return
				}
				if _, err := config.Parse("p.yaml", res.YAML()); err != nil {
					t.Fatalf("proposal does not parse: %v\n%s", err, res.YAML())
				}
			})
		}
	}
}

// TestRateLimitHeaders: the proposal follows the advertised limit, and
// discovery spaces its own requests and honours Retry-After.
func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	calls := 0
	_, base := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		w.Header().Set("X-RateLimit-Limit", "10")
		w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(10-n))
		w.Header().Set("X-RateLimit-Reset", "40")
		if n == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"items": []map[string]any{{"id": 1}, {"id": 2}}, "total": 2})
	}))
	var slept []time.Duration
	res, err := discover.Discover(context.Background(), base+"/things", discover.Options{
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	rl := res.Config.Sources[0].RateLimit
	if rl == nil || rl.Requests != 9 || rl.Per.D() != time.Minute {
		t.Fatalf("rate_limit = %+v, want 9 per 1m (90%% of 10, window rounded up from reset 40s)", rl)
	}
	if len(slept) == 0 || slept[0] < 2*time.Second {
		t.Fatalf("slept %v: want Retry-After 2s honoured first", slept)
	}
	for _, d := range slept[1:] {
		if d > 6*time.Second+time.Millisecond {
			t.Errorf("slept %s between requests, want at most 6s (60s / 10)", d)
		}
	}
	if len(slept) < 2 {
		t.Errorf("slept %v: want requests after the 429 spaced at 6s", slept)
	}
	if !strings.Contains(string(res.YAML()), "rate_limit: {requests: 9, per: 1m, burst: 1}") {
		t.Errorf("YAML lacks the rate limit:\n%s", res.YAML())
	}
}

// TestPageStyles covers APIs without hints in the body: json-server's
// _page/_limit, zero-based pages, and a bearer token.
func TestPageStyles(t *testing.T) {
	t.Parallel()
	const total = 95
	items := func(from, n int) []map[string]any {
		var out []map[string]any
		for i := from; i < min(from+n, total); i++ {
			out = append(out, map[string]any{"uuid": fmt.Sprintf("u-%03d", i), "name": "x"})
		}
		return out
	}
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		style     string
		param     string
		start     int
		limit     string
		needToken bool
	}{
		{name: "json-server _page/_limit", style: config.PaginationPage, param: "_page", start: 1, limit: "_limit",
			handler: func(w http.ResponseWriter, r *http.Request) {
				p, _ := strconv.Atoi(r.URL.Query().Get("_page"))
				l, _ := strconv.Atoi(r.URL.Query().Get("_limit"))
				p, l = max(p, 1), cmpOr(l, 10)
				json.NewEncoder(w).Encode(items((p-1)*l, l))
			}},
		{name: "zero-based page, token", style: config.PaginationPage, param: "page", start: 0, limit: "", needToken: true, // page/per_page is tried first: page is honoured, per_page ignored, so no limit_param
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer s3cret" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				p, _ := strconv.Atoi(r.URL.Query().Get("page"))
				l, _ := strconv.Atoi(r.URL.Query().Get("page_size"))
				l = cmpOr(l, 20)
				json.NewEncoder(w).Encode(map[string]any{"results": items(p*l, l)})
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, base := serve(t, tt.handler)
			opts := discover.Options{}
			if tt.needToken {
				opts.AuthEnv, opts.Token = "API_TOKEN", "s3cret"
			}
			res, err := discover.Discover(context.Background(), base+"/widgets", opts)
			assertReadOnly(t, c, 12, res)
			if err != nil {
				t.Fatal(err)
			}
			yaml := res.YAML()
			conf, err := config.Parse("p.yaml", yaml)
			if err != nil {
				t.Fatalf("%v\n%s", err, yaml)
			}
			r := conf.Sources[0].Resources[0]
			pg := r.Pagination
			if pg.Style != tt.style || pg.PageParam != tt.param || *pg.Start != tt.start || pg.LimitParam != tt.limit {
				t.Errorf("pagination %+v (start %d), want %s %s start %d limit %s\n%s", pg, *pg.Start, tt.style, tt.param, tt.start, tt.limit, yaml)
			}
			if r.Records.ID != "uuid" || r.Probe.Strategy != tidemark.ProbeHash {
				t.Errorf("id %q probe %q, want uuid, hash", r.Records.ID, r.Probe.Strategy)
			}
			if strings.Contains(string(yaml), "s3cret") {
				t.Errorf("the token leaked into the proposal")
			}
			if tt.needToken && !strings.Contains(string(yaml), `auth: {type: bearer, token_env: "API_TOKEN"}`) {
				t.Errorf("no auth in the proposal:\n%s", yaml)
			}
		})
	}
}

func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
