package worker

import (
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// firstLoadSummarized says whether a fetch run's creations are audited as
// one initial_load row rather than a created row each: the resource audits
// its first load as a summary (audit.initial_load, the default), and the
// run is part of that first load, which lasts until a fetch of the
// resource first succeeds (st is its state as the run began).
//
// The rule is the state's, not the run's, so that everything that carries
// a first load on is part of it: a retry or a takeover resuming its
// checkpoint, or a read started afresh after a failed one, finds records
// the first load's earlier runs stored, and no success yet. Only a fetch's
// success sets last_success_at, and sync_state rows are never deleted, so
// a resource that ever had a successful fetch never counts as a first load
// again: from then on every creation is audited per record. One fetch of a
// resource runs at a time (its pages are fenced by their run's status), so
// no success can happen while a run reads, and the state the run began
// with holds for all its pages.
func firstLoadSummarized(res *config.Resource, st store.State) bool {
	return st.LastSuccessAt == nil && res.Audit.InitialLoad == config.InitialLoadSummary
}
