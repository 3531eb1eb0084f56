package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"time"
)

// converge lets the upstream go quiet and checks that the copy catches up
// as promised: after one probe-triggered fetch, every change a delta can
// see; after the next full read (two where deletes wait for a second read),
// everything, deletes included. Every run after the faults cleared must
// succeed.
func (d *driver) converge(ctx context.Context) error {
	d.up.SetFaults(Faults{})
	d.crash.set("", 0)
	if d.sc.API.Probe == "last_modified" {
		// Quiet means quiet for a while: with one-second Last-Modified and
		// Date headers, a change in the second a read begins may have come
		// after it, and tidemark rightly will not confirm or delete on
		// such a read's word.
		time.Sleep(1100 * time.Millisecond)
	}
	mark, err := d.lastRunID(ctx)
	if err != nil {
		return err
	}
	began := time.Now()
	if err := d.enqueue(ctx, OpProbe); err != nil {
		return err
	}
	if err := d.waitQuiet(ctx); err != nil {
		return fmt.Errorf("probe-triggered fetch after the upstream went quiet: %w", err)
	}
	diffs, err := d.rotate(ctx)
	if err != nil {
		return err
	}
	if len(diffs) > 0 && !d.pageDeltaShifted {
		d.violate(LostUpdate, "after the probe-triggered fetch, with the upstream quiet: %s", sample(diffs))
	}
	// Full reads begun after the upstream went quiet: a read that resumes
	// one begun before (its run's note says so) does not count.
	for reads := 0; ; {
		if diffs, err = d.compare(ctx, true); err != nil {
			return err
		}
		if len(diffs) == 0 {
			runs, err := d.runsAfter(ctx, mark)
			if err != nil {
				return err
			}
			d.out.Converged, d.out.Runs, d.out.Took = true, countFetches(runs), time.Since(began)
			break
		}
		if reads == 2 {
			d.violate(LostUpdate, "not equal to the upstream after two full reads: %s", sample(diffs))
			break
		}
		last, err := d.lastRunID(ctx)
		if err != nil {
			return err
		}
		if err := d.enqueue(ctx, OpFull); err != nil {
			return err
		}
		if err := d.waitQuiet(ctx); err != nil {
			return fmt.Errorf("full read after the upstream went quiet: %w", err)
		}
		if fresh, err := d.freshFullRead(ctx, last); err != nil {
			return err
		} else if fresh {
			reads++
		}
	}
	runs, err := d.runsAfter(ctx, mark)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if r.Status != "succeeded" && r.Status != "interrupted" {
			d.violate(Wedged, "run %d (%s) after every fault cleared: %s: %s", r.ID, r.Kind, r.Status, r.Error)
		}
	}
	var q int64
	d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT count(*) FROM record_quarantine WHERE source = ?`, d.source).Scan(&q)
	d.out.Quarantined = int(q)
	return nil
}

// freshFullRead reports whether the full read after run id after began a
// new pass (rather than resuming one).
func (d *driver) freshFullRead(ctx context.Context, after int64) (bool, error) {
	var notes []string
	err := d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT note FROM sync_runs
		WHERE source = ? AND id > ? AND kind = 'full' AND status = 'succeeded'`, d.source, after).Scan(&notes).Error
	for _, n := range notes {
		if !strings.Contains(n, "resumed the interrupted read") {
			return true, err
		}
	}
	return false, err
}

func countFetches(runs []runRow) int {
	n := 0
	for _, r := range runs {
		if r.Kind != "probe" {
			n++
		}
	}
	return n
}

func sample(diffs []string) string {
	if len(diffs) > 3 {
		return strings.Join(diffs[:3], "; ") + fmt.Sprintf("; and %d more", len(diffs)-3)
	}
	return strings.Join(diffs, "; ")
}

