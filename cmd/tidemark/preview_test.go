package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// previewAPI is a fake upstream answering by request path and query: each
// answer is a body (and headers); it records every request it gets.
type previewAPI struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
}

type previewAnswer struct {
	header http.Header
	body   string
}

// newPreviewAPI serves answers keyed by "METHOD /path?query" (the query as
// sent, sorted by Go's url.Values.Encode), falling back to "METHOD /path".
func newPreviewAPI(t *testing.T, answers map[string]previewAnswer) *previewAPI {
	t.Helper()
	api := &previewAPI{}
	api.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.mu.Lock()
		api.requests = append(api.requests, r.Clone(context.Background()))
		api.mu.Unlock()
		a, ok := answers[r.Method+" "+r.URL.Path+"?"+r.URL.Query().Encode()]
		if !ok {
			a, ok = answers[r.Method+" "+r.URL.Path]
		}
		if !ok {
			http.Error(w, "no answer for "+r.URL.String(), http.StatusNotFound)
			return
		}
		for k, vs := range a.header {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, a.body)
	}))
	t.Cleanup(api.Close)
	return api
}

func (a *previewAPI) sent() []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.requests...)
}

// previewConfig writes a config of one source "api" at base with the
// resource YAML given (indented as under resources:).
func previewConfig(t *testing.T, base, auth, resource string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tidemark.yaml")
	y := fmt.Sprintf("sources:\n  - name: api\n    base_url: %s\n    allow_private: true\n%s    resources:\n%s", base, auth, resource)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const previewItems = `      - name: items
        path: /items
        records: {path: data, id: id}
        ignore_fields: [meta]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 2}
        probe: {strategy: etag, method: HEAD}
        delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 5s}
`

// noDB is a database URL nothing answers at.
const noDB = "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"

// A cursor-paginated resource over two pages: each page's URL, records
// with ids and cursors, the next-page decision, the probe's ETag, and no
// request past --pages.
func TestPreviewCursorPages(t *testing.T) {
	t.Parallel()
	api := newPreviewAPI(t, map[string]previewAnswer{
		"HEAD /items":                          {header: http.Header{"Etag": {`"v7"`}}},
		"GET /items?limit=2":                   {body: `{"data":[{"id":1,"updated_at":"2026-01-01T10:00:00Z"},{"id":"b","updated_at":"2026-01-01T11:00:00Z"}],"next_cursor":"c2"}`},
		"GET /items?limit=2&starting_after=c2": {body: `{"data":[{"id":3,"updated_at":null}],"next_cursor":"c3"}`},
	})
	conf := previewConfig(t, api.URL, "", previewItems)
	code, out, errOut := runCmd(t, map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": noDB},
		"preview", "api/items", "--pages", "2")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"preview of api/items: full read\n",
		previewRateNote,
		previewNoDB,
		"probe (etag) HEAD " + api.URL + "/items?limit=2: 1 request\n",
		`ETag "v7", stored (none): changed, a fetch would be enqueued`,
		"page 1: GET " + api.URL + "/items?limit=2 (1 request): 2 records extracted, 0 to quarantine\n",
		`next: next page: starting_after="c2", from the response's next_cursor`,
		"page 2: GET " + api.URL + "/items?limit=2&starting_after=c2 (1 request): 1 record extracted, 0 to quarantine\n",
		`next: next page: starting_after="c3", from the response's next_cursor`,
		"not read (--pages): GET " + api.URL + "/items?limit=2&starting_after=c3\n",
		"3 HTTP requests; " + previewNoDB + "; nothing was written\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the preview lacks %q:\n%s", want, out)
		}
	}
	for _, row := range []string{
		`(?m)^  1 +2026-01-01T10:00:00Z +[0-9a-f]{12} +\?$`,
		`(?m)^  b +2026-01-01T11:00:00Z +[0-9a-f]{12} +\?$`,
		`(?m)^  3 +- \(no updated_at: left out of the watermark\) +[0-9a-f]{12} +\?$`,
	} {
		if !regexp.MustCompile(row).MatchString(out) {
			t.Errorf("the preview lacks a record row %s:\n%s", row, out)
		}
	}
	if n := len(api.sent()); n != 3 { // the probe's HEAD and two pages
		t.Errorf("the upstream got %d requests, want 3 (one probe, --pages 2)", n)
	}
}

