package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/ratelimit"
)

// fleet returns n Limiters over one fresh Redis database, as n worker
// processes would have, and a client to inspect it.
func fleet(t *testing.T, n int, opt ratelimit.Options) ([]*ratelimit.Limiter, *redis.Client) {
	t.Helper()
	ro, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	var ls []*ratelimit.Limiter
	for range n {
		c := redis.NewClient(ro)
		t.Cleanup(func() { c.Close() })
		ls = append(ls, ratelimit.New(c, opt))
	}
	inspect := redis.NewClient(ro)
	t.Cleanup(func() { inspect.Close() })
	return ls, inspect
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func delayOf(t *testing.T, err error) *ratelimit.DelayError {
	t.Helper()
	var de *ratelimit.DelayError
	if !errors.As(err, &de) {
		t.Fatalf("got %v, want a *ratelimit.DelayError", err)
	}
	return de
}

// TestRateIsFleetWide runs 8 goroutines over two Limiters ("two workers")
// and counts when requests were granted: no window of the period may see
// more than requests + burst, the total stays within rate*elapsed + burst,
// and the fleet still gets most of the rate (a limiter per process would
// grant twice as much; a stuck one far less).
func TestRateIsFleetWide(t *testing.T) {
	t.Parallel()
	ls, _ := fleet(t, 2, ratelimit.Options{})
	rl := &config.RateLimit{Requests: 10, Per: config.Duration(500 * time.Millisecond), Burst: 3}
	lim := ratelimit.Limits{Rate: rl, MaxWait: time.Second}
	const run = 1500 * time.Millisecond

	var mu sync.Mutex
	var stamps []time.Time
	perWorker := make([]atomic.Int64, len(ls))
	var handedBack atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			l := ls[g%len(ls)]
			for {
				p, err := l.Wait(t.Context(), "shop", lim)
				if d, ok := ratelimit.AsDelay(err); ok {
					handedBack.Add(1) // as a task would be: retried after the delay
					time.Sleep(d)
					continue
				}
				if err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				now := time.Now()
				p.Release()
				if now.Sub(start) > run {
					return
				}
				mu.Lock()
				stamps = append(stamps, now)
				mu.Unlock()
				perWorker[g%len(ls)].Add(1)
			}
		})
	}
	wg.Wait()
	slices.SortFunc(stamps, func(a, b time.Time) int { return a.Compare(b) })

	per := rl.Per.D()
	elapsed := stamps[len(stamps)-1].Sub(stamps[0])
	rate := float64(rl.Requests) / per.Seconds()
	maxTotal := int(rate*elapsed.Seconds()) + rl.Burst + 1
	t.Logf("granted %d in %s (%.1f/s, limit %.0f/s + burst %d); per worker %d, %d; handed back %d",
		len(stamps), elapsed.Round(time.Millisecond), float64(len(stamps))/elapsed.Seconds(), rate, rl.Burst,
		perWorker[0].Load(), perWorker[1].Load(), handedBack.Load())
	if len(stamps) > maxTotal {
		t.Errorf("granted %d requests in %s, want at most %d", len(stamps), elapsed, maxTotal)
	}
	// Grants are stamped after Wait returns, so a stamp may lag its grant
	// by scheduling jitter; a window 20ms short of the period absorbs it.
	window := per - 20*time.Millisecond
	for i, s := range stamps {
		j, _ := slices.BinarySearchFunc(stamps, s.Add(window), func(a, b time.Time) int { return a.Compare(b) })
		if n := j - i; n > rl.Requests+rl.Burst {
			t.Errorf("%d requests within %s from %s, want at most %d", n, window, s.Sub(start), rl.Requests+rl.Burst)
		}
	}
	if minTotal := int(0.8 * rate * elapsed.Seconds()); len(stamps) < minTotal {
		t.Errorf("granted only %d requests in %s, want at least %d (80%% of the rate)", len(stamps), elapsed, minTotal)
	}
	for i := range perWorker {
		if perWorker[i].Load() == 0 {
			t.Errorf("worker %d got no request through", i)
		}
	}
}

