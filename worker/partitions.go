package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// A partitioned resource (config parent or partitions) is one fetch task
// and one run, like any resource: the run walks its partitions in a fixed
// order (a parent's id, or the order of partitions), reading each as a
// resource of its own (its own watermark, checkpoint and full read's
// seen-set, in its sync_partitions row) and storing its records under the
// partition. After each partition the walk's position is saved in the
// resource's checkpoint (sync_state), with the partition's end, so a
// crashed run resumes at the partition it was in, and within it at that
// partition's checkpoint.

// walkCheckpoint is where an interrupted walk of a resource's partitions
// resumes: after the partition After (a parent's id, or a partition's
// name). It is kept in the resource's checkpoint of the run's mode.
type walkCheckpoint struct {
	Mode    tidemark.RunKind `json:"mode"`
	TaskID  string           `json:"task_id,omitempty"`
	After   string           `json:"after_partition"`
	SavedAt time.Time        `json:"saved_at,omitzero"`
}

// partition is one partition a walk visits.
type partition struct {
	name string
	// after is the walk's position once this partition is done.
	after string
	// values fill the placeholders of the path and of a POST body.
	values map[string]string
	// parentVersion is the parent record's content hash ("" for a listed
	// partition).
	parentVersion string
}

// parentPage is how many parents the walk reads from Postgres at a time.
const parentPage = 500

// maxPartitionNotes bounds the partitions' notes a run keeps.
const maxPartitionNotes = 20

// setWalk resumes the interrupted walk of this mode when it can (the same
// rules as a read's checkpoint: the task's own later attempts or an
// explicit resumption, within pagination.resume_within), or starts anew.
func (f *run) setWalk() {
	raw := f.st.Checkpoint
	if f.mode == tidemark.RunFull {
		raw = f.st.FullCheckpoint
	}
	f.walk = walkCheckpoint{Mode: f.mode, TaskID: f.row.TaskID}
	var saved walkCheckpoint
	if len(raw) == 0 || json.Unmarshal(raw, &saved) != nil || saved.Mode != f.mode || saved.After == "" {
		return
	}
	switch {
	case saved.TaskID != f.row.TaskID && !f.p.Resume:
		f.note("the interrupted walk of the partitions was begun by another task: it starts over")
	case time.Since(saved.SavedAt) > f.res.Pagination.ResumeWithin.D():
		f.note("the interrupted walk of the partitions is older than pagination.resume_within: it starts over")
	case f.rekey || f.ignoreMark:
	default:
		f.walk.After, f.resumed = saved.After, true
		f.note("resumed the walk of the partitions after %q", saved.After)
	}
}

// walkPartitions reads every partition the run visits. A partition that
// fails for good (a client error, a parent value that makes no path) is
// recorded on its row and the walk goes on; the run then fails once the
// walk is over. Any other error ends the run, whose retry resumes at the
// partition it was in.
func (f *run) walkPartitions(ctx context.Context) error {
	// Orphans first: a parent whose key changed (a renamed repository
	// keyed by name) leaves its old partition orphaned, and its records,
	// read again under the new one, must not be tombstoned after that.
	if err := f.deleteOrphans(ctx); err != nil {
		return err
	}
	var failed []string
	var firstErr error
	err := f.eachPartition(ctx, func(pt partition) error {
		err := f.readPartition(ctx, pt)
		if err == nil || !jobs.Permanent(err) || errors.Is(err, store.ErrSuperseded) {
			return err
		}
		failed = append(failed, pt.name)
		firstErr = cmp.Or(firstErr, err)
		return f.finishPartition(ctx, pt, nil, err)
	})
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %d partitions failed (%s); the first: %w", jobs.ErrBadInput, len(failed), strings.Join(first(failed, 5), ", "), firstErr)
	}
	return nil
}

func first(s []string, n int) []string { return s[:min(len(s), n)] }

// eachPartition calls visit for each partition the run visits, after the
// walk's position.
func (f *run) eachPartition(ctx context.Context, visit func(partition) error) error {
	if f.res.Parent == nil {
		resumed := f.walk.After == "" || !slices.Contains(f.res.Partitions, f.walk.After)
		for _, name := range f.res.Partitions {
			if !resumed {
				resumed = name == f.walk.After
				continue
			}
			pt := partition{name: name, after: name, values: map[string]string{config.PlaceholderPartition: name}}
			if err := visit(pt); err != nil {
				return err
			}
		}
		return nil
	}
	return f.eachParent(ctx, visit)
}

