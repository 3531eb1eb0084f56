package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// keyedUpstream requires ?api_key=key on every request, as APIs that take
// their key in the query do, and echoes the key wherever such APIs do: in
// the Link header of page 1, in each record's self link, and (at /broken,
// whose page 2 answers 500) in the error body with the whole request URL.
// Page 2's next link lacks the key, so the read only gets page 3 if tidemark
// adds the key to every request itself.
type keyedUpstream struct {
	key string
	// unkeyed counts requests that came without the right key.
	unkeyed, broken int
}

func (u *keyedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	base := "http://" + r.Host
	if r.URL.Query().Get("api_key") != u.key {
		u.unkeyed++
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"missing or wrong api_key"}`)
		return
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	page = max(page, 1)
	if r.URL.Path == "/broken" && page > 1 {
		u.broken++
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":"backend exploded","request":%q}`, base+r.URL.String())
		return
	}
	switch page {
	case 1:
		w.Header().Set("Link", fmt.Sprintf(`<%s%s?page=2&api_key=%s>; rel="next"`, base, r.URL.Path, u.key))
	case 2:
		w.Header().Set("Link", `</items?page=3>; rel="next"`)
	}
	var recs []string
	for i := range 2 {
		id := (page-1)*2 + i + 1
		recs = append(recs, fmt.Sprintf(`{"id":%d,"self":"%s/items/%d?api_key=%s"}`, id, base, id, u.key))
	}
	fmt.Fprintf(w, `{"data":[%s]}`, strings.Join(recs, ","))
}

// TestQueryKeyNeverStored syncs a source whose key travels in the query
// (auth type query) through the worker: a link-paginated resource whose
// upstream echoes the key in its next link and records, and one that fails
// with the key in its error body after its first page (so that its
// checkpoint, the next link, stays in sync_state). All pages are read (the key goes with a
// next link that lacks it), and the key appears nowhere: not in any table,
// the worker's logs, the tasks' errors in Redis or the metrics.
func TestQueryKeyNeverStored(t *testing.T) {
	const key = "qk-SECRET-5e1d7c2a9b"
	t.Setenv("KEYED_API_KEY", key) // the worker reads credentials from its environment
	up := &keyedUpstream{key: key}
	var mu syncHandler
	srv := httptest.NewServer(mu.wrap(up))
	t.Cleanup(srv.Close)
	conf, err := config.Parse("querykey.yaml", []byte(`
sources:
  - name: keyed
    base_url: `+srv.URL+`
    allow_private: true
    auth: {type: query, param: api_key, token_env: KEYED_API_KEY}
    resources:
      - name: items
        path: /items
        records: {path: data, id: id}
        pagination: {style: link}
        full_sync: {detect_deletes: true}
      - name: broken
        path: /broken
        records: {path: data, id: id}
        pagination: {style: link}
`))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := workertest.StartLogged(t, conf, worker.Config{Concurrency: 2}, log)
	ctx := context.Background()
	for _, res := range []string{"items", "broken"} {
		task, err := jobs.NewFetch(jobs.FetchPayload{Source: "keyed", Resource: res, Mode: jobs.ModeFull, Trigger: jobs.TriggerManual},
			asynq.MaxRetry(0), asynq.Queue("default"))
		if err == nil {
			_, err = w.Client.Enqueue(task)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	runs := map[string]store.Run{}
	waitFor(t, 30*time.Second, "both runs to end", func() (bool, string) {
		all, err := w.Store.Runs(ctx, store.RunFilter{Source: "keyed"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range all {
			if r.Status != store.StatusRunning {
				runs[r.Resource] = r
			}
		}
		return len(runs) == 2 && strings.Count(logs.String(), `"task finished"`) >= 2, fmt.Sprint(runs)
	})
	if r := runs["items"]; r.Status != store.StatusSucceeded || r.RecordsCreated != 6 {
		t.Fatalf("items run: %s, %d created (%s); want succeeded with 6 (%d unkeyed requests)", r.Status, r.RecordsCreated, r.Error, up.unkeyed)
	}
	if r := runs["broken"]; r.Status == store.StatusSucceeded || !strings.Contains(r.Error, "HTTP 500") || !strings.Contains(r.Error, "backend exploded") {
		t.Fatalf("broken run: %s %q; want a failure quoting the upstream's HTTP 500", r.Status, r.Error)
	}
	mu.mu.Lock()
	unkeyed, broken := up.unkeyed, up.broken
	mu.mu.Unlock()
	if unkeyed != 0 || broken == 0 {
		t.Fatalf("%d requests without the key, %d to /broken; want 0 and some", unkeyed, broken)
	}

	places := map[string]string{"worker log": logs.String()}
	for _, table := range []string{"records", "record_changes", "sync_runs", "sync_state", "outbox"} {
		var rows []string
		if err := w.Store.DBForTests().Raw(`SELECT t::text FROM ` + table + ` t`).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		places["table "+table] = strings.Join(rows, "\n")
	}
	if !strings.Contains(places["table records"], "[REDACTED]") {
		t.Errorf("records do not show the echoed key redacted, so the check proves nothing: %s", places["table records"])
	}
	for state, list := range map[string]func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		"archived": w.Inspector.ListArchivedTasks, "retry": w.Inspector.ListRetryTasks, "completed": w.Inspector.ListCompletedTasks,
	} {
		tasks, _ := list("default")
		for _, ti := range tasks {
			places["task "+state+" "+ti.ID] = ti.LastErr + string(ti.Payload) + string(ti.Result)
		}
	}
	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	places["metrics"] = rec.Body.String()
	for where, text := range places {
		if i := strings.Index(text, key); i >= 0 {
			t.Errorf("the key appears in %s: ...%s...", where, text[max(0, i-160):min(len(text), i+len(key)+40)])
		}
	}
}

// syncHandler serialises an http.Handler, so that a test reads its fields
// under mu.
type syncHandler struct{ mu sync.Mutex }

func (s *syncHandler) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}
