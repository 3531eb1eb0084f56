package ratelimit

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/config"
)

// Options' defaults, filled in by New.
const (
	// MaxResetDefault is Options.MaxReset's default: daily quotas are
	// real, longer windows are not.
	MaxResetDefault = 24 * time.Hour
	// PrefixDefault is Options.Prefix's default.
	PrefixDefault = "tidemark:ratelimit:"
	// LeaseDefault is Options.Lease's default.
	LeaseDefault = 15 * time.Second
	// PollIntervalDefault is Options.PollInterval's default.
	PollIntervalDefault = 50 * time.Millisecond
	// SemaphoreRetryInDefault is Options.SemaphoreRetryIn's default.
	SemaphoreRetryInDefault = time.Second
	// LowRemainingDefault is Options.LowRemaining's default.
	LowRemainingDefault = 10
	// ReserveDefault is Options.Reserve's default.
	ReserveDefault = 1
	// DefaultCooldownDefault is Options.DefaultCooldown's default.
	DefaultCooldownDefault = time.Second
	// MaxCooldownDefault is Options.MaxCooldown's default.
	MaxCooldownDefault = time.Hour
)

// Options tune a Limiter; zero values take the defaults noted.
type Options struct {
	// Prefix starts every Redis key the limiter writes. Default PrefixDefault
	// ("tidemark:ratelimit:").
	Prefix string
	// Lease is how long a concurrency slot stays held without renewal; a
	// holder renews every Lease/3. A dead worker's slot frees after at most
	// Lease. Default LeaseDefault (15s).
	Lease time.Duration
	// PollInterval is how often a waiter retries a full concurrency
	// semaphore. Default PollIntervalDefault (50ms).
	PollInterval time.Duration
	// SemaphoreRetryIn is the DelayError.RetryIn when the concurrency cap
	// stays full beyond MaxWait (how long the holders keep their slots is
	// unknown). Default SemaphoreRetryInDefault (1s).
	SemaphoreRetryIn time.Duration
	// LowRemaining is the RateLimit-Remaining value at or below which
	// Observe spreads the remaining requests over the reset window.
	// Default LowRemainingDefault (10).
	LowRemaining int
	// Reserve is how many requests of an upstream's announced budget are
	// kept back: at or below it the source pauses until the reset. It
	// absorbs a request of another client of the same API key, or one
	// that lands just past a window's edge. Default ReserveDefault (1);
	// negative: none.
	Reserve int
	// MaxReset is the longest reset an upstream may announce: a reset
	// further away is taken for a broken header and ignored, not a
	// pause of days. Default MaxResetDefault (24h).
	MaxReset time.Duration
	// OnRemaining, when set, is called with every remaining budget an
	// upstream announces: feed tidemark_ratelimit_remaining{source}.
	OnRemaining func(source string, remaining int)
	// OnIgnored, when set, is called when an upstream's rate-limit
	// headers are present but unusable, with the QuotaError's Reason.
	OnIgnored func(source, reason string)
	// DefaultCooldown pauses a source after a 429 without a usable
	// Retry-After. Default DefaultCooldownDefault (1s).
	DefaultCooldown time.Duration
	// MaxCooldown caps a cooldown an upstream asks for, so one bad header
	// cannot stop a source for days. Default MaxCooldownDefault (1h).
	MaxCooldown time.Duration
	// OnWait, when set, is called once per Wait with how long it waited
	// in process (whatever the outcome): feed tidemark_ratelimit_wait_seconds.
	OnWait func(source string, waited time.Duration)
	// ReleaseDelay is how long a released concurrency slot may wait to be
	// freed by this Limiter's next admit of the same source, in that
	// admit's round trip, instead of a round trip of its own: a busy
	// worker then takes and frees its slots in one round trip a request.
	// Released slots no admit took are freed when the delay ends. The
	// fleet sees a released slot held for at most this long more (the
	// cap is never exceeded; it may be used a little less). Default 0:
	// a slot is freed at once.
	ReleaseDelay time.Duration
	// Now is the clock used to turn HTTP dates and epoch resets into
	// durations. Default time.Now.
	Now func() time.Time
	// Logger reports lost leases and failed renewals. Default slog.Default().
	Logger *slog.Logger
}

// Limiter enforces fleet-wide per-source limits kept in Redis. It is safe
// for concurrent use; every worker process creates one over the shared Redis.
type Limiter struct {
	rdb redis.UniversalClient
	opt Options
	// tokenPrefix (random) and tokens (a counter) name slot holders.
	tokenPrefix string
	tokens      atomic.Uint64
	// released are slots released and not yet freed (Options.ReleaseDelay).
	released releases
}

// New returns a Limiter over rdb. With asynq's connection options:
// rdb := redisOpt.MakeRedisClient().(redis.UniversalClient).
func New(rdb redis.UniversalClient, opt Options) *Limiter {
	opt.Prefix = cmp.Or(opt.Prefix, PrefixDefault)
	opt.Lease = cmp.Or(opt.Lease, LeaseDefault)
	opt.PollInterval = cmp.Or(opt.PollInterval, PollIntervalDefault)
	opt.SemaphoreRetryIn = cmp.Or(opt.SemaphoreRetryIn, SemaphoreRetryInDefault)
	opt.LowRemaining = cmp.Or(opt.LowRemaining, LowRemainingDefault)
	switch {
	case opt.Reserve == 0:
		opt.Reserve = ReserveDefault
	case opt.Reserve < 0:
		opt.Reserve = 0
	}
	opt.MaxReset = cmp.Or(opt.MaxReset, MaxResetDefault)
	opt.DefaultCooldown = cmp.Or(opt.DefaultCooldown, DefaultCooldownDefault)
	opt.MaxCooldown = cmp.Or(opt.MaxCooldown, MaxCooldownDefault)
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return &Limiter{rdb: rdb, opt: opt, tokenPrefix: hex.EncodeToString(b[:]) + "-"}
}

