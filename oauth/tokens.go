package oauth

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// Defaults of Config.
const (
	// LifetimeDefault is how long an access token is taken to live when
	// its endpoint does not say (no expires_in): a 401 refreshes it sooner.
	LifetimeDefault = time.Hour
	// WaitPollDefault is how often a worker waiting for another's refresh
	// looks for the new token.
	WaitPollDefault = 25 * time.Millisecond
	// maxMargin caps how long before its expiry a token is refreshed.
	maxMargin = time.Minute
)

// Config is what Tokens needs.
type Config struct {
	// Source is the source with auth type oauth2. Required.
	Source *config.Source
	// Key encrypts the tokens kept in Redis and Postgres (ParseKey).
	// Required with Redis or for grant refresh_token.
	Key []byte
	// HTTP sends the token requests. Default: a client through the
	// source's address guard (upstream.NewTransport) that follows no
	// redirect.
	HTTP *http.Client
	// Getenv reads the client's credentials. Default os.Getenv.
	Getenv func(string) string
	// Redis, when set, shares the access token with the fleet: one
	// worker refreshes, the others wait for it. Default none: the token
	// lives in this process only (tidemark preview).
	Redis redis.UniversalClient
	// Store keeps the refresh tokens the endpoint rotates. Required for
	// grant refresh_token.
	Store *store.Store
	// Log notes refreshes (never a token). Default: discard.
	Log *slog.Logger
	// WaitPoll is how often a waiting worker looks for the token another
	// is refreshing. Default WaitPollDefault.
	WaitPoll time.Duration
}

// Tokens supplies one source's access tokens (upstream.Tokens).
type Tokens struct {
	cfg  Config
	auth *config.Auth
	seal *sealer
	// sem lets one goroutine of the process at a time past the in-process
	// token (a channel, not a mutex, so that waiting honours ctx).
	sem chan struct{}
	// memo is the token this process last saw; guarded by sem.
	memo token
	// failGen counts the refusals this process met; lastFail is the last
	// (guarded by sem). A caller that waited for sem while the one before
	// it met a refusal fails with it rather than asking again.
	failGen  atomic.Int64
	lastFail error
	// cacheKey names the token in Redis: the source and a fingerprint of
	// what bought it, so that a changed config does not use an old token.
	cacheKey string
}

var _ upstream.Tokens = (*Tokens)(nil)

// token is an access token and when it is to be refreshed.
type token struct {
	Value   string    `json:"t"`
	Refresh time.Time `json:"r"`
}

func (t token) usable(stale string, now time.Time) bool {
	return t.Value != "" && t.Value != stale && now.Before(t.Refresh)
}

