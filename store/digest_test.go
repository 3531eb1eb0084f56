package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tidemark/tidemark/store"
)

// digestEnv drives full reads and deltas against one store, page by page.
type digestEnv struct {
	t *testing.T
	s *store.Store
}

func newDigestEnv(t *testing.T) digestEnv {
	t.Helper()
	s := open(t)
	if err := s.EnsureStates(context.Background(), []store.Key{key}); err != nil {
		t.Fatal(err)
	}
	return digestEnv{t, s}
}

// page is a page of records given as "id=body" pairs.
func page(pairs ...string) []store.Record {
	var recs []store.Record
	for _, p := range pairs {
		id, body, _ := strings.Cut(p, "=")
		recs = append(recs, rec(id, fmt.Sprintf(`{"v":%q}`, body)))
	}
	return recs
}

// fullRead applies the pages as one full read, ends it (deleting what it
// did not see), and returns which pages the store matched by digest.
func (e digestEnv) fullRead(pages ...[]store.Record) []bool {
	e.t.Helper()
	run := startRun(e.t, e.s, store.KindFull)
	return e.finishRead(run, e.applyPages(run, run, pages...))
}

func (e digestEnv) applyPages(run, pass int64, pages ...[]store.Record) (matched []bool) {
	e.t.Helper()
	for _, recs := range pages {
		r, err := e.s.ApplyPage(context.Background(), store.Page{Key: key, RunID: run, PassID: pass, Records: recs})
		if err != nil {
			e.t.Fatal(err)
		}
		matched = append(matched, r.DigestMatched)
	}
	return matched
}

func (e digestEnv) finishRead(run int64, matched []bool) []bool {
	e.t.Helper()
	var seen int64
	e.s.DBForTests().Raw(`SELECT coalesce(sum(cardinality(ids)), 0) FROM sync_seen WHERE pass_id = ?`, run).Scan(&seen)
	finish(e.t, e.s, run, seen, store.DeletePolicy{})
	return matched
}

// delta applies records as a delta run's page.
func (e digestEnv) delta(recs []store.Record) {
	e.t.Helper()
	run := startRun(e.t, e.s, store.KindDelta)
	if _, err := e.s.ApplyPage(context.Background(), store.Page{Key: key, RunID: run, Records: recs}); err != nil {
		e.t.Fatal(err)
	}
}

// want checks the live records against "id=body" pairs.
func (e digestEnv) want(pairs ...string) {
	e.t.Helper()
	var got []string
	e.s.DBForTests().Raw(`SELECT external_id || '=' || (payload->>'v') FROM records WHERE deleted_at IS NULL ORDER BY external_id`).Scan(&got)
	slices.Sort(pairs)
	if !slices.Equal(got, pairs) {
		e.t.Fatalf("live records %v, want %v", got, pairs)
	}
}

func TestDigestSkipsUnchangedPages(t *testing.T) {
	t.Parallel()
	e := newDigestEnv(t)
	p1, p2 := page("1=a", "2=a"), page("3=a", "4=a")
	if m := e.fullRead(p1, p2); slices.Contains(m, true) {
		t.Fatalf("first read matched %v, want no page (nothing stored)", m)
	}
	for i := range 2 { // confirmed again by each unchanged read
		if m := e.fullRead(p1, p2); !slices.Equal(m, []bool{true, true}) {
			t.Fatalf("unchanged read %d matched %v, want every page", i+2, m)
		}
	}
	// A page whose records moved is compared record by record, and its
	// change is written.
	if m := e.fullRead(page("1=a"), page("2=a", "3=a"), page("4=b")); slices.Contains(m, true) {
		t.Fatalf("shifted pages matched %v, want none", m)
	}
	e.want("1=a", "2=a", "3=a", "4=b")
}

// A delta wrote record 1 after the last full read, and the upstream says
// the old value again: the page's digest equals the confirmed one, but the
// store no longer holds it.
func TestDigestNotTrustedAfterADelta(t *testing.T) {
	t.Parallel()
	e := newDigestEnv(t)
	p1, p2 := page("1=a", "2=a"), page("3=a", "4=a")
	e.fullRead(p1, p2)
	e.delta(page("1=b"))
	e.want("1=b", "2=a", "3=a", "4=a")
	// (Page 2 may match: once page 1 wrote record 1 back, the live
	// records are again exactly those the confirmed read left.)
	if m := e.fullRead(p1, p2); m[0] {
		t.Fatalf("read after a delta matched %v, want page 1 compared", m)
	}
	e.want("1=a", "2=a", "3=a", "4=a")
	if m := e.fullRead(p1, p2); !slices.Equal(m, []bool{true, true}) {
		t.Fatalf("the next unchanged read matched %v, want every page", m)
	}
}

