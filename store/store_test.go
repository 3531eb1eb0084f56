package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

func open(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var key = store.Key{Source: "shop", Resource: "orders"}

func rec(id, body string) store.Record {
	return store.Record{ExternalID: id, Payload: json.RawMessage(body), Hash: "h:" + body}
}

func startRun(t *testing.T, s *store.Store, kind string) int64 {
	t.Helper()
	r := store.Run{Source: key.Source, Resource: key.Resource, Kind: kind, Trigger: "manual"}
	if err := s.StartRun(context.Background(), &r); err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// snapshot is everything a re-applied page must leave alone.
type snapshot struct {
	Records []struct {
		ExternalID  string
		Version     int64
		ContentHash string
		UpdatedAt   string
	}
	Changes int64
	Outbox  int64
}

func take(t *testing.T, s *store.Store) snapshot {
	t.Helper()
	var snap snapshot
	db := s.DBForTests()
	if err := db.Raw(`SELECT external_id, version, content_hash, updated_at::text AS updated_at FROM records ORDER BY external_id`).Scan(&snap.Records).Error; err != nil {
		t.Fatal(err)
	}
	db.Raw(`SELECT count(*) FROM record_changes`).Scan(&snap.Changes)
	db.Raw(`SELECT count(*) FROM outbox`).Scan(&snap.Outbox)
	return snap
}

func TestApplyPageTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	if err := s.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	run := startRun(t, s, store.KindFull)
	page := store.Page{Key: key, RunID: run, Records: []store.Record{rec("1", `{"a":1}`), rec("2", `{"a":2}`)}}

	got, err := s.ApplyPage(ctx, page)
	if err != nil {
		t.Fatal(err)
	}
	if counts(got) != [3]int{2, 0, 0} {
		t.Fatalf("first apply = %+v, want 2 created", got)
	}
	before := take(t, s)
	got, err = s.ApplyPage(ctx, page)
	if err != nil {
		t.Fatal(err)
	}
	if counts(got) != [3]int{0, 0, 2} {
		t.Fatalf("second apply = %+v, want 2 unchanged", got)
	}
	after := take(t, s)
	if b, a := mustJSON(before), mustJSON(after); b != a {
		t.Fatalf("re-applying a page changed state:\nbefore %s\nafter  %s", b, a)
	}
	if before.Changes != 2 || before.Outbox != 1 {
		t.Fatalf("changes=%d outbox=%d, want 2 and 1", before.Changes, before.Outbox)
	}
	// Skipping the hash comparison (a page expected to be all new) leaves
	// the same outcome: the upsert compares hashes itself.
	page.ExpectChanged = true
	if got, err = s.ApplyPage(ctx, page); err != nil || counts(got) != [3]int{0, 0, 2} {
		t.Fatalf("apply expecting changes = %+v, %v; want 2 unchanged", got, err)
	}
	if b, a := mustJSON(before), mustJSON(take(t, s)); b != a {
		t.Fatalf("re-applying a page expecting changes changed state:\nbefore %s\nafter  %s", b, a)
	}
}

func TestApplyPageVersionsAndAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	run := startRun(t, s, store.KindFull)
	apply := func(recs ...store.Record) store.PageResult {
		t.Helper()
		r, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: run, Records: recs})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	apply(rec("1", `{"a":1,"b":1}`))
	if r := apply(rec("1", `{"a":2,"b":1}`), rec("1", `{"a":3,"b":1}`)); counts(r) != [3]int{0, 1, 0} || len(r.Changed) != 1 {
		t.Fatalf("update with duplicate id in page = %+v, want one update (last copy wins)", r)
	}
	var row struct {
		Version int64
		Payload string
	}
	s.DBForTests().Raw(`SELECT version, payload::text AS payload FROM records WHERE external_id = '1'`).Scan(&row)
	if row.Version != 2 || row.Payload != `{"a": 3, "b": 1}` {
		t.Fatalf("record = %+v, want version 2 with the last copy", row)
	}
	var change struct {
		Op            string
		OldHash       string
		NewHash       string
		ChangedFields string
	}
	s.DBForTests().Raw(`SELECT op, old_hash, new_hash, changed_fields::text AS changed_fields FROM record_changes ORDER BY id DESC LIMIT 1`).Scan(&change)
	if change.Op != "updated" || change.OldHash != `h:{"a":1,"b":1}` || change.NewHash != `h:{"a":3,"b":1}` || change.ChangedFields != "{a}" {
		t.Fatalf("audit row = %+v", change)
	}
}

