package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/ratelimit"
)

// TestRefusedRequestIsNotCounted: a request the fleet limiter turns away
// (a *ratelimit.DelayError, which hands the task back) was never sent, so
// it counts no request: a run handed back over and over under a tight rate
// limit must not report a request per hand-back.
func TestRefusedRequestIsNotCounted(t *testing.T) {
	t.Parallel()
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Add(1)
		w.Write([]byte(`[]`))
	}))
	defer srv.Close()
	opt, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	lim := ratelimit.New(rdb, ratelimit.Options{})
	if err := lim.Cooldown(context.Background(), "s", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	src := &config.Source{Name: "s", BaseURL: srv.URL, AllowPrivate: true, Timeout: config.Duration(5 * time.Second)}
	c, err := New(src, Options{Limiter: lim, MaxWait: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Do(context.Background(), http.MethodGet, c.URL("/items", nil), nil)
	if _, refused := ratelimit.AsDelay(err); !refused {
		t.Fatalf("err = %v, want a *ratelimit.DelayError", err)
	}
	if n := Requests(err); n != 0 || sent.Load() != 0 {
		t.Errorf("a refused request counts %d requests (the upstream saw %d), want 0", n, sent.Load())
	}
}