// TestConcurrencyCap: across two Limiters, never more than max_concurrency
// permits are held at once, and all slots are freed at the end.
func TestConcurrencyCap(t *testing.T) {
	t.Parallel()
	ls, rdb := fleet(t, 2, ratelimit.Options{PollInterval: 5 * time.Millisecond})
	const limit = 3
	lim := ratelimit.Limits{MaxConcurrency: limit, MaxWait: 10 * time.Second}
	var inflight, peak atomic.Int64
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Go(func() {
			for range 5 {
				p, err := ls[g%2].Wait(t.Context(), "shop", lim)
				if err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				n := inflight.Add(1)
				for {
					old := peak.Load()
					if n <= old || peak.CompareAndSwap(old, n) {
						break
					}
				}
				time.Sleep(5 * time.Millisecond) // the request being "in flight"
				inflight.Add(-1)
				p.Release()
			}
		})
	}
	wg.Wait()
	t.Logf("peak in flight %d, cap %d", peak.Load(), limit)
	if peak.Load() > limit {
		t.Errorf("%d permits held at once, cap is %d", peak.Load(), limit)
	}
	if peak.Load() < 2 {
		t.Errorf("peak in flight %d: the semaphore serialised everything", peak.Load())
	}
	if n := rdb.ZCard(t.Context(), "tidemark:ratelimit:shop:inflight").Val(); n != 0 {
		t.Errorf("%d slots still held after every permit was released", n)
	}
}

// TestLeaseEviction: a holder that stops renewing (a dead worker) loses its
// slot after one lease; a holder that renews keeps it however long it works.
func TestLeaseEviction(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	ls, _ := fleet(t, 2, ratelimit.Options{Lease: lease, PollInterval: 10 * time.Millisecond})
	a, b := ls[0], ls[1]
	one := ratelimit.Limits{MaxConcurrency: 1}

	t.Run("dead holder is evicted", func(t *testing.T) {
		two := ratelimit.Limits{MaxConcurrency: 2}
		live, err := a.Wait(t.Context(), "dead", two)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Release() // keeps renewing, so the set itself never expires
		dead, err := a.Wait(t.Context(), "dead", two)
		if err != nil {
			t.Fatal(err)
		}
		acquired := time.Now()
		dead.Abandon()
		if de := delayOf(t, func() error { _, err := b.Wait(t.Context(), "dead", two); return err }()); de.Reason != "concurrency" {
			t.Errorf("reason %q, want concurrency", de.Reason)
		}
		p, err := b.Wait(t.Context(), "dead", ratelimit.Limits{MaxConcurrency: 2, MaxWait: 5 * lease})
		if err != nil {
			t.Fatalf("the dead holder's slot was never freed: %v", err)
		}
		defer p.Release()
		if got := time.Since(acquired); got < lease-20*time.Millisecond {
			t.Errorf("slot freed %s after its holder stopped renewing, before the %s lease ended", got, lease)
		}
	})
	t.Run("renewing holder keeps its slot", func(t *testing.T) {
		p, err := a.Wait(t.Context(), "alive", one)
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Wait(t.Context(), "alive", ratelimit.Limits{MaxConcurrency: 1, MaxWait: 3 * lease})
		delayOf(t, err)
		p.Release()
		p2, err := b.Wait(t.Context(), "alive", one)
		if err != nil {
			t.Fatalf("slot not free after Release: %v", err)
		}
		p2.Release()
	})
}

