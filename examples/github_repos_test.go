package examples_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// ---- GitHub REST API: repositories, issues, issue comments ------------------
// https://docs.github.com/rest/repos/repos#list-organization-repositories
// https://docs.github.com/rest/issues/issues#list-repository-issues
// https://docs.github.com/rest/issues/comments#list-issue-comments
// Bare arrays; per_page (max 100) and page; Link rel="next" (and "last");
// since (updated at or after) on issues and comments; an ETag on every
// answer and 304 to a matching If-None-Match.

// githubOrg is a fake GitHub holding one organisation's repositories,
// issues and comments, counting requests per path and status.
type githubOrg struct {
	mu       sync.Mutex
	repos    []map[string]any
	issues   map[string][]map[string]any // by repo full_name
	comments map[string][]map[string]any // by issue comments_url path
	counts   map[string]int              // "200 /path", "304 /path"
	problems []string
}

var (
	issuesPath   = regexp.MustCompile(`^/repos/([^/]+)/([^/]+)/issues$`)
	commentsPath = regexp.MustCompile(`^/repos/[^/]+/[^/]+/issues/[0-9]+/comments$`)
)

func (g *githubOrg) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+githubToken {
		writeJSON(w, http.StatusUnauthorized, "application/json", map[string]string{"message": "Bad credentials"})
		return
	}
	var recs []map[string]any
	switch p := r.URL.Path; {
	case p == "/orgs/golang/repos":
		recs = g.repos
	case issuesPath.MatchString(p):
		m := issuesPath.FindStringSubmatch(p)
		recs = g.issues[m[1]+"/"+m[2]]
		if recs == nil && !g.hasRepo(m[1]+"/"+m[2]) {
			writeJSON(w, http.StatusNotFound, "application/json", map[string]string{"message": "Not Found"})
			return
		}
	case commentsPath.MatchString(p):
		recs = g.comments[p]
	default:
		g.problems = append(g.problems, "unexpected "+r.URL.String())
		writeJSON(w, http.StatusNotFound, "application/json", map[string]string{"message": "Not Found"})
		return
	}
	g.list(w, r, recs)
}

func (g *githubOrg) hasRepo(fullName string) bool {
	for _, r := range g.repos {
		if r["full_name"] == fullName {
			return true
		}
	}
	return false
}

// list serves one page of recs, filtered by since and sorted by updated_at.
func (g *githubOrg) list(w http.ResponseWriter, r *http.Request, recs []map[string]any) {
	q := r.URL.Query()
	perPage, err1 := intParam(q, "per_page", 30, 100)
	page, err2 := intParam(q, "page", 1, 1<<20)
	if err1 != nil || err2 != nil {
		writeJSON(w, http.StatusUnprocessableEntity, "application/json", map[string]string{"message": "Validation Failed"})
		return
	}
	var since time.Time
	if s := q.Get("since"); s != "" {
		since, _ = time.Parse(time.RFC3339, s)
	}
	var kept []map[string]any
	for _, rec := range recs {
		if u, _ := time.Parse(time.RFC3339, rec["updated_at"].(string)); !u.Before(since) {
			kept = append(kept, rec)
		}
	}
	sort.SliceStable(kept, func(i, j int) bool { return kept[i]["updated_at"].(string) < kept[j]["updated_at"].(string) })
	items, more := pageOf(kept, page, perPage)
	if items == nil {
		items = []map[string]any{}
	}
	body, _ := json.Marshal(items)
	sum := sha256.Sum256(body)
	etag := `W/"` + hex.EncodeToString(sum[:]) + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		g.counts["304 "+r.URL.Path]++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	g.counts["200 "+r.URL.Path]++
	if more {
		next := url.Values{}
		for k, vs := range q {
			next[k] = vs
		}
		next.Set("page", strconv.Itoa(page+1))
		w.Header().Set("Link", fmt.Sprintf(`<%s%s?%s>; rel="next"`, baseOf(r), r.URL.Path, next.Encode()))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(body)
}

// count sums the requests answered status whose path matches.
func (g *githubOrg) count(status string, path *regexp.Regexp) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for k, v := range g.counts {
		st, p, _ := strings.Cut(k, " ")
		if st == status && path.MatchString(p) {
			n += v
		}
	}
	return n
}

