package examples_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/oauthtest"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// Credentials of the OAuth2 example: dummies the fake endpoint checks.
const (
	xeroClientID     = "9A4F7E2C1B8D4E6F9A0B1C2D3E4F5A6B"
	xeroClientSecret = "xero-secret-0000000000000000000000000000"
	xeroSeed         = "rt-seed-0000000000000000000000000000"
	xeroTenant       = "70784a63-d24b-46a9-a4db-0e70a274b056"
	// xeroInvoices, xeroPageSize: 40 pages for each of two resources.
	xeroInvoices = 120
	xeroPageSize = 3
	// xeroTokenLife is far shorter than the sync: tokens expire during it.
	xeroTokenLife = time.Second
	// xeroLatency is the fake API's time to answer a page, so that the
	// sync outlasts several access tokens.
	xeroLatency = 40 * time.Millisecond
)

// TestOAuth2ExampleSyncs runs the OAuth2 example (Xero invoices, grant
// refresh_token, a refresh token rotated on every use) through two real
// workers sharing Redis and Postgres, against a token endpoint whose
// access tokens live a second and a sync that takes several: every record
// arrives; the fleet refreshes about once per token lifetime, not once per
// worker; the rotated refresh token is stored encrypted and carries a
// restarted worker on; no token is in a run, an event or a log line.
func TestOAuth2ExampleSyncs(t *testing.T) {
	t.Setenv("XERO_CLIENT_ID", xeroClientID)
	t.Setenv("XERO_CLIENT_SECRET", xeroClientSecret)
	t.Setenv("XERO_REFRESH_TOKEN", xeroSeed)
	t.Setenv("XERO_TENANT_ID", xeroTenant)
	auth := oauthtest.New(t, xeroClientID, xeroClientSecret, xeroSeed, xeroTokenLife)
	auth.BasicOnly = true // Xero's identity server takes the client in a Basic header
	api := newXeroAPI(auth)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)

	conf := xeroConfig(t, srv.URL, auth.TokenURL())
	src := &conf.Sources[0]

	dbURL, redisURL := testenv.Database(t), testenv.Redis(t)
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fl := startOAuthFleet(t, conf, dbURL, redisURL, log, 2)

	started := time.Now()
	for _, res := range src.Resources {
		fl.enqueue(t, res)
	}
	for _, res := range src.Resources {
		fl.waitSucceeded(t, store.Key{Source: src.Name, Resource: res.Name}, 0)
	}
	elapsed := time.Since(started)

	for _, res := range src.Resources {
		var n int64
		fl.store.DBForTests().Raw(`SELECT count(*) FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`, src.Name, res.Name).Scan(&n)
		if n != xeroInvoices {
			t.Errorf("%s: %d invoices stored, want %d", res.Name, n, xeroInvoices)
		}
	}
	// One refresh per token lifetime for the fleet (refreshed a tenth of
	// the lifetime early), and one for each token refused in flight;
	// refreshing per worker would be about twice that.
	hits := auth.Hits()
	perLife := xeroTokenLife - xeroTokenLife/10
	if limit := 1 + int(elapsed/perLife) + int(api.refused.Load()); hits > limit || hits < 2 {
		t.Errorf("%s of syncing with %s tokens: %d token requests, want 2 to %d", elapsed.Round(time.Millisecond), xeroTokenLife, hits, limit)
	}
	t.Logf("%s of syncing, %d pages, %d token requests, %d answered 401", elapsed.Round(time.Millisecond), api.pages.Load(), hits, api.refused.Load())

	// The rotated refresh token is stored, never in the clear.
	rotated := auth.RefreshToken()
	row, err := fl.store.OAuthToken(context.Background(), src.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range append(auth.RefreshTokensSent(), rotated) {
		if bytes.Contains(row.RefreshTokenEnc, []byte(tok)) {
			t.Fatal("oauth_tokens holds a refresh token in the clear")
		}
	}

	// A restart with a cold cache: the environment's seed is refused by
	// now; the stored token carries the new worker on.
	fl.stop()
	before := len(auth.RefreshTokensSent())
	rdb := redisClient(t, redisURL)
	if keys, _ := rdb.Keys(context.Background(), "tidemark:oauth:*").Result(); len(keys) > 0 {
		rdb.Del(context.Background(), keys...)
	}
	fl = startOAuthFleet(t, conf, dbURL, redisURL, log, 1)
	key := store.Key{Source: src.Name, Resource: src.Resources[0].Name}
	last := fl.lastRunID(t, key)
	fl.enqueue(t, src.Resources[0])
	fl.waitSucceeded(t, key, last)
	if sent := auth.RefreshTokensSent(); len(sent) <= before || sent[before] != rotated {
		t.Errorf("after the restart the worker did not send the stored refresh token first (%d sent before, %d after)", before, len(sent))
	}

	assertNoSecrets(t, fl.store, rdb, logs.String(), append(append(auth.AccessTokens(), auth.RefreshTokensSent()...), auth.RefreshToken(), xeroClientSecret))
}

