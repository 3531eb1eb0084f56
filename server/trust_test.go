package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/server"
)

// replica is a second server over e's database and Redis, as another
// replica of the server role would be.
func (e *env) replica(cfg server.Config) *httptest.Server {
	e.t.Helper()
	rdb := e.redisOpt.MakeRedisClient().(redis.UniversalClient)
	log := slog.New(slog.DiscardHandler)
	srv, err := server.New(cfg, e.conf, e.st, e.redisOpt, events.NewHub(events.HubConfig{}, e.st, rdb, log), log)
	if err != nil {
		e.t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	e.t.Cleanup(func() { hs.Close(); srv.Close(); rdb.Close() })
	return hs
}

// redis is a client of e's Redis DB.
func (e *env) redis() redis.UniversalClient {
	e.t.Helper()
	rdb := e.redisOpt.MakeRedisClient().(redis.UniversalClient)
	e.t.Cleanup(func() { rdb.Close() })
	return rdb
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "tidemark_session" && c.MaxAge > 0 {
			return c
		}
	}
	return nil
}

func form(v url.Values) (map[string]string, string) {
	return map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, v.Encode()
}

// TestDashboardSession: /login puts a random session id in the cookie,
// never the token; Redis keeps only a hash of the id, with a TTL; the
// session works on every replica; /logout ends it everywhere; the token
// itself in a cookie (what earlier releases stored) opens nothing.
func TestDashboardSession(t *testing.T) {
	t.Parallel()
	const token = "adm1n-t0ken-for-sessions"
	e := setup(t, server.Config{AdminToken: token})
	other := e.replica(server.Config{AdminToken: token})
	rotated := e.replica(server.Config{AdminToken: "a-new-token"})
	rdb := e.redis()
	ctx := context.Background()

	h, body := form(url.Values{"token": {token}, "next": {"/monitoring/"}})
	resp, _ := e.do("POST", "/login", "", h, body)
	c := sessionCookie(resp)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/monitoring/" || c == nil {
		t.Fatalf("login = %d to %q, cookies %v; want 303 to /monitoring/ with a session cookie", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	if strings.Contains(c.Value, token) || len(c.Value) < 40 {
		t.Fatalf("session cookie %q: want a long random id, never the token", c.Value)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != int((12*time.Hour).Seconds()) || c.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, Max-Age 12h, not Secure over plain HTTP", c)
	}
	if !strings.Contains(strings.Join(resp.Header.Values("Set-Cookie"), "\n"), "tidemark_token=; Path=/; Max-Age=0") {
		t.Errorf("login does not expire the old token cookie: %v", resp.Header.Values("Set-Cookie"))
	}

	// In Redis: the id's hash with a TTL; neither the id nor the token.
	sum := sha256.Sum256([]byte(c.Value))
	key := "tidemark:session:" + hex.EncodeToString(sum[:])
	if ttl, err := rdb.TTL(ctx, key).Result(); err != nil || ttl <= 11*time.Hour || ttl > 12*time.Hour {
		t.Fatalf("session key %s TTL %s (%v); want about 12h", key, ttl, err)
	}
	keys, _ := rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		v, _ := rdb.Dump(ctx, k).Result()
		if strings.Contains(k+v, c.Value) || strings.Contains(k+v, token) {
			t.Errorf("Redis key %s holds the session id or the token", k)
		}
	}

	withCookie := func(name, value string) map[string]string { return map[string]string{"Cookie": name + "=" + value} }
	get := func(base string, header map[string]string) int {
		req, _ := http.NewRequest("GET", base+"/api/resources", nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		name   string
		base   string
		header map[string]string
		code   int
	}{
		{"session on this replica", e.http.URL, withCookie("tidemark_session", c.Value), 200},
		{"session on another replica", other.URL, withCookie("tidemark_session", c.Value), 200},
		{"session after the token changed", rotated.URL, withCookie("tidemark_session", c.Value), 401},
		{"the token in the old cookie", e.http.URL, withCookie("tidemark_token", token), 401},
		{"the token as a session id", e.http.URL, withCookie("tidemark_session", token), 401},
		{"a made-up session", e.http.URL, withCookie("tidemark_session", strings.Repeat("A", len(c.Value))), 401},
	} {
		if got := get(tt.base, tt.header); got != tt.code {
			t.Errorf("%s: GET /api/resources = %d, want %d", tt.name, got, tt.code)
		}
	}

	resp, _ = e.do("POST", "/logout", "", withCookie("tidemark_session", c.Value), "")
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout = %d to %q; want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if set := strings.Join(resp.Header.Values("Set-Cookie"), "\n"); !strings.Contains(set, "tidemark_session=; Path=/; Max-Age=0") {
		t.Errorf("logout does not expire the session cookie: %s", set)
	}
	if n, _ := rdb.Exists(ctx, key).Result(); n != 0 {
		t.Fatalf("session key still in Redis after logout")
	}
	for _, base := range []string{e.http.URL, other.URL} {
		if got := get(base, withCookie("tidemark_session", c.Value)); got != 401 {
			t.Errorf("session after logout: GET %s/api/resources = %d, want 401", base, got)
		}
	}
}

// TestSessionCookieSecure: the cookie is Secure over TLS, or behind a proxy
// the server trusts that says https; X-Forwarded-Proto alone counts for
// nothing.
func TestSessionCookieSecure(t *testing.T) {
	t.Parallel()
	const token = "tok"
	plain := setup(t, server.Config{AdminToken: token})
	proxied := plain.replica(server.Config{AdminToken: token, TrustProxy: true})
	tls := httptest.NewUnstartedServer(nil)
	tls.Config.Handler = plain.srv.Handler()
	tls.StartTLS()
	t.Cleanup(tls.Close)

	for _, tt := range []struct {
		name   string
		base   string
		client *http.Client
		proto  string
		secure bool
	}{
		{"plain HTTP", plain.http.URL, http.DefaultClient, "", false},
		{"X-Forwarded-Proto from an untrusted client", plain.http.URL, http.DefaultClient, "https", false},
		{"TLS", tls.URL, tls.Client(), "", true},
		{"trusted proxy that terminated TLS", proxied.URL, http.DefaultClient, "https", true},
		{"trusted proxy, list", proxied.URL, http.DefaultClient, "https, http", true},
		{"trusted proxy over plain HTTP", proxied.URL, http.DefaultClient, "http", false},
		{"trusted proxy that says nothing", proxied.URL, http.DefaultClient, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest("POST", tt.base+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			c := *tt.client
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			s := sessionCookie(resp)
			if s == nil || s.Secure != tt.secure {
				t.Fatalf("session cookie %+v; want Secure = %v", s, tt.secure)
			}
		})
	}
}

// hookSecret gives source shop the secret s.
func hookSecret(s string) func(string) string {
	return func(src string) string {
		if src == "shop" {
			return s
		}
		return ""
	}
}

// standard returns Standard Webhooks headers signing body under key.
func standard(key []byte, id string, at time.Time, body string) map[string]string {
	return map[string]string{
		"webhook-id":        id,
		"webhook-timestamp": strconv.FormatInt(at.Unix(), 10),
		"webhook-signature": jobs.SignStandard(key, id, at.Unix(), []byte(body)),
	}
}

// TestHookStandardWebhooks: inbound hooks signed the Standard Webhooks way
// are accepted once; a stale or future timestamp, a bad signature and a
// replayed webhook-id are refused, each saying why. The body-only
// signatures still work, replays included (they carry no timestamp).
func TestHookStandardWebhooks(t *testing.T) {
	t.Parallel()
	whKey := []byte("a raw 32-byte key for whsec_....")
	for _, secret := range []struct {
		name, secret string
		key          []byte
	}{
		{"plain secret", "hooksecret", []byte("hooksecret")},
		{"whsec_ secret", "whsec_" + base64.StdEncoding.EncodeToString(whKey), whKey},
	} {
		t.Run(secret.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, server.Config{AdminToken: "tok", HookSecret: hookSecret(secret.secret)})
			key, now, body := secret.key, time.Now(), `{"changed":true}`
			tests := []struct {
				name, path string
				header     map[string]string
				code       int
				contains   string
			}{
				{"signed", "/api/hooks/shop/orders", standard(key, "msg_1", now, body), 202, `"task_id"`},
				{"replayed id", "/api/hooks/shop/orders", standard(key, "msg_1", now, body), 409, `webhook-id \"msg_1\" was already accepted`},
				{"replayed id, re-signed later", "/api/hooks/shop/orders", standard(key, "msg_1", now.Add(time.Minute), body), 409, "replay"},
				{"replayed id to another resource", "/api/hooks/shop/items", standard(key, "msg_1", now, body), 409, "replay"},
				{"another id", "/api/hooks/shop/items", standard(key, "msg_2", now, body), 202, `"task_id"`},
				{"six minutes old", "/api/hooks/shop/orders", standard(key, "msg_3", now.Add(-6*time.Minute), body), 401, "webhook-timestamp"},
				{"six minutes ahead", "/api/hooks/shop/orders", standard(key, "msg_4", now.Add(6*time.Minute), body), 401, "more than the 5m0s allowed"},
				{"not a timestamp", "/api/hooks/shop/orders", map[string]string{"webhook-id": "msg_5", "webhook-timestamp": "yesterday", "webhook-signature": "v1,AAAA"}, 401, "not unix seconds"},
				{"signed with another key", "/api/hooks/shop/orders", standard([]byte("nope"), "msg_6", now, body), 401, "webhook-signature does not match"},
				{"signed for another body", "/api/hooks/shop/orders", standard(key, "msg_7", now, `{}`), 401, "webhook-signature does not match"},
				{"no id", "/api/hooks/shop/orders", map[string]string{"webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}, 400, "webhook-id: required"},
				{"unknown resource", "/api/hooks/shop/nope", standard(key, "msg_8", now, body), 404, "nope"},
				{"unknown resource again", "/api/hooks/shop/nope", standard(key, "msg_8", now, body), 404, "nope"},
				// The refused attempts above did not use up their ids.
				{"an id refused for its signature, signed right", "/api/hooks/shop/orders", standard(key, "msg_6", now, body), 202, `"task_id"`},
				{"an id refused for its resource, sent right", "/api/hooks/shop/orders", standard(key, "msg_8", now, body), 202, `"task_id"`},
				{"body-only signature", "/api/hooks/shop/orders", map[string]string{"X-Tidemark-Signature": jobs.Sign([]byte(secret.secret), []byte(body))}, 202, `"task_id"`},
				{"body-only signature again: no replay protection", "/api/hooks/shop/orders", map[string]string{"X-Hub-Signature-256": jobs.Sign([]byte(secret.secret), []byte(body))}, 202, `"task_id"`},
			}
			for _, tt := range tests {
				resp, got := e.do("POST", tt.path, "", tt.header, body)
				if resp.StatusCode != tt.code || !strings.Contains(got, tt.contains) || !json.Valid([]byte(got)) {
					t.Errorf("%s: POST %s = %d %s; want %d, JSON containing %s", tt.name, tt.path, resp.StatusCode, got, tt.code, tt.contains)
				}
			}
			ttl, err := e.redis().TTL(context.Background(), "tidemark:hook-seen:shop:msg_1").Result()
			if err != nil || ttl <= 9*time.Minute || ttl > 10*time.Minute {
				t.Errorf("seen webhook-id msg_1: TTL %s (%v); want about 10m (twice the 5m tolerance)", ttl, err)
			}
		})
	}
}

// TestHookBodyLimit: a hook body over 1 MiB is refused with 413 and says
// so, with or without a Content-Length; exactly 1 MiB is accepted.
func TestHookBodyLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{AdminToken: "tok"})
	post := func(body string, chunked bool) (int, string) {
		req, _ := http.NewRequest("POST", e.http.URL+"/api/hooks/shop/orders", strings.NewReader(body))
		if chunked {
			req.Body = io.NopCloser(struct{ io.Reader }{strings.NewReader(body)}) // hides the length
			req.ContentLength = -1
		}
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var msg map[string]any
		json.NewDecoder(resp.Body).Decode(&msg)
		return resp.StatusCode, fmt.Sprint(msg["error"])
	}
	for _, tt := range []struct {
		name    string
		size    int
		chunked bool
		code    int
	}{
		{"1 MiB", server.MaxHookBody, false, 202},
		{"1 MiB chunked", server.MaxHookBody, true, 202},
		{"1 MiB + 1", server.MaxHookBody + 1, false, 413},
		{"1 MiB + 1 chunked", server.MaxHookBody + 1, true, 413},
		{"8 MiB chunked", 8 << 20, true, 413},
	} {
		code, msg := post(strings.Repeat("x", tt.size), tt.chunked)
		if code != tt.code || (code == 413 && !strings.Contains(msg, "1 MiB) limit")) {
			t.Errorf("%s: %d %q; want %d (413 saying the limit)", tt.name, code, msg, tt.code)
		}
	}
}

