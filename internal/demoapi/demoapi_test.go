package demoapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func do(t testing.TB, s *Server, method, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	var body *strings.Reader
	if method == http.MethodPost && len(header) == 1 {
		body, header = strings.NewReader(header[0]), nil
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t testing.TB, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	return v
}

// target turns an absolute next URL into a request target.
func target(t testing.TB, abs string) string {
	t.Helper()
	u, err := url.Parse(abs)
	if err != nil || !u.IsAbs() {
		t.Fatalf("next URL %q is not absolute: %v", abs, err)
	}
	return u.RequestURI()
}

type idRecord struct {
	ID         json.RawMessage `json:"id"`
	TxnID      string          `json:"txn_id"`
	Settlement struct {
		ID string `json:"id"`
	} `json:"settlement"`
}

func (r idRecord) key() string {
	switch {
	case r.TxnID != "":
		return r.TxnID
	case r.Settlement.ID != "":
		return r.Settlement.ID
	}
	var s string
	if json.Unmarshal(r.ID, &s) == nil {
		return s
	}
	return string(r.ID)
}

func keys(recs []idRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.key()
	}
	return out
}

// walk reads every page of a resource the way its pagination style says
// and returns the ids in the order served.
func walk(t testing.TB, s *Server, res string, size int, extra string) []string {
	t.Helper()
	var ids []string
	get := func(target string) *httptest.ResponseRecorder {
		rec := do(t, s, http.MethodGet, target)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", target, rec.Code, rec.Body)
		}
		return rec
	}
	n := strconv.Itoa(size)
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatal("too many pages")
		}
		switch res {
		case "ticket_sales":
			q := "/v1/ticket_sales?limit=" + n + extra
			if len(ids) > 0 {
				q += "&starting_after=" + ids[len(ids)-1]
			}
			body := decode[struct {
				Data       []idRecord `json:"data"`
				HasMore    bool       `json:"has_more"`
				NextCursor *string    `json:"next_cursor"`
			}](t, get(q))
			ids = append(ids, keys(body.Data)...)
			if (body.NextCursor == nil) == body.HasMore {
				t.Fatalf("has_more %v with next_cursor %v", body.HasMore, body.NextCursor)
			}
			if !body.HasMore {
				return ids
			}
			if *body.NextCursor != ids[len(ids)-1] {
				t.Fatalf("next_cursor %s, last id %s", *body.NextCursor, ids[len(ids)-1])
			}
		case "inventory_movements":
			q := "/v1/inventory_movements?limit=" + n + extra
			for q != "" {
				rec := get(q)
				ids = append(ids, keys(decode[[]idRecord](t, rec))...)
				q = ""
				if link := rec.Header().Get("Link"); link != "" {
					u, ok := strings.CutSuffix(link, `>; rel="next"`)
					if !ok || !strings.HasPrefix(u, "<") {
						t.Fatalf("Link %q", link)
					}
					q = target(t, u[1:])
				}
			}
			return ids
		case "transactions":
			body := decode[struct {
				Transactions []idRecord `json:"transactions"`
				Page         int        `json:"page"`
				PerPage      int        `json:"per_page"`
				Total        int        `json:"total"`
			}](t, get("/api/transactions?per_page="+n+"&page="+strconv.Itoa(pages+1)+extra))
			ids = append(ids, keys(body.Transactions)...)
			if body.Page != pages+1 || body.PerPage != min(size, 1000) {
				t.Fatalf("page %d per_page %d", body.Page, body.PerPage)
			}
			if len(body.Transactions) < body.PerPage {
				if body.Total != len(ids) {
					t.Fatalf("total %d, walked %d", body.Total, len(ids))
				}
				return ids
			}
		case "settlements":
			body := decode[struct {
				Results []idRecord `json:"results"`
				Count   int        `json:"count"`
			}](t, get("/settlements?limit="+n+"&offset="+strconv.Itoa(len(ids))+extra))
			ids = append(ids, keys(body.Results)...)
			if len(body.Results) < min(size, 1000) {
				if body.Count != len(ids) {
					t.Fatalf("count %d, walked %d", body.Count, len(ids))
				}
				return ids
			}
		case "tax_summaries":
			q := "/v2/tax/summaries?per_page=" + n + extra
			for q != "" {
				body := decode[struct {
					Result struct {
						Items []idRecord `json:"items"`
					} `json:"result"`
					NextURL *string `json:"next_url"`
				}](t, get(q))
				ids = append(ids, keys(body.Result.Items)...)
				q = ""
				if body.NextURL != nil {
					q = target(t, *body.NextURL)
				}
			}
			return ids
		default:
			t.Fatalf("unknown resource %s", res)
		}
	}
}

