package upstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
)

func TestNextLink(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values []string
		want   string
	}{
		{"single", []string{`<https://api.example.com/items?page=2>; rel="next"`}, "https://api.example.com/items?page=2"},
		{"among others", []string{`<https://a/?p=1>; rel="prev", <https://a/?p=3>; rel="next", <https://a/?p=9>; rel="last"`}, "https://a/?p=3"},
		{"several rels, unquoted", []string{`</items?p=2>; rel=next`}, "/items?p=2"},
		{"rel list", []string{`<https://a/?p=2>; title="x"; rel="next last"`}, "https://a/?p=2"},
		{"separate header values", []string{`<https://a/?p=1>; rel="prev"`, `<https://a/?p=2>; rel="NEXT"`}, "https://a/?p=2"},
		{"no next", []string{`<https://a/?p=1>; rel="prev"`}, ""},
		{"garbage", []string{`rel="next"`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := nextLink(tt.values); got != tt.want {
				t.Errorf("nextLink = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"30", 30 * time.Second},
		{" 5 ", 5 * time.Second},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"soon", 0},
		{"-5", 0},
		// Past what a time.Duration holds: the longest delay, not an
		// overflow to a negative one.
		{"99999999999", time.Duration(math.MaxInt64/int64(time.Second)) * time.Second},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.in, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestClient(t *testing.T) {
	t.Parallel()
	var gotAuth, gotAccept string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotAccept = r.Header.Get("Authorization"), r.Header.Get("Accept")
		switch strings.TrimPrefix(r.URL.Path, "/api") {
		case "/big":
			fmt.Fprint(w, strings.Repeat("x", 2000))
		case "/limited":
			w.Header().Set("Retry-After", "7")
			http.Error(w, `{"error":"slow down"}`, http.StatusTooManyRequests)
		default:
			fmt.Fprint(w, `[]`)
		}
	}))
	defer srv.Close()
	src := &config.Source{
		Name: "s", BaseURL: srv.URL + "/api", MaxBody: 1000, AllowPrivate: true, Timeout: config.Duration(5 * time.Second),
		Headers: map[string]string{"Accept": "application/json"},
		Auth:    &config.Auth{Type: config.AuthBearer, TokenEnv: "TOKEN"},
	}
	c, err := New(src, Options{Getenv: func(k string) string {
		if k == "TOKEN" {
			return "s3cret"
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	if u := c.URL("/items?sort=id", map[string][]string{"limit": {"5"}}); u != srv.URL+"/api/items?limit=5&sort=id" {
		t.Errorf("URL = %s: the path's own query and the base path must be kept", u)
	}
	resp, err := c.Do(ctx, http.MethodGet, c.URL("/ok", nil), nil)
	if err != nil || string(resp.Body) != "[]" || resp.Requests != 1 {
		t.Fatalf("GET /ok = %+v, %v", resp, err)
	}
	if gotAuth != "Bearer s3cret" || gotAccept != "application/json" {
		t.Errorf("sent Authorization %q, Accept %q", gotAuth, gotAccept)
	}

	_, err = c.Do(ctx, http.MethodGet, c.URL("/big", nil), nil)
	if err == nil || !strings.Contains(err.Error(), "exceeds max_body (1000 bytes)") {
		t.Errorf("oversize body: err = %v", err)
	}

	_, err = c.Do(ctx, http.MethodGet, c.URL("/limited", map[string][]string{"api_key": {"leak"}}), nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 429 || se.RetryAfter != 7*time.Second {
		t.Fatalf("429: err = %#v", err)
	}
	if strings.Contains(err.Error(), "leak") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error leaks the query string or the token: %v", err)
	}

	// A dead port: refused connections are retried, then reported with the count.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	_, err = c.Do(ctx, http.MethodGet, deadURL+"/x", nil)
	if err == nil || Requests(err) != 4 {
		t.Errorf("refused connection: err = %v after %d requests, want 4 attempts", err, Requests(err))
	}

	// Without the token's variable the request is not sent at all.
	c2, _ := New(src, Options{Getenv: func(string) string { return "" }})
	if _, err := c2.Do(ctx, http.MethodGet, c.URL("/ok", nil), nil); err == nil || !strings.Contains(err.Error(), "TOKEN is empty") {
		t.Errorf("missing token: err = %v", err)
	}
}