// finish ends a full read of pass with the pages' seen ids counted as the
// fetch counts them, deleting after one read with no brake unless pol says
// otherwise.
func finish(t *testing.T, s *store.Store, run, seen int64, pol store.DeletePolicy) store.FullReadResult {
	t.Helper()
	pol.Detect = true
	if pol.AfterReads == 0 {
		pol.AfterReads = 1
	}
	if pol.MaxFraction == 0 {
		pol.MaxFraction = 1
	}
	res, err := s.FinishFullRead(context.Background(), store.FullRead{Key: key, RunID: run, PassID: run, SeenIDs: seen, Policy: pol})
	if err != nil {
		t.Fatalf("finish full read %d: %v", run, err)
	}
	return res
}

func TestFullReadTombstonesUnseen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	first := startRun(t, s, store.KindFull)
	if _, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: first, PassID: first, Records: []store.Record{rec("1", `{}`), rec("2", `{}`), rec("3", `{}`)}}); err != nil {
		t.Fatal(err)
	}
	if r := finish(t, s, first, 3, store.DeletePolicy{}); r.Deleted != 0 {
		t.Fatalf("first pass deleted %d; want 0", r.Deleted)
	}
	second := startRun(t, s, store.KindFull)
	if _, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: second, PassID: second, Records: []store.Record{rec("1", `{}`), rec("3", `{}`)}}); err != nil {
		t.Fatal(err)
	}
	if r := finish(t, s, second, 2, store.DeletePolicy{}); r.Deleted != 1 {
		t.Fatalf("second pass deleted %d; want 1", r.Deleted)
	}
	live, err := s.LiveRecords(ctx)
	if err != nil || live[key] != 2 {
		t.Fatalf("live = %v, %v; want 2", live, err)
	}
	run, _ := s.Run(ctx, second)
	if run.RecordsDeleted != 1 {
		t.Fatalf("run records_deleted = %d, want 1", run.RecordsDeleted)
	}
	// The record comes back: it is created again, with a new version.
	third := startRun(t, s, store.KindFull)
	r, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: third, PassID: third, Records: []store.Record{rec("2", `{}`)}})
	if err != nil || r.Created != 1 {
		t.Fatalf("resurrect = %+v, %v; want 1 created", r, err)
	}
	// A full read that saw nothing must not wipe the resource, even with
	// the brake off: it waits for a second read to agree.
	empty := startRun(t, s, store.KindFull)
	if r := finish(t, s, empty, 0, store.DeletePolicy{}); r.Deleted != 0 || r.Held != 3 || !r.Mass {
		t.Fatalf("empty full read = %+v, want nothing deleted and 3 held", r)
	}
}

func TestFinishRunKeepsCheckpointOnFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	run := startRun(t, s, store.KindFull)
	cp := json.RawMessage(`{"next_url":"http://x/?page=2"}`)
	if _, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: run, PassID: run, Records: []store.Record{rec("1", `{}`)}, Checkpoint: func([]string, int) json.RawMessage { return cp }, Requests: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishRun(ctx, run, store.RunOutcome{Status: store.StatusFailed, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.State(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if st.ConsecutiveFailures != 1 || len(st.FullCheckpoint) == 0 || st.Checkpoint != nil {
		t.Fatalf("after failure state = %+v, want 1 failure and the checkpoint kept", st)
	}
	run2 := startRun(t, s, store.KindFull)
	if err := s.FinishRun(ctx, run2, store.RunOutcome{Status: store.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	st, _ = s.State(ctx, key)
	if st.ConsecutiveFailures != 0 || st.FullCheckpoint != nil || st.LastSuccessAt == nil || st.LastFullSyncAt == nil {
		t.Fatalf("after success state = %+v", st)
	}
	got, _ := s.Run(ctx, run)
	if got.Status != store.StatusFailed || got.Error != "boom" || got.Pages != 1 || got.HTTPRequests != 1 || got.FinishedAt == nil {
		t.Fatalf("failed run row = %+v", got)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// counts is (created, updated, unchanged).
func counts(r store.PageResult) [3]int { return [3]int{r.Created, r.Updated, r.Unchanged} }

// TestLastModifiedOfTheFetchSecondIsNotConfirmed: a Last-Modified in the
// second the fetch started may hide a change made later in that second, so
// the fetch drops it instead of confirming it; an older one is confirmed.
func TestLastModifiedOfTheFetchSecondIsNotConfirmed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	if err := s.EnsureStates(ctx, []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	fetch := func(lastModified time.Time, started time.Time) store.State {
		t.Helper()
		validator := lastModified.UTC().Format(http.TimeFormat)
		if err := s.RecordProbe(ctx, key, store.ProbeOutcome{Changed: true, Kind: store.ValidatorLastModified, Validator: validator, Interval: time.Second}); err != nil {
			t.Fatal(err)
		}
		r := store.Run{Source: key.Source, Resource: key.Resource, Kind: store.KindDelta, Trigger: "probe", StartedAt: started}
		if err := s.StartRun(ctx, &r); err != nil {
			t.Fatal(err)
		}
		if err := s.FinishRun(ctx, r.ID, store.RunOutcome{Status: store.StatusSucceeded}); err != nil {
			t.Fatal(err)
		}
		st, err := s.State(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	started := time.Now().Add(time.Second) // after the probe recorded its candidate
	if st := fetch(started.Truncate(time.Second), started); st.LastModified != "" || st.CandidateValidator != "" {
		t.Fatalf("Last-Modified of the fetch's own second: confirmed %q, candidate %q; want neither", st.LastModified, st.CandidateValidator)
	}
	older := started.Add(-3 * time.Second).Truncate(time.Second)
	if st := fetch(older, started); st.LastModified != older.UTC().Format(http.TimeFormat) || st.CandidateValidator != "" {
		t.Fatalf("Last-Modified 3 s before the fetch: confirmed %q, candidate %q; want it confirmed", st.LastModified, st.CandidateValidator)
	}
}

// TestLostSeenSetDeletesNothing: a full read whose seen-set holds fewer ids
// than its pages stored (Postgres crash recovery empties the unlogged
// table) is refused at its end instead of tombstoning what it saw.
func TestLostSeenSetDeletesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	first := startRun(t, s, store.KindFull)
	if _, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: first, PassID: first, Records: []store.Record{rec("1", `{}`), rec("2", `{}`), rec("3", `{}`)}}); err != nil {
		t.Fatal(err)
	}
	finish(t, s, first, 3, store.DeletePolicy{})
	second := startRun(t, s, store.KindFull)
	page := func(ids ...string) {
		t.Helper()
		var recs []store.Record
		for _, id := range ids {
			recs = append(recs, rec(id, `{}`))
		}
		if _, err := s.ApplyPage(ctx, store.Page{Key: key, RunID: second, PassID: second, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	page("1", "2")
	// A crash empties sync_seen; the read carries on with its next page.
	if err := s.DBForTests().Exec(`TRUNCATE sync_seen`).Error; err != nil {
		t.Fatal(err)
	}
	page("3")
	_, err := s.FinishFullRead(ctx, store.FullRead{Key: key, RunID: second, PassID: second, SeenIDs: 3,
		Policy: store.DeletePolicy{Detect: true, AfterReads: 1, MaxFraction: 1}})
	if !errors.Is(err, store.ErrSeenSetIncomplete) {
		t.Fatalf("finish with a seen-set a crash emptied halfway: %v, want ErrSeenSetIncomplete", err)
	}
	if live, _ := s.LiveRecords(ctx); live[key] != 3 {
		t.Fatalf("%d live records after a refused full read, want 3", live[key])
	}
}

// TestRequestsOutliveRedis: a fetch asked for stays outstanding until a
// successful fetch that covers it, one per resource, mode and
// confirmation.
func TestRequestsOutliveRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	s.EnsureStates(ctx, []store.Key{key})
	delta, err := s.Request(ctx, store.SyncRequest{Source: key.Source, Resource: key.Resource, Mode: store.KindDelta, Trigger: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Request(ctx, store.SyncRequest{Source: key.Source, Resource: key.Resource, Mode: store.KindDelta, Trigger: "manual"}); again != delta {
		t.Fatalf("a second delta request is %d, want the outstanding %d", again, delta)
	}
	confirm, _ := s.Request(ctx, store.SyncRequest{Source: key.Source, Resource: key.Resource, Mode: store.KindFull, Trigger: "manual", ConfirmDeletes: true})
	run := startRun(t, s, store.KindFull)
	if err := s.FinishRun(ctx, run, store.RunOutcome{Status: store.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	out, err := s.OutstandingRequests(ctx)
	if err != nil || len(out) != 1 || out[0].ID != confirm {
		t.Fatalf("outstanding after a full read = %+v, %v; want only the request to confirm deletions", out, err)
	}
	run = startRun(t, s, store.KindFull)
	if err := s.FinishRun(ctx, run, store.RunOutcome{Status: store.StatusSucceeded, ConfirmedDeletes: true}); err != nil {
		t.Fatal(err)
	}
	if out, _ := s.OutstandingRequests(ctx); len(out) != 0 {
		t.Fatalf("outstanding after a confirmed full read = %+v, want none", out)
	}
}
