package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/store"
)

const testConfig = `
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - {name: orders, path: /orders, records: {id: id}, freshness: 1m}
      - {name: items, path: /items, records: {id: id}, freshness: 1m, priority: critical}
`

type env struct {
	t        *testing.T
	conf     *config.Config
	st       *store.Store
	redisOpt asynq.RedisConnOpt
	srv      *server.Server
	http     *httptest.Server
	runs     map[string]int64
	seq      int
}

func setup(t *testing.T, cfg server.Config) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conf, err := config.Parse("t.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	dbURL := testenv.Database(t)
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redisOpt.MakeRedisClient().(redis.UniversalClient)
	log := slog.New(slog.DiscardHandler)
	hub := events.NewHub(events.HubConfig{}, st, rdb, log)
	relay := events.NewRelay(events.RelayConfig{Listen: true}, st, rdb, log)
	srv, err := server.New(cfg, conf, st, redisOpt, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { hub.Run(ctx); done <- struct{}{} }()
	go func() { relay.Run(ctx); done <- struct{}{} }()
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	hs.Start()
	t.Cleanup(func() {
		cancel()
		hs.Close()
		<-done
		<-done
		srv.Close()
		rdb.Close()
		st.Close()
	})
	if err := st.EnsureStates(ctx, store.KeysOf(conf)); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, conf: conf, st: st, redisOpt: redisOpt, srv: srv, http: hs, runs: map[string]int64{}}
	for _, res := range []string{"orders", "items"} {
		run := store.Run{Source: "shop", Resource: res, Kind: store.KindFull, Trigger: "manual"}
		if err := st.StartRun(ctx, &run); err != nil {
			t.Fatal(err)
		}
		e.runs[res] = run.ID
	}
	return e
}

// emit commits n data.updated events for resource through ApplyPage and
// returns their outbox ids.
func (e *env) emit(resource string, n int) []int64 {
	e.t.Helper()
	ctx := context.Background()
	before, _ := e.st.LastOutboxID(ctx)
	for range n {
		e.seq++
		rec := store.Record{ExternalID: strconv.Itoa(e.seq), Payload: json.RawMessage(`{}`), Hash: strconv.Itoa(e.seq)}
		if _, err := e.st.ApplyPage(ctx, store.Page{Key: store.Key{Source: "shop", Resource: resource}, RunID: e.runs[resource], Records: []store.Record{rec}}); err != nil {
			e.t.Fatal(err)
		}
	}
	rows, err := e.st.OutboxAfter(ctx, store.OutboxFilter{AfterID: before, Resource: resource, Limit: 10000})
	if err != nil {
		e.t.Fatal(err)
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	if len(ids) != n {
		e.e(fmt.Sprintf("emitted %d events, outbox has %d", n, len(ids)))
	}
	return ids
}

func (e *env) e(msg string) { e.t.Helper(); e.t.Fatal(msg) }

func (e *env) do(method, path, token string, header map[string]string, body string) (*http.Response, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// stream is an SSE client.
type stream struct {
	resp *http.Response
	ids  chan int64
	data chan string
}

func (e *env) stream(query, lastID, token string) *stream {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.http.URL+"/api/events"+query, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		e.t.Fatalf("GET /api/events%s = %d %s", query, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{resp: resp, ids: make(chan int64, 10000), data: make(chan string, 10000)}
	go func() {
		defer close(s.ids)
		sc := bufio.NewScanner(resp.Body)
		var id int64
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id, _ = strconv.ParseInt(line[4:], 10, 64)
			case strings.HasPrefix(line, "data: "):
				s.data <- line[6:]
			case line == "" && id != 0:
				s.ids <- id
				id = 0
			}
		}
	}()
	return s
}

func (s *stream) close() { s.resp.Body.Close() }

// expect reads exactly want from the stream, in order.
func (s *stream) expect(t *testing.T, want []int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for i, w := range want {
		select {
		case got, ok := <-s.ids:
			if !ok {
				t.Fatalf("stream ended after %d of %d events", i, len(want))
			}
			if got != w {
				t.Fatalf("event %d: got id %d, want %d", i, got, w)
			}
		case <-deadline:
			t.Fatalf("timed out after %d of %d events", i, len(want))
		}
	}
}

// quiet checks that nothing more arrives until a marker event does.
func (s *stream) next(t *testing.T) int64 {
	t.Helper()
	select {
	case id := <-s.ids:
		return id
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for an event")
	}
	return 0
}

func TestEventsResumeExactlyOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	s := e.stream("", "", "")
	first := e.emit("orders", 5)
	s.expect(t, first)
	s.close()

	missed := e.emit("orders", 100)
	s = e.stream("", strconv.FormatInt(first[len(first)-1], 10), "")
	defer s.close()
	s.expect(t, missed) // every missed event, in order, once
	live := e.emit("orders", 3)
	s.expect(t, live) // then the live stream, with no replayed duplicate before it
	var d map[string]any
	if err := json.Unmarshal([]byte(<-s.data), &d); err != nil || d["event"] != "data.updated" || d["source"] != "shop" || d["id"] == nil {
		t.Fatalf("event data = %v (%v); want id, event, source", d, err)
	}
}