// A delta wrote record 1 while a full read was under way (between its
// pages: an interrupted read resumed later), after the read had applied
// record 1's page: that page's digest must not be confirmed.
func TestDigestChainBrokenByAWriteMidRead(t *testing.T) {
	t.Parallel()
	e := newDigestEnv(t)
	p1, p2 := page("1=a", "2=a"), page("3=a", "4=a")
	run := startRun(t, e.s, store.KindFull)
	m := e.applyPages(run, run, p1)
	e.delta(page("1=b"))
	e.finishRead(run, append(m, e.applyPages(run, run, p2)...))
	e.want("1=b", "2=a", "3=a", "4=a")
	if m := e.fullRead(p1, p2); m[0] {
		t.Fatalf("read matched %v, want page 1 compared (the delta wrote its record 1)", m)
	}
	e.want("1=a", "2=a", "3=a", "4=a")
}

// Record 1 on two pages of one read with different content: the second
// overwrites what the first set, so the first page's digest must not be
// confirmed.
func TestDigestOfAPageOverwrittenLaterInTheRead(t *testing.T) {
	t.Parallel()
	e := newDigestEnv(t)
	e.fullRead(page("0=a"))
	e.fullRead(page("1=a", "2=a"), page("1=b", "3=a"))
	e.want("1=b", "2=a", "3=a")
	if m := e.fullRead(page("1=a", "2=a"), page("3=a")); m[0] {
		t.Fatalf("read matched %v, want page 1 compared (record 1 was overwritten by the page after it)", m)
	}
	e.want("1=a", "2=a", "3=a")
}

// Pages skipped by digest still join the seen-set: what the read did not
// see is deleted.
func TestDigestSkippedPagesStillDetectDeletes(t *testing.T) {
	t.Parallel()
	e := newDigestEnv(t)
	p1, p2 := page("1=a", "2=a"), page("3=a", "4=a")
	e.fullRead(p1, p2)
	if m := e.fullRead(p1); !m[0] {
		t.Fatalf("read matched %v, want page 1", m)
	}
	e.want("1=a", "2=a")
	// The deletions changed the live state the confirmation was taken
	// after: the read after still trusts the page.
	if m := e.fullRead(p1); !m[0] {
		t.Fatalf("read after the deletions matched %v, want page 1", m)
	}
}

// readWith applies the pages as one full read and ends it of the pages with a deletion policy.
func (e digestEnv) readWith(pol store.DeletePolicy, pages ...[]store.Record) store.FullReadResult {
	e.t.Helper()
	run := startRun(e.t, e.s, store.KindFull)
	e.applyPages(run, run, pages...)
	var seen int64
	e.s.DBForTests().Raw(`SELECT coalesce(sum(cardinality(ids)), 0) FROM sync_seen WHERE pass_id = ?`, run).Scan(&seen)
	return finish(e.t, e.s, run, seen, pol)
}

// A read whose pages hold as many ids as there are live records has not
// necessarily seen them all: record 2 twice stands in for record 4.
func TestAllSeenNeedsTheRecordsNotJustTheCount(t *testing.T) {
	t.Parallel()
	e := newDigestEnv(t)
	e.fullRead(page("1=a", "2=a"), page("3=a", "4=a"))
	if r := e.readWith(store.DeletePolicy{}, page("1=a", "2=a"), page("2=a", "3=a")); r.Deleted != 1 {
		t.Fatalf("read deleted %d, want record 4", r.Deleted)
	}
	e.want("1=a", "2=a", "3=a")
}

// A read that saw every live record clears the deletions an earlier read
// held: the record is there after all, and the next read to miss it holds
// it again rather than deleting it.
func TestAllSeenClearsHeldDeletions(t *testing.T) {
	t.Parallel()
	e := newDigestEnv(t)
	two := store.DeletePolicy{AfterReads: 2}
	e.fullRead(page("1=a", "2=a", "3=a"))
	if r := e.readWith(two, page("1=a", "2=a")); r.Held != 1 {
		t.Fatalf("read held %d, want record 3", r.Held)
	}
	if r := e.readWith(two, page("1=a", "2=a", "3=a")); r.Held != 0 || r.Deleted != 0 {
		t.Fatalf("read that saw everything = %+v, want nothing held or deleted", r)
	}
	if r := e.readWith(two, page("1=a", "2=a")); r.Deleted != 0 || r.Held != 1 {
		t.Fatalf("read = %+v, want record 3 held again, not deleted", r)
	}
	e.want("1=a", "2=a", "3=a")
}