// liveIDs is Export's keys in id order.
func liveIDs(s *Server, res string) []string {
	exp := s.Export(res)
	ids := make([]string, 0, len(exp))
	for id := range exp {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		ia, ib := parseID(resourceIndex(res), a), parseID(resourceIndex(res), b)
		return ia - ib
	})
	return ids
}

func TestPaginationWalksEveryLiveRecordOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		records int
		size    int
		mutate  bool
	}{
		{name: "several pages", records: 57, size: 10},
		{name: "exact pages", records: 50, size: 10},
		{name: "one page", records: 57, size: 1000},
		{name: "capped limit", records: 2500, size: 5000},
		{name: "empty", records: -1, size: 10},
		{name: "after creates and deletes", records: 57, size: 7, mutate: true},
	}
	for _, tt := range tests {
		for _, res := range Resources {
			t.Run(tt.name+"/"+res, func(t *testing.T) {
				t.Parallel()
				s := New(Options{Seed: 7, Records: tt.records})
				if tt.mutate {
					if _, err := s.Mutate(Mutation{Resource: res, Creates: 5, Updates: 5, Deletes: 9}); err != nil {
						t.Fatal(err)
					}
				}
				want := liveIDs(s, res)
				got := walk(t, s, res, tt.size, "")
				if !slices.Equal(got, want) {
					t.Fatalf("walked %d ids %v\nwant %d ids %v", len(got), got, len(want), want)
				}
				if tt.mutate && len(want) != tt.records-4 {
					t.Fatalf("live %d, want %d", len(want), tt.records-4)
				}
			})
		}
	}
}

func TestIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		records int
		res     string
		first   string
	}{
		{name: "ticket_sales six digits", records: 10, res: "ticket_sales", first: "ts_000001"},
		{name: "ticket_sales wider for a million", records: 1_000_000, res: "ticket_sales", first: "ts_00000001"},
		{name: "inventory integer", records: 10, res: "inventory_movements", first: "1"},
		{name: "transactions", records: 10, res: "transactions", first: "txn_000001"},
		{name: "settlements", records: 10, res: "settlements", first: "stl_000001"},
		{name: "tax_summaries", records: 10, res: "tax_summaries", first: "tax_000001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.records > 1000 && testing.Short() {
				t.Skip("large")
			}
			s := New(Options{Records: tt.records})
			res := resourceIndex(tt.res)
			if got := s.codec.formatID(res, 0); got != tt.first {
				t.Fatalf("first id %q, want %q", got, tt.first)
			}
			r, err := s.Mutate(Mutation{Resource: tt.res, Creates: 1})
			if err != nil {
				t.Fatal(err)
			}
			last := s.codec.formatID(res, tt.records-1)
			if r.Created[0] <= last && res != resInventory {
				t.Fatalf("created %q does not sort after %q", r.Created[0], last)
			}
		})
	}
}

