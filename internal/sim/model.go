package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"
)

// Order is how the upstream lists a collection.
type Order int

const (
	// ByID lists records in creation order, as most APIs list by id.
	ByID Order = iota
	// ByStamp lists records by their updated_at (then creation order): an
	// update moves a record to the end, across pages.
	ByStamp
	// BySeq lists records by their change sequence number (the number
	// cursor): every create and update moves a record to the end.
	BySeq
)

// rec is one record of the model: its identity, its content, and how the
// upstream spells it.
type rec struct {
	uid   int   // the model's own identity, never reused
	pos   int64 // creation order (ByID)
	id    ident
	stamp *time.Time // the upstream's updated_at; nil: never stamped (null)
	seq   int64      // change sequence number, assigned on create and update
	// cursorMode is how updated_at is written (see cursorModes).
	cursorMode int
	name       strVal
	amount     num
	tags       []strVal
	nested     num
	// spell picks the spelling of the record's numbers (and of a numeric
	// id): a respelling changes the bytes served, never the value.
	spell int
	// version counts the record's changes of value, for the report.
	version int
	// prev is the record's value before its last update, which a
	// rollback may bring back; rolledBack says it did, with the old
	// updated_at and sequence number, so no delta filter returns it.
	prev       *rec
	rolledBack bool
}

// Model is the upstream's data: the records, the upstream's clock, and the
// history that the invariants are checked against. It is safe for
// concurrent use: the HTTP handler mutates it while the fleet reads it.
type Model struct {
	mu  sync.Mutex
	rng *rand.Rand
	// rollbacks draws which updates are rollbacks, from a stream of its
	// own so that a seed's other draws stay what they were before them.
	rollbacks *rand.Rand
	// lastUpdated is the record the last update changed, which a rollback
	// may restore.
	lastUpdated *rec
	content     Content
	skew        time.Duration
	// stampRes is the resolution of updated_at (1 s or 1 ms).
	stampRes time.Duration

	recs map[int]*rec
	// graves are deleted records, which a refill may bring back.
	graves  []*rec
	nextUID int
	nextPos int64
	seq     int64
	// version counts mutations of the collection (the ETag); lastMod is
	// the upstream time of the last one (Last-Modified).
	version int64
	lastMod time.Time
	// history holds, per expected key, when the record became live or
	// gone (model time is the fleet's clock, not the upstream's).
	history map[string][]transition
	// changes counts mutations applied while a read was in progress, per
	// kind; the report and the check of page-style deltas use them.
	midRead int
}

type transition struct {
	at   time.Time
	live bool
}

// NewModel returns a model of n records.
func NewModel(seed uint64, content Content, skew, stampRes time.Duration, n int) *Model {
	m := &Model{
		rng: rand.New(rand.NewPCG(seed, 0x51ed)), rollbacks: rand.New(rand.NewPCG(seed, 0x7011)),
		content: content, skew: skew, stampRes: stampRes,
		recs: map[int]*rec{}, history: map[string][]transition{},
		seq: content.SeqBase,
	}
	m.lastMod = m.now()
	for range n {
		m.create()
	}
	return m
}

// now is the upstream's clock: the fleet's, skewed.
func (m *Model) now() time.Time { return time.Now().Add(m.skew) }

// stampNow is the upstream's clock at updated_at resolution.
func (m *Model) stampNow() time.Time { return m.now().Truncate(m.stampRes) }

func (m *Model) touch() {
	m.version++
	m.lastMod = m.now()
}

func (m *Model) note(r *rec, live bool) {
	k := r.id.key()
	m.history[k] = append(m.history[k], transition{at: time.Now(), live: live})
}

func (m *Model) create() *rec {
	r := &rec{uid: m.nextUID, pos: m.nextPos}
	m.nextUID++
	m.nextPos++
	r.id = m.content.newID(m.rng, r.uid)
	m.fill(r)
	m.stampCreate(r)
	m.recs[r.uid] = r
	m.note(r, true)
	m.touch()
	return r
}

// stampCreate gives a new or updated record its updated_at, sequence number
// and the way its cursor is written.
func (m *Model) stampCreate(r *rec) {
	m.seq++
	r.seq = m.seq
	r.cursorMode = m.content.cursorMode(m.rng)
	t := m.stampNow()
	switch r.cursorMode {
	case cursorNull, cursorMissing:
		// A never-edited row: the upstream keeps no updated_at, and its
		// delta filter never returns it.
		r.stamp = nil
		return
	case cursorFuture:
		t = t.Add(time.Hour) // one upstream node's clock an hour ahead
	}
	r.stamp = &t
}