func TestEventsFilters(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	orders := e.emit("orders", 3)
	items := e.emit("items", 2)
	tests := []struct {
		name, query string
		want        []int64
	}{
		{"resource filter replays only that resource", "?resource=items", items},
		{"source and resource", "?source=shop&resource=orders", orders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := e.stream(tt.query, "0", "")
			defer s.close()
			s.expect(t, tt.want)
		})
	}
	// Live: an items-only stream skips orders events.
	s := e.stream("?resource=items", "", "")
	defer s.close()
	e.emit("orders", 2)
	more := e.emit("items", 1)
	if got := s.next(t); got != more[0] {
		t.Fatalf("items stream got event %d; want %d (orders events must be filtered out)", got, more[0])
	}
	if resp, body := e.do("GET", "/api/events", "", map[string]string{"Last-Event-ID": "x"}, ""); resp.StatusCode != 400 || !strings.Contains(body, "Last-Event-ID") {
		t.Fatalf("bad Last-Event-ID = %d %s", resp.StatusCode, body)
	}
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{AdminToken: "tok", HookSecret: func(src string) string {
		if src == "shop" {
			return "hooksecret"
		}
		return ""
	}})
	sign := func(body string) string { return jobs.Sign([]byte("hooksecret"), []byte(body)) }
	tests := []struct {
		name, method, path, token string
		header                    map[string]string
		body                      string
		code                      int
		contains                  string
	}{
		{"healthz needs no token", "GET", "/healthz", "", nil, "", 200, `"ok"`},
		{"readyz pings the database", "GET", "/readyz", "", nil, "", 200, `"ready"`},
		{"api needs the token", "GET", "/api/resources", "", nil, "", 401, "admin token"},
		{"events need the token", "GET", "/api/events", "", nil, "", 401, "admin token"},
		{"wrong token", "GET", "/api/resources", "nope", nil, "", 401, "admin token"},
		{"resources", "GET", "/api/resources", "tok", nil, "", 200, `"freshness":"1m0s"`},
		{"resources health", "GET", "/api/resources", "tok", nil, "", 200, `"health":"syncing"`},
		{"runs", "GET", "/api/runs?source=shop&limit=5", "tok", nil, "", 200, `"status":"running"`},
		{"bad limit", "GET", "/api/runs?limit=ten", "tok", nil, "", 400, `limit=\"ten\"`},
		{"bad before", "GET", "/api/runs?before=-1", "tok", nil, "", 400, "want a run id"},
		{"sync", "POST", "/api/resources/shop/orders/sync", "tok", nil, "", 202, `"mode":"full"`},
		{"sync full", "POST", "/api/resources/shop/items/sync?mode=full", "tok", nil, "", 202, `"queue":"critical"`},
		{"sync bad mode", "POST", "/api/resources/shop/items/sync?mode=half", "tok", nil, "", 400, `mode=\"half\"`},
		{"sync needs the token", "POST", "/api/resources/shop/items/sync", "", nil, "", 401, "admin token"},
		{"unknown resource", "POST", "/api/resources/shop/nope/sync", "tok", nil, "", 404, `unknown resource \"nope\" of source \"shop\"`},
		{"unknown source", "POST", "/api/resources/nope/orders/pause", "tok", nil, "", 404, `unknown source \"nope\"`},
		{"bad api path", "GET", "/api/nothing/here", "tok", nil, "", 404, "no such endpoint"},
		{"wrong method", "GET", "/api/resources/shop/orders/sync", "tok", nil, "", 404, "no such endpoint"},
		{"bad page", "GET", "/nothing", "", nil, "", 404, "no such page"},
		{"hook unsigned", "POST", "/api/hooks/shop/orders", "", nil, `{"x":1}`, 401, "X-Tidemark-Signature"},
		{"hook bad signature", "POST", "/api/hooks/shop/orders", "", map[string]string{"X-Tidemark-Signature": sign("other")}, `{"x":1}`, 401, "X-Tidemark-Signature"},
		{"hook signed", "POST", "/api/hooks/shop/orders", "", map[string]string{"X-Tidemark-Signature": sign(`{"x":1}`)}, `{"x":1}`, 202, `"task_id"`},
		{"hook github header", "POST", "/api/hooks/shop/items", "", map[string]string{"X-Hub-Signature-256": sign(`{}`)}, `{}`, 202, `"queue":"probe_critical"`},
		{"hook with admin token", "POST", "/api/hooks/shop/orders", "tok", nil, `{}`, 202, `"task_id"`},
		{"hook unknown resource", "POST", "/api/hooks/shop/nope", "", map[string]string{"X-Tidemark-Signature": sign(``)}, ``, 404, "unknown resource"},
		{"openapi is open", "GET", "/api/openapi.json", "", nil, "", 200, `"openapi"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(tt.method, tt.path, tt.token, tt.header, tt.body)
			if resp.StatusCode != tt.code || !strings.Contains(body, tt.contains) {
				t.Fatalf("%s %s = %d %s; want %d containing %s", tt.method, tt.path, resp.StatusCode, body, tt.code, tt.contains)
			}
			if !json.Valid([]byte(body)) {
				t.Fatalf("%s %s: body is not JSON: %s", tt.method, tt.path, body)
			}
		})
	}

	// The syncs and hooks above are in the queues.
	insp := asynq.NewInspector(e.redisOpt)
	defer insp.Close()
	var probes, fetches []jobs.FetchPayload
	for _, q := range jobs.AllQueues() {
		// A second hook of a resource within a second gets a probe
		// scheduled at the next second (see TestHookCoalescing).
		pending, _ := insp.ListPendingTasks(q)
		scheduled, _ := insp.ListScheduledTasks(q)
		for _, ti := range append(pending, scheduled...) {
			var p jobs.FetchPayload
			json.Unmarshal(ti.Payload, &p)
			switch ti.Type {
			case jobs.TypeProbe:
				probes = append(probes, p)
			case jobs.TypeFetch:
				fetches = append(fetches, p)
			}
		}
	}
	if len(fetches) != 2 || len(probes) != 3 {
		t.Fatalf("queued fetches %v, probes %v; want 2 fetches and 3 probes", fetches, probes)
	}
	for _, p := range probes {
		if p.Trigger != jobs.TriggerWebhook {
			t.Fatalf("probe %+v: trigger want webhook", p)
		}
	}

	// Pause and resume persist.
	for _, tt := range []struct {
		action string
		paused bool
	}{{"pause", true}, {"resume", false}, {"pause", true}} {
		if resp, body := e.do("POST", "/api/resources/shop/items/"+tt.action, "tok", nil, ""); resp.StatusCode != 200 {
			t.Fatalf("%s = %d %s", tt.action, resp.StatusCode, body)
		}
		st, err := e.st.State(context.Background(), store.Key{Source: "shop", Resource: "items"})
		if err != nil || st.Paused != tt.paused {
			t.Fatalf("after %s: paused = %v (%v); want %v", tt.action, st.Paused, err, tt.paused)
		}
	}
	if _, body := e.do("GET", "/api/resources", "tok", nil, ""); !strings.Contains(body, `"health":"paused"`) {
		t.Fatalf("paused resource not shown as paused: %s", body)
	}
}

func TestBrowserPages(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{AdminToken: "tok"})
	html := map[string]string{"Accept": "text/html"}
	tests := []struct {
		name, method, path, token string
		header                    map[string]string
		code                      int
		contains                  string
	}{
		{"dashboard with token", "GET", "/", "tok", nil, 200, "new EventSource(\"/api/events\")"},
		{"dashboard has a log-out button", "GET", "/", "tok", nil, 200, `action="/logout"`},
		{"dashboard sends browsers to login", "GET", "/", "", html, 303, ""},
		{"login form", "GET", "/login?next=/monitoring/", "", nil, 200, `value="/monitoring/"`},
		{"monitoring needs the token", "GET", "/monitoring/", "", nil, 401, "admin token"},
		{"monitoring api needs the token", "GET", "/monitoring/api/queues", "", nil, 401, "admin token"},
		{"monitoring delete needs the token", "DELETE", "/monitoring/api/queues/default", "", nil, 401, "admin token"},
		{"monitoring with token", "GET", "/monitoring/", "tok", nil, 200, "<html"},
		{"monitoring api with token", "GET", "/monitoring/api/queues", "tok", nil, 200, "queues"},
		{"resource page with token", "GET", "/resources/shop/orders", "tok", nil, 200, `<script src="/static/uplot/uPlot.iife.min.js">`},
		{"resource page sends browsers to login", "GET", "/resources/shop/orders", "", html, 303, ""},
		{"resource page of an unknown resource", "GET", "/resources/shop/nope", "tok", nil, 404, `unknown resource \"nope\"`},
		{"chart library, open", "GET", "/static/uplot/uPlot.iife.min.js", "", nil, 200, "uPlot"},
		{"chart library's licence beside it", "GET", "/static/uplot/LICENSE", "", nil, 200, "Leon Sorokin"},
		{"page helpers, open", "GET", "/static/page.js", "", nil, 200, "function api("},
		{"resource api needs the token", "GET", "/api/resources/shop/orders", "", nil, 401, "admin token"},
		{"history api needs the token", "GET", "/api/resources/shop/orders/history", "", nil, 401, "admin token"},
		{"retry api needs the token", "POST", "/api/resources/shop/orders/retry", "", nil, 401, "admin token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(tt.method, tt.path, tt.token, tt.header, "")
			if resp.StatusCode != tt.code || !strings.Contains(body, tt.contains) {
				t.Fatalf("%s %s = %d %.300s; want %d containing %s", tt.method, tt.path, resp.StatusCode, body, tt.code, tt.contains)
			}
		})
	}

	// Logging in sets an HttpOnly cookie that then opens the dashboard.
	resp, _ := e.do("POST", "/login", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		url.Values{"token": {"wrong"}}.Encode())
	if resp.StatusCode != 401 {
		t.Fatalf("login with a wrong token = %d", resp.StatusCode)
	}
	resp, _ = e.do("POST", "/login", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		url.Values{"token": {"tok"}, "next": {"//evil.example"}}.Encode())
	session := sessionCookie(resp)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/" || session == nil || !session.HttpOnly {
		t.Fatalf("login = %d to %q cookies %v; want 303 to / with an HttpOnly session cookie", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	resp, body := e.do("GET", "/monitoring/api/queues", "", map[string]string{"Cookie": session.Name + "=" + session.Value}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("monitoring with the login cookie = %d %s", resp.StatusCode, body)
	}
}

