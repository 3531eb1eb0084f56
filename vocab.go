package tidemark

// RunKind is what a run does: a probe, a delta read or a full read
// (sync_runs.kind). A fetch task's mode is the kind of run it makes, delta
// or full, so the task payload, the sync request and the run row share
// this one type.
type RunKind string

// Run kinds.
const (
	RunProbe RunKind = "probe"
	RunDelta RunKind = "delta"
	RunFull  RunKind = "full"
)

// ProbeStrategy is how a resource's probe tells a change (config's
// probe.strategy).
type ProbeStrategy string

// Probe strategies.
const (
	ProbeETag         ProbeStrategy = "etag"
	ProbeLastModified ProbeStrategy = "last_modified"
	ProbeHash         ProbeStrategy = "hash"
	ProbeNone         ProbeStrategy = "none"
	// ProbeDelta makes the delta read the probe: the changes since the
	// watermark, whose empty first page means unchanged and whose
	// non-empty one is applied as the delta's first page.
	ProbeDelta ProbeStrategy = "delta"
	// ProbeRollingHash hashes one page of the full read per probe, in
	// rotation, against the hash the last full read saw of it: a change
	// anywhere is seen within pages × interval.
	ProbeRollingHash ProbeStrategy = "rolling_hash"
)

// Validator is the kind of validator a probe of strategy s records: each
// strategy that probes records one of its own name; none records none ("").
func (s ProbeStrategy) Validator() ValidatorKind {
	if s == ProbeNone {
		return ""
	}
	return ValidatorKind(s)
}

// ValidatorKind is the kind of a validator a probe saw (sync_state's
// candidate_kind, a probe task's basis).
type ValidatorKind string

// Validator kinds. A fetch confirms ETag, Last-Modified and hash
// validators into sync_state columns of their own (Confirmable).
const (
	ValidatorETag         ValidatorKind = "etag"
	ValidatorLastModified ValidatorKind = "last_modified"
	ValidatorHash         ValidatorKind = "hash"
	// ValidatorRollingHash is a rolling_hash probe's: no fetch confirms
	// it (the full read records every page's hash itself).
	ValidatorRollingHash ValidatorKind = "rolling_hash"
	// ValidatorDelta is a delta probe's: none is kept (the watermark is
	// the delta probe's memory), so a changed delta probe leaves no
	// candidate to confirm.
	ValidatorDelta ValidatorKind = "delta"
)

// Confirmable reports whether a fetch confirms validators of kind k into
// the resource's sync state, where later probes compare with them; a
// candidate of another kind is dropped, not confirmed.
func (k ValidatorKind) Confirmable() bool {
	switch k {
	case ValidatorETag, ValidatorLastModified, ValidatorHash:
		return true
	}
	return false
}

// EventType is the type of an event: in the outbox, on the SSE stream and
// in a webhook's subscription (config's webhooks[].events).
type EventType string

// Event types.
const (
	EventDataUpdated       EventType = "data.updated"
	EventRunFailed         EventType = "run.failed"
	EventResourceStale     EventType = "resource.stale"
	EventResourceRecovered EventType = "resource.recovered"
	EventRunProgress       EventType = "run.progress"
	// EventRecordsQuarantined: records a read set aside, unstorable.
	EventRecordsQuarantined EventType = "records.quarantined"
	// EventDeletesHeld: a full read would have tombstoned more than
	// full_sync.max_delete_fraction of a resource, and tombstoned none.
	EventDeletesHeld EventType = "deletes.held"
	// EventConfigRejected: a changed config file did not load or validate;
	// the config in force stays.
	EventConfigRejected EventType = "config.rejected"
)

// EventTypes lists every event type, in documentation order.
var EventTypes = []EventType{EventDataUpdated, EventRunFailed, EventResourceStale, EventResourceRecovered, EventRunProgress,
	EventRecordsQuarantined, EventDeletesHeld, EventConfigRejected}
