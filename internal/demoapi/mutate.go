package demoapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Mutation is a batch of changes to one resource: the body of POST /_mutate.
type Mutation struct {
	// Resource is one of Resources.
	Resource string `json:"resource"`
	// Creates appends that many records with the next ids.
	Creates int `json:"creates"`
	// Updates changes that many live records (new version, updated_at = now).
	Updates int `json:"updates"`
	// Deletes removes that many live records from the listings.
	Deletes int `json:"deletes"`
	// Hidden updates leave updated_at unchanged, so that an updated_since
	// filter misses them. The ETag and Last-Modified still change.
	Hidden bool `json:"hidden"`
	// IDs are the records to update, or to delete when Deletes > 0 and
	// Updates is 0, before any randomly chosen ones. They must be live.
	IDs []string `json:"ids"`
}

// MutationResult lists the external ids a Mutation touched.
type MutationResult struct {
	Created []string `json:"created"`
	Updated []string `json:"updated"`
	Deleted []string `json:"deleted"`
}

// ErrUnknownResource is returned for a resource name not in Resources.
var ErrUnknownResource = errors.New("unknown resource")

// ErrInvalidMutation is returned for a Mutation that cannot be applied.
var ErrInvalidMutation = errors.New("invalid mutation")

// Mutate applies m now, as POST /_mutate does. The records to update or
// delete beyond m.IDs are chosen at random among the live ones,
// deterministically from the seed; fewer are changed when fewer are live.
func (s *Server) Mutate(m Mutation) (MutationResult, error) {
	res := resourceIndex(m.Resource)
	if res < 0 {
		return MutationResult{}, fmt.Errorf("mutate %q: %w", m.Resource, ErrUnknownResource)
	}
	if m.Creates < 0 || m.Updates < 0 || m.Deletes < 0 {
		return MutationResult{}, fmt.Errorf("mutate %s: negative count: %w", m.Resource, ErrInvalidMutation)
	}
	result := MutationResult{Created: []string{}, Updated: []string{}, Deleted: []string{}}
	now := s.now()
	nowMs := now.UnixMilli()

	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[res]

	picked := make(map[int]bool, len(m.IDs)+m.Updates+m.Deletes)
	var explicit []int
	for _, id := range m.IDs {
		i := parseID(res, id)
		if i < 0 || i >= t.len() || !t.isLive(i) {
			return MutationResult{}, fmt.Errorf("mutate %s: no live record %q: %w", m.Resource, id, ErrInvalidMutation)
		}
		if !picked[i] {
			picked[i] = true
			explicit = append(explicit, i)
		}
	}
	var updates, deletes []int
	if len(explicit) > 0 && m.Deletes > 0 && m.Updates == 0 {
		deletes = explicit
	} else {
		updates = explicit
	}
	updates = s.pickLive(t, picked, updates, m.Updates)
	deletes = s.pickLive(t, picked, deletes, m.Deletes)

	for _, i := range updates {
		t.ver[i]++
		if !m.Hidden {
			t.upd[i] = nowMs
		}
		result.Updated = append(result.Updated, s.codec.formatID(res, i))
	}
	for _, i := range deletes {
		t.markDeleted(i)
		result.Deleted = append(result.Deleted, s.codec.formatID(res, i))
	}
	for range m.Creates {
		i := t.len()
		t.ver = append(t.ver, 1)
		t.upd = append(t.upd, nowMs)
		t.created = append(t.created, nowMs)
		result.Created = append(result.Created, s.codec.formatID(res, i))
	}
	if len(updates)+len(deletes)+m.Creates > 0 {
		t.gen++
		t.touchLastModified(now)
	}
	return result, nil
}

// pickLive appends random live records not yet picked until dst holds n
// (or no candidate is left). Called with mu held.
func (s *Server) pickLive(t *table, picked map[int]bool, dst []int, n int) []int {
	for len(dst) < n {
		free := t.live() - len(picked)
		if free <= 0 {
			break
		}
		i := t.selectLive(s.rng.intN(t.live()))
		for tries := 0; picked[i]; tries++ {
			if tries < 16 {
				i = t.selectLive(s.rng.intN(t.live()))
				continue
			}
			for i = (i + 1) % t.len(); !t.isLive(i) || picked[i]; i = (i + 1) % t.len() {
			}
		}
		picked[i] = true
		dst = append(dst, i)
	}
	return dst
}

func (s *Server) serveMutate(w http.ResponseWriter, r *http.Request) {
	var m Mutation
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		writeError(w, r, http.StatusBadRequest, "decode mutation: "+err.Error())
		return
	}
	res, err := s.Mutate(m)
	switch {
	case errors.Is(err, ErrUnknownResource):
		writeError(w, r, http.StatusNotFound, err.Error())
	case err != nil:
		writeError(w, r, http.StatusBadRequest, err.Error())
	default:
		writeJSON(w, r, http.StatusOK, res)
	}
}

// Export returns every live record of a resource keyed by its external id
// (integer ids as decimal text), each exactly as a listing serves it
// (ticket_sales' meta.request_id is "req_export"). Unknown resource: nil.
func (s *Server) Export(resource string) map[string]json.RawMessage {
	res := resourceIndex(resource)
	if res < 0 {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.tables[res]
	out := make(map[string]json.RawMessage, t.live())
	for i := range t.len() {
		if t.isLive(i) {
			rec := s.codec.appendRecord(nil, res, t.row(i), "req_export")
			out[s.codec.formatID(res, i)] = rec
		}
	}
	return out
}

// churn is how the background mutations fall on each resource.
var churn = [numResources]struct {
	weight           float64 // share of ChangeRate
	creates, deletes float64 // shares of its mutations; the rest are updates
	batch            int     // mutations applied together
}{
	resTicketSales:  {weight: 0.40, creates: 0.25, deletes: 0.05, batch: 1},
	resInventory:    {weight: 0.20, creates: 0.90, deletes: 0.02, batch: 1},
	resTransactions: {weight: 0.30, creates: 0.30, deletes: 0.05, batch: 1},
	resSettlements:  {weight: 0.05, creates: 0.80, deletes: 0.05, batch: 10},
	resTaxSummaries: {weight: 0.05, creates: 0.10, deletes: 0.00, batch: 1},
}

// mutator turns a change rate into batches of mutations, deterministically
// from the seed (the timing is the ticker's).
type mutator struct {
	rng     prng
	perTick float64
	credit  float64
	pending [numResources]Mutation
}

func newMutator(seed int64, rate float64, tick time.Duration) *mutator {
	return &mutator{rng: prng{s: uint64(seed) ^ 0xc4a29e}, perTick: rate * tick.Seconds()}
}

// next returns the mutations due this tick.
func (m *mutator) next() []Mutation {
	m.credit += m.perTick
	n := int(m.credit)
	m.credit -= float64(n)
	for range n {
		x, res := m.rng.float(), 0
		for res < numResources-1 && x >= churn[res].weight {
			x -= churn[res].weight
			res++
		}
		p := &m.pending[res]
		switch op := m.rng.float(); {
		case op < churn[res].creates:
			p.Creates++
		case op < churn[res].creates+churn[res].deletes:
			p.Deletes++
		default:
			p.Updates++
		}
	}
	var out []Mutation
	for res := range numResources {
		p := m.pending[res]
		if p.Creates+p.Updates+p.Deletes >= churn[res].batch {
			p.Resource = Resources[res]
			out = append(out, p)
			m.pending[res] = Mutation{}
		}
	}
	return out
}