// New returns the token source of cfg.Source. Without a key it refuses
// what would have to store a token: grant refresh_token, and a fleet
// cache.
func New(cfg Config) (*Tokens, error) {
	src := cfg.Source
	a := src.Auth
	if a == nil || a.Type != config.AuthOAuth2 {
		return nil, fmt.Errorf("source %s: auth type is not oauth2", src.Name)
	}
	if len(cfg.Key) == 0 {
		why := "to share access tokens with the fleet through Redis, encrypted"
		if a.GrantType == config.GrantRefreshToken {
			why = "to store the refresh tokens its endpoint rotates, encrypted"
		}
		if a.GrantType == config.GrantRefreshToken || cfg.Redis != nil {
			return nil, fmt.Errorf("source %s: auth type oauth2 needs %s %s: %w (set it to 32 random bytes: openssl rand -hex 32)",
				src.Name, KeyEnv, why, ErrNoKey)
		}
	}
	if a.GrantType == config.GrantRefreshToken && cfg.Store == nil {
		return nil, fmt.Errorf("source %s: grant_type refresh_token needs the database, to store rotated refresh tokens", src.Name)
	}
	t := &Tokens{cfg: cfg, auth: a, sem: make(chan struct{}, 1)}
	if t.cfg.Getenv == nil {
		t.cfg.Getenv = os.Getenv
	}
	if len(cfg.Key) > 0 {
		s, err := newSealer(cfg.Key)
		if err != nil {
			return nil, err
		}
		t.seal = s
	}
	if t.cfg.HTTP == nil {
		tr, err := upstream.NewTransport(src, src.AllowHosts)
		if err != nil {
			return nil, err
		}
		// A redirect would carry the client's credentials (a 307 or 308
		// resends the form) to wherever the answer points: none is followed.
		t.cfg.HTTP = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	t.cfg.Log = cmp.Or(t.cfg.Log, slog.New(slog.DiscardHandler))
	t.cfg.WaitPoll = cmp.Or(t.cfg.WaitPoll, WaitPollDefault)
	t.cacheKey = "tidemark:oauth:" + src.Name + ":" + t.fingerprint()
	return t, nil
}

// fingerprint is a short hash of what the token is bought with; the
// client secret is left out (a changed secret buys the same kind of token).
func (t *Tokens) fingerprint() string {
	a := t.auth
	h := sha256.New()
	for _, s := range []string{a.GrantType, a.TokenURL, t.cfg.Getenv(a.ClientIDEnv), strings.Join(a.Scopes, " ")} {
		h.Write([]byte(s + "\x00"))
	}
	for _, k := range slices.Sorted(maps.Keys(a.TokenParams)) {
		h.Write([]byte(k + "=" + a.TokenParams[k] + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Token returns a current access token; see upstream.Tokens.
func (t *Tokens) Token(ctx context.Context, stale string) (string, error) {
	failGen := t.failGen.Load()
	select {
	case t.sem <- struct{}{}:
		defer func() { <-t.sem }()
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if t.memo.usable(stale, time.Now()) {
		return t.memo.Value, nil
	}
	if t.failGen.Load() != failGen {
		return "", t.lastFail
	}
	var (
		tok token
		err error
	)
	if t.cfg.Redis == nil {
		tok, err = t.refresh(ctx)
	} else {
		tok, err = t.fleetToken(ctx, stale)
	}
	if err != nil {
		if _, ok := errors.AsType[*upstream.TokenError](err); ok {
			t.lastFail = err
			t.failGen.Add(1)
		}
		return "", err
	}
	t.memo = tok
	return tok.Value, nil
}

// fleetToken reads the fleet's token from Redis, or refreshes it under the
// fleet's lock, or waits for the worker that holds the lock to.
func (t *Tokens) fleetToken(ctx context.Context, stale string) (token, error) {
	lockKey := t.cacheKey + ":lock"
	owner := rand.Text()
	// The lock outlives a refresh that hangs to the source's timeout.
	lease := t.cfg.Source.RequestTimeout() + 5*time.Second
	failures, err := t.failures(ctx)
	if err != nil {
		return token{}, err
	}
	for {
		if tok, err := t.cached(ctx); err != nil || tok.usable(stale, time.Now()) {
			return tok, err
		}
		if err := t.failedMeanwhile(ctx, failures); err != nil {
			return token{}, err
		}
		locked, err := t.cfg.Redis.SetNX(ctx, lockKey, owner, lease).Result()
		if err != nil {
			return token{}, fmt.Errorf("source %s: oauth2 token lock: %w", t.cfg.Source.Name, err)
		}
		if locked {
			return t.refreshLocked(ctx, stale, lockKey, owner)
		}
		select {
		case <-time.After(t.cfg.WaitPoll):
		case <-ctx.Done():
			return token{}, ctx.Err()
		}
	}
}

// releaseScript deletes the lock only if it is still ours.
var releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// refreshLocked refreshes the token with the fleet's lock held, unless the
// token cached since the last look will do.
func (t *Tokens) refreshLocked(ctx context.Context, stale, lockKey, owner string) (token, error) {
	defer releaseScript.Run(context.WithoutCancel(ctx), t.cfg.Redis, []string{lockKey}, owner)
	if tok, err := t.cached(ctx); err != nil || tok.usable(stale, time.Now()) {
		return tok, err
	}
	tok, err := t.refresh(ctx)
	if err != nil {
		t.shareFailure(ctx, err)
		return tok, err
	}
	// A token due at once is not shared: Redis would keep one with a
	// negative expiry for ever.
	if ttl := time.Until(tok.Refresh); ttl >= time.Millisecond {
		sealed := t.seal.seal(mustJSON(tok), t.cacheKey)
		if err := t.cfg.Redis.Set(ctx, t.cacheKey, sealed, ttl).Err(); err != nil {
			// The token is good: this process uses it; the others refresh.
			t.cfg.Log.Warn("oauth2 access token not shared through Redis", "source", t.cfg.Source.Name, "error", err)
		}
	}
	return tok, nil
}

// failureTTL is how long a failed refresh's cause stays for the workers
// that waited on it.
const failureTTL = time.Minute

// failures is the fleet's count of failed refreshes of this token.
func (t *Tokens) failures(ctx context.Context) (int64, error) {
	n, err := t.cfg.Redis.Get(ctx, t.cacheKey+":failures").Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("source %s: read oauth2 token state from Redis: %w", t.cfg.Source.Name, err)
	}
	return n, nil
}

// shareFailure records a token endpoint's refusal for the workers waiting
// on this refresh: they fail with its cause rather than each asking the
// endpoint again. Other failures (the environment, the store) are this
// worker's own, and the next worker tries for itself.
func (t *Tokens) shareFailure(ctx context.Context, err error) {
	var te *upstream.TokenError
	if !errors.As(err, &te) {
		return
	}
	ctx = context.WithoutCancel(ctx)
	pipe := t.cfg.Redis.TxPipeline()
	pipe.Set(ctx, t.cacheKey+":failure", mustJSON(sharedFailure{Source: te.Source, URL: te.URL, Status: te.Status,
		Code: te.Code, Description: te.Description, Cause: errText(te.Err)}), failureTTL)
	pipe.Incr(ctx, t.cacheKey+":failures")
	pipe.Expire(ctx, t.cacheKey+":failures", failureTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		t.cfg.Log.Warn("oauth2 refresh failure not shared through Redis", "source", t.cfg.Source.Name, "error", err)
	}
}

// sharedFailure is a TokenError as kept in Redis: no credential, only what
// the error shows.
type sharedFailure struct {
	Source, URL, Code, Description, Cause string
	Status                                int
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// failedMeanwhile is the refusal another worker met while this one waited
// (the fleet's failure count moved past before), or nil.
func (t *Tokens) failedMeanwhile(ctx context.Context, before int64) error {
	now, err := t.failures(ctx)
	if err != nil || now == before {
		return err
	}
	var f sharedFailure
	b, err := t.cfg.Redis.Get(ctx, t.cacheKey+":failure").Bytes()
	if err != nil || json.Unmarshal(b, &f) != nil {
		return nil // gone already: try for ourselves
	}
	te := &upstream.TokenError{Source: f.Source, URL: f.URL, Status: f.Status, Code: f.Code, Description: f.Description}
	if f.Cause != "" {
		te.Err = errors.New(f.Cause)
	}
	return te
}

// cached is the fleet's token in Redis; the zero token when there is none,
// or it does not decrypt (the key changed: it is refreshed and replaced).
func (t *Tokens) cached(ctx context.Context) (token, error) {
	b, err := t.cfg.Redis.Get(ctx, t.cacheKey).Bytes()
	if errors.Is(err, redis.Nil) {
		return token{}, nil
	}
	if err != nil {
		return token{}, fmt.Errorf("source %s: read oauth2 token from Redis: %w", t.cfg.Source.Name, err)
	}
	var tok token
	plain, err := t.seal.open(b, t.cacheKey)
	if err != nil || json.Unmarshal(plain, &tok) != nil {
		return token{}, nil
	}
	return tok, nil
}

// refresh buys a new access token from the token endpoint, storing the
// refresh token it rotates before anything else.
func (t *Tokens) refresh(ctx context.Context) (token, error) {
	src := t.cfg.Source
	g, err := request(t.auth, t.cfg.Getenv)
	if err != nil {
		return token{}, fmt.Errorf("source %s: %w", src.Name, err)
	}
	var seed refreshSeed
	if t.auth.GrantType == config.GrantRefreshToken {
		if seed, err = t.refreshToken(ctx); err != nil {
			return token{}, err
		}
		g.form.Set("refresh_token", seed.token)
		g.secrets = append(g.secrets, seed.token)
	}
	sent := time.Now()
	ans, err := post(ctx, t.cfg.HTTP, src, g)
	metrics.ObserveAuthRefresh(src.Name, err)
	if err != nil {
		return token{}, err
	}
	if t.auth.GrantType == config.GrantRefreshToken && ans.RefreshToken != "" && ans.RefreshToken != seed.token {
		if err := t.saveRefreshToken(ctx, ans.RefreshToken, seed.sha); err != nil {
			return token{}, err
		}
	}
	lifetime := LifetimeDefault
	if ans.ExpiresIn > 0 {
		lifetime = time.Duration(ans.ExpiresIn) * time.Second
	}
	t.cfg.Log.Info("oauth2 access token refreshed", "source", src.Name, "lifetime", lifetime.String())
	// Counted from when the request was sent: the token was minted no
	// earlier.
	return token{Value: ans.AccessToken, Refresh: sent.Add(lifetime - min(lifetime/10, maxMargin))}, nil
}

// refreshSeed is the refresh token to send and the hash of the
// environment's token it descends from.
type refreshSeed struct{ token, sha string }

// refreshToken is the stored rotated refresh token, or the environment's
// when none is stored or the environment holds a different one than the
// stored one descends from (an operator's re-seed).
func (t *Tokens) refreshToken(ctx context.Context) (refreshSeed, error) {
	src, env := t.cfg.Source.Name, t.auth.RefreshTokenEnv
	fromEnv := t.cfg.Getenv(env)
	envSeed := refreshSeed{token: fromEnv, sha: sha256Hex(fromEnv)}
	row, err := t.cfg.Store.OAuthToken(ctx, src)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if fromEnv == "" {
			return envSeed, fmt.Errorf("source %s: environment variable %s (auth.refresh_token_env) is empty and no rotated refresh token is stored", src, env)
		}
		return envSeed, nil
	case err != nil:
		return envSeed, err
	case fromEnv != "" && envSeed.sha != row.SeedSHA256:
		t.cfg.Log.Info("oauth2 refresh token re-seeded from the environment", "source", src, "env", env)
		return envSeed, nil
	}
	plain, err := t.seal.open(row.RefreshTokenEnc, src)
	if err != nil {
		return envSeed, fmt.Errorf("source %s: the stored refresh token %v (was the key changed?): restore the old key, or put a new refresh token in %s to re-seed",
			src, err, env)
	}
	return refreshSeed{token: string(plain), sha: row.SeedSHA256}, nil
}

// saveRefreshToken stores a rotated refresh token, encrypted: the one sent
// is dead from now on. It is saved even if ctx ends now.
func (t *Tokens) saveRefreshToken(ctx context.Context, rotated, seedSHA string) error {
	src := t.cfg.Source.Name
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := t.cfg.Store.SaveOAuthToken(ctx, store.OAuthToken{Source: src, RefreshTokenEnc: t.seal.seal([]byte(rotated), src),
		SeedSHA256: seedSHA, RotatedAt: time.Now()})
	if err != nil {
		return fmt.Errorf("source %s: the token endpoint rotated the refresh token but it could not be stored: %w", src, err)
	}
	return nil
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