// probes lists the probe tasks waiting in e's queues, pending or scheduled.
func (e *env) probes() []*asynq.TaskInfo {
	e.t.Helper()
	insp := asynq.NewInspector(e.redisOpt)
	defer insp.Close()
	var out []*asynq.TaskInfo
	for q := range jobs.ProbeQueues {
		pending, _ := insp.ListPendingTasks(q, asynq.PageSize(1000))
		scheduled, _ := insp.ListScheduledTasks(q, asynq.PageSize(1000))
		out = append(out, append(pending, scheduled...)...)
	}
	return out
}

// TestHookCoalescing: hooks of one resource enqueue at most one probe per
// window. The first gets a probe now; the next, a probe at the next
// window's start (the first may have run before the change it announces);
// every later one is coalesced. A burst of 300 adds nothing more, and
// another resource is not held back by it.
func TestHookCoalescing(t *testing.T) {
	t.Parallel()
	// A day's window: the test's hooks all fall in one (unless it runs
	// across midnight UTC, a second in 86,400).
	e := setup(t, server.Config{AdminToken: "tok", HookWindow: 24 * time.Hour})
	hook := func(resource string) map[string]any {
		resp, body := e.do("POST", "/api/hooks/shop/"+resource, "tok", nil, "{}")
		var got map[string]any
		if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != 202 {
			t.Fatalf("hook %s = %d %s; want 202", resource, resp.StatusCode, body)
		}
		return got
	}
	first, second, third := hook("orders"), hook("orders"), hook("orders")
	if first["coalesced"] != false || second["coalesced"] != false || third["coalesced"] != true || third["task_id"] != second["task_id"] {
		t.Fatalf("three hooks: %v, %v, %v; want a probe now, one at the next window, then coalesced into it", first, second, third)
	}
	nextWindow := time.Now().Truncate(24 * time.Hour).Add(24 * time.Hour)
	for _, ti := range e.probes() {
		switch ti.ID {
		case first["task_id"]:
			if ti.State != asynq.TaskStatePending {
				t.Errorf("first hook's probe is %s, want pending (now)", ti.State)
			}
		case second["task_id"]:
			if ti.State != asynq.TaskStateScheduled || !ti.NextProcessAt.Equal(nextWindow) {
				t.Errorf("second hook's probe is %s at %s, want scheduled at the next window, %s", ti.State, ti.NextProcessAt, nextWindow)
			}
		}
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	coalesced := 0
	for range 300 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", e.http.URL+"/api/hooks/shop/orders", strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer tok")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var got map[string]any
			json.NewDecoder(resp.Body).Decode(&got)
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode == 202 && got["coalesced"] == true {
				coalesced++
			}
		})
	}
	wg.Wait()
	if coalesced != 300 {
		t.Errorf("burst of 300 hooks: %d coalesced, want all", coalesced)
	}
	if items := hook("items"); items["coalesced"] != false {
		t.Errorf("first hook of another resource: %v, want its own probe", items)
	}
	byResource := map[string]int{}
	for _, ti := range e.probes() {
		var p jobs.ProbePayload
		json.Unmarshal(ti.Payload, &p)
		byResource[p.Resource]++
	}
	if byResource["orders"] != 2 || byResource["items"] != 1 {
		t.Fatalf("probes queued by resource: %v; want orders 2 (now and next window), items 1", byResource)
	}
}