// TestCooldown: a cooldown set through one Limiter holds back every Limiter
// for that source only, until it ends.
func TestCooldown(t *testing.T) {
	t.Parallel()
	var waits sync.Map
	ls, _ := fleet(t, 2, ratelimit.Options{OnWait: func(src string, d time.Duration) { waits.Store(src, d) }})
	a, b := ls[0], ls[1]
	const cd = 800 * time.Millisecond
	if err := a.Cooldown(t.Context(), "busy", time.Now().Add(cd)); err != nil {
		t.Fatal(err)
	}
	_, err := b.Wait(t.Context(), "busy", ratelimit.Limits{})
	de := delayOf(t, err)
	if de.Reason != "cooldown" || de.RetryIn <= cd-300*time.Millisecond || de.RetryIn > cd {
		t.Errorf("got %+v, want a cooldown of about %s", de, cd)
	}
	if p, err := b.Wait(t.Context(), "calm", ratelimit.Limits{}); err != nil {
		t.Errorf("another source was held back: %v", err)
	} else {
		p.Release()
	}
	// A shorter cooldown does not cut a running one short.
	if err := b.Cooldown(t.Context(), "busy", time.Now().Add(10*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if left, _ := a.CooldownLeft(t.Context(), "busy"); left < cd-300*time.Millisecond {
		t.Errorf("cooldown left %s after a shorter one was set, want about %s", left, cd)
	}
	p, err := a.Wait(t.Context(), "busy", ratelimit.Limits{MaxWait: 2 * cd})
	if err != nil {
		t.Fatalf("Wait through the cooldown: %v", err)
	}
	if p.Waited < cd-300*time.Millisecond {
		t.Errorf("waited %s through a %s cooldown", p.Waited, cd)
	}
	if d, _ := waits.Load("busy"); d.(time.Duration) != p.Waited {
		t.Errorf("OnWait reported %v, permit says %s", d, p.Waited)
	}
}

func TestObserve(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ls, _ := fleet(t, 1, ratelimit.Options{Now: func() time.Time { return now }})
	l := ls[0]
	tests := []struct {
		name     string
		status   int
		header   http.Header
		ignore   bool          // rate_limit_headers: ignore
		inFlight int           // max_concurrency
		cooldown time.Duration // want about this much
		paced    time.Duration // want the second request this far behind
	}{
		{name: "429 Retry-After seconds", status: 429, header: http.Header{"Retry-After": {"2"}}, cooldown: 2 * time.Second},
		{name: "503 Retry-After date", status: 503, header: http.Header{"Retry-After": {now.Add(3 * time.Second).Format(http.TimeFormat)}}, cooldown: 3 * time.Second},
		{name: "503 without Retry-After", status: 503, header: http.Header{}},
		{name: "429 garbage Retry-After", status: 429, header: http.Header{"Retry-After": {"soon"}}, cooldown: time.Second},
		{name: "200 ignores Retry-After", status: 200, header: http.Header{"Retry-After": {"30"}}},
		{name: "Retry-After capped", status: 429, header: http.Header{"Retry-After": {"999999999"}}, cooldown: time.Hour},
		{name: "remaining plenty", status: 200, header: http.Header{"X-Ratelimit-Remaining": {"500"}, "X-Ratelimit-Reset": {"60"}}},
		// Low remaining: the requests above the reserve (1) spread until the reset.
		{name: "remaining low, reset seconds", status: 200, header: http.Header{"Ratelimit-Remaining": {"3"}, "Ratelimit-Reset": {"1"}}, paced: 500 * time.Millisecond},
		{name: "remaining low, reset epoch", status: 200, header: http.Header{"X-Ratelimit-Remaining": {"5"}, "X-Ratelimit-Reset": {fmt.Sprint(now.Unix() + 2)}}, paced: 500 * time.Millisecond},
		{name: "combined RateLimit header", status: 200, header: http.Header{"Ratelimit": {"limit=100, remaining=3, reset=1"}}, paced: 500 * time.Millisecond},
		{name: "RateLimit policies, fewest remaining binds", status: 200, header: http.Header{"Ratelimit": {`"daily";r=3;t=1, "burst";r=50;t=1`}}, paced: 500 * time.Millisecond},
		{name: "twice max_concurrency is low", inFlight: 50, status: 200, header: http.Header{"X-Ratelimit-Remaining": {"100"}, "X-Ratelimit-Reset": {"99"}}, paced: time.Second},
		{name: "above twice max_concurrency", inFlight: 50, status: 200, header: http.Header{"X-Ratelimit-Remaining": {"101"}, "X-Ratelimit-Reset": {"100"}}},
		{name: "remaining zero", status: 200, header: http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"2"}}, cooldown: 2 * time.Second},
		{name: "remaining at the reserve", status: 200, header: http.Header{"Ratelimit-Remaining": {"1"}, "Ratelimit-Reset": {"2"}}, cooldown: 2 * time.Second},
		{name: "429 announcing its reset", status: 429, header: http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"3"}}, cooldown: 3 * time.Second},
		{name: "headers ignored by config", ignore: true, status: 200, header: http.Header{"Ratelimit-Remaining": {"0"}, "Ratelimit-Reset": {"2"}}},
		{name: "malformed remaining", status: 200, header: http.Header{"Ratelimit-Remaining": {"few"}, "Ratelimit-Reset": {"2"}}},
		{name: "malformed reset", status: 200, header: http.Header{"Ratelimit-Remaining": {"0"}, "Ratelimit-Reset": {"soon"}}},
		{name: "absurd reset", status: 200, header: http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {fmt.Sprint(now.Add(72 * time.Hour).Unix())}}},
		{name: "no reset", status: 200, header: http.Header{"X-Ratelimit-Remaining": {"0"}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := fmt.Sprintf("src%d", i)
			if err := l.Observe(t.Context(), src, ratelimit.Limits{IgnoreHeaders: tt.ignore, MaxConcurrency: tt.inFlight}, tt.status, tt.header); err != nil {
				t.Fatal(err)
			}
			left, err := l.CooldownLeft(t.Context(), src)
			if err != nil {
				t.Fatal(err)
			}
			if left > tt.cooldown || left < tt.cooldown-500*time.Millisecond {
				t.Errorf("cooldown %s, want about %s", left, tt.cooldown)
			}
			if tt.cooldown > 0 {
				return
			}
			p, err := l.Wait(t.Context(), src, ratelimit.Limits{})
			if err != nil {
				t.Fatalf("first request after the response: %v", err)
			}
			p.Release()
			p, err = l.Wait(t.Context(), src, ratelimit.Limits{})
			if tt.paced == 0 {
				if err != nil {
					t.Errorf("second request held back: %v", err)
				}
				p.Release()
				return
			}
			de := delayOf(t, err)
			if de.Reason != "slow-down" || de.RetryIn > tt.paced || de.RetryIn < tt.paced-200*time.Millisecond {
				t.Errorf("got %+v, want a slow-down of about %s", de, tt.paced)
			}
		})
	}
}

