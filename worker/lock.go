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
//
// The lock belongs to a read, not to one attempt at it: a read handed back
// by the source's limits keeps it (Hold) until its task comes back, and
// that task's next attempt takes it up again (its token starts with the
// same owner). Released between attempts, the lock would go to whichever
// fetch of the resource asked next, and the handed-back task, finding it
// taken, would turn into a pending mark; its follow-up, a new request,
// reads afresh. Under a tight rate limit every attempt is handed back
// after a few pages, so two fetches of a resource restarted each other's
// reads for ever.
type fetchLock struct {
	rdb   redis.UniversalClient
	key   string
	mark  string
	owner string // "" or the read's task id and '#': the token's prefix
	token string
	lease time.Duration
}

// tokenRandom is the length of a token's random part, in hex digits.
const tokenRandom = 32

// fetchLockKey is the Redis key of a resource's fetch lock.
func fetchLockKey(k store.Key) string { return "tidemark:fetch-lock:" + k.String() }

// newFetchLock returns the fetch lock of k for the read of task owner ("":
// an attempt that takes up no earlier one's lock). Every attempt gets a
// token of its own, so that a stalled attempt's renewals fail once a later
// attempt of its task has taken the lock up.
func newFetchLock(rdb redis.UniversalClient, k store.Key, lease time.Duration, owner string) *fetchLock {
	b := make([]byte, tokenRandom/2)
	rand.Read(b)
	if owner != "" {
		owner += "#"
	}
	return &fetchLock{
		rdb:   rdb,
		key:   fetchLockKey(k),
		mark:  "tidemark:fetch-pending:" + k.String(),
		owner: owner,
		token: owner + hex.EncodeToString(b),
		lease: lease,
	}
}

// acquireOrMark takes the lock — free, or held for the same read (ARGV[6],
// the owner prefix, and a random part of ARGV[7] characters) —, or, when
// another fetch holds it, leaves the pending mark (a full fetch outranks a
// delta; no mode, no mark) and returns false.
var acquireOrMark = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if ARGV[6] ~= '' then
  local cur = redis.call('GET', KEYS[1])
  if cur and #cur == #ARGV[6] + tonumber(ARGV[7]) and string.sub(cur, 1, #ARGV[6]) == ARGV[6] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
  end
end
if ARGV[3] == '' then return 0 end
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

// extend renews the lease if the lock is still ours (1), takes it again if
// it is gone and nobody else took it (2: a Redis that restarted empty, or a
// lease that lapsed with no takeover yet; a takeover then finds the
// resource busy), and reports 0 when another holds it.
var extend = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0`)

// Acquire tries to take the lock; on false the pending mark (mode, trigger)
// is set, unless mode is "".
func (l *fetchLock) Acquire(ctx context.Context, mode, trigger string) (bool, error) {
	n, err := acquireOrMark.Run(ctx, l.rdb, []string{l.key, l.mark},
		l.token, l.lease.Milliseconds(), mode, trigger, time.Hour.Milliseconds(), l.owner, tokenRandom).Int()
	if err != nil {
		return false, fmt.Errorf("fetch lock %s: %w", l.key, err)
	}
	return n == 1, nil
}

// Keep renews the lease every third of it until the returned stop is
// called. The lock is how the fleet knows someone works on the resource: a
// worker that cannot is taken over once its lease lapses (Worker's
// takeover check), so ctx is cancelled, and the lease left to lapse, when
//   - another worker holds the lock (the lease had lapsed already);
//   - the lease could not be renewed for a whole lease (Redis unreachable,
//     or hung);
//   - the fetch has made no progress (lastProgress) for stall: a response
//     or a page transaction hangs (a stuck Postgres or upstream connection).
//
// A fetch cancelled so writes nothing more: its pages are fenced by its
// run's status, which the run that takes over changes.
func (l *fetchLock) Keep(ctx context.Context, lastProgress func() time.Time, stall time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		every := l.lease / 3
		t := time.NewTicker(every)
		defer t.Stop()
		renewed := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if idle := time.Since(lastProgress()); idle > stall {
				cancel(fmt.Errorf("fetch lock %s given up: the fetch made no progress for %s (a hung connection?); another worker takes over", l.key, idle.Round(time.Second)))
				return
			}
			rctx, cancelRenew := context.WithTimeout(ctx, every)
			n, err := extend.Run(rctx, l.rdb, []string{l.key}, l.token, l.lease.Milliseconds()).Int()
			cancelRenew()
			switch {
			case err == nil && n == 0:
				cancel(fmt.Errorf("fetch lock %s lost: lease expired", l.key))
				return
			case err == nil:
				renewed = time.Now()
			case time.Since(renewed) >= l.lease:
				cancel(fmt.Errorf("fetch lock %s lost: not renewed for %s (%w)", l.key, l.lease, err))
				return
			}
		}
	}()
	// stop waits for the renewals to end: one still in flight would
	// otherwise shorten a Hold that follows.
	return ctx, func() { close(done); cancel(nil); <-exited }
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

// Hold keeps the lock for d without renewal: for a read handed back to its
// queue, whose task takes the lock up again when it comes back (Acquire),
// and leaves the pending mark to the release at the read's end. A task
// that never comes back (deleted by hand) frees the resource after d.
func (l *fetchLock) Hold(ctx context.Context, d time.Duration) error {
	if err := extend.Run(ctx, l.rdb, []string{l.key}, l.token, d.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("hold fetch lock %s: %w", l.key, err)
	}
	return nil
}