// compare lists how Postgres differs from the model. Not strict: only
// what a delta can see must be there (records gone upstream, and records
// the delta filter hides, may lag). Strict: exactly the model.
func (d *driver) compare(ctx context.Context, strict bool) ([]string, error) {
	snap := d.model.Snapshot()
	var rows []struct {
		ExternalID string
		Payload    string
		Live       bool
	}
	if err := d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT external_id, payload::text AS payload, deleted_at IS NULL AS live
		FROM records WHERE source = ? AND resource = 'items'`, d.source).Scan(&rows).Error; err != nil {
		return nil, err
	}
	have := make(map[string]int, len(rows))
	for i, r := range rows {
		have[r.ExternalID] = i
	}
	quarantined, unnamed := d.quarantine(ctx)
	invalid := 0
	var diffs []string
	keys := make([]string, 0, len(snap.Records))
	for k := range snap.Records {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		exp := snap.Records[k]
		if !strict && d.resource.Delta != nil && snap.DeltaHidden[k] {
			continue // a delta never sees it: the full read's to find
		}
		if exp.Unstorable != "" {
			if strings.HasPrefix(k, "invalid:") {
				invalid++
				continue
			}
			if !quarantined[k] {
				diffs = append(diffs, fmt.Sprintf("%.60q (%s) is neither stored nor quarantined", k, exp.Unstorable))
			}
			continue
		}
		i, ok := have[k]
		switch {
		case !ok || !rows[i].Live:
			diffs = append(diffs, fmt.Sprintf("%.60q missing", k))
		case !sameJSON([]byte(rows[i].Payload), exp.JSON):
			diffs = append(diffs, fmt.Sprintf("%.60q differs: have %.200s, want %.200s", k, rows[i].Payload, exp.JSON))
		}
	}
	if invalid > unnamed {
		diffs = append(diffs, fmt.Sprintf("%d records with invalid ids upstream, %d quarantined without an id", invalid, unnamed))
	}
	if strict {
		for _, r := range rows {
			if _, ok := snap.Records[r.ExternalID]; r.Live && !ok {
				diffs = append(diffs, fmt.Sprintf("%.60q live in Postgres, gone upstream", r.ExternalID))
			}
		}
	}
	return diffs, nil
}

// quarantine reads the resource's quarantined records: their ids, and how
// many have none (an id tidemark could not read).
func (d *driver) quarantine(ctx context.Context) (map[string]bool, int) {
	var rows []struct{ ExternalID *string }
	// Before the quarantine existed this table did not: nothing is set aside.
	d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT external_id FROM record_quarantine WHERE source = ? AND resource = 'items'`, d.source).Scan(&rows)
	ids, unnamed := map[string]bool{}, 0
	for _, r := range rows {
		if r.ExternalID == nil {
			unnamed++
			continue
		}
		ids[*r.ExternalID] = true
	}
	return ids, unnamed
}

// sameJSON compares two JSON documents by value: numbers as exact
// rationals, the volatile meta.fetched_at left out.
func sameJSON(a, b []byte) bool {
	va, err1 := decode(a)
	vb, err2 := decode(b)
	return err1 == nil && err2 == nil && equalValue(va, vb)
}

func decode(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if obj, ok := v.(map[string]any); ok {
		if meta, ok := obj["meta"].(map[string]any); ok {
			delete(meta, "fetched_at")
		}
	}
	return v, nil
}