func (m *Model) fill(r *rec) {
	r.name = m.content.str(m.rng)
	r.amount = m.content.number(m.rng)
	r.nested = m.content.number(m.rng)
	r.tags = r.tags[:0]
	for range m.rng.IntN(3) {
		r.tags = append(r.tags, m.content.str(m.rng))
	}
	r.spell = m.rng.IntN(4)
	r.version++
}

// Mutation kinds, drawn by Mutate.
const (
	mutCreate = iota
	mutUpdate
	mutDelete
	mutBurst   // several records updated with one updated_at
	mutRespell // numbers (and numeric ids) written differently, same values
	mutEmpty   // every record deleted
	mutRefill  // deleted records come back (same ids, new content) and new ones appear
	mutKinds
)

// Mutate applies a batch of 1 to max random changes and returns how many
// it applied. midRead marks changes made while a read was in progress.
func (m *Model) Mutate(max int, midRead bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 1 + m.rng.IntN(max)
	for range n {
		m.mutate(m.rng.IntN(mutKinds))
	}
	if midRead {
		m.midRead += n
	}
	return n
}

// mutate applies one change of the kind drawn; each kind's method makes its
// own draws, in the order the seed's scenario depends on.
func (m *Model) mutate(kind int) {
	live := m.live()
	switch {
	case kind == mutCreate || len(live) == 0 && kind != mutRefill:
		m.create()
	case kind == mutUpdate:
		m.update(live)
	case kind == mutDelete:
		r := live[m.rng.IntN(len(live))]
		m.bury(r)
		m.touch()
	case kind == mutBurst:
		m.burst(live)
	case kind == mutRespell:
		m.respell(live)
	case kind == mutEmpty:
		if m.rng.IntN(4) != 0 { // rarer than the others
			m.create()
			return
		}
		for _, r := range live {
			m.bury(r)
		}
		m.touch()
	case kind == mutRefill:
		m.refill()
	}
}

// update changes one live record's value, or, on a coin toss when the last
// update's record is still as it left it, rolls that update back.
func (m *Model) update(live []*rec) {
	r := live[m.rng.IntN(len(live))]
	if last := m.lastUpdated; last != nil && m.recs[last.uid] == last && last.prev != nil && m.rollbacks.IntN(2) == 0 {
		// The last update is rolled back: the value a full read may
		// have seen before it comes back.
		m.fill(last) // the same draws as an update, so later ones stay
		m.stampCreate(last)
		last.rollBack()
		m.lastUpdated = nil
		m.touch()
		return
	}
	before := r.value()
	m.fill(r)
	m.stampCreate(r)
	r.prev, r.rolledBack, m.lastUpdated = before, false, r
	m.touch()
}

// bury deletes r upstream and keeps it among the graves a refill may bring
// back.
func (m *Model) bury(r *rec) {
	delete(m.recs, r.uid)
	m.note(r, false)
	m.graves = append(m.graves, r)
}

// burst changes up to six live records at one instant, so that they share
// an updated_at (a delta cursor's boundary case).
func (m *Model) burst(live []*rec) {
	t := m.stampNow()
	for range 1 + m.rng.IntN(min(6, len(live))) {
		r := live[m.rng.IntN(len(live))]
		m.fill(r)
		m.seq++
		r.seq = m.seq
		tt := t
		r.stamp, r.cursorMode = &tt, cursorNormal
		r.rolledBack = false
	}
	m.touch()
}

// respell re-serialises about a third of the live records differently.
// Nothing changes in value: neither the ETag nor Last-Modified moves (the
// upstream re-serialises, say after a deploy).
func (m *Model) respell(live []*rec) {
	for _, r := range live {
		if m.rng.IntN(3) == 0 {
			r.spell = (r.spell + 1 + m.rng.IntN(3)) % 4
		}
	}
}

// refill brings back about half of the deleted records whose key is free,
// at the end of the list, and creates one to three new ones.
func (m *Model) refill() {
	for _, r := range m.graves {
		if m.rng.IntN(2) == 0 {
			continue
		}
		if _, back := m.byKey(r.id.key()); back {
			continue
		}
		m.fill(r)
		m.stampCreate(r)
		r.rolledBack = false
		r.pos = m.nextPos
		m.nextPos++
		m.recs[r.uid] = r
		m.note(r, true)
	}
	for range 1 + m.rng.IntN(3) {
		m.create()
	}
	m.touch()
}