func TestETag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		path   string
		weak   bool
		header func(etag string) string
		want   int
	}{
		{name: "strong exact", path: "/v1/ticket_sales?limit=5", header: func(e string) string { return e }, want: 304},
		{name: "strong weakly compared", path: "/v1/ticket_sales?limit=5", header: func(e string) string { return "W/" + e }, want: 304},
		{name: "strong in a list", path: "/v1/ticket_sales?limit=5", header: func(e string) string { return `"nope", ` + e }, want: 304},
		{name: "star", path: "/v1/ticket_sales?limit=5", header: func(string) string { return "*" }, want: 304},
		{name: "other tag", path: "/v1/ticket_sales?limit=5", header: func(string) string { return `"nope"` }, want: 200},
		{name: "weak exact", path: "/v1/inventory_movements?limit=5", weak: true, header: func(e string) string { return e }, want: 304},
		{name: "weak without prefix", path: "/v1/inventory_movements?limit=5", weak: true, header: func(e string) string { return strings.TrimPrefix(e, "W/") }, want: 304},
		{name: "weak other tag", path: "/v1/inventory_movements?limit=5", weak: true, header: func(string) string { return `W/"nope"` }, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(Options{Records: 20})
			first := do(t, s, http.MethodGet, tt.path)
			etag := first.Header().Get("ETag")
			if strings.HasPrefix(etag, "W/") != tt.weak || !strings.HasSuffix(etag, `"`) {
				t.Fatalf("ETag %q, weak %v", etag, tt.weak)
			}
			rec := do(t, s, http.MethodGet, tt.path, "If-None-Match", tt.header(etag))
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
			if rec.Header().Get("ETag") != etag {
				t.Fatalf("ETag %q, want %q", rec.Header().Get("ETag"), etag)
			}
			if tt.want == 304 && rec.Body.Len() != 0 {
				t.Fatalf("304 with body %q", rec.Body)
			}
			if other := do(t, s, http.MethodGet, tt.path+"&after=3"); other.Header().Get("ETag") == etag {
				t.Fatal("another query has the same ETag")
			}
			res := "ticket_sales"
			if tt.weak {
				res = "inventory_movements"
			}
			if _, err := s.Mutate(Mutation{Resource: res, Updates: 1, Hidden: true}); err != nil {
				t.Fatal(err)
			}
			after := do(t, s, http.MethodGet, tt.path, "If-None-Match", etag)
			if after.Code != 200 || after.Header().Get("ETag") == etag {
				t.Fatalf("after a mutation: status %d ETag %q (was %q)", after.Code, after.Header().Get("ETag"), etag)
			}
		})
	}
}

func TestLastModified(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := New(Options{Records: 20, Now: clk.Now})
	const path = "/api/transactions?per_page=5"
	first := do(t, s, http.MethodGet, path)
	lm := first.Header().Get("Last-Modified")
	if lm != clk.Now().Format(http.TimeFormat) {
		t.Fatalf("Last-Modified %q, want the start %q", lm, clk.Now().Format(http.TimeFormat))
	}
	if first.Header().Get("ETag") != "" {
		t.Fatal("transactions has an ETag")
	}
	tests := []struct {
		name string
		ims  string
		want int
	}{
		{name: "same", ims: lm, want: 304},
		{name: "later", ims: clk.Now().Add(time.Hour).Format(http.TimeFormat), want: 304},
		{name: "earlier", ims: clk.Now().Add(-time.Second).Format(http.TimeFormat), want: 200},
		{name: "garbage", ims: "yesterday", want: 200},
	}
	for _, tt := range tests {
		rec := do(t, s, http.MethodGet, path, "If-Modified-Since", tt.ims)
		if rec.Code != tt.want || rec.Header().Get("Last-Modified") != lm {
			t.Fatalf("%s: status %d Last-Modified %q, want %d %q", tt.name, rec.Code, rec.Header().Get("Last-Modified"), tt.want, lm)
		}
		if rec.Code == 304 && rec.Body.Len() != 0 {
			t.Fatalf("%s: 304 with a body", tt.name)
		}
	}
	// The clock has not moved: the served second must still not be reused.
	if _, err := s.Mutate(Mutation{Resource: "transactions", Updates: 1}); err != nil {
		t.Fatal(err)
	}
	rec := do(t, s, http.MethodGet, path, "If-Modified-Since", lm)
	if rec.Code != 200 || rec.Header().Get("Last-Modified") == lm {
		t.Fatalf("after a mutation: status %d Last-Modified %q", rec.Code, rec.Header().Get("Last-Modified"))
	}
	clk.Add(time.Hour)
	if _, err := s.Mutate(Mutation{Resource: "transactions", Creates: 1}); err != nil {
		t.Fatal(err)
	}
	if got := do(t, s, http.MethodHead, path).Header().Get("Last-Modified"); got != clk.Now().Format(http.TimeFormat) {
		t.Fatalf("Last-Modified %q, want %q", got, clk.Now().Format(http.TimeFormat))
	}
}

func TestNoValidators(t *testing.T) {
	t.Parallel()
	s := New(Options{Records: 5})
	for _, path := range []string{"/settlements", "/v2/tax/summaries"} {
		rec := do(t, s, http.MethodGet, path, "If-None-Match", "*", "If-Modified-Since", time.Now().Add(time.Hour).Format(http.TimeFormat))
		if rec.Code != 200 || rec.Header().Get("ETag") != "" || rec.Header().Get("Last-Modified") != "" {
			t.Fatalf("%s: status %d headers %v", path, rec.Code, rec.Header())
		}
	}
}

