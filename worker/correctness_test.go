package worker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// The regression tests of issue 15's defects, one each. Each failed on the
// code before its fix (the closing note of the issue says how).

// TestWatermarkCoversChangesDuringRead: a change made during a multi-page
// delta read to a page already read must be below the next delta's lower
// bound, even when a later change on an unread page lifts the highest
// cursor read past it.
func TestWatermarkCoversChangesDuringRead(t *testing.T) {
	t.Parallel()
	old := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	api := &scripted{recs: numbered(9, old)}
	api.before = func(n int, s *scripted, _ http.ResponseWriter, r *http.Request) bool {
		// The second page of the second delta read: record 1 (page 1, read)
		// and record 9 (page 3, not yet read) change, 9 a moment later.
		if n == 5 {
			now := time.Now().Truncate(time.Millisecond)
			s.set(scriptedRec{ID: "1", Fields: `"name":"changed during the read"`, Stamp: now})
			s.set(scriptedRec{ID: "9", Fields: `"name":"changed later"`, Stamp: now.Add(time.Millisecond)})
		}
		return false
	}
	f := startScripted(t, api, `
pagination: {style: cursor, cursor_param: cursor, next_field: next_cursor, limit_param: limit, limit: 3}
delta: {param: updated_since, field: updated_at, format: rfc3339}`)
	f.mustSucceed(f.full())  // requests 1-3
	f.mustSucceed(f.delta()) // requests 4-6: the changes land before request 5
	if got := f.live()["9"]["name"]; got != "changed later" {
		t.Fatalf("record 9 = %v after the delta that read it", got)
	}
	f.mustSucceed(f.delta())
	if got := f.live()["1"]["name"]; got != "changed during the read" {
		t.Fatalf("record 1's change, made during a read after its page, was lost by the next delta: name = %v (watermark %s)", got, f.state().Watermark)
	}
}

// TestCappedPagesAreNotTheLast: an upstream that serves 5 records when 10
// were asked must not end a page or offset read after its first page (nor
// let its deletion check tombstone the rest).
func TestCappedPagesAreNotTheLast(t *testing.T) {
	t.Parallel()
	for _, style := range []string{"page", "offset"} {
		t.Run(style, func(t *testing.T) {
			t.Parallel()
			api := &scripted{recs: numbered(23, time.Now()), cap: 5}
			f := startScripted(t, api, `
pagination: {style: `+style+`, limit_param: limit, limit: 10}
full_sync: {detect_deletes: true, delete_after_reads: 1}`)
			f.mustSucceed(f.full())
			if n := len(f.live()); n != 23 {
				t.Fatalf("%d records after a full read of 23 served 5 a page, want 23", n)
			}
			run := f.mustSucceed(f.full())
			if run.RecordsDeleted != 0 || len(f.live()) != 23 {
				t.Fatalf("the second full read deleted %d records; %d live", run.RecordsDeleted, len(f.live()))
			}
		})
	}
}

// TestMassDeletionIsHeld: a full read that would tombstone more than
// max_delete_fraction of the live records tombstones none, says why on the
// run, raises deletes.held, and the deletions go through when the next full
// read agrees or an operator confirms.
func TestMassDeletionIsHeld(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(20, time.Now())}
	f := startScripted(t, api, `
pagination: {style: none}
full_sync: {detect_deletes: true, max_delete_fraction: 0.2}`)
	f.mustSucceed(f.full())
	api.mu.Lock()
	api.recs = api.recs[:5] // 15 of 20 gone: 75%
	api.mu.Unlock()

	run := f.mustSucceed(f.full())
	if run.RecordsDeleted != 0 || run.DeletesHeld != 15 || !strings.Contains(run.Note, "more than full_sync.max_delete_fraction") {
		t.Fatalf("mass deletion: run deleted %d, held %d, note %q; want 0 deleted, 15 held, and why", run.RecordsDeleted, run.DeletesHeld, run.Note)
	}
	if st := f.state(); st.DeletesHeld != 15 || !st.DeletesHeldMass {
		t.Fatalf("sync_state deletes_held = %d (mass %t), want 15 (mass)", st.DeletesHeld, st.DeletesHeldMass)
	}
	if n := f.count(`SELECT count(*) FROM outbox WHERE event = 'deletes.held' AND run_id = ?`, run.ID); n != 1 {
		t.Fatalf("%d deletes.held events, want 1", n)
	}
	if n := len(f.live()); n != 20 {
		t.Fatalf("%d live records after a held mass deletion, want 20", n)
	}
	// The operator confirms: every unseen record goes.
	run = f.mustSucceed(f.fetch(jobs.FetchPayload{Mode: tidemark.RunFull, Trigger: jobs.TriggerManual, ConfirmDeletes: true}))
	if run.RecordsDeleted != 15 || len(f.live()) != 5 || f.state().DeletesHeld != 0 {
		t.Fatalf("confirmed full read deleted %d (%d live, %d held), want 15 deleted", run.RecordsDeleted, len(f.live()), f.state().DeletesHeld)
	}

	// Another mass deletion, confirmed this time by the next read agreeing.
	api.mu.Lock()
	api.recs = api.recs[:1]
	api.mu.Unlock()
	if run := f.mustSucceed(f.full()); run.RecordsDeleted != 0 || run.DeletesHeld != 4 {
		t.Fatalf("held again: %d deleted, %d held", run.RecordsDeleted, run.DeletesHeld)
	}
	if run := f.mustSucceed(f.full()); run.RecordsDeleted != 4 || len(f.live()) != 1 {
		t.Fatalf("the next read agreed: %d deleted, %d live; want 4 and 1", run.RecordsDeleted, len(f.live()))
	}
}

