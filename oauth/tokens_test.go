package oauth_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/oauthtest"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/oauth"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

const (
	clientID     = "tidemark-test-client"
	clientSecret = "cs-0123456789abcdef"
	seedToken    = "rt-initial-0123456789"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// env is a fixed environment for the client's credentials.
func env(refresh string) func(string) string {
	return func(name string) string {
		return map[string]string{"CLIENT_ID": clientID, "CLIENT_SECRET": clientSecret, "REFRESH_TOKEN": refresh}[name]
	}
}

func source(tokenURL, grant string) *config.Source {
	a := &config.Auth{Type: config.AuthOAuth2, GrantType: grant, TokenURL: tokenURL,
		ClientIDEnv: "CLIENT_ID", ClientSecretEnv: "CLIENT_SECRET", AuthStyle: config.AuthStyleBody}
	if grant == config.GrantRefreshToken {
		a.RefreshTokenEnv = "REFRESH_TOKEN"
	}
	return &config.Source{Name: "ledger", BaseURL: "http://127.0.0.1", AllowPrivate: true, Auth: a, Timeout: config.Duration(5 * time.Second)}
}

type deps struct {
	store *store.Store
	redis redis.UniversalClient
}

func setup(t *testing.T) deps {
	t.Helper()
	st, err := store.Open(context.Background(), testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return deps{store: st, redis: rdb}
}

// worker is one worker's token source: its own process cache, the
// fleet's Redis and Postgres.
func (d deps) worker(t *testing.T, src *config.Source, getenv func(string) string) *oauth.Tokens {
	t.Helper()
	tok, err := oauth.New(oauth.Config{Source: src, Key: testKey, Redis: d.redis, Store: d.store, Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestFleetRefreshesOnce: many goroutines on several workers ask for a
// token at once; the endpoint is asked once, and all get the same token.
func TestFleetRefreshesOnce(t *testing.T) {
	t.Parallel()
	d := setup(t)
	auth := oauthtest.New(t, clientID, clientSecret, seedToken, time.Hour)
	src := source(auth.TokenURL(), config.GrantRefreshToken)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[string]int{}
	)
	for range 4 {
		w := d.worker(t, src, env(seedToken))
		for range 8 {
			wg.Go(func() {
				tok, err := w.Token(context.Background(), "")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[tok]++
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if n := auth.Hits(); n != 1 {
		t.Errorf("32 callers on 4 workers: %d token requests, want 1", n)
	}
	if len(seen) != 1 {
		t.Errorf("callers got %d different tokens, want 1", len(seen))
	}
}

// TestFleetFailsOnce: while one worker's refresh is refused, the callers
// waiting for it on every worker fail with its cause instead of each
// asking the endpoint again.
func TestFleetFailsOnce(t *testing.T) {
	t.Parallel()
	d := setup(t)
	auth := oauthtest.New(t, clientID, clientSecret, seedToken, time.Hour)
	gate := make(chan struct{})
	auth.Fail(func() (int, string) {
		<-gate // held until every caller is waiting
		return http.StatusBadRequest, `{"error":"invalid_grant","error_description":"refresh token revoked"}`
	})
	src := source(auth.TokenURL(), config.GrantRefreshToken)
	var started, done sync.WaitGroup
	errs := make(chan error, 32)
	for range 4 {
		w := d.worker(t, src, env(seedToken))
		for range 8 {
			started.Add(1)
			done.Go(func() {
				started.Done()
				_, err := w.Token(context.Background(), "")
				errs <- err
			})
		}
	}
	started.Wait()
	waitFor(t, func() bool { return auth.Hits() == 1 })
	close(gate)
	done.Wait()
	close(errs)
	for err := range errs {
		var te *upstream.TokenError
		if !errors.As(err, &te) || te.Code != "invalid_grant" || !jobs.Permanent(err) {
			t.Errorf("a caller got %v, want the endpoint's invalid_grant", err)
		}
	}
	// A worker whose first caller came after the refusal asks again: at
	// most one more; without sharing the refusal, each of the 32 callers
	// would ask.
	if n := auth.Hits(); n > 2 {
		t.Errorf("32 callers on 4 workers, a refused refresh: %d token requests, want 1 (2 at most)", n)
	}
}

// waitFor waits up to 10s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond) // polling interval of the condition
	}
}

// TestStaleTokenRefreshedOnce: a token the upstream refused (401) is
// replaced once for every worker that saw the refusal, not once each.
func TestStaleTokenRefreshedOnce(t *testing.T) {
	t.Parallel()
	d := setup(t)
	auth := oauthtest.New(t, clientID, clientSecret, "", time.Hour)
	src := source(auth.TokenURL(), config.GrantClientCredentials)
	a, b := d.worker(t, src, env("")), d.worker(t, src, env(""))
	first, err := a.Token(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if tok, _ := b.Token(context.Background(), ""); tok != first {
		t.Fatal("the second worker did not take the fleet's token")
	}
	var wg sync.WaitGroup
	got := make([]string, 2)
	for i, w := range []*oauth.Tokens{a, b} {
		wg.Go(func() {
			tok, err := w.Token(context.Background(), first)
			if err != nil {
				t.Error(err)
			}
			got[i] = tok
		})
	}
	wg.Wait()
	if got[0] == first || got[0] != got[1] {
		t.Errorf("after a refusal: tokens %q and %q, want one new token for both", got[0], got[1])
	}
	if n := auth.Hits(); n != 2 {
		t.Errorf("token requests: %d, want 2 (the first token, one refresh after the refusal)", n)
	}
}

// TestRotatedRefreshTokenStoredEncrypted: the rotated token is stored, not
// in the clear, and used by a worker with a cold cache (a restart); the
// environment's token, refused by now, is not sent again.
func TestRotatedRefreshTokenStoredEncrypted(t *testing.T) {
	t.Parallel()
	d := setup(t)
	auth := oauthtest.New(t, clientID, clientSecret, seedToken, time.Hour)
	src := source(auth.TokenURL(), config.GrantRefreshToken)
	if _, err := d.worker(t, src, env(seedToken)).Token(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	rotated := auth.RefreshToken()
	row, err := d.store.OAuthToken(context.Background(), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(row.RefreshTokenEnc, []byte(rotated)) || bytes.Contains(row.RefreshTokenEnc, []byte(seedToken)) {
		t.Fatal("the stored row holds a refresh token in the clear")
	}
	// A restart: no cached access token anywhere.
	if err := d.redis.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.worker(t, src, env(seedToken)).Token(context.Background(), ""); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if sent := auth.RefreshTokensSent(); len(sent) != 2 || sent[1] != rotated {
		t.Errorf("refresh tokens sent: %q, want the seed then the rotated one", sent)
	}

	// A re-seed: the operator puts a new token in the environment; it wins.
	d.redis.FlushDB(context.Background())
	reseed := "rt-operator-reseed-42"
	auth.Fail(nil)
	if _, err := d.worker(t, src, env(reseed)).Token(context.Background(), ""); err == nil {
		t.Fatal("a re-seed with a token the endpoint never issued succeeded")
	}
	if sent := auth.RefreshTokensSent(); sent[len(sent)-1] != reseed {
		t.Errorf("after a re-seed, sent %q, want the environment's new token", sent[len(sent)-1])
	}
}

// TestKeyChanged: a stored token that does not decrypt with the key in
// force fails with what to do, and sends nothing.
func TestKeyChanged(t *testing.T) {
	t.Parallel()
	d := setup(t)
	auth := oauthtest.New(t, clientID, clientSecret, seedToken, time.Hour)
	src := source(auth.TokenURL(), config.GrantRefreshToken)
	if _, err := d.worker(t, src, env(seedToken)).Token(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	d.redis.FlushDB(context.Background())
	other, err := oauth.New(oauth.Config{Source: src, Key: bytes.Repeat([]byte{9}, 32), Redis: d.redis, Store: d.store, Getenv: env(seedToken)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Token(context.Background(), "")
	want := "source ledger: the stored refresh token does not decrypt with TIDEMARK_SECRET_KEY (was the key changed?): restore the old key, or put a new refresh token in REFRESH_TOKEN to re-seed"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant %s", err, want)
	}
	if n := auth.Hits(); n != 1 {
		t.Errorf("token requests: %d, want 1 (none with an undecryptable token)", n)
	}
}

// TestRefreshFailure: the run's error names the endpoint's status and
// OAuth error fields, never a credential or the endpoint's query; 4xx is
// terminal, 5xx is retried.
func TestRefreshFailure(t *testing.T) {
	t.Parallel()
	d := setup(t)
	tests := []struct {
		name, body string
		status     int
		want       string
		terminal   bool
	}{
		{"invalid_grant", `{"error":"invalid_grant","error_description":"refresh token ` + seedToken + ` was revoked"}`, 400,
			"source ledger: refresh OAuth2 access token at URL/oauth/token: HTTP 400: invalid_grant (refresh token [REDACTED] was revoked)", true},
		{"invalid_client", `{"error":"invalid_client","error_description":"bad secret ` + clientSecret + `","access_token":"x"}`, 401,
			"source ledger: refresh OAuth2 access token at URL/oauth/token: HTTP 401: invalid_client (bad secret [REDACTED])", true},
		{"unavailable", `<html>upstream down, client_secret=` + clientSecret + `</html>`, 503,
			"source ledger: refresh OAuth2 access token at URL/oauth/token: HTTP 503", false},
		{"2xx without a token", `{"token_type":"Bearer","refresh_token":"` + seedToken + `"}`, 200,
			"source ledger: refresh OAuth2 access token at URL/oauth/token: HTTP 200: the answer has no access_token", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			auth := oauthtest.New(t, clientID, clientSecret, seedToken, time.Hour)
			auth.Fail(func() (int, string) { return tt.status, tt.body })
			src := source(auth.TokenURL()+"?tenant=secret-query", config.GrantRefreshToken)
			src.Name = "ledger"
			w, err := oauth.New(oauth.Config{Source: src, Key: testKey, Store: d.store, Getenv: env(seedToken)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = w.Token(context.Background(), "")
			want := strings.ReplaceAll(tt.want, "URL", auth.URL)
			if err == nil || err.Error() != want {
				t.Fatalf("error = %v\nwant %s", err, want)
			}
			var te *upstream.TokenError
			if !errors.As(err, &te) {
				t.Fatalf("%T is not a *upstream.TokenError", err)
			}
			if got := jobs.Permanent(err); got != tt.terminal {
				t.Errorf("terminal = %v, want %v", got, tt.terminal)
			}
		})
	}
}

// TestNeedsKey: without a key nothing that would store a token starts,
// and the error says what to set.
func TestNeedsKey(t *testing.T) {
	t.Parallel()
	d := setup(t)
	tests := []struct {
		name  string
		grant string
		redis redis.UniversalClient
		want  string
	}{
		{"refresh_token", config.GrantRefreshToken, nil, "source ledger: auth type oauth2 needs TIDEMARK_SECRET_KEY to store the refresh tokens its endpoint rotates, encrypted: TIDEMARK_SECRET_KEY is not set (set it to 32 random bytes: openssl rand -hex 32)"},
		{"client_credentials with a fleet cache", config.GrantClientCredentials, d.redis, "source ledger: auth type oauth2 needs TIDEMARK_SECRET_KEY to share access tokens with the fleet through Redis, encrypted: TIDEMARK_SECRET_KEY is not set (set it to 32 random bytes: openssl rand -hex 32)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := oauth.New(oauth.Config{Source: source("https://auth.example.com/token", tt.grant), Redis: tt.redis, Store: d.store})
			if !errors.Is(err, oauth.ErrNoKey) || err.Error() != tt.want {
				t.Errorf("error = %v\nwant %s", err, tt.want)
			}
		})
	}
	if _, err := oauth.New(oauth.Config{Source: source("https://auth.example.com/token", config.GrantClientCredentials)}); err != nil {
		t.Errorf("client_credentials in one process (preview) needs no key: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	for _, s := range []string{strings.Repeat("ab", 32), "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="} {
		if k, err := oauth.ParseKey(s); err != nil || len(k) != 32 {
			t.Errorf("ParseKey(%q) = %d bytes, %v", s, len(k), err)
		}
	}
	for _, s := range []string{"short", strings.Repeat("ab", 16)} {
		if _, err := oauth.ParseKey(s); err == nil || strings.Contains(err.Error(), s) {
			t.Errorf("ParseKey(%q): %v, want an error that does not quote the value", s, err)
		}
	}
}

// TestClientAuthStyle: auth_style basic sends the credentials in an
// Authorization header, which an endpoint that takes only that accepts.
func TestClientAuthStyle(t *testing.T) {
	t.Parallel()
	auth := oauthtest.New(t, clientID, clientSecret, "", time.Hour)
	auth.BasicOnly = true
	src := source(auth.TokenURL(), config.GrantClientCredentials)
	body, err := oauth.New(oauth.Config{Source: src, Getenv: env("")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := body.Token(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "HTTP 401: invalid_client") {
		t.Fatalf("auth_style body to a basic-only endpoint: %v, want invalid_client", err)
	}
	src.Auth.AuthStyle = config.AuthStyleBasic
	basic, err := oauth.New(oauth.Config{Source: src, Getenv: env(""), HTTP: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := basic.Token(context.Background(), ""); err != nil {
		t.Fatalf("auth_style basic: %v", err)
	}
}

// TestNoRedirect: a token endpoint that redirects does not get the
// client's credentials sent on; the redirect is the refresh's failure.
func TestNoRedirect(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/token", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirecting.Close)
	w, err := oauth.New(oauth.Config{Source: source(redirecting.URL+"/token", config.GrantClientCredentials), Getenv: env("")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Token(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "HTTP 307") {
		t.Errorf("error %v, want the endpoint's HTTP 307", err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}