// A page-numbered resource: the read ends at the shorter page, and says why.
func TestPreviewPageLastPage(t *testing.T) {
	t.Parallel()
	api := newPreviewAPI(t, map[string]previewAnswer{
		"GET /orders?page=1&per_page=2": {body: `[{"id":1},{"id":2}]`},
		"GET /orders?page=2&per_page=2": {body: `[{"id":3}]`},
	})
	conf := previewConfig(t, api.URL, "", `      - name: orders
        path: /orders
        records: {path: "", id: id}
        pagination: {style: page, page_param: page, limit_param: per_page, limit: 2}
`)
	code, out, errOut := runCmd(t, map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": noDB},
		"preview", "--pages", "5", "api/orders")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"next: next page: page=2 (2 records, as many as the largest page served: the read ends at an empty or a shorter page)",
		"next: last page: 1 records, fewer than the 2 of the largest page served\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the preview lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "probe (") || strings.Contains(out, "not read") {
		t.Errorf("no probe is configured and every page was read:\n%s", out)
	}
	if n := len(api.sent()); n != 2 {
		t.Errorf("the upstream got %d requests, want 2: the read ended at page 2", n)
	}
}

// The bearer token reaches the upstream and never the output, text or
// JSON, even where the upstream echoes it into a next link's query.
func TestPreviewRedactsSecrets(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-token-value"
	api := newPreviewAPI(t, nil)
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized: got "+r.Header.Get("Authorization"), http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("cursor") == "" {
			w.Header().Set("Link", fmt.Sprintf(`<%s/things?cursor=2&access_token=%s>; rel="next"`, api.URL, token))
			fmt.Fprint(w, `[{"id":1},{"id":2}]`)
			return
		}
		fmt.Fprintf(w, `[{"id":3}]`)
	})
	conf := previewConfig(t, api.URL, "    auth: {type: bearer, token_env: API_TOKEN}\n", `      - name: things
        path: /things
        records: {path: "", id: id}
        pagination: {style: link}
        probe: {strategy: hash}
`)
	env := map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": noDB, "API_TOKEN": token}
	for _, args := range [][]string{{"preview", "api/things", "--pages", "3"}, {"preview", "api/things", "--pages", "3", "--json"}} {
		code, out, errOut := runCmd(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		t.Log(out)
		if strings.Contains(out+errOut, token) {
			t.Errorf("%v: the token is in the output:\n%s%s", args, out, errOut)
		}
		if !strings.Contains(out, "/things?access_token=[REDACTED]&cursor=[REDACTED]") && !strings.Contains(out, `/things?access_token=[REDACTED]\u0026cursor=[REDACTED]`) {
			t.Errorf("%v: want the next link with its access_token redacted:\n%s", args, out)
		}
	}
}

