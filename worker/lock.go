package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tidemark/tidemark/store"
)

// fetchLock makes fetches of one resource run one at a time, fleet-wide. A
// fetch that finds the lock taken leaves a "pending" mark instead of running;
// the holder, on release, takes the mark and enqueues exactly one follow-up.
// Both steps are Lua scripts, so no mark can slip in between a release and
// its check. The lock is a lease: a worker that dies frees it when the lease
// runs out.
type fetchLock struct {
	rdb   redis.UniversalClient
	key   string
	mark  string
	token string
	lease time.Duration
}

func newFetchLock(rdb redis.UniversalClient, k store.Key, lease time.Duration) *fetchLock {
	b := make([]byte, 16)
	rand.Read(b)
	return &fetchLock{
		rdb:   rdb,
		key:   "tidemark:fetch-lock:" + k.String(),
		mark:  "tidemark:fetch-pending:" + k.String(),
		token: hex.EncodeToString(b),
		lease: lease,
	}
}

// acquireOrMark takes the lock, or, when another fetch holds it, leaves the
// pending mark (a full fetch outranks a delta) and returns false.
var acquireOrMark = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
local cur = redis.call('GET', KEYS[2])
if cur == false or (ARGV[3] == 'full' and string.sub(cur, 1, 4) ~= 'full') then
  redis.call('SET', KEYS[2], ARGV[3] .. ':' .. ARGV[4], 'PX', ARGV[5])
end
return 0`)

// releaseAndTake frees the lock if still ours and returns (and clears) the
// pending mark.
var releaseAndTake = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
local mark = redis.call('GET', KEYS[2])
if mark then redis.call('DEL', KEYS[2]) return mark end
return ''`)

var extend = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

// Acquire tries to take the lock; on false the pending mark (mode, trigger) is set.
func (l *fetchLock) Acquire(ctx context.Context, mode, trigger string) (bool, error) {
	n, err := acquireOrMark.Run(ctx, l.rdb, []string{l.key, l.mark},
		l.token, l.lease.Milliseconds(), mode, trigger, time.Hour.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("fetch lock %s: %w", l.key, err)
	}
	return n == 1, nil
}

// Keep renews the lease until the returned stop is called. If the lease is
// lost (another worker now holds it) ctx is cancelled, so two fetches of one
// resource never keep writing side by side.
func (l *fetchLock) Keep(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(l.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				n, err := extend.Run(ctx, l.rdb, []string{l.key}, l.token, l.lease.Milliseconds()).Int()
				if err == nil && n == 0 {
					cancel(fmt.Errorf("fetch lock %s lost: lease expired", l.key))
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// Release frees the lock and returns the pending mark's mode and trigger
// ("" when no fetch was asked for meanwhile).
func (l *fetchLock) Release(ctx context.Context) (mode, trigger string, err error) {
	mark, err := releaseAndTake.Run(ctx, l.rdb, []string{l.key, l.mark}, l.token).Text()
	if err != nil {
		return "", "", fmt.Errorf("release fetch lock %s: %w", l.key, err)
	}
	if mark == "" {
		return "", "", nil
	}
	mode, trigger, _ = strings.Cut(mark, ":")
	return mode, trigger, nil
}
