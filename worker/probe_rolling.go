package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// rollingProbe is the probe of strategy rolling_hash: it asks the next page
// of the last full read, in rotation, and compares the hash of its records
// with the hash that read recorded of the same page (probe_pages). A change
// anywhere in the collection is on some page, so it is seen within pages ×
// interval (pages × max_every after back-off), at one request per probe.
// With no page recorded yet it reports a change without a request: the
// full read it asks for records them.
//
// A changed page asks for a full read, not a delta: a deep amendment that
// left no change metadata is invisible to a delta, and only a full read
// both applies it and records the pages anew (the candidate it leaves is
// dropped, so a lost or failed read is asked for again when the rotation
// comes back to the page, whose recorded hash has not moved).
func (h probeHandler) rollingProbe(ctx context.Context, client *upstream.Client, key store.Key, res *config.Resource, st store.State) (store.ProbeOutcome, int, error) {
	out := store.ProbeOutcome{Kind: tidemark.ValidatorRollingHash, HeadUnsupported: st.HeadUnsupported}
	// The rotation is fleet-wide (Redis), so that probes on any worker
	// take the pages in turn; a lost counter starts again at page 0.
	turn, err := h.rdb.Incr(ctx, "tidemark:rolling-probe:"+key.String()).Result()
	if err != nil {
		return out, 0, fmt.Errorf("rolling probe turn: %w", err)
	}
	page, pages, err := h.store.RollingProbePage(ctx, key, turn-1)
	if errors.Is(err, store.ErrNotFound) {
		out.Changed, out.Validator = true, "no pages recorded"
		out.Interval = nextInterval(res.Probe, 0, true)
		return out, 0, nil
	}
	if err != nil {
		return out, 0, err
	}
	var at upstream.Position
	if err := json.Unmarshal(page.Position, &at); err != nil {
		return out, 0, fmt.Errorf("page %d of %d: its recorded position: %w", page.Page+1, pages, err)
	}
	pager := upstream.NewPager(client, res, at, page.Page)
	got, err := pager.Next(ctx)
	if page.Page > 0 && positionRefused(err) {
		// The recorded continuation expired or was single-use: this page
		// cannot be asked again, and failing until the next scheduled full
		// read would wedge the probe. A full read records every page
		// afresh (and sees whatever changed): ask for one, as for a
		// changed page. With single-use continuations that is a full read
		// per probe past the first page: use strategy hash there.
		out.Changed, out.Validator = true, fmt.Sprintf("page %d: its recorded position was refused", page.Page)
		out.Interval = nextInterval(res.Probe, 0, true)
		return out, upstream.Requests(err), nil
	}
	if err != nil {
		return out, upstream.Requests(err), fmt.Errorf("page %d of %d: %w", page.Page+1, pages, err)
	}
	hash := pageHash(got)
	out.Validator = fmt.Sprintf("page %d: %s", page.Page, hash)
	out.Changed = hash != page.Hash
	out.Interval = nextInterval(res.Probe, st.ProbeInterval(res.Probe.Every.D()), out.Changed)
	return out, got.Requests, nil
}

// pageHash is the hash of a page's records in order: their ids and content
// hashes (ignore_fields applied), what was rejected, and whether a next
// page follows (records added after the last page show there, not on it).
// The full read and the rolling probe both take it of a page a pager
// extracted from the same position, so the two agree exactly while nothing
// changed.
func pageHash(p *upstream.Page) string {
	h := sha256.New()
	fmt.Fprintf(h, "next:%t\n", p.Next != "")
	for _, r := range p.Records {
		fmt.Fprintf(h, "%s\x00%s\n", r.ID, r.Hash)
	}
	for _, r := range p.Rejected {
		fmt.Fprintf(h, "!%s\x00%s\x00%s\n", r.ID, r.Reason, r.Raw)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// fetchModeAfterProbe is the mode of the fetch a changed probe asks for:
// a rolling_hash probe's is a full read (above), others' a delta where
// the resource has one.
func fetchModeAfterProbe(res *config.Resource) tidemark.RunKind {
	return jobs.ModeFor(res, res.Probe.Strategy == tidemark.ProbeRollingHash)
}

// recordsPages: a full read of a rolling_hash resource records its pages.
func (f *run) recordsPages() bool {
	return f.res.Probe.Strategy == tidemark.ProbeRollingHash && f.mode == tidemark.RunFull && !f.res.Partitioned()
}

// recordPage records the page just applied (the checkpoint counts it),
// read from position from, for the rolling probe. It runs after the page's transaction committed, so the
// hash never describes records the store does not hold. A failure to
// record it fails the read like a failed page (the retry reads on from the
// checkpoint): a page row left at an older hash asks for a needless full
// read when the page differs from it.
func (f *run) recordPage(ctx context.Context, from upstream.Position, page *upstream.Page) error {
	if !f.recordsPages() {
		return nil
	}
	at, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return f.h.store.SaveProbePage(ctx, f.key, store.ProbePage{Page: f.cp.Pages - 1, Position: at, Hash: pageHash(page)})
}

// trimPages forgets the recorded pages past the last of a finished full
// read: the collection has fewer pages than before.
func (f *run) trimPages(ctx context.Context) error {
	if !f.recordsPages() {
		return nil
	}
	return f.h.store.TrimProbePages(ctx, f.key, f.cp.Pages)
}

// positionRefused: the upstream answered a client error other than 408 and
// 429 that on_status does not map, as it does for a continuation that
// expired, was used once already, or is unknown (run.continuationRejected).
func positionRefused(err error) bool {
	var se *upstream.StatusError
	return errors.As(err, &se) && se.Action == "" && se.Code >= 400 && se.Code < 500 &&
		se.Code != http.StatusRequestTimeout && se.Code != http.StatusTooManyRequests
}