// TestSlowDownEnds: plenty remaining after a slow-down lifts it.
func TestSlowDownEnds(t *testing.T) {
	t.Parallel()
	ls, _ := fleet(t, 2, ratelimit.Options{})
	a, b := ls[0], ls[1]
	if err := a.Observe(t.Context(), "shop", ratelimit.Limits{}, 200, http.Header{"Ratelimit-Remaining": {"2"}, "Ratelimit-Reset": {"30"}}); err != nil {
		t.Fatal(err)
	}
	p, err := b.Wait(t.Context(), "shop", ratelimit.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	_, err = a.Wait(t.Context(), "shop", ratelimit.Limits{})
	if de := delayOf(t, err); de.RetryIn < 29*time.Second {
		t.Errorf("slow-down retry in %s, want about 30s", de.RetryIn)
	}
	if err := b.Observe(t.Context(), "shop", ratelimit.Limits{}, 200, http.Header{"Ratelimit-Remaining": {"99"}, "Ratelimit-Reset": {"30"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Wait(t.Context(), "shop", ratelimit.Limits{}); err != nil {
		t.Errorf("still slowed down after the upstream reported plenty remaining: %v", err)
	}
}

// TestLongWaitIsHandedBack: a wait beyond MaxWait returns at once with a
// DelayError saying how long, reachable through wrapping.
func TestLongWaitIsHandedBack(t *testing.T) {
	t.Parallel()
	ls, _ := fleet(t, 1, ratelimit.Options{})
	l := ls[0]
	lim := ratelimit.Limits{Rate: &config.RateLimit{Requests: 1, Per: config.Duration(10 * time.Second), Burst: 1}, MaxWait: 100 * time.Millisecond}
	p, err := l.Wait(t.Context(), "slow", lim)
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	start := time.Now()
	_, err = l.Wait(t.Context(), "slow", lim)
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("took %s to hand back a 10s wait", took)
	}
	wrapped := fmt.Errorf("fetch shop/orders page 2: %w", err)
	de := delayOf(t, wrapped)
	if de.Reason != "rate" || de.RetryIn < 9*time.Second || de.RetryIn > 10*time.Second {
		t.Errorf("got %+v, want a rate delay of about 10s", de)
	}
	if d, ok := ratelimit.AsDelay(wrapped); !ok || d != de.RetryIn {
		t.Errorf("AsDelay = %s, %v", d, ok)
	}
}

// TestCancel: a waiting Wait returns promptly when its context ends, and
// frees a concurrency slot it held while waiting.
func TestCancel(t *testing.T) {
	t.Parallel()
	ls, rdb := fleet(t, 1, ratelimit.Options{PollInterval: 10 * time.Millisecond})
	l := ls[0]
	if err := l.Cooldown(t.Context(), "cool", time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	holder, err := l.Wait(t.Context(), "full", ratelimit.Limits{MaxConcurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(holder.Release)
	rate := &config.RateLimit{Requests: 1, Per: config.Duration(10 * time.Second), Burst: 1}
	first, err := l.Wait(t.Context(), "rated", ratelimit.Limits{Rate: rate, MaxConcurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	first.Release()
	tests := []struct {
		name   string
		source string
		lim    ratelimit.Limits
	}{
		{"cooldown", "cool", ratelimit.Limits{MaxWait: time.Minute}},
		{"concurrency", "full", ratelimit.Limits{MaxConcurrency: 1, MaxWait: time.Minute}},
		{"rate, holding a slot", "rated", ratelimit.Limits{Rate: rate, MaxConcurrency: 1, MaxWait: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := l.Wait(ctx, tt.source, tt.lim)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want context.DeadlineExceeded", err)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("returned %s after a 100ms deadline", took)
			}
		})
	}
	t.Cleanup(func() {
		if n := rdb.ZCard(context.Background(), "tidemark:ratelimit:rated:inflight").Val(); n != 0 {
			t.Errorf("a cancelled Wait left %d slots held", n)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"seconds", "120", 2 * time.Minute, true},
		{"zero", "0", 0, true},
		{"spaces", " 3 ", 3 * time.Second, true},
		{"http date", "Sun, 01 Mar 2026 12:00:05 GMT", 5 * time.Second, true},
		{"rfc850 date", "Sunday, 01-Mar-26 12:01:00 GMT", time.Minute, true},
		{"past date", "Sun, 01 Mar 2026 11:00:00 GMT", 0, true},
		{"empty", "", 0, false},
		{"negative", "-5", 0, false},
		{"fraction", "1.5", 0, false},
		{"garbage", "soon", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := ratelimit.ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseReset(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"delta seconds", "30", 30 * time.Second, true},
		{"fractional delta", "0.5", 500 * time.Millisecond, true},
		{"epoch seconds", fmt.Sprint(now.Unix() + 42), 42 * time.Second, true},
		{"epoch milliseconds", fmt.Sprint(now.UnixMilli() + 1500), 1500 * time.Millisecond, true},
		{"past epoch", fmt.Sprint(now.Unix() - 10), 0, true},
		{"http date", "Sun, 01 Mar 2026 12:00:07 GMT", 7 * time.Second, true},
		{"negative", "-1", 0, false},
		{"absurd", "1e300", 0, false},
		{"garbage", "later", 0, false},
		{"empty", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := ratelimit.ParseReset(tt.in, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseReset(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestObserveReports: every announced remaining reaches OnRemaining (the
// gauge), and headers present but unusable reach OnIgnored (the counter)
// with their reason, and pause nothing.
func TestObserveReports(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	remaining := map[string]int{}
	ignored := map[string]string{}
	ls, _ := fleet(t, 1, ratelimit.Options{
		OnRemaining: func(src string, n int) { mu.Lock(); remaining[src] = n; mu.Unlock() },
		OnIgnored:   func(src, reason string) { mu.Lock(); ignored[src] = reason; mu.Unlock() },
	})
	l := ls[0]
	far := fmt.Sprint(time.Now().Add(72 * time.Hour).Unix())
	tests := []struct {
		source    string
		header    http.Header
		remaining int    // -1: not reported
		reason    string // "": not ignored
	}{
		{"plenty", http.Header{"Ratelimit-Remaining": {"42"}, "Ratelimit-Reset": {"5"}}, 42, ""},
		{"none", http.Header{"Content-Type": {"application/json"}}, -1, ""},
		{"garbled", http.Header{"X-Ratelimit-Remaining": {"lots"}, "X-Ratelimit-Reset": {"5"}}, -1, ratelimit.ReasonMalformed},
		{"badreset", http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {"tomorrow"}}, 0, ratelimit.ReasonMalformed},
		{"faraway", http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {far}}, 0, ratelimit.ReasonAbsurd},
		{"noreset", http.Header{"X-Ratelimit-Remaining": {"0"}}, 0, ratelimit.ReasonNoReset},
	}
	for _, tt := range tests {
		if err := l.Observe(t.Context(), tt.source, ratelimit.Limits{}, 200, tt.header); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n, seen := remaining[tt.source]
		reason := ignored[tt.source]
		mu.Unlock()
		if want := tt.remaining >= 0; seen != want || (seen && n != tt.remaining) {
			t.Errorf("%s: remaining reported %v (%d), want %v (%d)", tt.source, seen, n, want, tt.remaining)
		}
		if reason != tt.reason {
			t.Errorf("%s: ignored as %q, want %q", tt.source, reason, tt.reason)
		}
		p, err := l.Wait(t.Context(), tt.source, ratelimit.Limits{})
		if err != nil {
			t.Errorf("%s: a request after the response was held back: %v", tt.source, err)
			continue
		}
		p.Release()
	}
}

func TestReadQuota(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	epoch := func(d time.Duration) string { return fmt.Sprint(now.Add(d).Unix()) }
	tests := []struct {
		name   string
		header http.Header
		want   ratelimit.Quota
		reason string // the QuotaError's, "" for none
	}{
		{"no headers", http.Header{}, ratelimit.Quota{Remaining: -1}, ""},
		{"IETF delta seconds", http.Header{"Ratelimit-Limit": {"100"}, "Ratelimit-Remaining": {"7"}, "Ratelimit-Reset": {"30"}}, ratelimit.Quota{Remaining: 7, Limit: 100, Reset: 30 * time.Second}, ""},
		{"X- delta seconds", http.Header{"X-Ratelimit-Remaining": {"7"}, "X-Ratelimit-Reset": {"60"}}, ratelimit.Quota{Remaining: 7, Reset: time.Minute}, ""},
		{"X- epoch seconds (GitHub)", http.Header{"X-Ratelimit-Limit": {"5000"}, "X-Ratelimit-Remaining": {"4999"}, "X-Ratelimit-Reset": {epoch(40 * time.Minute)}}, ratelimit.Quota{Remaining: 4999, Limit: 5000, Reset: 40 * time.Minute}, ""},
		{"epoch in the past", http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {epoch(-time.Minute)}}, ratelimit.Quota{Remaining: 0}, ""},
		{"IETF wins over X-", http.Header{"Ratelimit-Remaining": {"3"}, "Ratelimit-Reset": {"2"}, "X-Ratelimit-Remaining": {"90"}, "X-Ratelimit-Reset": {"9"}}, ratelimit.Quota{Remaining: 3, Reset: 2 * time.Second}, ""},
		{"combined, one policy", http.Header{"Ratelimit": {"limit=10, remaining=4, reset=3"}}, ratelimit.Quota{Remaining: 4, Limit: 10, Reset: 3 * time.Second}, ""},
		{"combined, policies", http.Header{"Ratelimit": {`"minute";r=40;t=20, "hour";q=1000;r=5;t=600`}}, ratelimit.Quota{Remaining: 5, Limit: 1000, Reset: 10 * time.Minute}, ""},
		{"spaces", http.Header{"Ratelimit-Remaining": {" 2 "}, "Ratelimit-Reset": {" 4 "}}, ratelimit.Quota{Remaining: 2, Reset: 4 * time.Second}, ""},
		{"malformed remaining", http.Header{"Ratelimit-Remaining": {"2.5"}, "Ratelimit-Reset": {"4"}}, ratelimit.Quota{Remaining: -1}, ratelimit.ReasonMalformed},
		{"negative remaining", http.Header{"X-Ratelimit-Remaining": {"-3"}, "X-Ratelimit-Reset": {"4"}}, ratelimit.Quota{Remaining: -1}, ratelimit.ReasonMalformed},
		{"malformed combined", http.Header{"Ratelimit": {`"default";r=many;t=4`}}, ratelimit.Quota{Remaining: -1}, ratelimit.ReasonMalformed},
		{"malformed reset", http.Header{"Ratelimit-Remaining": {"2"}, "Ratelimit-Reset": {"soon"}}, ratelimit.Quota{Remaining: 2}, ratelimit.ReasonMalformed},
		{"no reset", http.Header{"Ratelimit-Remaining": {"2"}}, ratelimit.Quota{Remaining: 2}, ratelimit.ReasonNoReset},
		{"reset days away (epoch)", http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {epoch(72 * time.Hour)}}, ratelimit.Quota{Remaining: 0}, ratelimit.ReasonAbsurd},
		{"reset days away (delta)", http.Header{"Ratelimit-Remaining": {"0"}, "Ratelimit-Reset": {"999999"}}, ratelimit.Quota{Remaining: 0}, ratelimit.ReasonAbsurd},
		{"a day is not absurd", http.Header{"Ratelimit-Remaining": {"0"}, "Ratelimit-Reset": {"86400"}}, ratelimit.Quota{Remaining: 0, Reset: 24 * time.Hour}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ratelimit.ReadQuota(tt.header, now, 24*time.Hour)
			var qe *ratelimit.QuotaError
			reason := ""
			if errors.As(err, &qe) {
				reason = qe.Reason
			} else if err != nil {
				t.Fatalf("error %v is not a *QuotaError", err)
			}
			if got != tt.want || reason != tt.reason {
				t.Errorf("ReadQuota = %+v, %v; want %+v, reason %q", got, err, tt.want, tt.reason)
			}
		})
	}
}

// countingHook counts the commands a Redis client sends (one round trip
// each: the limiter pipelines nothing).
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestReleaseRidesOnNextAdmit: with a ReleaseDelay, Release sends nothing;
// the Limiter's next admit of the source frees the slot in its own round
// trip before taking one (so a cap of 1 lets the same Limiter go on), the
// slot counts as held for every other Limiter until then (the cap is never
// exceeded), and a slot no admit took is freed when the delay ends, or at
// once by FreeReleased.
func TestReleaseRidesOnNextAdmit(t *testing.T) {
	t.Parallel()
	ro, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	client := func() *redis.Client {
		c := redis.NewClient(ro)
		t.Cleanup(func() { c.Close() })
		return c
	}
	c, inspect := client(), client()
	hook := &countingHook{}
	c.AddHook(hook)
	lazy := ratelimit.New(c, ratelimit.Options{ReleaseDelay: time.Hour})
	others := []*ratelimit.Limiter{ratelimit.New(client(), ratelimit.Options{})}
	one := ratelimit.Limits{MaxConcurrency: 1}
	held := func(source string) int64 {
		return inspect.ZCard(t.Context(), "tidemark:ratelimit:"+source+":inflight").Val()
	}

	p, err := lazy.Wait(t.Context(), "lazy", one)
	if err != nil {
		t.Fatal(err)
	}
	sent := hook.n.Load()
	p.Release()
	if got := hook.n.Load() - sent; got != 0 || held("lazy") != 1 {
		t.Errorf("Release sent %d commands and left %d slots held; want 0 and the slot held until the next admit", got, held("lazy"))
	}
	if _, err := others[0].Wait(t.Context(), "lazy", one); delayOf(t, err).Reason != "concurrency" {
		t.Errorf("another limiter got a slot of a cap of 1 still held")
	}
	sent = hook.n.Load()
	p, err = lazy.Wait(t.Context(), "lazy", one)
	if err != nil {
		t.Fatalf("the next admit did not free the released slot: %v", err)
	}
	if got := hook.n.Load() - sent; got != 1 || held("lazy") != 1 {
		t.Errorf("the next admit took %d round trips and left %d slots held; want 1 and 1", got, held("lazy"))
	}
	p.Release()
	lazy.FreeReleased()
	if n := held("lazy"); n != 0 {
		t.Errorf("FreeReleased left %d slots held", n)
	}

	soon := ratelimit.New(c, ratelimit.Options{ReleaseDelay: 20 * time.Millisecond})
	p, err = soon.Wait(t.Context(), "soon", one)
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	deadline := time.Now().Add(5 * time.Second)
	for held("soon") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a released slot no admit took was not freed when the delay ended")
		}
		time.Sleep(5 * time.Millisecond) // polling interval of the condition
	}
}

// TestRateInTheAdmit: a request of a source with a rate, a cap and a
// pacing takes all of them in one round trip; the rate's budget is the one
// github.com/go-redis/redis_rate keeps under the same key, so a fleet whose
// workers run either limiter shares it.
func TestRateInTheAdmit(t *testing.T) {
	t.Parallel()
	ro, err := redis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(ro)
	t.Cleanup(func() { c.Close() })
	hook := &countingHook{}
	c.AddHook(hook)
	l := ratelimit.New(c, ratelimit.Options{})
	rate := &config.RateLimit{Requests: 1, Per: config.Duration(time.Minute), Burst: 3}
	lim := ratelimit.Limits{Rate: rate, MaxConcurrency: 4}
	// The first script call of a Redis loads the script (EVALSHA, EVAL).
	warm, err := l.Wait(t.Context(), "warm", lim)
	if err != nil {
		t.Fatal(err)
	}
	warm.Release()
	for i := range 2 {
		sent := hook.n.Load()
		p, err := l.Wait(t.Context(), "rated", lim)
		if err != nil {
			t.Fatalf("request %d of a burst of 3: %v", i+1, err)
		}
		if n := hook.n.Load() - sent; n != 1 {
			t.Errorf("request %d took %d round trips, want 1", i+1, n)
		}
		p.Release()
	}
	old := redis_rate.NewLimiter(c)
	res, err := old.Allow(t.Context(), "tidemark:ratelimit:rated:gcra", redis_rate.Limit{Rate: 1, Period: time.Minute, Burst: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Allowed != 1 || res.Remaining != 0 {
		t.Errorf("redis_rate after 2 of a burst of 3: allowed %d, remaining %d; want 1, 0 (one budget)", res.Allowed, res.Remaining)
	}
	if de := delayOf(t, func() error { _, err := l.Wait(t.Context(), "rated", lim); return err }()); de.Reason != "rate" || de.RetryIn < 50*time.Second {
		t.Errorf("a fourth request: %s in %s; want rate, about a minute", de.Reason, de.RetryIn)
	}
}
