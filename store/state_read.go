package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// StateColumns names the sync_state columns a read fills; the other fields
// of the State it returns are zero (Source and Resource are always filled).
//
// Every read of sync_state goes through readStates, hand-scanned, rather
// than through GORM's reflection: the scheduler reads every row each tick
// and a probe reads one row each time, and whole rows through GORM were
// most of the scheduler's CPU at 10,000 resources. Such callers ask for
// only the columns they use.
type StateColumns []string

var (
	// AllStateColumns are every column of sync_state that State holds.
	AllStateColumns = StateColumns{"etag", "last_modified", "probe_hash", "watermark",
		"checkpoint", "full_checkpoint", "basis", "last_success_at", "last_change_at",
		"last_full_sync_at", "next_probe_at", "probe_interval_ms", "paused",
		"consecutive_failures", "probes_total", "probes_not_modified", "candidate_kind",
		"candidate_validator", "candidate_at", "head_unsupported", "in_sync_at", "last_drift",
		"stale", "stale_since", "failure_alerted", "quarantined", "deletes_held",
		"deletes_held_mass", "resumed_at", "created_at", "updated_at"}
	// ProbeStateColumns are what a probe reads: paused, the confirmed
	// validators, the candidate, the probe interval and head_unsupported.
	ProbeStateColumns = StateColumns{"paused", "etag", "last_modified", "probe_hash", "probe_interval_ms",
		"candidate_kind", "candidate_validator", "candidate_at", "head_unsupported"}
	// ScheduleStateColumns are what a scheduler tick reads of every
	// resource: paused, the last full read, and the probe's basis (the
	// probe interval, the confirmed validators, head_unsupported).
	ScheduleStateColumns = StateColumns{"paused", "last_full_sync_at", "probe_interval_ms",
		"etag", "last_modified", "probe_hash", "head_unsupported"}
)

// State returns the state of one resource.
func (s *Store) State(ctx context.Context, k Key) (State, error) {
	return s.oneState(ctx, k, AllStateColumns)
}

// ProbeState returns the columns of a resource's state that a probe reads
// (ProbeStateColumns): it runs once per probe.
func (s *Store) ProbeState(ctx context.Context, k Key) (State, error) {
	return s.oneState(ctx, k, ProbeStateColumns)
}

// States returns every resource's state, ordered by source and resource.
func (s *Store) States(ctx context.Context) ([]State, error) {
	var out []State
	err := s.readStates(ctx, AllStateColumns, `ORDER BY source, resource`, nil, func(st *State) { out = append(out, *st) })
	if err != nil {
		return nil, fmt.Errorf("list sync state: %w", err)
	}
	return out, nil
}

// EachState calls fn with the columns cols of every resource's state, in no
// particular order. fn must not keep st: it is reused for the next row.
func (s *Store) EachState(ctx context.Context, cols StateColumns, fn func(st *State)) error {
	if err := s.readStates(ctx, cols, "", nil, fn); err != nil {
		return fmt.Errorf("list sync state: %w", err)
	}
	return nil
}

// oneState reads the columns cols of k's state, or ErrNotFound.
func (s *Store) oneState(ctx context.Context, k Key, cols StateColumns) (State, error) {
	var st State
	found := false
	err := s.readStates(ctx, cols, `WHERE source = $1 AND resource = $2`, []any{k.Source, k.Resource},
		func(row *State) { st, found = *row, true })
	if err == nil && !found {
		err = ErrNotFound
	}
	if err != nil {
		return State{Source: k.Source, Resource: k.Resource}, fmt.Errorf("sync state %s: %w", k, err)
	}
	return st, nil
}

// readStates selects source, resource and cols from sync_state with the
// given tail (WHERE, ORDER BY; $n placeholders) and calls fn with each row,
// in one State reused for every row.
func (s *Store) readStates(ctx context.Context, cols StateColumns, tail string, args []any, fn func(*State)) error {
	var st State
	dest := make([]any, 0, len(cols)+2)
	dest = append(dest, &st.Source, &st.Resource)
	for _, c := range cols {
		d := stateField(&st, c)
		if d == nil {
			return fmt.Errorf("sync_state has no column %q that State holds", c)
		}
		dest = append(dest, d)
	}
	db, err := s.db.DB()
	if err != nil {
		return err
	}
	rows, err := db.QueryContext(ctx, `SELECT source, resource, `+strings.Join(cols, ", ")+` FROM sync_state `+tail, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		st = State{}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		st.inUTC()
		fn(&st)
	}
	return rows.Err()
}

// inUTC puts st's times in UTC, as the store writes them (Open's NowFunc);
// the driver hands them back in the local zone.
func (st *State) inUTC() {
	for _, t := range [...]*time.Time{st.LastSuccessAt, st.LastChangeAt, st.LastFullSyncAt, st.NextProbeAt,
		st.CandidateAt, st.InSyncAt, st.StaleSince, st.ResumedAt, &st.CreatedAt, &st.UpdatedAt} {
		if t != nil {
			*t = t.UTC()
		}
	}
}

// stateField is where column c of sync_state scans into st, or nil when
// State holds no such column.
func stateField(st *State, c string) any {
	switch c {
	case "etag":
		return &st.ETag
	case "last_modified":
		return &st.LastModified
	case "probe_hash":
		return &st.ProbeHash
	case "watermark":
		return &st.Watermark
	case "checkpoint":
		return (*[]byte)(&st.Checkpoint)
	case "full_checkpoint":
		return (*[]byte)(&st.FullCheckpoint)
	case "basis":
		return (*[]byte)(&st.Basis)
	case "last_success_at":
		return &st.LastSuccessAt
	case "last_change_at":
		return &st.LastChangeAt
	case "last_full_sync_at":
		return &st.LastFullSyncAt
	case "next_probe_at":
		return &st.NextProbeAt
	case "probe_interval_ms":
		return &st.ProbeIntervalMS
	case "paused":
		return &st.Paused
	case "consecutive_failures":
		return &st.ConsecutiveFailures
	case "probes_total":
		return &st.ProbesTotal
	case "probes_not_modified":
		return &st.ProbesNotModified
	case "candidate_kind":
		return &st.CandidateKind
	case "candidate_validator":
		return &st.CandidateValidator
	case "candidate_at":
		return &st.CandidateAt
	case "head_unsupported":
		return &st.HeadUnsupported
	case "in_sync_at":
		return &st.InSyncAt
	case "last_drift":
		return &st.LastDrift
	case "stale":
		return &st.Stale
	case "stale_since":
		return &st.StaleSince
	case "failure_alerted":
		return &st.FailureAlerted
	case "quarantined":
		return &st.Quarantined
	case "deletes_held":
		return &st.DeletesHeld
	case "deletes_held_mass":
		return &st.DeletesHeldMass
	case "resumed_at":
		return &st.ResumedAt
	case "created_at":
		return &st.CreatedAt
	case "updated_at":
		return &st.UpdatedAt
	}
	return nil
}