// newGitHubOrg fills the fake: golang/go with 7 issues (three pages of 3),
// golang/tools with 2 (one page); issue n has n%3 comments.
func newGitHubOrg(base string) *githubOrg {
	g := &githubOrg{issues: map[string][]map[string]any{}, comments: map[string][]map[string]any{}, counts: map[string]int{}}
	ts := func(day, minute int) string {
		return time.Date(2024, 3, day, 10, minute, 0, 0, time.UTC).Format(time.RFC3339)
	}
	number, commentID := 100, 9000
	for i, name := range []string{"go", "tools"} {
		full := "golang/" + name
		g.repos = append(g.repos, map[string]any{
			"id": 23096959 + i, "node_id": "MDEwOlJlcG9zaXRvcnk" + name, "name": name, "full_name": full, "private": false,
			"owner":    map[string]any{"login": "golang", "id": 4314092, "type": "Organization"},
			"html_url": "https://github.com/" + full, "url": base + "/repos/" + full,
			"issues_url": base + "/repos/" + full + "/issues{/number}", "updated_at": ts(1, i), "stargazers_count": 120000,
		})
		for j := range map[int]int{0: 7, 1: 2}[i] {
			number++
			commentsURL := fmt.Sprintf("%s/repos/%s/issues/%d/comments", base, full, number)
			issue := map[string]any{
				"id": 2000000 + number, "node_id": "I_kw" + strconv.Itoa(number), "number": number, "title": fmt.Sprintf("issue %d", number),
				"state": "open", "comments": number % 3, "comments_url": commentsURL, "repository_url": base + "/repos/" + full,
				"user": map[string]any{"login": "gopher"}, "created_at": ts(2, j), "updated_at": ts(3+j, 0),
			}
			if name == "tools" {
				issue["updated_at"] = ts(3, 0) // one instant: a delta's since= asks for the same page again
			}
			g.issues[full] = append(g.issues[full], issue)
			path := strings.TrimPrefix(commentsURL, base)
			for k := range number % 3 {
				commentID++
				g.comments[path] = append(g.comments[path], map[string]any{
					"id": commentID, "node_id": "IC_" + strconv.Itoa(commentID), "body": fmt.Sprintf("comment %d", k),
					"user": map[string]any{"login": "gopher"}, "created_at": ts(4, k), "updated_at": ts(4, k),
					"issue_url": fmt.Sprintf("%s/repos/%s/issues/%d", base, full, number), "html_url": "https://github.com/" + full,
				})
			}
		}
	}
	return g
}

// TestGitHubReposIssuesComments syncs examples/github_repos.yaml end to end
// through the worker: repositories → issues (a partition per repository) →
// comments (a partition per issue, read from its comments_url).
func TestGitHubReposIssuesComments(t *testing.T) {
	t.Parallel()
	var fake *githubOrg
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fake.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	fake = newGitHubOrg(srv.URL)

	conf, err := config.Load("github_repos.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := &conf.Sources[0]
	src.BaseURL, src.AllowPrivate, src.RateLimit = srv.URL, true, nil
	for i := range src.Resources {
		src.Resources[i].Pagination.Limit = pageSize
	}
	f := startFleet(t, conf)
	repos, issues, comments := keyOf(src, "repos"), keyOf(src, "issues"), keyOf(src, "comments")

	// The repositories' full read starts their issues' read, which starts
	// the comments'.
	f.fetch(t, repos, tidemark.RunFull)
	waitFor(t, 30*time.Second, "issues and comments of every repository", func() (bool, string) {
		n, m := f.live(t, issues), f.live(t, comments)
		return n == 9 && m == 9, fmt.Sprintf("%d issues, %d comments; runs %s", n, m, f.runsOf(t, comments))
	})
	f.waitIdle(t, issues, comments)
	if got := f.partitionCounts(t, issues); got["23096959"] != 7 || got["23096960"] != 2 {
		t.Errorf("issues per partition: %v, want golang/go (23096959) 7, golang/tools (23096960) 2", got)
	}
	if n := f.partitionRows(t, comments); n != 9 {
		t.Errorf("comments: %d partition rows, want one per issue (9)", n)
	}
	if n := fake.count("200", regexp.MustCompile(`^/repos/golang/go/issues$`)); n != 3 {
		t.Errorf("golang/go issues: %d pages, want 3 (Link pagination, per_page 3)", n)
	}

	checkChangedOnly(t, f, fake, src, srv.URL)
	checkDeleteWithParent(t, f, fake, src)
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.problems) > 0 {
		t.Errorf("the fake saw: %v", fake.problems)
	}
}

