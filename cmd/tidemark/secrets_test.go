package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

// TestSecretTokenNeverLeaks configures a bearer token (a fresh random value)
// for three sources: one syncs normally, two fail with an error body that
// quotes the request's Authorization header back (HTTP 500: retried, HTTP
// 403: dead); and the same value as a query key (auth type query) for two
// more: one syncs, one fails quoting the request URL back. Afterwards the token must appear zero times in every key and
// value of the test's Redis DB, the worker and server logs, every row of
// sync_runs, sync_state and outbox, /metrics, the admin API and the Asynqmon
// API responses.
func TestSecretTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	raw := make([]byte, 16)
	rand.Read(raw)
	token := "tmsecret" + hex.EncodeToString(raw)

	up := demoapi.New(demoapi.Options{Seed: 3, Records: 50})
	var authorized, echoed atomic.Int64
	okSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		authorized.Add(1)
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(okSrv.Close)
	echo := func(code int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			echoed.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"error":"rejected","request":{"headers":{"Authorization":%q},"token":%q}}`, r.Header.Get("Authorization"), token)
		}))
		t.Cleanup(s.Close)
		return s
	}
	e500, e403 := echo(http.StatusInternalServerError), echo(http.StatusForbidden)
	// The same token as a query key (auth type query): one source syncs
	// with it, one fails with an error body quoting the request URL.
	var keyed atomic.Int64
	qOK := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api_key") != token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		keyed.Add(1)
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(qOK.Close)
	qEcho := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		echoed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":"rejected","url":%q}`, r.URL.String())
	}))
	t.Cleanup(qEcho.Close)
	auth := "    auth: {type: bearer, token_env: TIDEMARK_TEST_SOURCE_TOKEN}\n"
	queryAuth := "    auth: {type: query, param: api_key, token_env: TIDEMARK_TEST_SOURCE_TOKEN}\n"
	redisURL := testenv.Redis(t)
	r := newRig(t,
		ticketSalesYAML("sec_ok", okSrv.URL, true, 20, auth)+
			ticketSalesYAML("sec_e500", e500.URL, true, 20, auth)+
			ticketSalesYAML("sec_e403", e403.URL, true, 20, auth)+
			ticketSalesYAML("sec_q", qOK.URL, true, 20, queryAuth)+
			ticketSalesYAML("sec_q500", qEcho.URL, true, 20, queryAuth),
		testenv.Database(t), redisURL, "TIDEMARK_TEST_SOURCE_TOKEN="+token)
	addr := freeAddr(t)
	_, serverLog := startLogged(t, "server", append(r.env, "TIDEMARK_ADDR="+addr), r.bin, "server")
	waitTCP(t, addr)
	_, workerLog := startLogged(t, "worker", append(r.env, "TIDEMARK_LOG_LEVEL=debug"), r.bin, "worker")
	for _, s := range []string{"sec_ok", "sec_e500", "sec_e403", "sec_q", "sec_q500"} {
		r.sync(s + "/ticket_sales")
	}
	r.waitRun("sec_ok", 30*time.Second, func(run store.Run) bool { return run.Status == store.StatusSucceeded })
	r.waitRun("sec_e500", 30*time.Second, func(run store.Run) bool { return run.Status == store.StatusFailed })
	r.waitRun("sec_e403", 30*time.Second, func(run store.Run) bool { return run.Status == store.StatusDead })
	r.waitRun("sec_q", 30*time.Second, func(run store.Run) bool { return run.Status == store.StatusSucceeded })
	r.waitRun("sec_q500", 30*time.Second, func(run store.Run) bool { return run.Status == store.StatusFailed })
	if n := r.count(`SELECT count(*) FROM records WHERE source = 'sec_ok'`); n != 50 || authorized.Load() == 0 {
		t.Fatalf("the authorized source synced %d records with %d authorized requests, want 50", n, authorized.Load())
	}
	if n := r.count(`SELECT count(*) FROM records WHERE source = 'sec_q'`); n != 50 || keyed.Load() == 0 {
		t.Fatalf("the query-key source synced %d records with %d keyed requests, want 50", n, keyed.Load())
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Asynqmon: the queues and every task list of every queue. The failed
	// tasks' errors must be there (proving the check sees them), the token
	// must not.
	asynqmon := func() map[string]string {
		out := map[string]string{}
		code, body := get("/monitoring/api/queues")
		if code != 200 {
			t.Fatalf("GET /monitoring/api/queues: HTTP %d %s", code, body)
		}
		out["/monitoring/api/queues"] = body
		for _, q := range []string{"critical", "default", "low"} {
			for _, state := range []string{"active", "pending", "scheduled", "retry", "archived", "completed", "aggregating"} {
				p := fmt.Sprintf("/monitoring/api/queues/%s/%s_tasks", q, state)
				if code, body := get(p); code == 200 {
					out[p] = body
				}
			}
		}
		return out
	}
	var mon map[string]string
	wait(t, 30*time.Second, "the failed tasks' errors in Asynqmon", func() (bool, string) {
		mon = asynqmon()
		all := strings.Join(mapValues(mon), "\n")
		return strings.Contains(all, "HTTP 500") && strings.Contains(all, "HTTP 403"), fmt.Sprintf("%d responses", len(mon))
	})
	if echoed.Load() == 0 {
		t.Fatal("the echoing upstreams were never called")
	}

	places := map[string]string{
		"worker log": workerLog.String(),
		"server log": serverLog.String(),
	}
	for p, body := range mon {
		places["asynqmon "+p] = body
	}
	for _, p := range []string{"/api/runs", "/api/resources"} {
		_, places["api "+p] = get(p)
	}
	if code, body := get("/metrics"); code == 200 {
		places["/metrics"] = body
	} else {
		t.Logf("/metrics not served (HTTP %d): not checked", code)
	}
	for _, table := range []string{"sync_runs", "sync_state", "outbox", "record_changes"} {
		var rows []string
		if err := r.st.DBForTests().Raw(`SELECT t::text FROM ` + table + ` t`).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		places["table "+table] = strings.Join(rows, "\n")
	}
	for k, v := range redisDump(t, redisURL) {
		places["redis "+k] = v
	}
	if !strings.Contains(places["table sync_runs"], "HTTP 500") {
		t.Errorf("sync_runs do not record the failure: %s", places["table sync_runs"])
	}
	for where, text := range places {
		if n := strings.Count(text, token); n > 0 {
			i := strings.Index(text, token)
			t.Errorf("the source token appears %d times in %s: ...%s...", n, where, text[max(0, i-120):min(len(text), i+len(token)+40)])
		}
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// redisDump reads every key of the Redis DB with the command for its type,
// and its DUMP, keyed "key (type)".
func redisDump(t *testing.T, redisURL string) map[string]string {
	t.Helper()
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx := context.Background()
	out := map[string]string{}
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		typ, err := c.Type(ctx, key).Result()
		if err != nil {
			continue // expired meanwhile
		}
		var v any
		switch typ {
		case "string":
			v, err = c.Get(ctx, key).Result()
		case "hash":
			v, err = c.HGetAll(ctx, key).Result()
		case "list":
			v, err = c.LRange(ctx, key, 0, -1).Result()
		case "set":
			v, err = c.SMembers(ctx, key).Result()
		case "zset":
			v, err = c.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "stream":
			v, err = c.XRange(ctx, key, "-", "+").Result()
		}
		if err != nil && err != redis.Nil {
			t.Fatalf("read %s key %s: %v", typ, key, err)
		}
		dump, _ := c.Dump(ctx, key).Result()
		out[fmt.Sprintf("%s (%s)", key, typ)] = fmt.Sprintf("%s\n%v\n%s", key, v, dump)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("the test's Redis DB is empty: nothing was checked")
	}
	return out
}
