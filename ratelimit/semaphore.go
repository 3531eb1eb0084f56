package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The semaphore is a sorted set of holder tokens scored by lease expiry in
// Redis-clock milliseconds. Acquire first evicts expired holders, so a
// worker that died holding a slot loses it one lease later.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease)
  return 1
end
return 0
`)

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

// lease is one held concurrency slot, renewed in the background until stop.
type lease struct {
	l      *Limiter
	key    string
	token  string
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// acquire takes a slot of source's semaphore, or returns nil when all
// limit slots are held.
func (l *Limiter) acquire(ctx context.Context, source string, limit int) (*lease, error) {
	key := l.key(source, "inflight")
	token := newToken()
	ok, err := acquireScript.Run(ctx, l.rdb, []string{key}, token, limit, l.opt.Lease.Milliseconds()).Int()
	if err != nil || ok == 0 {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ls := &lease{l: l, key: key, token: token, cancel: cancel, done: make(chan struct{})}
	go ls.renew(rctx, source)
	return ls, nil
}

func (ls *lease) renew(ctx context.Context, source string) {
	defer close(ls.done)
	t := time.NewTicker(ls.l.opt.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := renewScript.Run(ctx, ls.l.rdb, []string{ls.key}, ls.token, ls.l.opt.Lease.Milliseconds()).Int()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			ls.l.opt.Logger.Warn("renew concurrency lease", "source", source, "error", err)
		case ok == 0:
			// Evicted (renewals failed for a whole lease): the request in
			// flight goes on, but the fleet may briefly run one over the cap.
			ls.l.opt.Logger.Warn("concurrency lease lost", "source", source)
			return
		}
	}
}

// stop ends renewal and frees the slot; abandon leaves the slot in Redis,
// as a killed worker would.
func (ls *lease) stop(abandon bool) {
	ls.once.Do(func() {
		ls.cancel()
		<-ls.done
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