// checkChangedOnly: a new comment on issue 101 changes the issue; a
// scheduled run of the issues reads it (golang/tools answers 304 to its
// ETag), and the comments' run it starts reads only issue 101's comments.
// Then, with nothing changed, every repository's issues answer 304 and no
// comment is read.
func checkChangedOnly(t *testing.T, f *fleet, fake *githubOrg, src *config.Source, base string) {
	t.Helper()
	issues, comments := keyOf(src, "issues"), keyOf(src, "comments")
	allIssues := regexp.MustCompile(`/issues$`)
	allComments := regexp.MustCompile(`/comments$`)
	// A new comment on issue 101 changes the issue; a scheduled run of the
	// issues reads it (golang/tools answers 304 to its ETag), and the
	// comments' run it starts reads only issue 101's comments.
	fake.mu.Lock()
	issue := fake.issues["golang/go"][0]
	issue["comments"], issue["updated_at"] = 2, "2024-05-01T00:00:00Z"
	cpath := strings.TrimPrefix(issue["comments_url"].(string), base)
	fake.comments[cpath] = append(fake.comments[cpath], map[string]any{"id": 9999, "body": "new", "user": map[string]any{"login": "gopher"},
		"created_at": "2024-05-01T00:00:00Z", "updated_at": "2024-05-01T00:00:00Z"})
	fake.counts = map[string]int{}
	fake.mu.Unlock()
	f.scheduledFetch(t, issues, src.Resource("issues"), jobs.TriggerSchedule)
	waitFor(t, 30*time.Second, "the new comment", func() (bool, string) { return f.live(t, comments) == 10, "" })
	f.waitIdle(t, issues, comments)
	if n := fake.count("304", regexp.MustCompile(`^/repos/golang/tools/issues$`)); n != 1 {
		t.Errorf("unchanged golang/tools: %d × 304, want 1 (its one page's ETag)", n)
	}
	if n, m := fake.count("200", allComments), fake.count("200", regexp.MustCompile("^"+regexp.QuoteMeta(cpath)+"$")); n != 1 || m != 1 {
		t.Errorf("changed_only: %d comment requests, %d of them issue 101's; want 1 and 1", n, m)
	}

	// Nothing changed: every repository's issues answer 304, and no
	// comment is read. (The read after a change asks from the new
	// watermark, another URL than the one its ETag is of: the read after
	// that gets the 304.)
	f.scheduledFetch(t, issues, src.Resource("issues"), jobs.TriggerSchedule)
	f.waitIdle(t, issues, comments)
	fake.mu.Lock()
	fake.counts = map[string]int{}
	fake.mu.Unlock()
	f.scheduledFetch(t, issues, src.Resource("issues"), jobs.TriggerSchedule)
	f.scheduledFetch(t, comments, src.Resource("comments"), jobs.TriggerSchedule)
	f.waitIdle(t, issues, comments)
	if n, m := fake.count("304", allIssues), fake.count("200", allIssues); n != 2 || m != 0 {
		t.Errorf("unchanged issues: %d × 304 and %d × 200, want 2 and 0", n, m)
	}
	if n := fake.count("200", allComments) + fake.count("304", allComments); n != 0 {
		t.Errorf("unchanged issues: %d comment requests, want none (changed_only)", n)
	}

}

