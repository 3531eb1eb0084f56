package worker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// between is the scripted records whose updated_at is in [since, before)
// (either bound "" for none), or false after answering a bad bound.
func (s *scripted) between(w http.ResponseWriter, since, before string) ([]scriptedRec, bool) {
	bound := func(v string) (time.Time, bool) {
		if v == "" {
			return time.Time{}, true
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			http.Error(w, `{"error":"bad time bound"}`, http.StatusBadRequest)
		}
		return t, err == nil
	}
	from, ok1 := bound(since)
	to, ok2 := bound(before)
	if !ok1 || !ok2 {
		return nil, false
	}
	if since == "" && before == "" {
		return s.recs, true
	}
	var recs []scriptedRec
	for _, rec := range s.recs {
		if !rec.Stamp.IsZero() && !rec.Stamp.Before(from) && (to.IsZero() || rec.Stamp.Before(to)) {
			recs = append(recs, rec)
		}
	}
	return recs, true
}

// serveAfter answers a Stripe-style list: the records after the one with
// id starting_after, and has_more.
func (s *scripted) serveAfter(w http.ResponseWriter, recs []scriptedRec, after, limit string) {
	from := slices.IndexFunc(recs, func(r scriptedRec) bool { return r.ID == after })
	if from < 0 {
		http.Error(w, `{"error":"no such object: `+after+`"}`, http.StatusBadRequest)
		return
	}
	s.writeList(w, recs, from+1, limit)
}

func (s *scripted) writeList(w http.ResponseWriter, recs []scriptedRec, from int, limit string) {
	size := len(recs)
	if l, err := strconv.Atoi(limit); err == nil {
		size = l
	}
	to := min(from+size, len(recs))
	parts := make([]string, 0, to-from)
	for _, rec := range recs[from:to] {
		parts = append(parts, rec.json())
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"object":"list","data":[%s],"has_more":%t}`, strings.Join(parts, ","), to < len(recs))
}

// graphQLRequest is the body the POST tests' config sends.
type graphQLRequest struct {
	Query     string `json:"query"`
	Variables struct {
		After  *string `json:"after"`
		First  int     `json:"first"`
		Since  string  `json:"since"`
		Before string  `json:"before"`
	} `json:"variables"`
}

// serveGraphQL answers a GraphQL connection read: items(first:, after:,
// since:) with edges { node } and pageInfo { hasNextPage endCursor }.
func (s *scripted) serveGraphQL(w http.ResponseWriter, r *http.Request) {
	var req graphQLRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.Header.Get("Content-Type") != "application/json" || req.Variables.First <= 0 {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"errors":[{"message":"bad request: %v"}]}`, err)
		return
	}
	recs, ok := s.between(w, req.Variables.Since, req.Variables.Before)
	if !ok {
		return
	}
	from := 0
	if a := req.Variables.After; a != nil {
		from, _ = strconv.Atoi(strings.TrimPrefix(*a, "c"))
	}
	from = min(max(from, 0), len(recs))
	to := min(from+req.Variables.First, len(recs))
	edges := make([]string, 0, to-from)
	for _, rec := range recs[from:to] {
		edges = append(edges, `{"cursor":"x","node":`+rec.json()+`}`)
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"data":{"items":{"edges":[%s],"pageInfo":{"hasNextPage":%t,"endCursor":"c%d"}}},"extensions":{"cost":{"requestedQueryCost":10}}}`,
		strings.Join(edges, ","), to < len(recs), to)
}

// graphQLConfig is the POST tests' resource: a GraphQL connection read,
// its variables with vars added ({since}, {until}).
func graphQLConfig(vars string) string {
	return `
method: POST
body:
  query: "query($first: Int!, $after: String) { items(first: $first, after: $after) { edges { node { id name updated_at } } pageInfo { hasNextPage endCursor } } }"
  variables: {first: "{limit}", after: "{cursor}"` + vars + `}
