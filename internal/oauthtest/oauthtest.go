// Package oauthtest is a fake OAuth2 token endpoint for tests: it issues
// short-lived bearer tokens for grant client_credentials and
// refresh_token, rotates the refresh token on every use (the old one is
// refused with invalid_grant afterwards, as Xero, QuickBooks and most
// rotating providers do), and tells an API fake whether a request's token
// is current.
package oauthtest

import (
	"crypto/rand"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a running fake token endpoint at URL + "/oauth/token".
type Server struct {
	*httptest.Server
	ClientID, ClientSecret string
	// Lifetime is how long an access token lives (expires_in, whole seconds).
	Lifetime time.Duration
	// BasicOnly refuses client credentials sent in the form (auth_style basic).
	BasicOnly bool

	mu      sync.Mutex
	refresh string               // the one refresh token accepted
	access  map[string]time.Time // access token → expiry
	grants  []string             // refresh tokens sent, in order
	hits    int
	fail    func() (int, string)
}

// New starts a token endpoint; initialRefresh is the refresh token it
// accepts first ("" for client_credentials only).
func New(t testing.TB, clientID, clientSecret, initialRefresh string, lifetime time.Duration) *Server {
	t.Helper()
	s := &Server{ClientID: clientID, ClientSecret: clientSecret, Lifetime: lifetime,
		refresh: initialRefresh, access: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth/token", s.token)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// TokenURL is the endpoint's URL.
func (s *Server) TokenURL() string { return s.URL + "/oauth/token" }

// Hits is how many token requests came.
func (s *Server) Hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// RefreshToken is the refresh token the endpoint accepts now.
func (s *Server) RefreshToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh
}

// RefreshTokensSent are the refresh tokens the endpoint was sent, in order.
func (s *Server) RefreshTokensSent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.grants...)
}

// Fail makes every token request answer what f returns (nil: succeed); f
// is called without the server's lock, and may block.
func (s *Server) Fail(f func() (status int, body string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = f
}

// Authorized reports whether r carries a bearer token the endpoint issued
// and that has not expired.
func (s *Server) Authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, issued := s.access[tok]
	return ok && issued && time.Now().Before(exp)
}

// AccessTokens are the access tokens issued so far.
func (s *Server) AccessTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.access))
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits++
	fail := s.fail
	s.mu.Unlock()
	if fail != nil { // outside the lock: it may block until the test lets it answer
		status, body := fail()
		writeJSON(w, status, json.RawMessage(body))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "form does not parse")
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		if s.BasicOnly {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication must use HTTP Basic")
			return
		}
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != s.ClientID || secret != s.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
		return
	}
	out := map[string]any{"token_type": "Bearer", "expires_in": int(s.Lifetime / time.Second)}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
	case "refresh_token":
		sent := r.PostForm.Get("refresh_token")
		s.grants = append(s.grants, sent)
		if sent == "" || sent != s.refresh {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "refresh token is invalid, expired or already used")
			return
		}
		s.refresh = "rt-" + rand.Text()
		out["refresh_token"] = s.refresh
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	tok := "at-" + rand.Text()
	s.access[tok] = time.Now().Add(s.Lifetime)
	out["access_token"] = tok
	writeJSON(w, http.StatusOK, out)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
