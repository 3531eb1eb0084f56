package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tidemark/tidemark/store"
)

// State, hand-scanned, reads what GORM's whole-row read of the model
// reads: every column of sync_state that State maps (a column added to the
// model but not to AllStateColumns fails here); ProbeState and EachState
// fill their columns alike and leave the others zero.
func TestStateReadsEveryColumnOfTheModel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	other := store.Key{Source: "shop", Resource: "refunds"}
	if err := s.EnsureStates(ctx, []store.Key{key, other}); err != nil {
		t.Fatal(err)
	}
	// Every column set, nullable ones too.
	if err := s.DBForTests().Exec(`UPDATE sync_state SET etag = 'e', last_modified = 'lm', probe_hash = 'ph', watermark = 'w',
		checkpoint = '{"page":2}', full_checkpoint = '{"page":3}', basis = '{"b":1}',
		last_success_at = now(), last_change_at = now(), last_full_sync_at = now(), next_probe_at = now(),
		probe_interval_ms = 5000, paused = true, consecutive_failures = 2, probes_total = 7, probes_not_modified = 6,
		candidate_kind = 'etag', candidate_validator = 'e2', candidate_at = now(), head_unsupported = true,
		in_sync_at = now(), last_drift = 4, stale = true, stale_since = now(), failure_alerted = true,
		quarantined = 1, deletes_held = 3, deletes_held_mass = true, resumed_at = now()
		WHERE resource = 'orders'`).Error; err != nil {
		t.Fatal(err)
	}
	var want store.State
	if err := s.DBForTests().Where("source = ? AND resource = ?", key.Source, key.Resource).Take(&want).Error; err != nil {
		t.Fatal(err)
	}
	got, err := s.State(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	zero := reflect.ValueOf(want)
	for i := range zero.NumField() {
		if zero.Field(i).IsZero() {
			t.Errorf("the fixture leaves State.%s zero: set its column", zero.Type().Field(i).Name)
		}
	}
	if !reflect.DeepEqual(normal(got), normal(want)) {
		t.Fatalf("State read\n%+v\nGORM read\n%+v", got, want)
	}

	probe, err := s.ProbeState(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	wantProbe := store.State{Source: key.Source, Resource: key.Resource, Paused: true, ETag: "e", LastModified: "lm",
		ProbeHash: "ph", ProbeIntervalMS: 5000, CandidateKind: "etag", CandidateValidator: "e2", CandidateAt: got.CandidateAt,
		HeadUnsupported: true}
	if !reflect.DeepEqual(probe, wantProbe) {
		t.Fatalf("ProbeState = %+v; want %+v", probe, wantProbe)
	}

	seen := map[store.Key]store.State{}
	if err := s.EachState(ctx, store.ScheduleStateColumns, func(st *store.State) {
		seen[store.Key{Source: st.Source, Resource: st.Resource}] = *st
	}); err != nil {
		t.Fatal(err)
	}
	wantSched := store.State{Source: key.Source, Resource: key.Resource, Paused: true, LastFullSyncAt: got.LastFullSyncAt,
		ProbeIntervalMS: 5000, ETag: "e", LastModified: "lm", ProbeHash: "ph", HeadUnsupported: true}
	if len(seen) != 2 || !reflect.DeepEqual(seen[key], wantSched) || !reflect.DeepEqual(seen[other], store.State{Source: other.Source, Resource: other.Resource}) {
		t.Fatalf("EachState = %+v; want %+v and an unset %s", seen, wantSched, other)
	}

	if _, err := s.State(ctx, store.Key{Source: "shop", Resource: "none"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("State of a resource without a row: %v; want ErrNotFound", err)
	}
}

// normal puts st's times in UTC, where the driver returns them in the local
// zone: the same instants compare equal.
func normal(st store.State) store.State {
	for _, t := range []**time.Time{&st.LastSuccessAt, &st.LastChangeAt, &st.LastFullSyncAt, &st.NextProbeAt,
		&st.CandidateAt, &st.InSyncAt, &st.StaleSince, &st.ResumedAt} {
		if *t != nil {
			u := (*t).UTC()
			*t = &u
		}
	}
	st.CreatedAt, st.UpdatedAt = st.CreatedAt.UTC(), st.UpdatedAt.UTC()
	return st
}
