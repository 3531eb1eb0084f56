package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/failpoint"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// accountsUpstream serves /accounts (every account, one page) and
// /accounts/{id}/items?page=N (an account's items, two a page), counting
// requests per path and page.
type accountsUpstream struct {
	mu       sync.Mutex
	accounts []map[string]any
	items    map[string][]map[string]any
	requests map[string]int // "/accounts/a0001/items?page=2"
}

var itemsPath = regexp.MustCompile(`^/accounts/([^/]+)/items$`)

func newAccounts(n int) *accountsUpstream {
	u := &accountsUpstream{items: map[string][]map[string]any{}, requests: map[string]int{}}
	for i := range n {
		id := fmt.Sprintf("a%04d", i)
		u.accounts = append(u.accounts, map[string]any{"id": id, "name": "account " + id, "version": 1})
		for j := range 1 + i%3 {
			u.items[id] = append(u.items[id], map[string]any{"id": fmt.Sprintf("%s-%d", id, j), "v": 1})
		}
	}
	return u
}

func (u *accountsUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	defer u.mu.Unlock()
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	u.requests[r.URL.Path+"?page="+strconv.Itoa(page)]++
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodPost && r.URL.Path == "/search" {
		var q struct{ Account, Label string }
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u.requests["POST /search "+q.Account+" "+q.Label]++
		json.NewEncoder(w).Encode(map[string]any{"data": u.items[q.Account]})
		return
	}
	if r.URL.Path == "/accounts" {
		json.NewEncoder(w).Encode(map[string]any{"data": u.accounts})
		return
	}
	m := itemsPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		http.NotFound(w, r)
		return
	}
	items := u.items[m[1]]
	from := min(max(page-1, 0)*2, len(items))
	to := min(from+2, len(items))
	json.NewEncoder(w).Encode(map[string]any{"data": items[from:to]})
}

// touched counts the accounts whose items were asked for, and the requests.
func (u *accountsUpstream) touched() (accounts, requests int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	seen := map[string]bool{}
	for k, n := range u.requests {
		if m := itemsPath.FindStringSubmatch(k[:len(k)-len("?page=")-1]); m != nil {
			seen[m[1]] = true
			requests += n
		}
	}
	return len(seen), requests
}

func (u *accountsUpstream) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.requests = map[string]int{}
}

// accountsConfig: accounts, and items as their child (or over the listed
// partitions, when static is given).
func accountsConfig(t *testing.T, baseURL string, changedOnly bool, static []string) *config.Config {
	t.Helper()
	items := config.Resource{Name: "items", Path: "/accounts/{parent.id}/items", Records: config.Records{Path: "data", ID: "id"},
		Pagination: config.Pagination{Style: config.PaginationPage, Limit: 2, LimitParam: "per_page"},
		FullSync:   config.FullSync{DetectDeletes: true, MaxDeleteFraction: 1, DeleteAfterReads: 1},
		Parent:     &config.Parent{Resource: "accounts", ChangedOnly: changedOnly}}
	if static != nil {
		items.Path, items.Parent, items.Partitions = "/accounts/{partition}/items", nil, static
	}
	conf := &config.Config{Sources: []config.Source{{Name: "acme", BaseURL: baseURL, AllowPrivate: true, Resources: []config.Resource{
		{Name: "accounts", Path: "/accounts", Records: config.Records{Path: "data", ID: "id"}, FullSync: config.FullSync{DetectDeletes: true, MaxDeleteFraction: 1}},
		items,
	}}}}
	conf.SetDefaults()
	if err := conf.Validate(); err != nil {
		t.Fatal(err)
	}
	return conf
}

// fetchAndSettle runs a fetch synchronously and waits until every queue is
// empty and no run is running (a parent's change starts its children's
// fetch, on the queues).
func fetchAndSettle(t *testing.T, w *workertest.Worker, conf *config.Config, resource string, mode tidemark.RunKind, trigger string) {
	t.Helper()
	var before int64
	w.Store.DBForTests().Raw(`SELECT coalesce(max(id), 0) FROM sync_runs`).Scan(&before)
	if err := w.Fetch(t, jobs.FetchPayload{Source: "acme", Resource: resource, Mode: mode, Trigger: trigger}); err != nil {
		t.Fatalf("fetch of %s: %v", resource, err)
	}
	waitFor(t, 60*time.Second, "the fetches to settle", func() (bool, string) {
		var running, done int64
		w.Store.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE status = 'running'`).Scan(&running)
		w.Store.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE id > ? AND resource = ? AND status <> 'running'`, before, resource).Scan(&done)
		busy := 0
		for _, q := range jobs.AllQueues() {
			if info, err := w.Inspector.GetQueueInfo(q); err == nil {
				busy += info.Pending + info.Active + info.Scheduled + info.Retry
			}
		}
		return running == 0 && busy == 0 && done > 0, fmt.Sprintf("%d running, %d tasks", running, busy)
	})
	var failed []string
	w.Store.DBForTests().Raw(`SELECT resource || ': ' || error FROM sync_runs WHERE id > ? AND status <> 'succeeded'`, before).Scan(&failed)
	if len(failed) > 0 {
		t.Fatalf("runs failed: %v", failed)
	}
}

