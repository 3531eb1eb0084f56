package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
)

// TestBudgetSpent: a 403 or 429 whose rate-limit headers say nothing
// remains is marked RateLimited (GitHub's answer to its primary limit is a
// 403), so the task waits for the reset instead of dying; any other 403 is
// not, and neither is one from a source that ignores its headers.
func TestBudgetSpent(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/spent":
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", "30")
		case "/left":
			w.Header().Set("X-RateLimit-Remaining", "12")
			w.Header().Set("X-RateLimit-Reset", "30")
		case "/spent429":
			w.Header().Set("RateLimit", `"default";r=0;t=30`)
			http.Error(w, `{"message":"slow down"}`, http.StatusTooManyRequests)
			return
		}
		http.Error(w, `{"message":"API rate limit exceeded"}`, http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name, method, path, headers string
		want                        bool
	}{
		{"GET budget spent", http.MethodGet, "/spent", "", true},
		{"HEAD budget spent", http.MethodHead, "/spent", "", true},
		{"429 budget spent", http.MethodGet, "/spent429", "", true},
		{"budget left", http.MethodGet, "/left", "", false},
		{"no headers", http.MethodGet, "/forbidden", "", false},
		{"headers ignored", http.MethodGet, "/spent", config.HeadersIgnore, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &config.Source{Name: "s", BaseURL: srv.URL, AllowPrivate: true, Timeout: config.Duration(5 * time.Second),
				MaxBody: 1 << 20, RateLimitHeaders: tt.headers}
			c, err := New(src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Do(context.Background(), tt.method, c.URL(tt.path, nil), nil)
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a *StatusError", err)
			}
			if se.RateLimited != tt.want {
				t.Errorf("HTTP %d: RateLimited = %v, want %v", se.Code, se.RateLimited, tt.want)
			}
		})
	}
}
