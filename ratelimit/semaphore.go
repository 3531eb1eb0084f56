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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ls.l.rdb.ZRem(ctx, ls.key, ls.token).Err(); err != nil {
			ls.l.opt.Logger.Warn("release concurrency slot (it frees when its lease ends)", "error", err)
		}
	})
}