// Against records stored by a sync: each previewed record says whether it
// would be created, updated or left unchanged, the delta request carries
// the stored watermark less the overlap, and nothing is written.
func TestPreviewAgainstDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.Database(t)
	db, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := store.Key{Source: "api", Resource: "items"}
	conf := previewConfig(t, "http://127.0.0.1:1", "", previewItems)
	parsed, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	res := parsed.Source("api").Resource("items")
	// Stored as a sync stores them: extracted, applied in a run's page.
	storePage(t, db, key, res, `{"data":[
		{"id":1,"name":"same","updated_at":"2026-01-01T10:00:00Z","meta":{"request_id":"x"}},
		{"id":2,"name":"old","updated_at":"2026-01-01T10:00:00Z"},
		{"id":4,"name":"gone","updated_at":"2026-01-01T10:00:00Z"}]}`)
	if err := db.DBForTests().Exec(`UPDATE records SET deleted_at = now() WHERE external_id = '4'`).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.DBForTests().Exec(`UPDATE sync_state SET watermark = '2026-01-01T10:00:00Z', etag = '"v1"' WHERE source = 'api' AND resource = 'items'`).Error; err != nil {
		t.Fatal(err)
	}
	page := `{"data":[
		{"id":1,"name":"same","updated_at":"2026-01-01T10:00:00Z","meta":{"request_id":"y"}},
		{"id":2,"name":"new","updated_at":"2026-01-01T12:00:00Z"},
		{"id":3,"name":"fresh","updated_at":"2026-01-01T12:00:00Z"},
		{"id":4,"name":"gone","updated_at":"2026-01-01T10:00:00Z"},
		{"id":5,"name":"nul \u0000"},
		{"name":"no id"}]}`
	api := newPreviewAPI(t, map[string]previewAnswer{
		"HEAD /items": {header: http.Header{"Etag": {`"v1"`}}},
		"GET /items?limit=2&updated_since=2026-01-01T09%3A59%3A55Z": {body: page},
		"GET /items?limit=2": {body: page},
	})
	conf = previewConfig(t, api.URL, "", previewItems)
	before := rowCounts(t, db)
	code, out, errOut := runCmd(t, map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": dbURL},
		"preview", "api/items", "--delta")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	t.Log(out)
	for _, want := range []string{
		"preview of api/items: delta read\n",
		"note: watermark 2026-01-01T10:00:00Z less delta.overlap (5s): updated_since=2026-01-01T09:59:55Z\n",
		`ETag "v1", as stored: unchanged, no fetch`,
		"page 1: GET " + api.URL + "/items?limit=2&updated_since=2026-01-01T09%3A59%3A55Z (1 request): 5 records extracted, 2 to quarantine\n",
		"quarantine (extract): record 5: id \"id\" is missing",
		"quarantine (store): a string holds U+0000",
		"would create 2, update 1, leave 1 unchanged, quarantine 2; nothing was written\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the preview lacks %q:\n%s", want, out)
		}
	}
	for _, row := range []string{
		`(?m)^  1 .* unchanged$`, `(?m)^  2 .* update$`, `(?m)^  3 .* create$`, `(?m)^  4 .* create \(deleted: comes back\)$`, `(?m)^  5 .* quarantine$`,
	} {
		if !regexp.MustCompile(row).MatchString(out) {
			t.Errorf("the preview lacks a record row %s:\n%s", row, out)
		}
	}
	if after := rowCounts(t, db); after != before {
		t.Errorf("preview wrote to the database: row counts %v before, %v after", before, after)
	}
	var etag string
	db.DBForTests().Raw(`SELECT etag FROM sync_state WHERE source = 'api' AND resource = 'items'`).Scan(&etag)
	if etag != `"v1"` {
		t.Errorf("sync_state.etag = %q after the preview, want it untouched", etag)
	}

	// A watermark taken from another delta field is not used, as a fetch
	// would not use it: the delta reads from the start.
	if err := db.DBForTests().Exec(`UPDATE sync_state SET basis = '{"id":"id","delta_field":"modified_at","delta_format":"rfc3339"}'`).Error; err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCmd(t, map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": dbURL},
		"preview", "api/items", "--delta", "--probe=false")
	for _, want := range []string{
		`note: the delta field or format changed (was "modified_at" as rfc3339, now "updated_at" as rfc3339): the stored watermark "2026-01-01T10:00:00Z" is not used`,
		"note: no watermark to use: this delta reads from the start, as a first sync would\n",
		"page 1: GET " + api.URL + "/items?limit=2 (1 request)",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("exit %d; the preview lacks %q:\n%s%s", code, want, out, errOut)
		}
	}
}

