package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tidemark/tidemark/config"
)

// TestQueryKeyAuth: auth type query sends the key on every request (also
// after a same-origin redirect whose Location lacks it, and in place of a
// stale value the upstream echoed), never across origins, never in a URL
// tidemark keeps (Response.URL, a page's next link) and never in an error.
func TestQueryKeyAuth(t *testing.T) {
	t.Parallel()
	const key = "k3y-secret-value"
	var mu sync.Mutex
	var otherGot []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		otherGot = append(otherGot, r.URL.RawQuery)
		mu.Unlock()
		w.Write([]byte(`{"data":[]}`))
	}))
	t.Cleanup(other.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.URL.Query()["api_key"]; len(got) != 1 || got[0] != key {
			http.Error(w, "bad key "+r.URL.RawQuery, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/items?page=1", http.StatusFound)
		case "/away":
			http.Redirect(w, r, other.URL+"/x?api_key="+key+"&a=1", http.StatusFound)
		case "/fail":
			http.Error(w, "failed: "+r.URL.String(), http.StatusBadGateway)
		default:
			w.Header().Set("Link", `</items?page=2&api_key=old-echoed-key>; rel="next"`)
			w.Write([]byte(`{"data":[{"id":1}]}`))
		}
	}))
	t.Cleanup(srv.Close)
	src := &config.Source{Name: "q", BaseURL: srv.URL, AllowPrivate: true,
		Auth: &config.Auth{Type: config.AuthQuery, Param: "api_key", TokenEnv: "K"}}
	c, err := New(src, Options{Getenv: func(string) string { return key }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := c.Do(ctx, http.MethodGet, c.URL("/moved", nil), nil)
	if err != nil {
		t.Fatalf("same-origin redirect: %v", err)
	}
	if strings.Contains(resp.URL, key) {
		t.Errorf("Response.URL keeps the key: %s", resp.URL)
	}
	res := &config.Resource{Name: "items", Path: "/items", Records: config.Records{Path: "data", ID: "id"},
		Pagination: config.Pagination{Style: config.PaginationLink, MaxPages: 10}}
	p := NewPager(c, res, Position{Next: FirstURL(c, res, nil)}, 0)
	page, err := p.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.Next, "api_key") || !strings.Contains(page.Next, "page=2") {
		t.Errorf("next link %q: want page=2 without the echoed api_key", page.Next)
	}
	if _, err := NewPager(c, res, Position{Next: page.Next}, 1).Next(ctx); err != nil {
		t.Errorf("the next page, without the echoed stale key: %v", err)
	}
	if _, err := c.Do(ctx, http.MethodGet, c.URL("/away", nil), nil); err != nil {
		t.Fatalf("cross-origin redirect: %v", err)
	}
	mu.Lock()
	if len(otherGot) != 1 || strings.Contains(otherGot[0], key) || !strings.Contains(otherGot[0], "a=1") {
		t.Errorf("the other origin got query %q: want a=1 without the key", otherGot)
	}
	mu.Unlock()
	_, err = c.Do(ctx, http.MethodGet, c.URL("/fail", nil), nil)
	if err == nil || !strings.Contains(err.Error(), "HTTP 502") || strings.Contains(err.Error(), key) {
		t.Errorf("error %v: want HTTP 502 without the key", err)
	}
}