// checkDeleteWithParent: golang/tools is deleted, and its issues are
// tombstoned with it, and their comments with them.
func checkDeleteWithParent(t *testing.T, f *fleet, fake *githubOrg, src *config.Source) {
	t.Helper()
	repos, issues, comments := keyOf(src, "repos"), keyOf(src, "issues"), keyOf(src, "comments")
	// golang/tools is deleted: its issues are tombstoned with it, and
	// their comments with them. (Half the repositories unseen is past
	// full_sync.max_delete_fraction: the second full read confirms it.)
	fake.mu.Lock()
	fake.repos = fake.repos[:1]
	delete(fake.issues, "golang/tools")
	fake.mu.Unlock()
	f.fetch(t, repos, tidemark.RunFull)
	if n := f.live(t, issues); n != 9 {
		t.Errorf("the deletion held by the brake tombstoned issues: %d live, want 9", n)
	}
	f.fetch(t, repos, tidemark.RunFull)
	waitFor(t, 30*time.Second, "golang/tools' issues and comments tombstoned", func() (bool, string) {
		n, m := f.live(t, issues), f.live(t, comments)
		return n == 7 && m == 9, fmt.Sprintf("%d issues, %d comments live", n, m)
	})
	if got := f.partitionCounts(t, issues); got["23096960"] != 0 || got["23096959"] != 7 {
		t.Errorf("issues per partition after the delete: %v", got)
	}
	var rows int
	f.store.DBForTests().Raw(`SELECT count(*) FROM sync_partitions WHERE resource = 'issues' AND partition = '23096960'`).Scan(&rows)
	if rows != 0 {
		t.Errorf("the deleted repository's partition row stays")
	}
}

func keyOf(src *config.Source, name string) store.Key {
	return store.Key{Source: src.Name, Resource: name}
}

// scheduledFetch runs, synchronously, a fetch of the kind the schedule
// sends; its run must succeed.
func (f *fleet) scheduledFetch(t *testing.T, key store.Key, res *config.Resource, trigger string) {
	t.Helper()
	before := f.lastRun(t, key).ID
	if err := f.worker.Fetch(t, jobs.FetchPayload{Source: key.Source, Resource: key.Resource, Mode: jobs.ModeFor(res, false), Trigger: trigger}); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	if r := f.lastRun(t, key); r.ID <= before || r.Status != store.StatusSucceeded {
		t.Fatalf("%s: run %d (after %d): %s: %s", key, r.ID, before, r.Status, r.Error)
	}
}

// waitIdle waits until no run of keys is running and no task is queued
// (a parent's change starts its children's fetches on their own).
func (f *fleet) waitIdle(t *testing.T, keys ...store.Key) {
	t.Helper()
	waitFor(t, 30*time.Second, "the fetches to settle", func() (bool, string) {
		var running int64
		f.store.DBForTests().Raw(`SELECT count(*) FROM sync_runs WHERE status = 'running'`).Scan(&running)
		if running > 0 {
			return false, fmt.Sprintf("%d running", running)
		}
		for _, q := range jobs.AllQueues() {
			if n := f.queued(q); n > 0 {
				return false, fmt.Sprintf("%d tasks in %s", n, q)
			}
		}
		for _, k := range keys {
			if r := f.lastRun(t, k); r.Status != store.StatusSucceeded {
				return false, fmt.Sprintf("%s: %s %s", k, r.Status, r.Error)
			}
		}
		return true, ""
	})
}

func (f *fleet) live(t *testing.T, key store.Key) int {
	t.Helper()
	var n int
	if err := f.store.DBForTests().Raw(`SELECT count(*) FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`,
		key.Source, key.Resource).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// partitionCounts counts the live records of each partition.
func (f *fleet) partitionCounts(t *testing.T, key store.Key) map[string]int {
	t.Helper()
	var rows []struct {
		Partition string
		N         int
	}
	if err := f.store.DBForTests().Raw(`SELECT partition, count(*) AS n FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL GROUP BY partition`,
		key.Source, key.Resource).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rows {
		out[r.Partition] = r.N
	}
	return out
}

func (f *fleet) partitionRows(t *testing.T, key store.Key) int {
	t.Helper()
	var n int
	if err := f.store.DBForTests().Raw(`SELECT count(*) FROM sync_partitions WHERE source = ? AND resource = ?`, key.Source, key.Resource).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// queued counts the tasks of queue q not yet done.
func (f *fleet) queued(q string) int {
	info, err := f.inspector.GetQueueInfo(q)
	if err != nil {
		return 0 // a queue never used has no info yet
	}
	return info.Pending + info.Active + info.Scheduled + info.Retry
}

// runsOf describes key's runs, for a failure's message.
func (f *fleet) runsOf(t *testing.T, key store.Key) string {
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Source: key.Source, Resource: key.Resource, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range runs {
		out = append(out, fmt.Sprintf("%d %s %s %s %q %q", r.ID, r.Kind, r.Trigger, r.Status, r.Error, r.Note))
	}
	return strings.Join(out, "; ")
}