// storePage applies one page of body to the resource as a fetch would.
func storePage(t *testing.T, db *store.Store, key store.Key, res *config.Resource, body string) {
	t.Helper()
	ctx := context.Background()
	if err := db.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	run := store.Run{Source: key.Source, Resource: key.Resource, Kind: jobs.ModeFull, Trigger: jobs.TriggerManual, Attempt: 1}
	if err := db.StartRun(ctx, &run); err != nil {
		t.Fatal(err)
	}
	doc, err := extract.Decode([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := extract.New(res).Records(doc)
	if err != nil {
		t.Fatal(err)
	}
	page := store.Page{Key: key, RunID: run.ID}
	for _, r := range recs {
		page.Records = append(page.Records, store.Record{ExternalID: r.ID, Payload: r.Payload, Hash: r.Hash})
	}
	if _, err := db.ApplyPage(ctx, page); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishRun(ctx, run.ID, store.RunOutcome{Status: store.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
}

// rowCounts counts the rows of every table a fetch or probe writes.
func rowCounts(t *testing.T, db *store.Store) string {
	t.Helper()
	var counts []string
	for _, table := range []string{"records", "record_changes", "record_quarantine", "sync_runs", "sync_state", "outbox", "sync_requests", "probe_minutes"} {
		var n int64
		if err := db.DBForTests().Raw("SELECT count(*) FROM " + table).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		var changed string
		if table == "sync_state" { // one row per resource: its content matters
			db.DBForTests().Raw(`SELECT coalesce(string_agg(md5(s::text), ','), '') FROM sync_state s`).Scan(&changed)
		}
		counts = append(counts, fmt.Sprintf("%s=%d%s", table, n, changed))
	}
	return strings.Join(counts, " ")
}

// Malformed JSON from the upstream stops the preview with an error that
// names the page, its URL and where the JSON breaks.
func TestPreviewMalformedJSON(t *testing.T) {
	t.Parallel()
	api := newPreviewAPI(t, map[string]previewAnswer{
		"GET /items": {body: `{"data":[{"id":1} {"id":2}]}`},
	})
	conf := previewConfig(t, api.URL, "", `      - name: items
        path: /items
        records: {path: data, id: id}
`)
	code, out, errOut := runCmd(t, map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": noDB}, "preview", "api/items")
	want := "tidemark: preview api/items page 1 (" + api.URL + "/items): GET " + api.URL + "/items: bad response: malformed JSON"
	if code != 1 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "at offset 18") {
		t.Errorf("exit %d, want 1 and %q ... at offset 18\n%s%s", code, want, out, errOut)
	}
	if !strings.Contains(out, "stopped: preview api/items page 1") {
		t.Errorf("the report does not say where it stopped:\n%s", out)
	}
}

// --json writes one JSON document with the same content as the text.
func TestPreviewJSON(t *testing.T) {
	t.Parallel()
	api := newPreviewAPI(t, map[string]previewAnswer{
		"HEAD /items":        {header: http.Header{"Etag": {`"v7"`}}},
		"GET /items?limit=2": {body: `{"data":[{"id":1,"updated_at":"2026-01-01T10:00:00Z"},{"id":2,"updated_at":"2026-01-01T11:00:00Z"}],"next_cursor":null}`},
	})
	conf := previewConfig(t, api.URL, "", previewItems)
	code, out, errOut := runCmd(t, map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": noDB},
		"preview", "api/items", "--json", "--records", "1")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var rep previewReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if len(rep.Pages) != 1 || rep.Probe == nil || rep.Probe.Validator != `"v7"` || rep.Database != previewNoDB || rep.Requests != 2 {
		t.Fatalf("unexpected report %+v\n%s", rep, out)
	}
	pg := rep.Pages[0]
	if pg.Total != 2 || len(pg.Records) != 1 || pg.Omitted != 1 || pg.Records[0].ID != "1" ||
		pg.Records[0].Cursor != "2026-01-01T10:00:00Z" || len(pg.Records[0].Hash) != 64 || pg.Next != "" ||
		pg.Decision != "last page: the response has no next_cursor" {
		t.Errorf("unexpected page %+v", pg)
	}
}

// Bad command lines are usage errors that say what was wrong.
func TestPreviewUsage(t *testing.T) {
	t.Parallel()
	conf := previewConfig(t, "http://127.0.0.1:1", "", `      - name: orders
        path: /orders
        records: {path: "", id: id}
`)
	env := map[string]string{"TIDEMARK_CONFIG": conf}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no resource", []string{"preview"}, "preview wants one SOURCE/RESOURCE, got 0 arguments"},
		{"too many pages", []string{"preview", "api/orders", "--pages", "11"}, "--pages 11: want 1 to 10"},
		{"no delta", []string{"preview", "api/orders", "--delta"}, "--delta: api/orders has no delta in " + conf},
		{"not configured", []string{"preview", "api/nosuch"}, "api/nosuch is not configured in " + conf},
	} {
		code, _, errOut := runCmd(t, env, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, want 2 and %q\n%s", tc.name, code, tc.want, errOut)
		}
	}
}

// A POST (GraphQL) resource: each page shows its method and body, the
// cursor in the body; the unread next request shows its body too; no
// credential appears in them.
func TestPreviewPostBody(t *testing.T) {
	t.Parallel()
	var bodies []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Variables struct {
				After *string `json:"after"`
			} `json:"variables"`
		}
		raw := new(strings.Builder)
		json.NewDecoder(io.TeeReader(r.Body, raw)).Decode(&req)
		mu.Lock()
		bodies = append(bodies, raw.String())
		mu.Unlock()
		n := 0
		if req.Variables.After != nil {
			fmt.Sscanf(*req.Variables.After, "c%d", &n)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":{"p":{"nodes":[{"id":%d},{"id":%d}],"pageInfo":{"hasNextPage":true,"endCursor":"c%d"}}},"extensions":{"cost":{"actualQueryCost":3}}}`, n+1, n+2, n+2)
	}))
	t.Cleanup(srv.Close)
	conf := previewConfig(t, srv.URL, "    auth: {type: header, header: X-Token, token_env: PREVIEW_POST_TOKEN}\n", `      - name: items
        path: /graphql
        method: POST
        body: {query: "query($after: String) { p(after: $after) { nodes { id } } }", variables: {after: "{cursor}", first: "{limit}"}}
        records: {path: data.p.nodes, id: id}
        pagination: {style: cursor, next_field: data.p.pageInfo.endCursor, has_more_field: data.p.pageInfo.hasNextPage, limit: 2}
`)
	code, out, errOut := runCmd(t, map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": noDB, "PREVIEW_POST_TOKEN": "tok-secret-123"},
		"preview", "api/items", "--pages", "2")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"page 1: POST " + srv.URL + "/graphql (1 request): 2 records extracted",
		`  body: {"query":"query($after: String) { p(after: $after) { nodes { id } } }","variables":{"after":null,"first":2}}`,
		`next: next page: {cursor} "c2", from the response's data.p.pageInfo.endCursor`,
		"page 2: POST " + srv.URL + "/graphql (1 request)",
		`  body: {"query":"query($after: String) { p(after: $after) { nodes { id } } }","variables":{"after":"c2","first":2}}`,
		"not read (--pages): POST " + srv.URL + "/graphql\n" + `  body: {"query":"query($after: String) { p(after: $after) { nodes { id } } }","variables":{"after":"c4","first":2}}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the preview lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tok-secret-123") {
		t.Errorf("the preview shows the token:\n%s", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || !strings.Contains(bodies[1], `"after":"c2"`) {
		t.Errorf("the upstream got bodies %q", bodies)
	}
}