// eachParent visits the partitions of the parent's live records, a page of
// parents at a time. With parent.changed_only a run not asked for by an
// operator leaves out the parents unchanged since their partition's last
// sync, unless that was longer ago than full_sync.every: every partition
// is still read once per full_sync.every.
func (f *run) eachParent(ctx context.Context, visit func(partition) error) error {
	pa := f.res.Parent
	names, _ := config.Placeholders(f.res.Path)
	names = append(names, config.BodyPartitionPlaceholders(f.res.Body)...)
	q := store.ParentQuery{Child: f.key, Parent: pa.Resource, KeyPath: pa.Key, After: f.walk.After, Limit: parentPage,
		ChangedOnly: pa.ChangedOnly && f.p.Trigger != jobs.TriggerManual, Stale: time.Now().Add(-f.res.FullSync.Every.D())}
	for {
		parents, err := f.h.store.ParentPartitions(ctx, q)
		if err != nil {
			return err
		}
		for _, pp := range parents {
			pt, err := parentPartition(pp, pa.Key, names)
			if err != nil {
				f.partitionNote(pp.ParentID, "skipped: %v", err)
				continue
			}
			if err := visit(pt); err != nil {
				return err
			}
		}
		if len(parents) < q.Limit {
			return nil
		}
		q.After = parents[len(parents)-1].ParentID
	}
}

// parentPartition is the partition of one parent record: its name (the
// parent's key value) and the parent fields the path and body name.
func parentPartition(pp store.ParentPartition, key string, names []string) (partition, error) {
	pt := partition{name: pp.Name, after: pp.ParentID, parentVersion: pp.ParentVersion, values: map[string]string{}}
	if pt.name == "" {
		return pt, fmt.Errorf("the parent record %q has no value at %q to name its partition", pp.ParentID, key)
	}
	pt.values[config.PlaceholderPartition] = pt.name
	var doc any
	if err := json.Unmarshal(pp.Parent, &doc); err != nil {
		return pt, fmt.Errorf("the parent record %q: %w", pp.ParentID, err)
	}
	for _, n := range names {
		field, ok := strings.CutPrefix(n, config.PlaceholderParent)
		if !ok {
			continue
		}
		v, ok := extract.Lookup(doc, field)
		s, text := scalarText(v)
		if !ok || !text {
			return pt, fmt.Errorf("the parent record %q has no text or number at %q for the request", pp.ParentID, field)
		}
		pt.values[n] = s
	}
	return pt, nil
}

// scalarText is a JSON string or number as text.
func scalarText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, v != ""
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

// readPartition reads one partition as a run of its own (its state, its
// checkpoint, its pages, a full read's deletions), sharing the run's row,
// and records its end.
func (f *run) readPartition(ctx context.Context, pt partition) error {
	path, err := upstream.PartitionPath(f.client, f.res.Path, pt.values)
	if err != nil {
		return fmt.Errorf("%w: partition %q: %w", jobs.ErrBadInput, pt.name, err)
	}
	ps, err := f.h.store.PartitionState(ctx, f.key, pt.name)
	if err != nil {
		return err
	}
	res := *f.res
	res.Path = path
	pf := &run{h: f.h, p: f.p, src: f.src, res: &res, key: f.key, client: f.client, began: time.Now(), mode: f.mode,
		row: f.row, basis: f.basis, ignoreMark: f.ignoreMark, rekey: f.rekey, quarantining: f.quarantining, summarizeCreates: f.summarizeCreates,
		progress: f.progress, partition: pt.name, partitionVars: pt.values,
		st: store.State{Watermark: ps.Watermark, Checkpoint: ps.Checkpoint, FullCheckpoint: ps.FullCheckpoint}}
	err = pf.setCheckpoint(ctx)
	if err == nil && !pf.resumed {
		pf.ifNoneMatch = ps.ETag
	}
	if err == nil {
		err = pf.read(ctx)
	}
	if err == nil && pf.mode == tidemark.RunFull && !pf.notModified {
		err = pf.finishPass(ctx)
	}
	f.absorb(pf)
	if err != nil {
		return fmt.Errorf("partition %q: %w", pt.name, err)
	}
	return f.finishPartition(ctx, pt, pf, nil)
}

