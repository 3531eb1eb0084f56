package store

import "time"

// Freshness is how far behind its upstream a resource is, judged against
// its freshness target (State.Freshness).
type Freshness struct {
	// Lag is the time since the resource was last known in step with its
	// upstream (an unchanged probe, or the start of a successful fetch);
	// for a resource never synced, since it was configured.
	Lag time.Duration
	// Synced is false until the resource was first known in step.
	Synced bool
	// Stale: the lag is beyond the target, and that is news (see
	// State.Freshness).
	Stale bool
}

// Freshness judges the resource's lag at now against its freshness target.
// It is the one rule of staleness: the scheduler's resource.stale and
// resource.recovered events (CheckFreshness), the metrics, the API's
// health and `tidemark status` all ask it. A resource is stale when its lag
// is beyond its target, except:
//   - while paused: an operator stopped it, and its lag is no alarm;
//   - for one target after a resume, unless it was stale already: the lag
//     it built up while paused is no news, and its first probe after the
//     resume catches up;
//   - with no target (zero).
//
// A resource never synced is no exception: its lag counts from when it was
// configured, so one whose first sync never finishes turns stale too.
func (st State) Freshness(target time.Duration, now time.Time) Freshness {
	var f Freshness
	since := st.CreatedAt
	switch {
	case st.InSyncAt != nil:
		since, f.Synced = *st.InSyncAt, true
	case st.LastSuccessAt != nil:
		since, f.Synced = *st.LastSuccessAt, true
	}
	if !since.IsZero() {
		f.Lag = max(now.Sub(since), 0)
	}
	justResumed := st.ResumedAt != nil && now.Sub(*st.ResumedAt) < target && !st.Stale
	f.Stale = target > 0 && f.Lag > target && !st.Paused && !justResumed
	return f
}