// TestRefusesDemoTokenWhenPublished: published beyond loopback (a
// container's port), the server refuses the public demo token and no
// token; on loopback, or with a token of one's own, it starts.
func TestRefusesDemoTokenWhenPublished(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		cfg       server.Config
		refused   bool
		errSubstr string
	}{
		{"compose default: published on loopback, demo token", server.Config{Addr: "0.0.0.0:8080", PublishAddr: "127.0.0.1", AdminToken: server.DemoAdminToken}, false, ""},
		{"published on ::1", server.Config{Addr: "0.0.0.0:8080", PublishAddr: "[::1]", AdminToken: server.DemoAdminToken}, false, ""},
		{"published on all addresses, demo token", server.Config{Addr: "0.0.0.0:8080", PublishAddr: "0.0.0.0", AdminToken: server.DemoAdminToken}, true, "demo admin token"},
		{"published on a LAN address with a port, demo token", server.Config{Addr: "0.0.0.0:8080", PublishAddr: "192.168.1.5:8080", AdminToken: server.DemoAdminToken}, true, "published on 192.168.1.5:8080"},
		{"published on a LAN address, no token", server.Config{Addr: "127.0.0.1:8080", PublishAddr: "192.168.1.5"}, true, "TIDEMARK_ADMIN_TOKEN"},
		{"published on all addresses, own token", server.Config{Addr: "0.0.0.0:8080", PublishAddr: "0.0.0.0", AdminToken: "0wn-s3cret"}, false, ""},
		{"not published: the demo overlay's port-forward", server.Config{Addr: "0.0.0.0:8080", AdminToken: server.DemoAdminToken}, false, ""},
	} {
		err := tt.cfg.Check()
		if (err != nil) != tt.refused || (err != nil && !strings.Contains(err.Error(), tt.errSubstr)) {
			t.Errorf("%s: Check() = %v; want refused = %v (saying %q)", tt.name, err, tt.refused, tt.errSubstr)
		}
	}
}

