package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// admitScript is a request's look at a source's limits, in one round trip:
// the cooldown (KEYS[1], a key whose TTL is the time left), then a
// concurrency slot (KEYS[3], when ARGV[2] > 0: the semaphore, see
// semaphore.go), then the slow-down pacing (KEYS[2]: a hash of the interval
// and the next slot in Redis-clock milliseconds, expiring with the
// upstream's reset window; an admitted request takes the next slot), then
// the rate (KEYS[4], when ARGV[4] > 0: GCRA over ARGV[4] requests per
// ARGV[5] seconds with a burst of ARGV[6]; the algorithm, key and stored
// value of github.com/go-redis/redis_rate's AllowN, so that limiters of
// either kind share one budget). It returns {code, ms, slot}: code 0
// admitted, 1 cooldown for ms, 2 slow-down for ms, 3 every slot held, 4 rate
// spent for ms; slot is 1 when it took a concurrency slot (held while the
// caller sits out a slow-down or the rate). A cooldown is checked before a
// slot is taken, so no slot is held only to sit it out.
//
// ARGV[7] and on are slots this Limiter released since its last admit of
// the source (Options.ReleaseDelay): they are freed first, whatever the
// outcome, so a release rides on the next admit instead of a round trip of
// its own.
var admitScript = redis.NewScript(`
if #ARGV > 6 then
  redis.call('ZREM', KEYS[3], unpack(ARGV, 7))
end
local cd = redis.call('PTTL', KEYS[1])
if cd > 0 then
  return {1, cd, 0}
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local slot = 0
local limit = tonumber(ARGV[2])
if limit > 0 then
  local lease = tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= limit then
    return {3, 0, 0}
  end
  redis.call('ZADD', KEYS[3], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[3], lease)
  slot = 1
end
local iv = tonumber(redis.call('HGET', KEYS[2], 'interval'))
if iv then
  local nxt = tonumber(redis.call('HGET', KEYS[2], 'next') or '0')
  if nxt > now then
    return {2, nxt - now, slot}
  end
  redis.call('HSET', KEYS[2], 'next', now + iv)
end
local rate = tonumber(ARGV[4])
if rate > 0 then
  local emission = tonumber(ARGV[5]) / rate
  local secs = (t[1] - 1483228800) + (t[2] / 1000000)
  local tat = tonumber(redis.call('GET', KEYS[4]) or secs)
  tat = math.max(tat, secs)
  local new_tat = tat + emission
  local diff = secs - (new_tat - emission * tonumber(ARGV[6]))
  if diff < 0 then
    return {4, math.max(math.ceil(-diff * 1000), 1), slot}
  end
  redis.call('SET', KEYS[4], new_tat, 'EX', math.ceil(new_tat - secs))
end
return {0, 0, slot}
`)

// gcraPrefix starts the rate's key, as github.com/go-redis/redis_rate
// names it: a fleet half upgraded shares one budget.
const gcraPrefix = "rate:"

// Codes of admitScript.
const (
	admitted = iota
	admitCooldown
	admitSlowDown
	admitFull
	admitRate
)

// admit runs admitScript for source with a concurrency cap of limit (0: no
// cap, and no slot taken: the cooldown, pacing and rate alone, for a
// request that already holds its slot) and the rate of lim. It returns the
// code, the delay it names, and the slot it took (nil when none).
func (l *Limiter) admit(ctx context.Context, source string, limit int, lim Limits) (code int64, d time.Duration, held *lease, err error) {
	key := l.key(source, "inflight")
	token := l.newToken()
	var rate, burst int
	var per float64
	if r := lim.Rate; r != nil && r.Requests > 0 && r.Per > 0 {
		rate, per, burst = r.Requests, r.Per.D().Seconds(), max(r.Burst, 1)
	}
	args := []any{token, limit, l.opt.Lease.Milliseconds(), rate, per, burst}
	released := l.released.take(key)
	for _, t := range released {
		args = append(args, t)
	}
	keys := []string{l.key(source, "cooldown"), l.key(source, "pace"), key, gcraPrefix + l.key(source, "gcra")}
	v, err := admitScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		for _, t := range released {
			l.released.add(l, key, t) // freed by the next admit or the timer
		}
		return 0, 0, nil, fmt.Errorf("check cooldown, concurrency, slow-down and rate: %w", err)
	}
	if len(v) != 3 {
		return 0, 0, nil, fmt.Errorf("check cooldown, concurrency, slow-down and rate: unexpected reply %v", v)
	}
	if v[2] == 1 {
		held = l.hold(source, key, token)
	}
	return v[0], time.Duration(v[1]) * time.Millisecond, held, nil
}
