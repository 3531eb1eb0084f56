package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tidemark/tidemark/config"
)

// countingTokens hands out tok-1, tok-2, ...: a new one whenever the
// caller reports the current one stale.
type countingTokens struct {
	mu      sync.Mutex
	n       int
	refused []string
}

func (c *countingTokens) Token(_ context.Context, stale string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 || stale == fmt.Sprintf("tok-%d", c.n) {
		c.n++
	}
	if stale != "" {
		c.refused = append(c.refused, stale)
	}
	return fmt.Sprintf("tok-%d", c.n), nil
}

// TestUnauthorizedRefreshesOnce: a 401 gets one new token and one more
// try; a second 401 stands, and is not retried again.
func TestUnauthorizedRefreshesOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		accepted string // the token the API takes; "" none
		wantErr  string
		wantReqs int
	}{
		{"a refreshed token passes", "tok-2", "", 2},
		{"the first token passes", "tok-1", "", 1},
		{"a second 401 stands", "", "HTTP 401", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu   sync.Mutex
				sent []string
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				sent = append(sent, r.Header.Get("Authorization"))
				mu.Unlock()
				if r.Header.Get("Authorization") != "Bearer "+tt.accepted || tt.accepted == "" {
					http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
					return
				}
				fmt.Fprint(w, `[]`)
			}))
			t.Cleanup(srv.Close)
			tokens := &countingTokens{}
			src := &config.Source{Name: "s", BaseURL: srv.URL, AllowPrivate: true,
				Auth: &config.Auth{Type: config.AuthOAuth2, GrantType: config.GrantClientCredentials}}
			c, err := New(src, Options{Tokens: tokens})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(context.Background(), http.MethodGet, srv.URL+"/items", nil)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatal(err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want %s", err, tt.wantErr)
			}
			if got := len(sent); got != tt.wantReqs {
				t.Errorf("requests sent: %d (%q), want %d", got, sent, tt.wantReqs)
			}
			reqs := Requests(err)
			if resp != nil {
				reqs = resp.Requests
			}
			if reqs != tt.wantReqs {
				t.Errorf("requests counted: %d, want %d", reqs, tt.wantReqs)
			}
			var se *StatusError
			if errors.As(err, &se) && strings.Contains(se.Body, "tok-") {
				t.Errorf("the error body quotes a token: %s", se.Body)
			}
		})
	}
}

// TestOAuth2NeedsTokens: a client for an oauth2 source without a token
// source is a wiring error, caught at New.
func TestOAuth2NeedsTokens(t *testing.T) {
	t.Parallel()
	src := &config.Source{Name: "s", BaseURL: "https://api.example.com", Auth: &config.Auth{Type: config.AuthOAuth2}}
	if _, err := New(src, Options{}); err == nil {
		t.Fatal("New accepted an oauth2 source without Tokens")
	}
}