func TestHead(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/v1/ticket_sales?limit=3", "/v1/inventory_movements?limit=3", "/api/transactions?per_page=3", "/settlements?limit=3", "/v2/tax/summaries?per_page=3"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			s := New(Options{Records: 10})
			get := do(t, s, http.MethodGet, path)
			head := do(t, s, http.MethodHead, path)
			if head.Code != 200 || head.Body.Len() != 0 {
				t.Fatalf("HEAD: status %d body %q", head.Code, head.Body)
			}
			for _, h := range []string{"Content-Type", "Content-Length", "ETag", "Last-Modified", "Link"} {
				if get.Header().Get(h) != head.Header().Get(h) {
					t.Fatalf("%s: GET %q HEAD %q", h, get.Header().Get(h), head.Header().Get(h))
				}
			}
			if get.Header().Get("Content-Length") != strconv.Itoa(get.Body.Len()) {
				t.Fatalf("Content-Length %s, body %d", get.Header().Get("Content-Length"), get.Body.Len())
			}
			st := s.Stats()
			if st.Requests != 2 || st.BodyBytes != int64(get.Body.Len()) {
				t.Fatalf("stats %+v, GET body %d", st, get.Body.Len())
			}
		})
	}
}

func TestUpdatedSince(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := New(Options{Records: 30, Now: clk.Now})
	clk.Add(90*time.Minute + 250*time.Millisecond)
	at := clk.Now()
	for _, res := range []string{"ticket_sales", "transactions"} {
		prefix := map[string]string{"ticket_sales": "ts_", "transactions": "txn_"}[res]
		if _, err := s.Mutate(Mutation{Resource: res, IDs: []string{prefix + "000003", prefix + "000011"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Mutate(Mutation{Resource: res, IDs: []string{prefix + "000005"}, Hidden: true}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		since string
		want  []string
	}{
		{name: "exact instant is inclusive", since: at.Format(time.RFC3339Nano), want: []string{"000003", "000011"}},
		{name: "whole seconds", since: at.Truncate(time.Second).Format(time.RFC3339), want: []string{"000003", "000011"}},
		{name: "offset zone", since: at.In(time.FixedZone("x", 2*3600)).Format(time.RFC3339Nano), want: []string{"000003", "000011"}},
		{name: "one ms later", since: at.Add(time.Millisecond).Format(time.RFC3339Nano), want: nil},
		{name: "one ns later", since: at.Add(time.Nanosecond).Format(time.RFC3339Nano), want: nil},
		{name: "everything", since: "2000-01-01T00:00:00Z", want: nil /* checked below */},
	}
	for _, res := range []string{"ticket_sales", "transactions"} {
		prefix := map[string]string{"ticket_sales": "ts_", "transactions": "txn_"}[res]
		for _, tt := range tests {
			for _, size := range []int{1, 1000} {
				got := walk(t, s, res, size, "&updated_since="+url.QueryEscape(tt.since))
				want := make([]string, len(tt.want))
				for i, id := range tt.want {
					want[i] = prefix + id
				}
				if tt.name == "everything" {
					want = liveIDs(s, res)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s %s size %d: got %v want %v", res, tt.name, size, got, want)
				}
			}
		}
	}
	for _, path := range []string{"/v1/ticket_sales?updated_since=yesterday", "/api/transactions?updated_since=2025-01-01"} {
		rec := do(t, s, http.MethodGet, path)
		body := decode[map[string]string](t, rec)
		if rec.Code != 400 || body["error"] == "" {
			t.Fatalf("%s: %d %q", path, rec.Code, rec.Body)
		}
	}
}

func TestMutations(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := New(Options{Records: 20, Now: clk.Now})
	before := s.Export("ticket_sales")
	clk.Add(time.Minute)

	rec := do(t, s, http.MethodPost, "/_mutate", `{"resource":"ticket_sales","creates":2,"updates":2,"deletes":1,"ids":["ts_000003"]}`)
	if rec.Code != 200 {
		t.Fatalf("/_mutate: %d %s", rec.Code, rec.Body)
	}
	res := decode[MutationResult](t, rec)
	if !slices.Equal(res.Created, []string{"ts_000021", "ts_000022"}) || len(res.Updated) != 2 || res.Updated[0] != "ts_000003" || len(res.Deleted) != 1 {
		t.Fatalf("result %+v", res)
	}
	if slices.Contains(res.Updated, res.Deleted[0]) {
		t.Fatalf("deleted an updated record: %+v", res)
	}
	after := s.Export("ticket_sales")
	if len(after) != 21 {
		t.Fatalf("%d live records, want 21", len(after))
	}
	if _, ok := after[res.Deleted[0]]; ok {
		t.Fatalf("deleted %s still exported", res.Deleted[0])
	}
	if ids := walk(t, s, "ticket_sales", 1000, ""); slices.Contains(ids, res.Deleted[0]) || !slices.Contains(ids, "ts_000022") {
		t.Fatalf("listing %v", ids)
	}
	type ticket struct {
		ID        string `json:"id"`
		UpdatedAt string `json:"updated_at"`
		CreatedAt string `json:"created_at"`
		Status    string `json:"status"`
	}
	for _, id := range res.Updated {
		var old, cur ticket
		_ = json.Unmarshal(before[id], &old)
		_ = json.Unmarshal(after[id], &cur)
		if cur.UpdatedAt != "2025-03-14T09:27:53.000Z" || cur.CreatedAt != old.CreatedAt || cur.Status == old.Status {
			t.Fatalf("updated %s: before %+v after %+v", id, old, cur)
		}
	}
	var created ticket
	_ = json.Unmarshal(after["ts_000021"], &created)
	if created.CreatedAt != "2025-03-14T09:27:53.000Z" || created.UpdatedAt != created.CreatedAt {
		t.Fatalf("created %+v", created)
	}

	// A hidden update changes content but not updated_at.
	clk.Add(time.Minute)
	if _, err := s.Mutate(Mutation{Resource: "ticket_sales", Updates: 1, IDs: []string{"ts_000007"}, Hidden: true}); err != nil {
		t.Fatal(err)
	}
	hidden := s.Export("ticket_sales")["ts_000007"]
	var old, cur ticket
	_ = json.Unmarshal(after["ts_000007"], &old)
	_ = json.Unmarshal(hidden, &cur)
	if bytes.Equal(hidden, after["ts_000007"]) || cur.UpdatedAt != old.UpdatedAt {
		t.Fatalf("hidden update: before %s after %s", after["ts_000007"], hidden)
	}

	// Deleting given ids.
	r, err := s.Mutate(Mutation{Resource: "ticket_sales", Deletes: 1, IDs: []string{"ts_000007"}})
	if err != nil || !slices.Equal(r.Deleted, []string{"ts_000007"}) || len(r.Updated) != 0 {
		t.Fatalf("delete by id: %+v %v", r, err)
	}

	// Export matches the listing byte for byte (apart from meta.request_id).
	page := decode[struct {
		Data []json.RawMessage `json:"data"`
	}](t, do(t, s, http.MethodGet, "/v1/ticket_sales?limit=1000"))
	exp := s.Export("ticket_sales")
	if len(page.Data) != len(exp) {
		t.Fatalf("listing %d, export %d", len(page.Data), len(exp))
	}
	for _, raw := range page.Data {
		var tk ticket
		_ = json.Unmarshal(raw, &tk)
		strip := func(b []byte) string { return string(b[:bytes.Index(b, []byte(`"meta"`))]) }
		if strip(raw) != strip(exp[tk.ID]) {
			t.Fatalf("listing %s\nexport  %s", raw, exp[tk.ID])
		}
	}
	for _, res := range Resources[1:] {
		page := walk(t, s, res, 1000, "")
		if len(page) != len(s.Export(res)) {
			t.Fatalf("%s: listing %d export %d", res, len(page), len(s.Export(res)))
		}
	}
}

func TestMutateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want int
	}{
		{name: "unknown resource", body: `{"resource":"nope","creates":1}`, want: 404},
		{name: "unknown id", body: `{"resource":"ticket_sales","ids":["ts_999999"]}`, want: 400},
		{name: "malformed id", body: `{"resource":"inventory_movements","ids":["ts_000001"]}`, want: 400},
		{name: "negative", body: `{"resource":"ticket_sales","updates":-1}`, want: 400},
		{name: "not json", body: `{`, want: 400},
		{name: "unknown field", body: `{"resource":"ticket_sales","create":1}`, want: 400},
		{name: "integer id", body: `{"resource":"inventory_movements","ids":["4"]}`, want: 200},
		{name: "more than live", body: `{"resource":"settlements","deletes":50}`, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(Options{Records: 10})
			rec := do(t, s, http.MethodPost, "/_mutate", tt.body)
			if rec.Code != tt.want {
				t.Fatalf("status %d %s, want %d", rec.Code, rec.Body, tt.want)
			}
		})
	}
	s := New(Options{Records: 10})
	if r, _ := s.Mutate(Mutation{Resource: "settlements", Deletes: 50}); len(r.Deleted) != 10 || s.Stats().Resources["settlements"].Records != 0 {
		t.Fatalf("deleted %v", r.Deleted)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method string
		path   string
		want   int
	}{
		{name: "unknown path", path: "/v1/nope", want: 404},
		{name: "bad limit", path: "/v1/ticket_sales?limit=x", want: 400},
		{name: "zero limit", path: "/v1/inventory_movements?limit=0", want: 400},
		{name: "bad cursor", path: "/v1/ticket_sales?starting_after=42", want: 400},
		{name: "bad after", path: "/v1/inventory_movements?after=ts_1", want: 400},
		{name: "bad page", path: "/api/transactions?page=0", want: 400},
		{name: "bad per_page", path: "/api/transactions?per_page=-3", want: 400},
		{name: "bad offset", path: "/settlements?offset=-1", want: 400},
		{name: "bad page_token", path: "/v2/tax/summaries?page_token=zzz", want: 400},
		{name: "post", method: http.MethodPost, path: "/settlements", want: 405},
		{name: "offset past the end", path: "/settlements?offset=99", want: 200},
		{name: "cursor past the end", path: "/v1/ticket_sales?starting_after=ts_000099", want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(Options{Records: 10})
			rec := do(t, s, orGet(tt.method, http.MethodGet), tt.path)
			if rec.Code != tt.want || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("status %d %q, want %d", rec.Code, rec.Body, tt.want)
			}
			if tt.want >= 400 && decode[map[string]string](t, rec)["error"] == "" {
				t.Fatalf("no error message: %s", rec.Body)
			}
		})
	}
}