// TestOffsetDeleteDuringReadKeepsLiveRecords: a record deleted from page 1
// while an offset read is on page 2 shifts a live record out of the read;
// that record must not be tombstoned.
func TestOffsetDeleteDuringReadKeepsLiveRecords(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(12, time.Now())}
	armed := false
	api.before = func(n int, s *scripted, _ http.ResponseWriter, r *http.Request) bool {
		if armed && r.URL.Query().Get("offset") != "0" {
			armed = false
			s.remove("2") // page 1 is read: record 6 slides from page 2 into page 1
		}
		return false
	}
	f := startScripted(t, api, `
pagination: {style: offset, limit_param: limit, limit: 5}
full_sync: {detect_deletes: true, delete_after_reads: 1}`)
	f.mustSucceed(f.full())
	api.mu.Lock()
	armed = true
	api.mu.Unlock()
	f.mustSucceed(f.full())
	live := f.live()
	for _, id := range []string{"1", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		if _, ok := live[id]; !ok {
			t.Errorf("record %s, live upstream, was tombstoned by an offset read that a delete shifted", id)
		}
	}
	if n := f.count(`SELECT count(*) FROM outbox WHERE event = 'data.updated' AND (payload->>'deleted')::int > 0 AND payload->'ids' @> '["6"]'`); n != 0 {
		t.Errorf("a deletion event named live record 6")
	}
	// Once the upstream is still, record 2's deletion goes through.
	f.mustSucceed(f.full())
	if _, ok := f.live()["2"]; ok {
		t.Errorf("record 2, deleted upstream, is still live after a quiet full read")
	}
}

// TestRejectedContinuationRestartsTheRead: a resumed checkpoint whose
// cursor the upstream now rejects (410) restarts the read from its first
// page once, says so on the run, and succeeds: it does not fail forever.
func TestRejectedContinuationRestartsTheRead(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(9, time.Now())}
	phase := 0 // 0: page 3 answers 500; 1: every cursor of that read is expired
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		c := r.URL.Query().Get("cursor")
		switch {
		case phase == 0 && c == "c6":
			http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
			return true
		case phase == 1 && c == "c6":
			phase = 2 // expired once; the cursor issued by the restarted read works
			w.WriteHeader(http.StatusGone)
			w.Write([]byte(`{"error":"cursor expired"}`))
			return true
		}
		return false
	}
	f := startScripted(t, api, `
pagination: {style: cursor, cursor_param: cursor, next_field: next_cursor, limit_param: limit, limit: 3}
full_sync: {detect_deletes: true}`)
	if run := f.full(); run.Status == store.StatusSucceeded {
		t.Fatal("the first read should fail on page 3")
	}
	api.mu.Lock()
	phase = 1
	api.mu.Unlock()
	// tidemark retry: the dead task's read is resumed.
	run := f.mustSucceed(f.fetch(jobs.FetchPayload{Mode: tidemark.RunFull, Trigger: jobs.TriggerRetry, Resume: true}))
	if !strings.Contains(run.Note, "started again from its first page") || !strings.Contains(run.Note, "410") {
		t.Fatalf("run note %q does not say the read restarted after the 410", run.Note)
	}
	if len(f.live()) != 9 {
		t.Fatalf("%d records after the restarted read, want 9", len(f.live()))
	}
}

