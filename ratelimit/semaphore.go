package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The semaphore is a sorted set of holder tokens scored by lease expiry in
// Redis-clock milliseconds. admitScript takes a slot, first evicting expired
// holders, so a worker that died holding a slot loses it one lease later.

// renewScript extends a holder's lease; 0 means the holder was evicted.
var renewScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
`)

// lease is one held concurrency slot, renewed every Lease/3 until stop. The
// renewal is a timer, not a goroutine: most requests end long before the
// first renewal, and then holding a slot costs no goroutine to start and
// wake up again.
type lease struct {
	l      *Limiter
	source string
	key    string
	token  string
	once   sync.Once

	mu      sync.Mutex
	stopped bool
	timer   *time.Timer
}

// hold starts renewing a slot just taken.
func (l *Limiter) hold(source, key, token string) *lease {
	ls := &lease{l: l, source: source, key: key, token: token}
	ls.mu.Lock()
	ls.timer = time.AfterFunc(l.opt.Lease/3, ls.renew)
	ls.mu.Unlock()
	return ls
}

// renew extends the lease once and arms the next renewal. A renewal that
// races stop is harmless: renewScript only extends a slot still held, and
// after stop nothing is logged or re-armed.
func (ls *lease) renew() {
	if ls.isStopped() {
		return
	}
	every := ls.l.opt.Lease / 3
	ctx, cancel := context.WithTimeout(context.Background(), every)
	ok, err := renewScript.Run(ctx, ls.l.rdb, []string{ls.key}, ls.token, ls.l.opt.Lease.Milliseconds()).Int()
	cancel()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	switch {
	case ls.stopped:
		return
	case err != nil:
		ls.l.opt.Logger.Warn("renew concurrency lease", "source", ls.source, "error", err)
	case ok == 0:
		// Evicted (renewals failed for a whole lease): the request in
		// flight goes on, but the fleet may briefly run one over the cap.
		ls.l.opt.Logger.Warn("concurrency lease lost", "source", ls.source)
		return
	}
	ls.timer.Reset(every)
}

func (ls *lease) isStopped() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.stopped
}

// stop ends renewal and frees the slot; abandon leaves the slot in Redis,
// as a killed worker would.
func (ls *lease) stop(abandon bool) {
	ls.once.Do(func() {
		ls.mu.Lock()
		ls.stopped = true
		ls.timer.Stop()
		ls.mu.Unlock()
		if abandon {
			return
		}
		if ls.l.opt.ReleaseDelay > 0 {
			ls.l.released.add(ls.l, ls.key, ls.token)
			return
		}
		ls.l.zrem(ls.key, ls.token)
	})
}

// zrem frees slots now, in one round trip.
func (l *Limiter) zrem(key string, tokens ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	members := make([]any, len(tokens))
	for i, t := range tokens {
		members[i] = t
	}
	if err := l.rdb.ZRem(ctx, key, members...).Err(); err != nil {
		l.opt.Logger.Warn("release concurrency slot (it frees when its lease ends)", "error", err)
	}
}

// releases holds the slots a Limiter released and has not yet freed in
// Redis, by semaphore key (Options.ReleaseDelay): the next admit of the
// source frees them in its own round trip; a timer frees those no admit
// took within the delay. A slot is freed late by at most the delay, never
// early, so the fleet never holds more requests in flight than the cap.
type releases struct {
	mu     sync.Mutex
	tokens map[string][]string
	timers map[string]bool // a flush of the key is armed
}

// add queues a released slot and arms the key's flush.
func (r *releases) add(l *Limiter, key, token string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tokens == nil {
		r.tokens, r.timers = make(map[string][]string), make(map[string]bool)
	}
	r.tokens[key] = append(r.tokens[key], token)
	if !r.timers[key] {
		r.timers[key] = true
		time.AfterFunc(l.opt.ReleaseDelay, func() { r.flush(l, key) })
	}
}

// take returns and forgets the key's queued slots: the caller frees them.
func (r *releases) take(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.tokens[key]
	if ts != nil {
		delete(r.tokens, key)
	}
	return ts
}

// flush frees the key's queued slots in one round trip.
func (r *releases) flush(l *Limiter, key string) {
	r.mu.Lock()
	ts := r.tokens[key]
	delete(r.tokens, key)
	delete(r.timers, key)
	r.mu.Unlock()
	if len(ts) > 0 {
		l.zrem(key, ts...)
	}
}

// FreeReleased frees at once every slot released and not yet freed
// (Options.ReleaseDelay): call it before closing the Redis client.
func (l *Limiter) FreeReleased() {
	l.released.mu.Lock()
	keys := make([]string, 0, len(l.released.tokens))
	for k := range l.released.tokens {
		keys = append(keys, k)
	}
	l.released.mu.Unlock()
	for _, k := range keys {
		if ts := l.released.take(k); len(ts) > 0 {
			l.zrem(k, ts...)
		}
	}
}