records: {path: data.items.edges, item: node, id: id}
pagination: {style: cursor, next_field: data.items.pageInfo.endCursor, has_more_field: data.items.pageInfo.hasNextPage, limit: 3}
`
}

// TestGraphQLReadResumesMidWay: a POST read that fails on its third page
// resumes there, the cursor carried in the body from the checkpoint, not
// from the first page; hasNextPage false ends it.
func TestGraphQLReadResumesMidWay(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(8, time.Now())}
	var bodies []graphQLRequest
	fail := true
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		req := peekGraphQL(r)
		bodies = append(bodies, req)
		if fail && req.Variables.After != nil && *req.Variables.After == "c6" {
			fail = false
			http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
			return true
		}
		return false
	}
	f := startScripted(t, api, graphQLConfig("")+"full_sync: {detect_deletes: true}\n")
	if run := f.full(); run.Status == store.StatusSucceeded {
		t.Fatal("the first read should fail on page 3")
	}
	api.mu.Lock()
	if len(bodies) != 3 || bodies[0].Variables.After != nil || bodies[0].Variables.First != 3 {
		t.Fatalf("first read's bodies: %+v, want 3, the first with after null and first 3", bodies)
	}
	bodies = nil
	api.mu.Unlock()
	run := f.mustSucceed(f.fetch(jobs.FetchPayload{Mode: tidemark.RunFull, Trigger: jobs.TriggerRetry, Resume: true}))
	api.mu.Lock()
	resumed := bodies
	api.mu.Unlock()
	if len(resumed) != 1 || resumed[0].Variables.After == nil || *resumed[0].Variables.After != "c6" {
		t.Fatalf("resumed read sent %+v, want one request, after c6 (the checkpoint's cursor)", resumed)
	}
	if !strings.Contains(run.Note, "resumed the interrupted read at page 3") {
		t.Errorf("run note %q does not say it resumed at page 3", run.Note)
	}
	if live := f.live(); len(live) != 8 || live["8"]["name"] != "r8" {
		t.Fatalf("%d records after the resumed read (%v), want 8", len(live), live["8"])
	}
}

// peekGraphQL decodes a request's GraphQL body and leaves it to be read
// again.
func peekGraphQL(r *http.Request) graphQLRequest {
	raw, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(raw))
	var req graphQLRequest
	json.Unmarshal(raw, &req)
	return req
}

// TestGraphQLErrorsFailThePage: a 200 with errors and no data fails the
// read with the errors' messages (not the body), and a full read that
// fails so deletes nothing.
func TestGraphQLErrorsFailThePage(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(5, time.Now())}
	broken := false
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		if !broken {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}},{"message":"secret-ish body detail"}],"data":null,"extensions":{"cost":{"throttleStatus":{"currentlyAvailable":0}}}}`)
		return true
	}
	f := startScripted(t, api, graphQLConfig("")+"full_sync: {detect_deletes: true}\n")
	f.mustSucceed(f.full())
	api.mu.Lock()
	broken = true
	api.mu.Unlock()
	run := f.full()
	if run.Status == store.StatusSucceeded {
		t.Fatal("a read answered with GraphQL errors succeeded")
	}
	if !strings.Contains(run.Error, `2 GraphQL errors: "Throttled (THROTTLED)"`) || strings.Contains(run.Error, "currentlyAvailable") {
		t.Errorf("run error %q: want the errors' messages, not the body", run.Error)
	}
	if n := len(f.live()); n != 5 {
		t.Errorf("%d live records after a failed read, want 5 (an error is not an empty collection)", n)
	}
}

// TestStartingAfterLastRecord: Stripe's list pagination, the cursor the
// id of the page's last record, ends where has_more is false (not at an
// empty page: the fake refuses none, but has_more saves a request).
func TestStartingAfterLastRecord(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(7, time.Now())}
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		if q := r.URL.Query(); !q.Has("starting_after") { // the first page, in the list's shape
			s.writeList(w, s.recs, 0, q.Get("limit"))
			return true
		}
		return false
	}
	f := startScripted(t, api, `
records: {path: data, id: id}
pagination: {style: cursor, cursor_param: starting_after, cursor_from: last_record, has_more_field: has_more, limit_param: limit, limit: 3}
full_sync: {detect_deletes: true}`)
	run := f.mustSucceed(f.full())
	if live := f.live(); len(live) != 7 {
		t.Fatalf("%d records, want 7", len(live))
	}
	if run.HTTPRequests != 3 {
		t.Errorf("%d requests for 7 records in pages of 3, want 3 (has_more false ends the read)", run.HTTPRequests)
	}
}

