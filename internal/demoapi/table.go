package demoapi

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// deletedBit marks a deleted record in table.ver; the low bits are its version.
const deletedBit = 1 << 31

// initialSpan is how far back the initial records' created_at reaches.
const initialSpan = 365 * 24 * time.Hour

// table is the compact state of one resource. Record i (0-based) has the
// external id i+1; ids are never reused, so index order is id order.
type table struct {
	res  int
	seed int64

	ver []uint32 // version (starts at 1) | deletedBit
	upd []int64  // updated_at, unix ms

	base    int     // records created by New; their created_at is derived
	startMs int64   // the server's start, unix ms
	created []int64 // created_at (unix ms) of records appended after New
	del     []int32 // sorted indexes of deleted records, for rank lookups

	gen      uint64    // bumps on every mutation: feeds the ETag
	lastMod  time.Time // second precision: the Last-Modified header
	lmServed atomic.Bool

	cache rankCache
}

func newTable(res int, seed int64, records int, start time.Time) *table {
	t := &table{
		res:     res,
		seed:    seed,
		ver:     make([]uint32, records),
		upd:     make([]int64, records),
		base:    records,
		startMs: start.UnixMilli(),
		lastMod: start.Truncate(time.Second),
	}
	for i := range records {
		t.ver[i] = 1
		c := t.createdAt(i)
		room := max(t.startMs-c, 1)
		t.upd[i] = c + int64(hash(seed, res, i+1, 0xffff)%uint64(room))/4
	}
	return t
}

// createdAt is record i's created_at in unix ms: the initial records are
// spread evenly, in id order, over the year before the start.
func (t *table) createdAt(i int) int64 {
	if i >= t.base {
		return t.created[i-t.base]
	}
	span := initialSpan.Milliseconds()
	step := max(span/int64(t.base), 1)
	return t.startMs - span + int64(i)*span/int64(t.base) + int64(hash(t.seed, t.res, i+1, 0xfffe)%uint64(step))
}

func (t *table) len() int             { return len(t.ver) }
func (t *table) live() int            { return len(t.ver) - len(t.del) }
func (t *table) isLive(i int) bool    { return t.ver[i]&deletedBit == 0 }
func (t *table) version(i int) uint32 { return t.ver[i] &^ deletedBit }

// selectLive returns the index of the k-th (0-based) live record, or len()
// when there are not that many: O(log deletes).
func (t *table) selectLive(k int) int {
	if k >= t.live() {
		return t.len()
	}
	// del[j]-j (live records before del[j]) is non-decreasing.
	j := sort.Search(len(t.del), func(j int) bool { return int(t.del[j])-j > k })
	return k + j
}

func (t *table) markDeleted(i int) {
	t.ver[i] |= deletedBit
	j := sort.Search(len(t.del), func(j int) bool { return int(t.del[j]) >= i })
	t.del = append(t.del, 0)
	copy(t.del[j+1:], t.del[j:])
	t.del[j] = int32(i)
}

// row is a snapshot of one record's state, taken under the read lock so that
// rendering can happen without it.
type row struct {
	idx     int
	ver     uint32
	upd     int64
	created int64
}

func (t *table) row(i int) row {
	return row{idx: i, ver: t.version(i), upd: t.upd[i], created: t.createdAt(i)}
}

// filter selects records by updated_at >= sinceMs when on.
type filter struct {
	on      bool
	sinceMs int64
}

func (t *table) matches(i int, f filter) bool {
	return t.ver[i]&deletedBit == 0 && (!f.on || t.upd[i] >= f.sinceMs)
}

// collect appends up to limit matching records from index start on, and
// reports the index of the next matching record after them (-1: none).
func (t *table) collect(dst []row, start, limit int, f filter) ([]row, int) {
	n := t.len()
	i := max(start, 0)
	for ; i < n && len(dst) < limit; i++ {
		if t.matches(i, f) {
			dst = append(dst, t.row(i))
		}
	}
	for ; i < n; i++ {
		if t.matches(i, f) {
			return dst, i
		}
	}
	return dst, -1
}

// rankCache remembers where the last filtered page ended so that walking
// page numbers under an updated_since filter scans forward instead of from
// the start each time. It is used under the server's read lock.
type rankCache struct {
	mu     sync.Mutex
	ok     bool
	gen    uint64
	f      filter
	rank   int // matching records in [0, pos)
	pos    int
	totalN int // -1: unknown
}

// filteredStart returns the index from which the rank-th (0-based) matching
// record is the next match.
func (t *table) filteredStart(rank int, f filter) int {
	c := &t.cache
	c.mu.Lock()
	r, pos := 0, 0
	if c.ok && c.gen == t.gen && c.f == f && rank >= c.rank {
		r, pos = c.rank, c.pos
	}
	c.mu.Unlock()
	n := t.len()
	for ; pos < n && r < rank; pos++ {
		if t.matches(pos, f) {
			r++
		}
	}
	return pos
}

func (t *table) rememberRank(rank, pos int, f filter) {
	c := &t.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ok || c.gen != t.gen || c.f != f {
		c.totalN = -1
	}
	c.ok, c.gen, c.f, c.rank, c.pos = true, t.gen, f, rank, pos
}

// filteredTotal counts matching records, cached per generation and filter.
func (t *table) filteredTotal(f filter) int {
	if !f.on {
		return t.live()
	}
	c := &t.cache
	c.mu.Lock()
	if c.ok && c.gen == t.gen && c.f == f && c.totalN >= 0 {
		n := c.totalN
		c.mu.Unlock()
		return n
	}
	c.mu.Unlock()
	total := 0
	for i := range t.len() {
		if t.matches(i, f) {
			total++
		}
	}
	c.mu.Lock()
	if !c.ok || c.gen != t.gen || c.f != f {
		c.ok, c.gen, c.f, c.rank, c.pos = true, t.gen, f, 0, 0
	}
	c.totalN = total
	c.mu.Unlock()
	return total
}

// touchLastModified moves Last-Modified to now. A value already served must
// not be reused for different content (clients send it back in
// If-Modified-Since), so within an already-served second it moves one second
// ahead instead.
func (t *table) touchLastModified(now time.Time) {
	sec := now.Truncate(time.Second)
	served := t.lmServed.Swap(false)
	switch {
	case served && !sec.After(t.lastMod):
		sec = t.lastMod.Add(time.Second)
	case sec.Before(t.lastMod):
		sec = t.lastMod
	}
	t.lastMod = sec
}

// hash mixes the seed, resource, id and version into 64 random-looking bits
// (splitmix64 finaliser): record content is a pure function of it.
func hash(seed int64, res, id int, ver uint32) uint64 {
	x := mix(uint64(seed) + 0x9e3779b97f4a7c15*uint64(res+1))
	x = mix(x ^ uint64(id))
	return mix(x ^ uint64(ver)<<32 ^ 0xd1b54a32d192ed03)
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// prng is a splitmix64 generator: small, fast and reproducible from a seed.
type prng struct{ s uint64 }

func (p *prng) next() uint64 {
	p.s += 0x9e3779b97f4a7c15
	return mix(p.s)
}

// intN returns a value in [0, n); n must be > 0.
func (p *prng) intN(n int) int { return int(p.next() % uint64(n)) }

// float returns a value in [0, 1).
func (p *prng) float() float64 { return float64(p.next()>>11) / (1 << 53) }