func countRows(t *testing.T, w *workertest.Worker, query string, args ...any) int {
	t.Helper()
	var n int
	if err := w.Store.DBForTests().Raw(query, args...).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// TestParentChildThousandParents: the accounts' read starts the items'
// read, one partition per account; the state is one row per partition;
// with changed_only a parent's change reads the items of the changed
// accounts only; a tombstoned account's items go with it.
func TestParentChildThousandParents(t *testing.T) {
	t.Parallel()
	const parents = 1000
	up := newAccounts(parents)
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := accountsConfig(t, srv.URL, true, nil)
	w := workertest.Start(t, conf, worker.Config{Concurrency: 4})

	fetchAndSettle(t, w, conf, "accounts", tidemark.RunFull, jobs.TriggerManual)
	if n := countRows(t, w, `SELECT count(*) FROM sync_partitions WHERE resource = 'items' AND last_success_at IS NOT NULL`); n != parents {
		t.Errorf("%d synced partition rows, want one per parent (%d)", n, parents)
	}
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND deleted_at IS NULL`); n != 1999 {
		t.Errorf("%d items, want 1999", n)
	}
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND partition <> split_part(external_id, '-', 1)`); n != 0 {
		t.Errorf("%d items stored under another account's partition", n)
	}
	if n := countRows(t, w, `SELECT coalesce(pg_column_size(checkpoint), 0) FROM sync_state WHERE resource = 'items'`); n > 0 {
		t.Errorf("the resource's checkpoint holds %d bytes after the run: the walk's state must not grow with the parents", n)
	}

	// Ten accounts change, with an item each; a new account comes.
	up.mu.Lock()
	for i := 0; i < parents; i += parents / 10 {
		a := up.accounts[i]
		a["version"] = 2
		up.items[a["id"].(string)][0]["v"] = 2
	}
	up.accounts = append(up.accounts, map[string]any{"id": "b0000", "name": "new"})
	up.items["b0000"] = []map[string]any{{"id": "b0000-0", "v": 1}}
	up.mu.Unlock()
	up.reset()
	fetchAndSettle(t, w, conf, "accounts", tidemark.RunFull, jobs.TriggerManual)
	if accounts, requests := up.touched(); accounts != 11 {
		t.Errorf("changed_only: the items of %d accounts were read (%d requests), want the 11 new or changed", accounts, requests)
	}
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND content_hash <> '' AND payload->>'v' = '2' AND deleted_at IS NULL`); n != 10 {
		t.Errorf("%d updated items, want 10", n)
	}
	if n := countRows(t, w, `SELECT count(*) FROM sync_partitions WHERE resource = 'items'`); n != parents+1 {
		t.Errorf("%d partition rows, want %d", n, parents+1)
	}

	// An account is gone: its items are tombstoned, its partition dropped.
	up.mu.Lock()
	up.accounts = up.accounts[1:] // a0000, one item
	up.mu.Unlock()
	fetchAndSettle(t, w, conf, "accounts", tidemark.RunFull, jobs.TriggerManual)
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND partition = 'a0000' AND deleted_at IS NULL`); n != 0 {
		t.Errorf("%d items of the deleted account live", n)
	}
	if n := countRows(t, w, `SELECT count(*) FROM sync_partitions WHERE resource = 'items' AND partition = 'a0000'`); n != 0 {
		t.Errorf("the deleted account's partition row stays")
	}
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND deleted_at IS NOT NULL`); n != 1 {
		t.Errorf("%d items tombstoned, want the deleted account's 1", n)
	}
}

// TestPartitionResumesAfterCrash: a run that dies in the second page of
// its second partition resumes there: the first partition is not read
// again, nor the second's first page.
func TestPartitionResumesAfterCrash(t *testing.T) {
	t.Parallel()
	up := newAccounts(0)
	for _, id := range []string{"a", "b", "c"} {
		for j := range 5 {
			up.items[id] = append(up.items[id], map[string]any{"id": fmt.Sprintf("%s-%d", id, j), "v": 1})
		}
	}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := accountsConfig(t, srv.URL, false, []string{"a", "b", "c"})
	var commits atomic.Int64
	w := workertest.New(t, conf, worker.Config{Concurrency: 2,
		CrashHook: func(point string) error {
			// a's pages commit 1-3; b's second page is the fifth.
			if point == failpoint.BeforePageCommit && commits.Add(1) == 5 {
				return errors.New("crash before the page commit")
			}
			return nil
		}})
	// The first attempt dies; the second, asynq's retry of the same task,
	// resumes its read.
	res := conf.Sources[0].Resource("items")
	opts := jobs.FetchOptions(res)
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "acme", Resource: "items", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	attempt := w.TaskInfo(opts...)
	if err := w.WorkAs(t, task, attempt); err == nil {
		t.Fatal("the attempt that crashed before its fifth commit returned no error")
	}
	attempt.Retried++
	if err := w.WorkAs(t, task, attempt); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	runs, err := w.Store.Runs(context.Background(), store.RunFilter{Source: "acme", Resource: "items", Limit: 5})
	if err != nil || len(runs) != 2 || runs[0].Status != store.StatusSucceeded {
		t.Fatalf("runs %+v (%v): want the crashed one and its retry, succeeded", runs, err)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for path, want := range map[string]int{
		"/accounts/a/items?page=1": 1, "/accounts/a/items?page=3": 1, // a was done: not read again
		"/accounts/b/items?page=1": 1, // b's first page was committed: resumed after it
		"/accounts/b/items?page=2": 2, // the crash lost it
		"/accounts/c/items?page=1": 1,
	} {
		if got := up.requests[path]; got != want {
			t.Errorf("%s: %d requests, want %d (all: %v)", path, got, want, up.requests)
		}
	}
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND deleted_at IS NULL`); n != 15 {
		t.Errorf("%d items, want 15", n)
	}
	for _, p := range []string{"a", "b", "c"} {
		if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND partition = ?`, p); n != 5 {
			t.Errorf("partition %s holds %d items, want 5", p, n)
		}
	}
}

// TestDeleteWithParentOff: with parent.delete_with_parent false, a
// tombstoned parent's children stay, and its partition row with them.
func TestDeleteWithParentOff(t *testing.T) {
	t.Parallel()
	up := newAccounts(3)
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := accountsConfig(t, srv.URL, false, nil)
	off := false
	conf.Sources[0].Resource("items").Parent.DeleteWithParent = &off
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2})
	fetchAndSettle(t, w, conf, "accounts", tidemark.RunFull, jobs.TriggerManual)
	up.mu.Lock()
	up.accounts = up.accounts[1:] // a0000 and its one item
	up.mu.Unlock()
	fetchAndSettle(t, w, conf, "accounts", tidemark.RunFull, jobs.TriggerManual)
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'accounts' AND deleted_at IS NOT NULL`); n != 1 {
		t.Fatalf("%d accounts tombstoned, want 1", n)
	}
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND partition = 'a0000' AND deleted_at IS NULL`); n != 1 {
		t.Errorf("%d live items of the deleted account, want its 1 (delete_with_parent: false)", n)
	}
	if n := countRows(t, w, `SELECT count(*) FROM sync_partitions WHERE resource = 'items'`); n != 3 {
		t.Errorf("%d partition rows, want 3", n)
	}
}

// TestPartitionInPostBody: a partitioned POST resource sends each
// partition's {parent.FIELD} and {partition} in its body.
func TestPartitionInPostBody(t *testing.T) {
	t.Parallel()
	up := newAccounts(3)
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := accountsConfig(t, srv.URL, false, nil)
	items := conf.Sources[0].Resource("items")
	items.Path, items.Method = "/search", config.MethodPost
	items.Body = config.Body{"account": "{partition}", "label": "{parent.name}"}
	items.Pagination = config.Pagination{Style: config.PaginationNone}
	conf.SetDefaults()
	if err := conf.Validate(); err != nil {
		t.Fatal(err)
	}
	w := workertest.Start(t, conf, worker.Config{Concurrency: 2})
	fetchAndSettle(t, w, conf, "accounts", tidemark.RunFull, jobs.TriggerManual)
	if n := countRows(t, w, `SELECT count(*) FROM records WHERE resource = 'items' AND deleted_at IS NULL`); n != 1+2+3 {
		t.Errorf("%d items stored, want 6", n)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, id := range []string{"a0000", "a0001", "a0002"} {
		if k := "POST /search " + id + " account " + id; up.requests[k] != 1 {
			t.Errorf("%q sent %d times, want once (requests: %v)", k, up.requests[k], up.requests)
		}
	}
}