// absorb adds a partition's counts, requests and notes to the run's.
func (f *run) absorb(pf *run) {
	f.n.add(pf.n)
	f.requests += pf.requests
	f.quarantining = f.quarantining || pf.quarantining
	if rs := pf.cp.ReadStart; !rs.IsZero() && (f.cp.ReadStart.IsZero() || rs.Before(f.cp.ReadStart)) {
		f.cp.ReadStart = rs
	}
	for _, n := range append(pf.notes, pf.cursors.notes(pf.res)...) {
		f.partitionNote(pf.partition, "%s", n)
	}
}

// partitionNote notes something of one partition, up to maxPartitionNotes
// a run.
func (f *run) partitionNote(name, format string, args ...any) {
	f.partitionNotes++
	switch {
	case f.partitionNotes <= maxPartitionNotes:
		f.note("partition %q: %s", name, fmt.Sprintf(format, args...))
	case f.partitionNotes == maxPartitionNotes+1:
		f.note("(further partitions' notes left out)")
	}
}

// finishPartition records a partition's end (pf, its read; or failed, why
// it failed for good) and moves the walk past it.
func (f *run) finishPartition(ctx context.Context, pt partition, pf *run, failed error) error {
	f.walk.After, f.walk.SavedAt = pt.after, time.Now().UTC()
	walk, _ := json.Marshal(f.walk)
	d := store.PartitionDone{Key: f.key, Partition: pt.name, RunID: f.row.ID, Full: f.mode == tidemark.RunFull,
		ParentVersion: pt.parentVersion, Walk: walk}
	switch {
	case failed != nil:
		d.Err = failed.Error()
	case pf.notModified:
		d.ETag = pf.ifNoneMatch
	default:
		d.Watermark = pf.watermark()
		if pf.cp.Pages == 1 && !pf.restarted {
			d.ETag = pf.firstETag
		}
		if pf.n.held > 0 {
			// Its deletions wait for the next read to agree: with
			// changed_only, that read must not wait for the parent to
			// change again, and a 304 to this read's ETag would skip
			// it, holding them for ever.
			d.ParentVersion, d.ETag = "", ""
		}
	}
	return f.h.store.FinishPartition(ctx, d)
}

// deleteOrphans tombstones the records of the partitions whose parent is
// gone (parent.delete_with_parent).
func (f *run) deleteOrphans(ctx context.Context) error {
	pa := f.res.Parent
	if pa == nil || pa.DeleteWithParent == nil || !*pa.DeleteWithParent {
		return nil
	}
	n, err := f.h.store.TombstoneOrphans(ctx, store.Orphans{Child: f.key, Parent: pa.Resource, KeyPath: pa.Key, RunID: f.row.ID})
	if n > 0 {
		f.n.deleted += n
		f.note("%d records tombstoned with their parents (parent.delete_with_parent)", n)
	}
	return err
}

// startChildren asks for a read of each child of a resource whose run just
// changed records: a new or changed parent's children are read soon rather
// than at the child's next slot (parent.changed_only then reads only
// theirs), and a tombstoned parent's children follow it.
func (h fetchHandler) startChildren(ctx context.Context, src *config.Source, res *config.Resource) {
	for i := range src.Resources {
		child := &src.Resources[i]
		if child.Parent == nil || child.Parent.Resource != res.Name {
			continue
		}
		task, err := jobs.NewFetch(jobs.FetchPayload{Source: src.Name, Resource: child.Name, Mode: jobs.ModeFor(child, false), Trigger: jobs.TriggerParent},
			jobs.FetchOptions(child)...)
		if err == nil {
			_, err = h.client.EnqueueContext(ctx, task)
		}
		if err != nil {
			h.log.Warn("enqueue the children's fetch", "source", src.Name, "resource", child.Name, "parent", res.Name, "error", err)
		}
	}
}