// TestDeltaKeepsTheFullReadsCheckpoint: a delta between a failed full read
// and its retry leaves the full read's checkpoint alone: the retry resumes
// at the page it failed on, and no seen-set is left behind.
func TestDeltaKeepsTheFullReadsCheckpoint(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(12, time.Now())}
	armed, failed := false, false
	firstPages := 0 // first pages of full reads asked since armed
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		if !armed || q.Has("updated_since") {
			return false
		}
		switch q.Get("cursor") {
		case "":
			firstPages++
		case "c9":
			if !failed { // the first armed read fails on its fourth page
				failed = true
				http.Error(w, `{"error":"boom"}`, http.StatusServiceUnavailable)
				return true
			}
		}
		return false
	}
	f := startScripted(t, api, `
pagination: {style: cursor, cursor_param: cursor, next_field: next_cursor, limit_param: limit, limit: 3}
delta: {param: updated_since, field: updated_at, format: rfc3339}
full_sync: {detect_deletes: true}`)
	f.mustSucceed(f.full())
	api.mu.Lock()
	armed = true
	api.mu.Unlock()
	if run := f.full(); run.Status == store.StatusSucceeded || run.Pages != 3 {
		t.Fatalf("armed full read: %s after %d pages, want a failure after 3", run.Status, run.Pages)
	}
	f.mustSucceed(f.delta())
	// tidemark retry: the dead full read resumes where it stopped.
	run := f.mustSucceed(f.fetch(jobs.FetchPayload{Mode: tidemark.RunFull, Trigger: jobs.TriggerRetry, Resume: true}))
	api.mu.Lock()
	asked := firstPages
	api.mu.Unlock()
	if run.Pages != 1 || asked != 1 || !strings.Contains(run.Note, "resumed the interrupted read at page 4") {
		t.Fatalf("the full read's retry read %d pages (first page asked %d times), note %q: want it resumed at page 4", run.Pages, asked, run.Note)
	}
	if n := f.count(`SELECT count(*) FROM sync_seen`); n != 0 {
		t.Fatalf("%d seen-set rows left after the full read ended", n)
	}
}

// TestPaginationLoopsEndTheRun: a cursor that cycles (A → B → A) and an
// upstream that ignores the page parameter fail the run with "pagination
// loop" and what repeated, instead of reading forever.
func TestPaginationLoopsEndTheRun(t *testing.T) {
	t.Parallel()
	t.Run("cycling cursor", func(t *testing.T) {
		t.Parallel()
		api := &scripted{recs: numbered(9, time.Now())}
		api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Query().Get("cursor") == "c6" { // B leads back to A
				w.Write([]byte(`{"data":[{"id":7,"updated_at":null}],"next_cursor":"c3"}`))
				return true
			}
			return false
		}
		f := startScripted(t, api, `pagination: {style: cursor, cursor_param: cursor, next_field: next_cursor, limit_param: limit, limit: 3}`)
		run := f.full()
		if run.Status != store.StatusDead || !strings.Contains(run.Error, "pagination loop") || !strings.Contains(run.Error, `"c3"`) {
			t.Fatalf("cycling cursor: run %s: %s; want it dead naming the pagination loop and cursor c3", run.Status, run.Error)
		}
	})
	t.Run("ignored page parameter", func(t *testing.T) {
		t.Parallel()
		api := &scripted{recs: numbered(9, time.Now())}
		api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
			q := r.URL.Query()
			q.Set("page", "1")
			r.URL.RawQuery = q.Encode()
			return false
		}
		f := startScripted(t, api, `pagination: {style: page, limit_param: limit, limit: 3}`)
		run := f.full()
		if run.Status != store.StatusDead || !strings.Contains(run.Error, "pagination loop") || !strings.Contains(run.Error, "page=2") {
			t.Fatalf("ignored page parameter: run %s: %s; want it dead naming the pagination loop at page=2", run.Status, run.Error)
		}
	})
}

// TestHandBackIsNotAFailure: a fetch handed back for a 429 is recorded as
// interrupted, not failed: no failure streak, no run.failed event.
func TestHandBackIsNotAFailure(t *testing.T) {
	t.Parallel()
	api := &scripted{recs: numbered(3, time.Now())}
	limited := 1
	api.before = func(n int, s *scripted, w http.ResponseWriter, r *http.Request) bool {
		if limited > 0 {
			limited--
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		}
		return false
	}
	f := startScriptedOnQueues(t, api, `pagination: {style: none}`, worker.Config{Concurrency: 2})
	res := f.conf.Sources[0].Resource("items")
	task, err := jobs.NewFetch(jobs.FetchPayload{Source: "api", Resource: "items", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}, jobs.FetchOptions(res)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the handed-back fetch to succeed", func() (bool, string) {
		return len(f.live()) == 3, ""
	})
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Source: "api"})
	if err != nil || len(runs) != 2 {
		t.Fatalf("runs = %v, %v; want the handed-back one and the successful one", runs, err)
	}
	if back := runs[1]; back.Status != store.StatusInterrupted || !strings.Contains(back.Error, "handed back") {
		t.Fatalf("handed-back run: %s: %q; want interrupted", back.Status, back.Error)
	}
	if f.state().ConsecutiveFailures != 0 {
		t.Fatalf("a hand-back counted as a failure: %d", f.state().ConsecutiveFailures)
	}
	failed, err := f.store.CheckFailures(context.Background(), 1)
	if err != nil || len(failed) != 0 {
		t.Fatalf("run.failed after a hand-back: %v, %v", failed, err)
	}
}