func (m *Model) byKey(key string) (*rec, bool) {
	for _, r := range m.recs {
		if r.id.key() == key {
			return r, true
		}
	}
	return nil, false
}

// live returns the live records in uid order (deterministic for the rng).
func (m *Model) live() []*rec {
	out := make([]*rec, 0, len(m.recs))
	for _, r := range m.recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *rec) int { return a.uid - b.uid })
	return out
}

// sorted returns the live records in the upstream's list order.
func (m *Model) sorted(o Order) []*rec {
	out := m.live()
	sort.SliceStable(out, func(i, j int) bool { return less(o, out[i], out[j]) })
	return out
}

func less(o Order, a, b *rec) bool {
	switch o {
	case ByStamp:
		as, bs := stampNano(a), stampNano(b)
		if as != bs {
			return as < bs
		}
	case BySeq:
		return a.seq < b.seq
	}
	return a.pos < b.pos
}

func stampNano(r *rec) int64 {
	if r.stamp == nil {
		return -1 << 62 // never-stamped rows sort first
	}
	return r.stamp.UnixNano()
}

// Snapshot is the model's live records as the checks need them.
type Snapshot struct {
	// Records by expected key: the JSON tidemark should hold (as the
	// upstream serves it now) and whether it can be stored at all.
	Records map[string]Expected
	// DeltaHidden are keys the delta filter never returns (no updated_at).
	DeltaHidden map[string]bool
}

// Expected is one live record as tidemark should hold it.
type Expected struct {
	JSON []byte
	// Unstorable says why tidemark cannot store it ("" when it can): it
	// must then be quarantined, not stored and not lost.
	Unstorable string
}

// Snapshot renders the live records.
func (m *Model) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{Records: map[string]Expected{}, DeltaHidden: map[string]bool{}}
	for _, r := range m.live() {
		k := r.id.key()
		s.Records[k] = Expected{JSON: m.render(r, 0), Unstorable: r.unstorable()}
		if r.stamp == nil && m.content.Format != "number" || r.rolledBack {
			s.DeltaHidden[k] = true
		}
	}
	return s
}

// unstorable says why tidemark must set r aside, or "".
func (r *rec) unstorable() string {
	if why := r.id.invalid(); why != "" {
		return why
	}
	if len(r.id.key()) > MaxKeyBytes {
		return "id too long"
	}
	for _, s := range r.strings() {
		if s.hasNUL() {
			return "NUL in a string"
		}
	}
	for _, n := range []num{r.amount, r.nested} {
		if n.outOfRange() {
			return "number out of range"
		}
	}
	return ""
}

func (r *rec) strings() []strVal { return append([]strVal{r.name}, r.tags...) }

// MaxKeyBytes is the longest id tidemark stores (store.MaxIDBytes).
const MaxKeyBytes = 1024

// LiveThroughout reports whether the record with key was live in the model
// at every instant of [from, to]: a tombstone written at to for a read that
// began at from is then a false delete.
func (m *Model) LiveThroughout(key string, from, to time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	live := false
	for _, t := range m.history[key] {
		if t.at.After(from) {
			if t.at.After(to) {
				break
			}
			if !t.live {
				return false
			}
			continue
		}
		live = t.live
	}
	return live
}

// Stats are what the report says of a model.
func (m *Model) Stats() (live, midRead int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.recs), m.midRead
}

func (m *Model) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("%d live records, version %d", len(m.recs), m.version)
}

// value is a copy of r's value: its content and how it is stamped.
func (r *rec) value() *rec {
	v := &rec{stamp: r.stamp, seq: r.seq, cursorMode: r.cursorMode, name: r.name, amount: r.amount,
		tags: slices.Clone(r.tags), nested: r.nested, spell: r.spell}
	if r.stamp != nil {
		t := *r.stamp
		v.stamp = &t
	}
	return v
}

// rollBack restores r's value before its last update, updated_at and
// sequence number included, as an upstream restored from a backup does:
// the change is older than any watermark, and only a full read can see
// it. It brings back exactly what an earlier full read may have seen, which
// a page digest must not take for what the store holds (store/digest.go).
func (r *rec) rollBack() {
	p := r.prev
	r.prev = nil
	r.stamp, r.seq, r.cursorMode, r.name, r.amount = p.stamp, p.seq, p.cursorMode, p.name, p.amount
	r.tags, r.nested, r.spell = p.tags, p.nested, p.spell
	r.rolledBack = true
}
