package ratelimit_test

import (
	"context"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/ratelimit"
)

// Example shows the calls an HTTP client makes around every request.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	lim := ratelimit.New(rdb, ratelimit.Options{
		OnWait: func(source string, waited time.Duration) {
			// waitSeconds.WithLabelValues(source).Observe(waited.Seconds())
		},
	})
	src := &config.Source{
		Name:           "boxoffice",
		RateLimit:      &config.RateLimit{Requests: 20, Per: config.Duration(time.Second), Burst: 5},
		MaxConcurrency: 4,
	}

	permit, err := lim.Wait(ctx, src.Name, ratelimit.LimitsFor(src, 2*time.Second))
	if d, ok := ratelimit.AsDelay(err); ok {
		_ = d // hand the task back to the queue to run in d; not a failure
		return
	} else if err != nil {
		return // Redis down or ctx done: the request must not go out unchecked
	}
	defer permit.Release() // once the body is read: the request is in flight until then
	resp, err := http.Get("http://127.0.0.1:9000/v1/ticket_sales")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	// A 429/503 Retry-After pauses the source fleet-wide; a low
	// RateLimit-Remaining spreads the rest of the window's requests.
	_ = lim.Observe(ctx, src.Name, ratelimit.LimitsFor(src, 2*time.Second), resp.StatusCode, resp.Header)
}