func equalValue(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		rx, okx := new(big.Rat).SetString(string(x))
		ry, oky := new(big.Rat).SetString(string(y))
		return okx && oky && rx.Cmp(ry) == 0
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !equalValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalValue(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// checkHistory checks what the whole seed wrote: no tombstone for a record
// that was live upstream all along (invariant 1), and every data.updated
// event naming exactly the records its transaction changed, each a real
// change (invariant 3).
func (d *driver) checkHistory(ctx context.Context) error {
	db := d.lane.Store.DBForTests().WithContext(ctx)
	var fulls []time.Time
	if err := db.Raw(`SELECT finished_at FROM sync_runs WHERE source = ? AND kind = 'full' AND status = 'succeeded' ORDER BY finished_at`,
		d.source).Scan(&fulls).Error; err != nil {
		return err
	}
	var changes []auditRow
	if err := db.Raw(`SELECT id, xmin::text AS x, external_id, op, old_hash, new_hash,
			coalesce(array_length(changed_fields, 1), 0) AS changed, at, run_id
		FROM record_changes WHERE source = ? ORDER BY id`, d.source).Scan(&changes).Error; err != nil {
		return err
	}
	byTx := d.checkAudit(changes, fulls)
	var events []outboxEvent
	if err := db.Raw(`SELECT id, xmin::text AS x, payload::text AS payload FROM outbox
		WHERE source = ? AND event = 'data.updated' ORDER BY id`, d.source).Scan(&events).Error; err != nil {
		return err
	}
	told := map[string]bool{}
	for _, e := range events {
		d.checkEvent(e, changes, byTx, told)
	}
	for x, rows := range byTx {
		if !told[x] {
			d.violate(FalseEvent, "audit rows %d.. changed %d records with no data.updated event", changes[rows[0]].ID, len(rows))
		}
	}
	return nil
}

// auditRow is one row of record_changes, with its transaction (X, the
// row's xmin).
type auditRow struct {
	ID               int64
	X                string
	ExternalID       string
	Op               string
	OldHash, NewHash *string
	Changed          int
	At               time.Time
	RunID            int64
}

// outboxEvent is one data.updated row of the outbox, with its transaction.
type outboxEvent struct {
	ID      int64
	X       string
	Payload string
}

// auditState is what the audit rows so far say of one record.
type auditState struct {
	live bool
	hash string
}

// checkAudit replays the audit rows in order, checking each against the
// record's state so far (a create of a live record, an update with no
// change or from the wrong hash, a delete of a record not live, a tombstone
// for a record live upstream since the last full read), and returns the
// rows' indexes by transaction. fulls are the succeeded full reads' ends.
func (d *driver) checkAudit(changes []auditRow, fulls []time.Time) map[string][]int {
	states := map[string]auditState{}
	byTx := map[string][]int{}
	for i, c := range changes {
		byTx[c.X] = append(byTx[c.X], i)
		st, seen := states[c.ExternalID]
		old, next := deref(c.OldHash), deref(c.NewHash)
		switch c.Op {
		case "created":
			if st.live {
				d.violate(FalseEvent, "audit row %d creates %.60q, which was live", c.ID, c.ExternalID)
			}
			states[c.ExternalID] = auditState{true, next}
		case "updated":
			switch {
			case !st.live:
				d.violate(FalseEvent, "audit row %d updates %.60q, which was not live", c.ID, c.ExternalID)
			case seen && old != st.hash:
				d.violate(FalseEvent, "audit row %d: old hash of %.60q is not the hash it had", c.ID, c.ExternalID)
			case old == next || c.Changed == 0:
				d.violate(FalseEvent, "audit row %d updates %.60q with no changed field (a re-spelling is not a change)", c.ID, c.ExternalID)
			}
			states[c.ExternalID] = auditState{true, next}
		case "deleted":
			if !st.live {
				d.violate(FalseEvent, "audit row %d deletes %.60q, which was not live", c.ID, c.ExternalID)
			}
			states[c.ExternalID] = auditState{false, ""}
			d.checkTombstone(c, fulls)
		}
	}
	return byTx
}

// checkTombstone reports a delete of a record that was live upstream all
// along from the full read before the delete's to the delete (invariant 1).
func (d *driver) checkTombstone(c auditRow, fulls []time.Time) {
	from := d.began
	if i := sort.Search(len(fulls), func(i int) bool { return !fulls[i].Before(c.At) }); i > 0 {
		from = fulls[i-1]
	}
	if d.model.LiveThroughout(c.ExternalID, from, c.At) {
		d.violate(FalseDelete, "run %d tombstoned %.60q, live upstream from %s to %s", c.RunID, c.ExternalID,
			from.Format("15:04:05.000"), c.At.Format("15:04:05.000"))
	}
}

// checkEvent checks one data.updated event against the audit rows of its
// transaction: one event per transaction, its counts theirs, and the ids it
// names (all of them, up to 100) the ones they changed. told collects the
// transactions that had an event.
func (d *driver) checkEvent(e outboxEvent, changes []auditRow, byTx map[string][]int, told map[string]bool) {
	var p struct {
		Created, Updated, Deleted int
		IDs                       []string
	}
	if err := json.Unmarshal([]byte(e.Payload), &p); err != nil {
		d.violate(FalseEvent, "event %d: %v", e.ID, err)
		return
	}
	if told[e.X] {
		d.violate(FalseEvent, "event %d: a second event for one transaction", e.ID)
	}
	told[e.X] = true
	count := map[string]int{}
	ids := map[string]bool{}
	for _, i := range byTx[e.X] {
		count[changes[i].Op]++
		ids[changes[i].ExternalID] = true
	}
	if count["created"] != p.Created || count["updated"] != p.Updated || count["deleted"] != p.Deleted {
		d.violate(FalseEvent, "event %d says %d created, %d updated, %d deleted; its transaction changed %d, %d, %d",
			e.ID, p.Created, p.Updated, p.Deleted, count["created"], count["updated"], count["deleted"])
	}
	for _, id := range p.IDs {
		if !ids[id] {
			d.violate(FalseEvent, "event %d names %.60q, which its transaction did not change", e.ID, id)
		}
	}
	if len(ids) <= 100 && len(p.IDs) != len(ids) {
		d.violate(FalseEvent, "event %d names %d records; its transaction changed %d", e.ID, len(p.IDs), len(ids))
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// rotate returns what differs after the probe-triggered fetch. A
// rolling_hash probe asks one page per probe: its promise is that a change
// is seen within one rotation of the pages, so it probes on (a probe and
// the fetch it asks for at a time) until nothing differs or a rotation of
// the pages the last full read recorded, and one more, has gone by.
func (d *driver) rotate(ctx context.Context) ([]string, error) {
	diffs, err := d.compare(ctx, false)
	if err != nil || d.sc.API.Probe != "rolling_hash" {
		return diffs, err
	}
	var pages int
	if err := d.lane.Store.DBForTests().WithContext(ctx).Raw(`SELECT count(*) FROM probe_pages WHERE source = ? AND resource = 'items'`,
		d.source).Scan(&pages).Error; err != nil {
		return nil, err
	}
	for range pages {
		if len(diffs) == 0 {
			return nil, nil
		}
		if err := d.enqueue(ctx, OpProbe); err != nil {
			return nil, err
		}
		if err := d.waitQuiet(ctx); err != nil {
			return nil, fmt.Errorf("rolling probe after the upstream went quiet: %w", err)
		}
		if diffs, err = d.compare(ctx, false); err != nil {
			return nil, err
		}
	}
	return diffs, nil
}
