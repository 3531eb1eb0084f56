package server

import (
	"net/http"

	"github.com/tidemark/tidemark/store"
)

// Partitions is a page of a partitioned resource's partitions.
type Partitions struct {
	Summary    store.PartitionSummary `json:"summary"`
	Partitions []store.Partition      `json:"partitions"`
	// NextAfter is the after= of the next page, "" on the last.
	NextAfter string `json:"next_after,omitempty"`
}

// partitionsPageMax bounds a page of GET .../partitions.
const partitionsPageMax = 1000

// partitions lists a resource's partitions in name order, keyset-paged
// (after= the last name of the page before), with their roll-up.
func (s *Server) partitions(w http.ResponseWriter, r *http.Request) {
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	q := r.URL.Query()
	limit, ok := rangeParam(w, q, "limit", 100, partitionsPageMax)
	if !ok {
		return
	}
	k := store.Key{Source: src.Name, Resource: res.Name}
	page, err := s.store.Partitions(r.Context(), k, q.Get("after"), limit+1)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	sums, err := s.store.PartitionSummaries(r.Context(), k)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := Partitions{Summary: sums[k], Partitions: page}
	if len(page) > limit {
		out.Partitions = page[:limit]
		out.NextAfter = page[limit-1].Partition
	}
	if out.Partitions == nil {
		out.Partitions = []store.Partition{}
	}
	writeJSON(w, http.StatusOK, out)
}
