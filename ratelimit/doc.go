// Package ratelimit owns tidemark's fleet-wide, per-source limits on calls to
// upstream APIs. Every limit lives in Redis, so all worker processes on all
// machines share one budget per source:
//
//   - Request rate: GCRA (github.com/go-redis/redis_rate's algorithm and key,
//     taken in the same round trip as the other limits) from the source's
//     rate_limit {requests, per, burst}. Over any window W the fleet starts at
//     most requests*W/per + burst requests.
//   - Concurrency: max_concurrency in-flight requests, a Redis semaphore
//     whose holders hold leases (a sorted set of tokens scored by lease
//     expiry). A holder renews its lease while it works; expired holders are
//     evicted on every acquire, so a killed worker frees its slot after one
//     lease at most.
//   - Cooldown: after a 429 or 503 with Retry-After (seconds or an HTTP date)
//     the source is paused for every worker until then. Other sources are
//     unaffected.
//   - Slow-down: when a response says few requests remain
//     (RateLimit-Remaining / X-RateLimit-Remaining with RateLimit-Reset /
//     X-RateLimit-Reset, or the combined RateLimit header; see
//     [ReadQuota]), the remaining requests are spread evenly over the
//     reset window, fleet-wide, instead of hitting the wall; at the
//     reserve (default 1 request) the source pauses until the reset. See
//     [Limiter.Observe] for the policy.
//
// The HTTP client calls [Limiter.Wait] before every request and
// [Limiter.Observe] after every response:
//
//	limits := ratelimit.LimitsFor(src, 2*time.Second)
//	permit, err := lim.Wait(ctx, src.Name, limits)
//	if err != nil {
//		return err // a *DelayError: hand the task back with RetryIn, not a failure
//	}
//	resp, err := httpClient.Do(req) // and read the body
//	permit.Release()
//	if err == nil {
//		lim.Observe(ctx, src.Name, limits, resp.StatusCode, resp.Header)
//	}
//
// Wait waits in process (honouring ctx) as long as the total wait stays
// within Limits.MaxWait; a longer wait returns a [*DelayError] carrying how
// long to wait, so the task can be rescheduled without holding a worker and
// without counting as a failure.
//
// Times that must agree across the fleet (lease expiry, slow-down slots,
// cooldown deadlines) are taken from the Redis server's clock or stored as
// Redis TTLs, so clock skew between workers does not matter.
//
// The package has no metrics dependency: [Options.OnWait] and
// [Permit.Waited] report how long each call waited, for
// tidemark_ratelimit_wait_seconds{source}; [Options.OnRemaining] and
// [Options.OnIgnored] report the budgets upstreams announce and the headers
// ignored, for tidemark_ratelimit_remaining{source} and
// tidemark_ratelimit_headers_ignored_total{source,reason}.
package ratelimit