// TestHookWindowOutlivesItsProbe: with the default window, a hook that
// arrives after its window's probe has finished does not enqueue a second
// probe at once: the finished probe's id stays taken until the window is
// over (asynq keeps retention in whole seconds, so a 250ms retention would
// be none), and the hook gets the next window's probe.
func TestHookWindowOutlivesItsProbe(t *testing.T) {
	t.Parallel()
	// The server's clock stands still, an hour ahead: the next window's
	// probe then waits, scheduled, for the test to look at it.
	now := time.Now().Add(time.Hour).Truncate(time.Second).Add(100 * time.Millisecond)
	e := setup(t, server.Config{AdminToken: "tok", Now: func() time.Time { return now }})
	hook := func() map[string]any {
		resp, body := e.do("POST", "/api/hooks/shop/orders", "tok", nil, "{}")
		var got map[string]any
		if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != 202 {
			t.Fatalf("hook = %d %s; want 202", resp.StatusCode, body)
		}
		return got
	}
	first := hook()
	if first["coalesced"] != false {
		t.Fatalf("first hook: %v; want a probe", first)
	}

	// A worker runs the probe to the end.
	queue := fmt.Sprint(first["queue"])
	worker := asynq.NewServer(e.redisOpt, asynq.Config{Concurrency: 1, Queues: map[string]int{queue: 1}, TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.ErrorLevel})
	if err := worker.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	defer worker.Shutdown()
	insp := asynq.NewInspector(e.redisOpt)
	defer insp.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ti, err := insp.GetTaskInfo(queue, fmt.Sprint(first["task_id"]))
		if err != nil || ti.State == asynq.TaskStateCompleted {
			break // finished: kept (completed) or gone
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first hook's probe is still %s after 10s", ti.State)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}

	second, third := hook(), hook()
	if second["coalesced"] != false || second["task_id"] == first["task_id"] || third["coalesced"] != true {
		t.Fatalf("hooks after the probe finished, same window: %v, %v; want the next window's probe, then coalesced", second, third)
	}
	ti, err := insp.GetTaskInfo(queue, fmt.Sprint(second["task_id"]))
	// The next window starts at .250; asynq schedules in whole seconds.
	if next := now.Truncate(time.Second).Add(time.Second); err != nil || ti.State != asynq.TaskStateScheduled || !ti.NextProcessAt.Equal(next) {
		t.Fatalf("second probe: %s at %s (%v); want scheduled at the first whole second after the window, %s", ti.State, ti.NextProcessAt, err, next)
	}
}