// Limits are what one Wait enforces for a source.
type Limits struct {
	// Rate is the fleet-wide request rate. Nil: unlimited.
	Rate *config.RateLimit
	// MaxConcurrency caps in-flight requests fleet-wide. 0: no cap.
	MaxConcurrency int
	// MaxWait is the longest Wait blocks in process; a longer wait returns a
	// *DelayError instead. 0: never block, always hand back.
	MaxWait time.Duration
	// IgnoreHeaders makes Observe disregard the budget an upstream
	// announces in rate-limit headers (Retry-After still counts).
	IgnoreHeaders bool
}

// LimitsFor returns the limits of a configured source.
func LimitsFor(src *config.Source, maxWait time.Duration) Limits {
	return Limits{Rate: src.RateLimit, MaxConcurrency: src.MaxConcurrency, MaxWait: maxWait,
		IgnoreHeaders: src.RateLimitHeaders == config.HeadersIgnore}
}

// DelayError says a request may not start for RetryIn: longer than the
// caller was willing to wait in process. The task should be handed back to
// the queue with this delay; it is not a failure.
type DelayError struct {
	Source  string
	Reason  string // "cooldown", "slow-down", "rate", "concurrency"
	RetryIn time.Duration
}

func (e *DelayError) Error() string {
	return fmt.Sprintf("source %s: %s limit: retry in %s", e.Source, e.Reason, e.RetryIn.Round(time.Millisecond))
}

// AsDelay reports the delay of a *DelayError in err's chain.
func AsDelay(err error) (time.Duration, bool) {
	var de *DelayError
	if errors.As(err, &de) {
		return de.RetryIn, true
	}
	return 0, false
}

// Permit is the right to send one request. Release it as soon as the
// response is read: it frees the concurrency slot and stops lease renewal.
type Permit struct {
	// Waited is how long Wait blocked in process before granting it.
	Waited time.Duration

	release func(abandon bool)
	once    sync.Once
}

// Release frees the permit's concurrency slot. It is safe to call more than
// once and on a nil Permit.
func (p *Permit) Release() {
	if p == nil || p.release == nil {
		return
	}
	p.once.Do(func() { p.release(false) })
}

// Wait blocks until source may take one more request under lim, and returns
// the permit for it. It returns a *DelayError when the total wait would
// exceed lim.MaxWait, ctx's error when ctx ends first, and an error when
// Redis fails (it never lets a request through unchecked).
//
// The steps run in the order that keeps the limits exact, all in one
// round trip (admitScript): a cooldown check, then a concurrency slot
// (held, and renewed, while waiting further), then the slow-down slot,
// then the GCRA token, taken last so that a granted token is spent at once.
func (l *Limiter) Wait(ctx context.Context, source string, lim Limits) (*Permit, error) {
	start := time.Now()
	var waited time.Duration
	defer func() {
		if l.opt.OnWait != nil {
			l.opt.OnWait(source, waited)
		}
	}()
	var held *lease
	fail := func(err error) (*Permit, error) {
		if held != nil {
			held.stop(false)
		}
		waited = time.Since(start)
		return nil, err
	}
	// pause sleeps d, or says why it may not.
	pause := func(reason string, d time.Duration) error {
		if time.Since(start)+d > lim.MaxWait {
			return &DelayError{Source: source, Reason: reason, RetryIn: d}
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for source %s: %w", source, ctx.Err())
		case <-t.C:
			return nil
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(fmt.Errorf("wait for source %s: %w", source, err))
		}
		// The first look (and every look while no slot is held) checks the
		// cooldown, takes a slot and checks the pacing in one round trip;
		// a look with a slot held checks the cooldown and pacing only.
		var code int64
		var d time.Duration
		var err error
		if held == nil {
			code, d, held, err = l.admit(ctx, source, lim.MaxConcurrency, lim)
		} else {
			code, d, _, err = l.admit(ctx, source, 0, lim) // no second slot
		}
		if err != nil {
			return fail(fmt.Errorf("rate limit %s: %w", source, err))
		}
		switch code {
		case admitCooldown, admitSlowDown, admitRate:
			// A cooldown is seen before any slot is taken: no slot is held
			// only to sit it out. A slow-down or a spent rate is sat out
			// holding the slot.
			reason := map[int64]string{admitCooldown: "cooldown", admitSlowDown: "slow-down", admitRate: "rate"}[code]
			if err := pause(reason, d); err != nil {
				return fail(err)
			}
			continue
		case admitFull:
			if time.Since(start)+l.opt.PollInterval > lim.MaxWait {
				return fail(&DelayError{Source: source, Reason: "concurrency", RetryIn: max(l.opt.SemaphoreRetryIn, lim.MaxWait)})
			}
			if err := pause("concurrency", l.opt.PollInterval); err != nil {
				return fail(err)
			}
			continue
		}
		waited = time.Since(start)
		p := &Permit{Waited: waited}
		if held != nil {
			p.release = held.stop
		}
		return p, nil
	}
}

func (l *Limiter) key(source, what string) string {
	return l.opt.Prefix + source + ":" + what
}

// newToken names one concurrency slot holder, unique fleet-wide: the
// limiter's random prefix and a counter (no random read per request).
func (l *Limiter) newToken() string {
	return l.tokenPrefix + strconv.FormatUint(l.tokens.Add(1), 36)
}