// TestOAuth2ClientCredentialsSyncs runs the example as a Xero custom
// connection (grant client_credentials, no refresh token) through two
// workers, with access tokens that expire several times during the sync:
// every record arrives, and the fleet buys about one token per lifetime.
func TestOAuth2ClientCredentialsSyncs(t *testing.T) {
	t.Setenv("XERO_CLIENT_ID", xeroClientID)
	t.Setenv("XERO_CLIENT_SECRET", xeroClientSecret)
	t.Setenv("XERO_TENANT_ID", xeroTenant)
	auth := oauthtest.New(t, xeroClientID, xeroClientSecret, "", xeroTokenLife)
	api := newXeroAPI(auth)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	conf := xeroConfig(t, srv.URL, auth.TokenURL())
	src := &conf.Sources[0]
	src.Auth.GrantType, src.Auth.RefreshTokenEnv, src.Auth.AuthStyle = config.GrantClientCredentials, "", config.AuthStyleBody
	if err := conf.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	fl := startOAuthFleet(t, conf, testenv.Database(t), testenv.Redis(t), slog.New(slog.NewTextHandler(logs, nil)), 2)
	started := time.Now()
	for _, res := range src.Resources {
		fl.enqueue(t, res)
	}
	for _, res := range src.Resources {
		fl.waitSucceeded(t, store.Key{Source: src.Name, Resource: res.Name}, 0)
		var n int64
		fl.store.DBForTests().Raw(`SELECT count(*) FROM records WHERE source = ? AND resource = ? AND deleted_at IS NULL`, src.Name, res.Name).Scan(&n)
		if n != xeroInvoices {
			t.Errorf("%s: %d invoices stored, want %d", res.Name, n, xeroInvoices)
		}
	}
	elapsed := time.Since(started)
	hits, perLife := auth.Hits(), xeroTokenLife-xeroTokenLife/10
	if limit := 1 + int(elapsed/perLife) + int(api.refused.Load()); hits > limit || hits < 2 {
		t.Errorf("%s of syncing with %s tokens: %d token requests, want 2 to %d", elapsed.Round(time.Millisecond), xeroTokenLife, hits, limit)
	}
	if strings.Contains(logs.String(), xeroClientSecret) {
		t.Error("the logs hold the client secret")
	}
}

// xeroConfig is the example as written but for its URLs and page size,
// with a second resource over the same invoices, so that two workers
// fetch at once and need tokens at once.
func xeroConfig(t *testing.T, apiURL, tokenURL string) *config.Config {
	t.Helper()
	conf, err := config.Load("oauth2_api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := &conf.Sources[0]
	src.BaseURL, src.AllowPrivate, src.RateLimit = apiURL, true, nil
	src.Auth.TokenURL = tokenURL
	src.Resources[0].Pagination.Limit = xeroPageSize
	twin := src.Resources[0]
	twin.Name = "invoices_twin"
	src.Resources = append(src.Resources, twin)
	return conf
}

// assertNoSecrets fails the test if any of secrets is in a run, an outbox
// event, the logs, or anything in Redis (task payloads and errors among
// it; the token cache is encrypted).
func assertNoSecrets(t *testing.T, st *store.Store, rdb *redis.Client, logs string, secrets []string) {
	t.Helper()
	ctx := context.Background()
	var rows []string
	if err := st.DBForTests().Raw(`SELECT row_to_json(r)::text FROM sync_runs r UNION ALL SELECT row_to_json(o)::text FROM outbox o`).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	var inRedis strings.Builder // every key and value: task payloads, errors, caches
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var vals []string
		switch typ, _ := rdb.Type(ctx, k).Result(); typ {
		case "string":
			vals = []string{rdb.Get(ctx, k).Val()}
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "list":
			vals = rdb.LRange(ctx, k, 0, -1).Val()
		case "set":
			vals = rdb.SMembers(ctx, k).Val()
		case "zset":
			vals = rdb.ZRange(ctx, k, 0, -1).Val()
		}
		inRedis.WriteString(k + " " + strings.Join(vals, " ") + "\n")
	}
	places := map[string]string{"sync_runs and outbox": strings.Join(rows, "\n"), "logs": logs, "Redis": inRedis.String()}
	for where, text := range places {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s hold a token or secret", where)
			}
		}
	}
}

// TestOAuth2ExampleNeedsKey: a worker for the OAuth2 example does not
// start without TIDEMARK_SECRET_KEY, and says why.
func TestOAuth2ExampleNeedsKey(t *testing.T) {
	t.Parallel()
	conf, err := config.Load("oauth2_api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = worker.New(worker.Config{}, conf, st, redisOpt, slog.New(slog.DiscardHandler))
	want := "source xero: auth type oauth2 needs TIDEMARK_SECRET_KEY to store the refresh tokens its endpoint rotates, encrypted"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("worker.New without a key: %v, want %q", err, want)
	}
}

