package ratelimit

import (
	"context"
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
//   - RateLimit-Remaining or X-RateLimit-Remaining (or the combined
//     RateLimit header) at or below Options.LowRemaining, with a reset
//     (RateLimit-Reset / X-RateLimit-Reset: delta seconds, epoch seconds or
//     an HTTP date): the remaining requests are spread evenly until the
//     reset; 0 remaining is a cooldown until the reset. A higher remaining
//     ends an earlier slow-down.
func (l *Limiter) Observe(ctx context.Context, source string, status int, header http.Header) error {
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
	remaining, reset, ok := quota(header, now)
	if !ok {
		return nil
	}
	pace := l.key(source, "pace")
	switch {
	case remaining > l.opt.LowRemaining:
		if err := l.rdb.Del(ctx, pace).Err(); err != nil {
			return fmt.Errorf("end slow-down of source %s: %w", source, err)
		}
	case reset <= 0:
		// Low, but no window to spread over: nothing sensible to do.
	case remaining == 0:
		return l.Cooldown(ctx, source, now.Add(reset))
	default:
		interval := max(reset/time.Duration(remaining), time.Millisecond)
		if err := paceScript.Run(ctx, l.rdb, []string{pace}, interval.Milliseconds(), reset.Milliseconds()).Err(); err != nil {
			return fmt.Errorf("slow down source %s: %w", source, err)
		}
	}
	return nil
}

// quota reads the remaining requests and the time to reset from the
// RateLimit-* / X-RateLimit-* headers, or from the combined RateLimit
// header ("limit=100, remaining=5, reset=30" or "...;r=5;t=30").
func quota(h http.Header, now time.Time) (remaining int, reset time.Duration, ok bool) {
	rv := first(h, "RateLimit-Remaining", "X-RateLimit-Remaining")
	tv := first(h, "RateLimit-Reset", "X-RateLimit-Reset")
	if rv == "" {
		rv, tv = combined(h.Get("RateLimit"))
	}
	if rv == "" {
		return 0, 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(rv))
	if err != nil || n < 0 {
		return 0, 0, false
	}
	reset, _ = ParseReset(tv, now)
	return n, reset, true
}

func first(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// combined reads remaining and reset from an IETF-draft RateLimit header.
func combined(v string) (remaining, reset string) {
	for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' }) {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "remaining", "r":
			remaining = val
		case "reset", "t":
			reset = val
		}
	}
	return remaining, reset
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