func orGet(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestStats(t *testing.T) {
	t.Parallel()
	s := New(Options{Records: 10})
	get := do(t, s, http.MethodGet, "/v1/ticket_sales")
	do(t, s, http.MethodGet, "/v1/ticket_sales", "If-None-Match", get.Header().Get("ETag"))
	do(t, s, http.MethodHead, "/settlements")
	nf := do(t, s, http.MethodGet, "/nope")
	do(t, s, http.MethodGet, "/_stats")
	if _, err := s.Mutate(Mutation{Resource: "settlements", Deletes: 2}); err != nil {
		t.Fatal(err)
	}

	rec := do(t, s, http.MethodGet, "/_stats")
	st := decode[Stats](t, rec)
	if st.Requests != 4 || st.BodyBytes != int64(get.Body.Len()+nf.Body.Len()) {
		t.Fatalf("totals %+v", st)
	}
	if st.ByStatus["200"] != 2 || st.ByStatus["304"] != 1 || st.ByStatus["404"] != 1 {
		t.Fatalf("by_status %v", st.ByStatus)
	}
	ts := st.Resources["ticket_sales"]
	if ts.Requests != 2 || ts.BodyBytes != int64(get.Body.Len()) || ts.ByStatus["304"] != 1 || ts.Records != 10 {
		t.Fatalf("ticket_sales %+v", ts)
	}
	if se := st.Resources["settlements"]; se.Requests != 1 || se.BodyBytes != 0 || se.Records != 8 {
		t.Fatalf("settlements %+v", se)
	}
	if len(st.Resources) != len(Resources) {
		t.Fatalf("resources %v", st.Resources)
	}
	if rec := do(t, s, http.MethodPost, "/_stats/reset"); rec.Code != http.StatusNoContent {
		t.Fatalf("reset: %d", rec.Code)
	}
	if st := s.Stats(); st.Requests != 0 || st.BodyBytes != 0 || len(st.ByStatus) != 0 || st.Resources["settlements"].Records != 8 {
		t.Fatalf("after reset %+v", st)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	t.Run("rate limit", func(t *testing.T) {
		t.Parallel()
		clk := newClock()
		s := New(Options{Records: 3, Rate: 2, Now: clk.Now})
		for i := range 2 {
			if rec := do(t, s, http.MethodGet, "/settlements"); rec.Code != 200 {
				t.Fatalf("request %d: %d", i, rec.Code)
			}
		}
		rec := do(t, s, http.MethodGet, "/v1/ticket_sales")
		if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" || decode[map[string]string](t, rec)["error"] == "" {
			t.Fatalf("status %d Retry-After %q body %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
		if rec := do(t, s, http.MethodGet, "/_stats"); rec.Code != 200 {
			t.Fatalf("/_stats rate limited: %d", rec.Code)
		}
		if rec := do(t, s, http.MethodPost, "/_mutate", `{"resource":"settlements","creates":1}`); rec.Code != 200 {
			t.Fatalf("/_mutate rate limited: %d", rec.Code)
		}
		clk.Add(500 * time.Millisecond)
		if rec := do(t, s, http.MethodGet, "/settlements"); rec.Code != 200 {
			t.Fatalf("after refill: %d", rec.Code)
		}
		if st := s.Stats(); st.ByStatus["429"] != 1 || st.Requests != 4 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("fail rate", func(t *testing.T) {
		t.Parallel()
		s := New(Options{Records: 3, FailRate: 1})
		if rec := do(t, s, http.MethodGet, "/settlements"); rec.Code != 500 {
			t.Fatalf("status %d", rec.Code)
		}
		half := New(Options{Records: 3, FailRate: 0.5})
		fails := 0
		for range 400 {
			if do(t, half, http.MethodGet, "/settlements").Code == 500 {
				fails++
			}
		}
		if fails < 140 || fails > 260 {
			t.Fatalf("%d of 400 failed at rate 0.5", fails)
		}
	})
	t.Run("latency honours cancellation", func(t *testing.T) {
		t.Parallel()
		s := New(Options{Records: 3, Latency: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/settlements", nil)
		s.ServeHTTP(httptest.NewRecorder(), req)
		if st := s.Stats(); st.Requests != 0 {
			t.Fatalf("cancelled request counted: %+v", st)
		}
	})
}

func TestRun(t *testing.T) {
	t.Parallel()
	s := New(Options{Records: 10, ChangeRate: 2000, Seed: 3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.Stats().Resources["inventory_movements"].Records <= 10 {
		// Read concurrently with the mutator to let the race detector look.
		walk(t, s, "ticket_sales", 3, "")
		select {
		case <-deadline:
			t.Fatal("no background mutations")
		case <-tick.C:
		}
	}
	cancel()
	<-done
	New(Options{}).Run(context.Background()) // ChangeRate 0: returns at once
}

func TestMutatorMix(t *testing.T) {
	t.Parallel()
	a, b := newMutator(9, 100, time.Second), newMutator(9, 100, time.Second)
	var counts [numResources][3]int
	for range 100 {
		ma, mb := a.next(), b.next()
		if len(ma) != len(mb) {
			t.Fatal("not deterministic")
		}
		for i, m := range ma {
			if m.Resource != mb[i].Resource || m.Creates != mb[i].Creates || m.Updates != mb[i].Updates || m.Deletes != mb[i].Deletes {
				t.Fatalf("not deterministic: %+v vs %+v", m, mb[i])
			}
			r := resourceIndex(m.Resource)
			counts[r][0] += m.Creates
			counts[r][1] += m.Updates
			counts[r][2] += m.Deletes
		}
	}
	total := 0
	for _, c := range counts {
		total += c[0] + c[1] + c[2]
	}
	if total < 9900 {
		t.Fatalf("%d mutations, want ~10000", total)
	}
	share := func(r int) float64 { return float64(counts[r][0]+counts[r][1]+counts[r][2]) / float64(total) }
	if s := share(resTicketSales); s < 0.37 || s > 0.43 {
		t.Fatalf("ticket_sales share %.2f", s)
	}
	if inv := counts[resInventory]; inv[0] < 5*inv[1] {
		t.Fatalf("inventory not append-mostly: %v", inv)
	}
	if tax := counts[resTaxSummaries]; tax[2] != 0 {
		t.Fatalf("tax deletes: %v", tax)
	}
}

func TestConcurrentReadsAndMutations(t *testing.T) {
	t.Parallel()
	s := New(Options{Records: 200})
	var wg sync.WaitGroup
	for _, res := range Resources {
		wg.Go(func() {
			for range 20 {
				if _, err := s.Mutate(Mutation{Resource: res, Creates: 2, Updates: 3, Deletes: 1}); err != nil {
					t.Error(err)
				}
			}
		})
		wg.Go(func() {
			for range 5 {
				walk(t, s, res, 17, "")
				s.Stats()
			}
		})
	}
	wg.Wait()
	for _, res := range Resources {
		if got, want := walk(t, s, res, 50, ""), liveIDs(s, res); !slices.Equal(got, want) {
			t.Fatalf("%s: walked %d, live %d", res, len(got), len(want))
		}
	}
}

func TestMillionRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	t.Parallel()
	start := time.Now()
	s := New(Options{Records: 1_000_000, Seed: 1})
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("New took %v", d)
	}
	for _, tb := range s.tables {
		if cap(tb.ver) > 1_000_000 || cap(tb.upd) > 1_000_000 || tb.live() != 1_000_000 {
			t.Fatalf("table %d: %d live, cap %d/%d", tb.res, tb.live(), cap(tb.ver), cap(tb.upd))
		}
	}
	if _, err := s.Mutate(Mutation{Resource: "settlements", Deletes: 1000, Creates: 3}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path  string
		first string
	}{
		{path: "/v1/ticket_sales?limit=1000&starting_after=ts_00500000", first: `"id":"ts_00500001"`},
		{path: "/v1/inventory_movements?limit=1000&after=999999", first: `"id":1000000`},
		{path: "/api/transactions?per_page=1000&page=1000", first: `"txn_id":"txn_00999001"`},
		{path: "/settlements?limit=1000&offset=998999", first: `"settlement":{"id":"stl_`},
		{path: "/v2/tax/summaries?per_page=1000&page_token=" + pageToken(700000), first: `"id":"tax_00700002"`},
	}
	for _, tt := range tests {
		rec := do(t, s, http.MethodGet, tt.path)
		if rec.Code != 200 || !strings.Contains(rec.Body.String()[:min(200, rec.Body.Len())], tt.first) {
			t.Fatalf("%s: %d %.200s", tt.path, rec.Code, rec.Body)
		}
	}
	last := decode[struct {
		Results []json.RawMessage `json:"results"`
		Count   int               `json:"count"`
	}](t, do(t, s, http.MethodGet, "/settlements?limit=1000&offset=998999"))
	if last.Count != 999003 || len(last.Results) != 4 || !strings.Contains(string(last.Results[3]), "stl_01000003") {
		t.Fatalf("count %d, %d results, last %s", last.Count, len(last.Results), last.Results[len(last.Results)-1])
	}
}

func BenchmarkFullReadTicketSales(b *testing.B) {
	const records = 1_000_000
	s := New(Options{Records: records})
	w := &discard{header: http.Header{}}
	b.ResetTimer()
	for range b.N {
		cursor, n := "", 0
		for {
			target := "/v1/ticket_sales?limit=1000"
			if cursor != "" {
				target += "&starting_after=" + cursor
			}
			w.last = w.last[:0]
			s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
			n += 1000
			i := bytes.LastIndex(w.last, []byte(`"next_cursor":"`))
			if i < 0 {
				break
			}
			rest := w.last[i+len(`"next_cursor":"`):]
			cursor = string(rest[:bytes.IndexByte(rest, '"')])
		}
		if n < records {
			b.Fatalf("read %d", n)
		}
	}
	b.ReportMetric(float64(records*b.N)/b.Elapsed().Seconds(), "records/s")
}

// discard is a ResponseWriter keeping only the tail of the body.
type discard struct {
	header http.Header
	last   []byte
}

func (d *discard) Header() http.Header { return d.header }
func (d *discard) WriteHeader(int)     {}
func (d *discard) Write(p []byte) (int, error) {
	d.last = append(d.last, p[max(0, len(p)-200):]...)
	return len(p), nil
}