// xeroAPI answers GET /api.xro/2.0/Invoices as Xero does, for a bearer
// token the fake endpoint issued and that has not expired.
type xeroAPI struct {
	auth     *oauthtest.Server
	invoices []map[string]any
	pages    atomic.Int64
	refused  atomic.Int64
}

func newXeroAPI(auth *oauthtest.Server) *xeroAPI {
	a := &xeroAPI{auth: auth}
	for i := range xeroInvoices {
		a.invoices = append(a.invoices, map[string]any{
			"Type": "ACCREC", "InvoiceID": fmt.Sprintf("a3f1c2d4-0000-4000-8000-%012d", i+1),
			"InvoiceNumber": fmt.Sprintf("INV-%04d", i+1), "Reference": "", "Status": "AUTHORISED",
			"Contact":  map[string]any{"ContactID": "025867f1-d741-4d6b-b1af-9ac774b59ba7", "Name": "City Agency"},
			"SubTotal": float64(100 + i), "TotalTax": 15.0, "Total": float64(115 + i), "CurrencyCode": "NZD",
			"UpdatedDateUTC": fmt.Sprintf("/Date(%d+0000)/", 1718000000000+int64(i)*60000),
		})
	}
	return a
}

func (a *xeroAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api.xro/2.0/Invoices" {
		http.NotFound(w, r)
		return
	}
	if !a.auth.Authorized(r) {
		a.refused.Add(1)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, "application/json", map[string]any{"Type": nil, "Title": "Unauthorized", "Status": 401, "Detail": "TokenExpired: token expired"})
		return
	}
	if r.Header.Get("Xero-tenant-id") != xeroTenant {
		writeJSON(w, http.StatusForbidden, "application/json", map[string]any{"Title": "Forbidden", "Status": 403, "Detail": "AuthenticationUnsuccessful"})
		return
	}
	q := r.URL.Query()
	page, err1 := intParam(q, "page", 1, 1<<30)
	size, err2 := intParam(q, "pageSize", 100, 1000)
	if err1 != nil || err2 != nil || q.Get("order") != "UpdatedDateUTC ASC" {
		writeJSON(w, http.StatusBadRequest, "application/json", map[string]any{"Type": "ValidationException", "Message": "bad paging or order"})
		return
	}
	a.pages.Add(1)
	time.Sleep(xeroLatency) // the API's answer time, not a wait for an event
	recs, _ := pageOf(a.invoices, page, size)
	writeJSON(w, http.StatusOK, "application/json; charset=utf-8", map[string]any{
		"Id": "5b4d3f1a-0000-4000-8000-000000000000", "Status": "OK", "ProviderName": "tidemark test",
		"DateTimeUTC": "/Date(1718900000000)/",
		"pagination":  map[string]any{"page": page, "pageSize": size, "pageCount": (len(a.invoices) + size - 1) / size, "itemCount": len(a.invoices)},
		"Invoices":    recs,
	})
}

// oauthFleet is n workers on one Postgres database and Redis DB, each
// running one fetch at a time: two fetches take both workers.
type oauthFleet struct {
	*fleet
	stop func()
}

func startOAuthFleet(t *testing.T, conf *config.Config, dbURL, redisURL string, log *slog.Logger, n int) *oauthFleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureStates(ctx, store.KeysOf(conf)); err != nil {
		t.Fatal(err)
	}
	redisOpt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range n {
		w, err := worker.New(worker.Config{Concurrency: 1, ShutdownTimeout: 5 * time.Second, SecretKey: bytes.Repeat([]byte{42}, 32)},
			conf, st, redisOpt, log.With("worker", i))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	client := asynq.NewClient(redisOpt)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			client.Close()
			st.Close()
		})
	}
	t.Cleanup(stop)
	return &oauthFleet{fleet: &fleet{store: st, client: client}, stop: stop}
}

func (f *oauthFleet) enqueue(t *testing.T, res config.Resource) {
	t.Helper()
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "xero", Resource: res.Name, Mode: jobs.ModeFull, Trigger: jobs.TriggerManual}, jobs.FetchOptions(&res)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
}

func (f *oauthFleet) lastRunID(t *testing.T, key store.Key) int64 { return f.lastRun(t, key).ID }

// waitSucceeded waits for key's first fetch run after run id after to
// finish, and fails the test unless it succeeded.
func (f *oauthFleet) waitSucceeded(t *testing.T, key store.Key, after int64) {
	t.Helper()
	var run store.Run
	waitFor(t, 60*time.Second, "the fetch of "+key.String(), func() (bool, string) {
		run = f.lastRun(t, key)
		return run.ID > after && run.Status != store.StatusRunning, run.Status
	})
	if run.Status != store.StatusSucceeded {
		t.Fatalf("%s: %s: %s", key, run.Status, run.Error)
	}
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// lockedBuffer collects log lines from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