// TestDeltaStartOnFirstSyncOnly: the first delta reads from delta.start;
// once a watermark exists, the delta reads from it.
func TestDeltaStartOnFirstSyncOnly(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Millisecond)
	api := &scripted{recs: []scriptedRec{
		{ID: "1", Fields: `"name":"old"`, Stamp: now.Add(-48 * time.Hour)},
		{ID: "2", Fields: `"name":"recent"`, Stamp: now.Add(-time.Hour)},
	}}
	var since []string
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		since = append(since, r.URL.Query().Get("updated_since"))
		return false
	}
	f := startScripted(t, api, `
pagination: {style: cursor, cursor_param: cursor, next_field: next_cursor, limit_param: limit, limit: 3}
delta: {param: updated_since, field: updated_at, start: 24h}`)
	f.mustSucceed(f.delta())
	if live := f.live(); len(live) != 1 || live["2"] == nil {
		t.Fatalf("first delta stored %v, want only record 2 (updated since delta.start, 24h ago)", live)
	}
	f.mustSucceed(f.delta())
	api.mu.Lock()
	defer api.mu.Unlock()
	first, err := time.Parse(time.RFC3339Nano, since[0])
	if err != nil || first.After(now.Add(-23*time.Hour)) || first.Before(now.Add(-24*time.Hour)) {
		t.Errorf("first delta's updated_since = %q, want about 24h ago", since[0])
	}
	if want := now.Add(-time.Hour).Format(time.RFC3339Nano); since[1] != want {
		t.Errorf("second delta's updated_since = %q, want the watermark %s, not delta.start", since[1], want)
	}
}

// TestWindowWalkResumes: a windowed read walks [start, start+size), ...,
// up to its start; an interrupted one resumes in the window it was in,
// not at the first, and the watermark then covers every window.
func TestWindowWalkResumes(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	start := now.Add(-5 * time.Hour).Truncate(time.Hour)
	var recs []scriptedRec
	for i := range 10 { // two an hour
		recs = append(recs, scriptedRec{ID: strconv.Itoa(i + 1), Fields: `"name":"w"`, Stamp: start.Add(time.Duration(i) * 30 * time.Minute)})
	}
	api := &scripted{recs: recs}
	var windows []string
	fail := true
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		windows = append(windows, q.Get("updated_since")+" "+q.Get("updated_before"))
		if fail && q.Get("updated_since") == start.Add(2*time.Hour).Format(time.RFC3339Nano) {
			fail = false
			http.Error(w, `{"error":"boom"}`, http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	f := startScripted(t, api, fmt.Sprintf(`
pagination: {style: cursor, cursor_param: cursor, next_field: next_cursor, limit_param: limit, limit: 1}
delta: {param: updated_since, field: updated_at, start: %q, window: {size: 1h, end_param: updated_before}}`, start.Format(time.RFC3339)))
	if run := f.delta(); run.Status == store.StatusSucceeded {
		t.Fatal("the first read should fail in its third window")
	}
	api.mu.Lock()
	failedAt := len(windows)
	api.mu.Unlock()
	if f.state().Watermark != "" {
		t.Fatalf("watermark %q after a failed windowed read, want none", f.state().Watermark)
	}
	f.mustSucceed(f.fetch(jobs.FetchPayload{Mode: tidemark.RunDelta, Trigger: jobs.TriggerRetry, Resume: true}))
	api.mu.Lock()
	resumed := windows[failedAt:]
	api.mu.Unlock()
	third := start.Add(2*time.Hour).Format(time.RFC3339Nano) + " " + start.Add(3*time.Hour).Format(time.RFC3339Nano)
	if len(resumed) == 0 || resumed[0] != third {
		t.Fatalf("resumed read began with window %q, want the third %q", resumed, third)
	}
	for _, w := range resumed {
		if strings.HasPrefix(w, start.Format(time.RFC3339Nano)+" ") {
			t.Fatalf("the resumed read went back to the first window: %q", resumed)
		}
	}
	if n := len(f.live()); n != 10 {
		t.Fatalf("%d records after the windowed read, want 10", n)
	}
	wm, err := time.Parse(time.RFC3339Nano, f.state().Watermark)
	if err != nil || wm.Before(recs[9].Stamp) || wm.After(time.Now()) {
		t.Errorf("watermark %q, want from the last record's %s up to now (the last window's end)", f.state().Watermark, recs[9].Stamp)
	}
}
