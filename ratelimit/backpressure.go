package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// cooldownScript sets a cooldown of ARGV[1] ms unless a longer one is
// already running: cooldowns only ever extend.
var cooldownScript = redis.NewScript(`
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
  return 1
end
return 0
`)

// paceScript spreads requests ARGV[1] ms apart for the next ARGV[2] ms.
var paceScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'interval', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// Cooldown pauses source for every worker until until (capped at
// Options.MaxCooldown from now). A cooldown already running longer is kept.
func (l *Limiter) Cooldown(ctx context.Context, source string, until time.Time) error {
	d := min(until.Sub(l.opt.Now()), l.opt.MaxCooldown)
	if d < time.Millisecond {
		return nil
	}
	if err := cooldownScript.Run(ctx, l.rdb, []string{l.key(source, "cooldown")}, d.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("cooldown source %s: %w", source, err)
	}
	return nil
}

// CooldownLeft reports how long source stays paused (0 when it is not).
func (l *Limiter) CooldownLeft(ctx context.Context, source string) (time.Duration, error) {
	d, err := l.rdb.PTTL(ctx, l.key(source, "cooldown")).Result()
	if err != nil {
		return 0, fmt.Errorf("read cooldown of source %s: %w", source, err)
	}
	return max(d, 0), nil
}

// Observe applies an upstream response's back-pressure to source, for the
// whole fleet:
//   - 429 or 503 with Retry-After (seconds or HTTP date): a cooldown until
//     then; a 429 without a usable Retry-After cools down for
//     Options.DefaultCooldown.
//   - the budget the upstream announces (see [ReadQuota]), unless
//     lim.IgnoreHeaders (the source's rate_limit_headers: ignore). At or
//     below Options.Reserve remaining, the source pauses until the reset;
//     at or below the low mark (Options.LowRemaining, or twice
//     lim.MaxConcurrency if that is more, so that the requests already on
//     the wire when the slow-down starts still fit), the requests left
//     above the reserve are spread evenly until the reset; above it, an
//     earlier slow-down ends. The spread is the fastest pace that makes
//     the budget last: never slower than needed.
//
// Headers that are malformed or absurd (a reset beyond Options.MaxReset)
// are ignored: logged at debug level and reported to Options.OnIgnored,
// never a stall.
func (l *Limiter) Observe(ctx context.Context, source string, lim Limits, status int, header http.Header) error {
	now := l.opt.Now()
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		d, ok := ParseRetryAfter(header.Get("Retry-After"), now)
		if !ok && status == http.StatusTooManyRequests {
			d, ok = l.opt.DefaultCooldown, true
		}
		if ok {
			if err := l.Cooldown(ctx, source, now.Add(d)); err != nil {
				return err
			}
		}
	}
	if lim.IgnoreHeaders {
		return nil
	}
	q, err := ReadQuota(header, now, l.opt.MaxReset)
	if q.Remaining >= 0 && l.opt.OnRemaining != nil {
		l.opt.OnRemaining(source, q.Remaining)
	}
	if err != nil {
		var bad *QuotaError
		if errors.As(err, &bad) {
			l.opt.Logger.Debug("rate-limit headers ignored", "source", source, "reason", bad.Reason, "error", err)
			if l.opt.OnIgnored != nil {
				l.opt.OnIgnored(source, bad.Reason)
			}
		}
		return nil
	}
	if q.Remaining < 0 {
		return nil // no budget announced
	}
	return l.pace(ctx, source, now, q, max(l.opt.LowRemaining, 2*lim.MaxConcurrency))
}

// pace applies an announced budget: pause, spread, or let go.
func (l *Limiter) pace(ctx context.Context, source string, now time.Time, q Quota, low int) error {
	key := l.key(source, "pace")
	switch {
	case q.Remaining > low:
		if err := l.rdb.Del(ctx, key).Err(); err != nil {
			return fmt.Errorf("end slow-down of source %s: %w", source, err)
		}
	case q.Reset <= 0:
		// The window is over (or the reset unknown): nothing to spread over.
	case q.Remaining <= l.opt.Reserve:
		return l.Cooldown(ctx, source, now.Add(q.Reset))
	default:
		interval := max(q.Reset/time.Duration(q.Remaining-l.opt.Reserve), time.Millisecond)
		if err := paceScript.Run(ctx, l.rdb, []string{key}, interval.Milliseconds(), q.Reset.Milliseconds()).Err(); err != nil {
			return fmt.Errorf("slow down source %s: %w", source, err)
		}
	}
	return nil
}

// ParseRetryAfter parses a Retry-After value: delay seconds or an HTTP
// date. A date in the past is a zero delay; anything else unparseable
// reports false.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, math.MaxInt64/int64(time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// epochThreshold separates delta seconds from epoch seconds in reset
// headers: no window is 30 years long, and no epoch is that early.
const epochThreshold = 1_000_000_000

// ParseReset parses a RateLimit-Reset / X-RateLimit-Reset value: delta
// seconds (fractions allowed), epoch seconds (values from 1e9 on), epoch
// milliseconds (from 1e12 on), or an HTTP date. A reset in the past is zero; garbage reports false.
func ParseReset(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f < 1e15 {
		if f >= 1e12 { // epoch milliseconds
			f /= 1000
		}
		if f >= epochThreshold {
			sec, frac := math.Modf(f)
			return max(time.Unix(int64(sec), int64(frac*1e9)).Sub(now), 0), true
		}
		return time.Duration(f * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