func TestOpenAPIListsEveryRoute(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	_, body := e.do("GET", "/api/openapi.json", "", nil, "")
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	routes := server.APIRoutes()
	if len(routes) < 8 {
		t.Fatalf("APIRoutes = %v", routes)
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("openapi.json lacks %s", r)
		}
	}
	if len(doc.Paths) != len(routes) {
		t.Errorf("openapi.json has %d paths, the server %d routes: %v", len(doc.Paths), len(routes), routes)
	}
}

func TestRefusesOpenAddressWithoutToken(t *testing.T) {
	t.Parallel()
	if err := (server.Config{Addr: "0.0.0.0:8080"}).Check(); err == nil {
		t.Fatal("server on 0.0.0.0 without a token was allowed")
	}
	if err := (server.Config{Addr: "0.0.0.0:8080", AdminToken: "x"}).Check(); err != nil {
		t.Fatal(err)
	}
}

// Without an admin token there is no session, so no log-out button.
func TestDashboardWithoutLoginHasNoLogout(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	resp, body := e.do("GET", "/", "", nil, "")
	if resp.StatusCode != 200 || !strings.Contains(body, "new EventSource") || strings.Contains(body, "/logout") {
		t.Fatalf("GET / = %d %.200s; want the dashboard without a log-out button", resp.StatusCode, body)
	}
}
