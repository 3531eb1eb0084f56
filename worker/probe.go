package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// probeHandler runs probe tasks: one cheap request that tells whether a
// resource changed since the last successful fetch. An unchanged probe
// writes no run row; a changed one records a run and enqueues a fetch; a
// failed one records a run with the error.
type probeHandler struct {
	*Worker
}

// ProcessTask runs a probe. A failed probe is never archived (dead): the
// scheduler probes the resource again at its next slot anyway, so a dead
// probe would only fire the dead-task alert and, replayed by `tidemark
// retry --all`, ask a stale question. A transient failure is retried with
// jobs.RetryDelay's backoff while the retry would run before the next
// probe (retryBeforeNextProbe) and the task has retries left; otherwise
// the task ends there, and the next scheduled probe is its retry. The
// failure itself is on the probe's run row and in
// sync_state.consecutive_failures.
func (h probeHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	every, err := h.process(ctx, t)
	if err == nil {
		return nil
	}
	if _, back := jobs.HandBack(err); back {
		return err // not a failure: back to the queue, no retry spent
	}
	if errors.As(err, new(notConfiguredError)) {
		return err // dropUnconfigured looks at the config file once more
	}
	task := runningTask(ctx)
	if !jobs.Final(err, task.RetriesLeft()) && every > 0 && h.retryBeforeNextProbe(t, err, task.Retried, every, time.Now()) {
		return err
	}
	h.log.Info("probe failed: the next scheduled probe is its retry", "task_id", task.ID, "attempt", task.Retried+1,
		"every", every.String(), "error", err.Error())
	return nil
}

// retryBeforeNextProbe reports whether the probe's next attempt, after
// retries retried so far, would run before the resource's next scheduled
// probe: later, the two would overlap and count one failure twice. A
// scheduled probe knows when its next slot begins (NextProbeAt); for any
// other (a hook's, an operator's) the next probe comes within every of its
// first attempt, which was the sum of the delays so far ago.
func (h probeHandler) retryBeforeNextProbe(t *asynq.Task, err error, retried int, every time.Duration, now time.Time) bool {
	delay := h.cfg.RetryDelay(retried, err, t)
	if p, perr := jobs.ParseProbe(t); perr == nil && !p.NextProbeAt.IsZero() {
		return now.Add(delay).Before(p.NextProbeAt)
	}
	for n := range retried {
		delay += h.cfg.RetryDelay(n, err, t)
	}
	return delay < every
}

// process runs one probe attempt. It returns the resource's probe.every
// (0 when the task names no resource of the config) and the attempt's
// error.
func (h probeHandler) process(ctx context.Context, t *asynq.Task) (time.Duration, error) {
	p, err := jobs.ParseProbe(t)
	if err != nil {
		return 0, err
	}
	src, res, err := h.resource(p.Source, p.Resource)
	if err != nil {
		return 0, err
	}
	every := res.Probe.Every.D()
	key := store.Key{Source: p.Source, Resource: p.Resource}
	st, err := h.probeState(ctx, p, key)
	if err != nil {
		return every, err
	}
	if st.Paused {
		return every, nil
	}
	began := time.Now()
	if res.Probe.Strategy == tidemark.ProbeDelta {
		return every, h.deltaProbe(ctx, p, src, res, st, began) // probe_delta.go
	}
	out, requests, err := h.probe(ctx, src, res, st)
	if err != nil {
		return every, h.failed(ctx, p, key, requests, began, err)
	}
	if out.Changed && p.Basis != nil {
		// The basis may be stale (a fetch confirmed a newer validator since
		// the scheduler read it): a change is judged against the stored
		// state, so a stale basis costs this read, never a needless fetch.
		if st, err = h.tally.State(ctx, key); err != nil {
			return every, err
		}
		if st.Paused {
			return every, nil
		}
		out = rejudge(res, st, out)
	}
	return every, h.answered(ctx, p, res, st, out, requests, began)
}

// failed ends a probe attempt (of any strategy) that failed with err before
// a read had a run row of its own, and returns err. A hand-back (the
// source's limits) is not a failure and no news: no run row, the probe
// comes back when the limits allow. A failure counts after the unchanged
// probes before it, on a run row.
func (h probeHandler) failed(ctx context.Context, p jobs.ProbePayload, key store.Key, requests int, began time.Time, err error) error {
	if d, ok := jobs.HandBack(err); ok {
		h.log.Info("probe handed back", "source", p.Source, "resource", p.Resource, "delay", d.String(), "reason", err.Error())
		return err
	}
	metrics.ObserveProbe(p.Source, p.Resource, metrics.ProbeFailed)
	if ferr := h.tally.FlushKey(context.WithoutCancel(ctx), key); ferr != nil {
		h.log.Error("record unchanged probes", "source", p.Source, "resource", p.Resource, "error", ferr)
	}
	// Failed, never dead: a probe task is not archived (ProcessTask).
	h.recordProbeRun(ctx, p, store.RunOutcome{Status: store.StatusFailed, Error: err.Error(), HTTPRequests: requests}, began, err)
	return err
}

// answered records what an answered probe saw, out, judged against the
// sync state st: its bookkeeping, and for a change not seen before its run
// row and the fetch it asks for.
func (h probeHandler) answered(ctx context.Context, p jobs.ProbePayload, res *config.Resource, st store.State, out store.ProbeOutcome, requests int, began time.Time) error {
	// A change already seen, whose fetch was enqueued a moment ago, is not
	// enqueued again; if that fetch was lost, the change is re-enqueued once
	// the moment has passed.
	if out.Changed && st.CandidateValidator == out.Validator && st.CandidateAt != nil && time.Since(*st.CandidateAt) < h.cfg.RefetchAfter {
		out.Known = true
		// Nothing new: back off as an unchanged probe does, rather than
		// probing at the base interval for as long as the fetch runs.
		out.Interval = nextInterval(res.Probe, st.ProbeInterval(res.Probe.Every.D()), false)
	}
	// An unchanged probe's bookkeeping is written behind, coalesced with
	// the others'; a changed one's at once (store.ProbeBatcher).
	if err := h.tally.Record(ctx, store.Key{Source: p.Source, Resource: p.Resource}, out); err != nil {
		return err
	}
	// An unchanged probe is counted when its flush wrote it (Worker.New):
	// one whose basis turned out stale is not, its re-probe is.
	if out.Changed {
		metrics.ObserveProbe(p.Source, p.Resource, metrics.ProbeChanged)
	}
	if !out.Changed || out.Known {
		if h.log.Enabled(ctx, slog.LevelDebug) { // the hot path: no attributes built for nothing
			h.log.Debug("probe: nothing new", "source", p.Source, "resource", p.Resource, "changed", out.Changed,
				"interval", out.Interval.String(), "duration_ms", time.Since(began).Milliseconds())
		}
		return nil
	}
	h.recordProbeRun(ctx, p, store.RunOutcome{Status: store.StatusSucceeded, HTTPRequests: requests}, began, nil)
	fp := jobs.FetchPayload{Source: p.Source, Resource: p.Resource, Mode: fetchModeAfterProbe(res), Trigger: jobs.TriggerProbe}
	_, err := jobs.RequestFetch(ctx, h.store, h.client, fp, res)
	return err
}

// probeState is the sync state the probe compares the upstream's answer
// with: its task's basis (with this process's unflushed probes' newer
// interval over it), or the stored state for a task without one.
//
// Why a basis is safe without a read: an answer that differs from it is
// judged again against the stored state (process), and an answer that
// matches it is recorded as unchanged only where the flush finds the
// basis's validator still confirmed (store.ProbeBatcher), so a stale
// basis never hides a change; a stale one that matched is probed again.
func (h probeHandler) probeState(ctx context.Context, p jobs.ProbePayload, key store.Key) (store.State, error) {
	if p.Basis == nil {
		return h.tally.State(ctx, key)
	}
	st := p.Basis.State(key)
	if iv, head := h.tally.Interval(key); iv > 0 {
		st.ProbeIntervalMS = iv.Milliseconds()
		st.HeadUnsupported = st.HeadUnsupported || head
	}
	return st, nil
}

// reprobe enqueues a probe of k without a basis, against its stored state:
// n unchanged probes of k matched a validator the store no longer holds
// (store.ProbeHooks.Stale), so whether the upstream still equals the
// store is unknown. The re-probe costs one request; a fetch is enqueued
// only if it sees a change. One per resource and flush, whatever n.
func (w *Worker) reprobe(k store.Key, n int64) {
	if h := w.log; h.Enabled(context.Background(), slog.LevelDebug) {
		h.Debug("probe basis stale: probing again against the stored state", "source", k.Source, "resource", k.Resource, "probes", n)
	}
	_, res, err := w.resource(k.Source, k.Resource)
	if err != nil {
		return // removed from the config: nothing to probe
	}
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: k.Source, Resource: k.Resource, Trigger: jobs.TriggerSchedule}, jobs.ProbeOptions(res)...)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = w.client.EnqueueContext(ctx, task)
	}
	if err != nil {
		// The next scheduled probe carries a fresh basis: the check is
		// late by one interval, not lost.
		w.log.Warn("re-probe after a stale probe basis", "source", k.Source, "resource", k.Resource, "error", err)
	}
}

// rejudge is a probe's outcome judged against st, the stored state, where
// it was judged against its task's basis.
func rejudge(res *config.Resource, st store.State, out store.ProbeOutcome) store.ProbeOutcome {
	out.Changed = out.Validator != st.Confirmed(out.Kind)
	out.Interval = nextInterval(res.Probe, st.ProbeInterval(res.Probe.Every.D()), out.Changed)
	out.HeadUnsupported = out.HeadUnsupported || st.HeadUnsupported
	return out
}

// recordProbeRun writes the run row of a probe that changed or failed.
func (h probeHandler) recordProbeRun(ctx context.Context, p jobs.ProbePayload, out store.RunOutcome, began time.Time, cause error) {
	task := runningTask(ctx)
	run := store.Run{Source: p.Source, Resource: p.Resource, Kind: tidemark.RunProbe, Trigger: p.Trigger,
		TaskID: task.ID, Attempt: task.Attempt(), StartedAt: began.UTC()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := h.store.StartRun(ctx, &run)
	if err == nil {
		err = h.store.FinishRun(ctx, run.ID, out)
	}
	if err == nil {
		metrics.ObserveRun(p.Source, p.Resource, string(tidemark.RunProbe), out.Status)
	}
	if err != nil {
		h.log.Error("record probe run", "source", p.Source, "resource", p.Resource, "error", err)
	}
	attrs := []any{"task", jobs.TypeProbe, "source", p.Source, "resource", p.Resource, "trigger", p.Trigger,
		"attempt", run.Attempt, "run_id", run.ID, "status", out.Status, "requests", out.HTTPRequests,
		"duration_ms", time.Since(began).Milliseconds()}
	if cause != nil {
		h.log.Warn("task finished", append(attrs, "error", cause.Error())...)
		return
	}
	h.log.Info("task finished", append(attrs, "changed", true)...)
}

// probe asks the upstream whether the resource changed.
func (h probeHandler) probe(ctx context.Context, src *config.Source, res *config.Resource, st store.State) (store.ProbeOutcome, int, error) {
	client, cerr := h.clientFor(src)
	if cerr != nil {
		return store.ProbeOutcome{}, 0, cerr
	}
	var (
		out      store.ProbeOutcome
		requests int
		err      error
	)
	if res.Probe.Strategy == tidemark.ProbeRollingHash {
		out, requests, err = h.rollingProbe(ctx, client, store.Key{Source: src.Name, Resource: res.Name}, res, st) // probe_rolling.go
	} else {
		out, requests, err = Probe(ctx, client, res, st)
	}
	if err != nil {
		return out, requests, fmt.Errorf("probe %s/%s: %w", src.Name, res.Name, err)
	}
	return out, requests, nil
}

// ProbeURL is the URL a resource's probe asks: the first page of the full
// read (or probe.path), not of the delta read: validators belong to a URL,
// and the delta URL moves with the watermark, so its validator would differ
// after every fetch.
func ProbeURL(client *upstream.Client, res *config.Resource) string {
	return probePosition(client, res).Next
}

// ProbeBody is the body a resource's probe sends: for a POST, the full
// read's first page's, with probe.limit as {limit} when set; nil for a GET.
func ProbeBody(client *upstream.Client, res *config.Resource) ([]byte, error) {
	return upstream.Body(res, probePosition(client, res))
}

func probePosition(client *upstream.Client, res *config.Resource) upstream.Position {
	if res.Probe.Path != "" {
		return upstream.Position{Next: client.URL(res.Probe.Path, nil)}
	}
	vars := upstream.Vars{}
	if res.Delta != nil {
		vars["since"] = noLowerBound(res.Delta)
	}
	if res.Probe.Limit > 0 {
		vars["limit"] = res.Probe.Limit
	}
	return upstream.FirstPosition(client, res, probeQuery(res), vars)
}

// Probe runs one probe of res against the resource's sync state st, as the
// probe task does, and returns its outcome and the HTTP requests it took.
// It writes nothing: the task records the outcome (tidemark preview shows
// it).
func Probe(ctx context.Context, client *upstream.Client, res *config.Resource, st store.State) (store.ProbeOutcome, int, error) {
	target := ProbeURL(client, res)
	out := store.ProbeOutcome{HeadUnsupported: st.HeadUnsupported}
	requests := 0
	var err error
	switch res.Probe.Strategy {
	case tidemark.ProbeETag, tidemark.ProbeLastModified:
		out.Kind, out.Validator, requests, out.HeadUnsupported, err = validator(ctx, client, res, target, st)
	case tidemark.ProbeHash:
		out.Kind = tidemark.ValidatorHash
		var (
			resp *upstream.Response
			body []byte
		)
		if body, err = ProbeBody(client, res); err != nil {
			return out, 0, err
		}
		resp, err = client.Send(ctx, cmp.Or(res.Method, http.MethodGet), target, nil, body)
		requests = upstream.Requests(err)
		if err == nil {
			requests = resp.Requests
			out.Validator, err = hashBody(res, resp)
		}
	default:
		return out, 0, fmt.Errorf("%w: probe strategy %q does not probe", jobs.ErrBadInput, res.Probe.Strategy)
	}
	if err != nil {
		out.Validator, err = emptyByStatus(res, out.Kind, err)
	}
	if err != nil {
		return out, requests, err
	}
	out.Changed = out.Validator != st.Confirmed(out.Kind)
	out.Interval = nextInterval(res.Probe, st.ProbeInterval(res.Probe.Every.D()), out.Changed)
	return out, requests, nil
}

// probeQuery replaces the full read's page size by probe.limit, when set: a
// GET probe that answers 200 (or a hash probe, always) then downloads a few
// records instead of a whole page. Validators stay comparable because every
// probe of the resource asks the same URL.
func probeQuery(res *config.Resource) url.Values {
	if res.Probe.Limit <= 0 || res.Pagination.LimitParam == "" {
		return nil
	}
	return url.Values{res.Pagination.LimitParam: {strconv.Itoa(res.Probe.Limit)}}
}

// validator reads the resource's ETag or Last-Modified: from a HEAD, or from
// a conditional GET. Both send the confirmed validator back byte for byte
// (weak W/ tags included), so an unchanged upstream answers 304 without
// building the page. An upstream that refuses HEAD (405, 501) gets
// conditional GETs from then on.
func validator(ctx context.Context, client *upstream.Client, res *config.Resource, target string, st store.State) (kind tidemark.ValidatorKind, value string, requests int, headUnsupported bool, err error) {
	kind, header, cond := tidemark.ValidatorETag, "ETag", "If-None-Match"
	if res.Probe.Strategy == tidemark.ProbeLastModified {
		kind, header, cond = tidemark.ValidatorLastModified, "Last-Modified", "If-Modified-Since"
	}
	confirmed := st.Confirmed(kind)
	headUnsupported = st.HeadUnsupported
	hdr := http.Header{}
	if confirmed != "" && !strings.HasPrefix(confirmed, emptyValidatorPrefix) {
		hdr.Set(cond, confirmed)
	}
	if res.Probe.Method == http.MethodHead && !headUnsupported {
		resp, err := client.Do(ctx, http.MethodHead, target, hdr)
		requests += upstream.Requests(err)
		var se *upstream.StatusError
		switch {
		case err == nil && resp.Status == http.StatusNotModified:
			return kind, confirmed, resp.Requests, false, nil
		case err == nil:
			requests = resp.Requests
			if v := resp.Header.Get(header); v != "" {
				return kind, v, requests, false, nil
			}
			return kind, "", requests, false, noValidator(http.MethodHead, resp, header)
		case errors.As(err, &se) && (se.Code == http.StatusMethodNotAllowed || se.Code == http.StatusNotImplemented):
			headUnsupported = true // fall back to a conditional GET
		default:
			return kind, "", requests, false, err
		}
	}
	resp, err := client.Do(ctx, http.MethodGet, target, hdr)
	if err != nil {
		return kind, "", requests + upstream.Requests(err), headUnsupported, err
	}
	requests += resp.Requests
	if resp.Status == http.StatusNotModified {
		return kind, confirmed, requests, headUnsupported, nil
	}
	v := resp.Header.Get(header)
	if v == "" {
		return kind, "", requests, headUnsupported, noValidator(http.MethodGet, resp, header)
	}
	return kind, v, requests, headUnsupported, nil
}

// noValidator is the error of a probe answer without the validator header.
// It says what came back: an upstream that lost its ETag usually answers
// something else too (an HTML error page, a truncated body), and that is
// the cause an operator needs, so a GET's body that does not parse is
// reported with where it stops parsing.
func noValidator(method string, resp *upstream.Response, header string) error {
	status := strconv.Itoa(resp.Status)
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		status += " (" + ct + ")"
	}
	article := "a"
	if header == "ETag" {
		article = "an"
	}
	saw := fmt.Sprintf("%s answered %s without %s %s header", method, status, article, header)
	if method == http.MethodGet {
		if _, err := extract.Decode(resp.Body); err != nil {
			return fmt.Errorf("%w: %s; its body: %w", upstream.ErrBadResponse, saw, err)
		}
	}
	return fmt.Errorf("%w: %s", upstream.ErrBadResponse, saw)
}

func hashBody(res *config.Resource, resp *upstream.Response) (string, error) {
	doc, err := extract.Decode(resp.Body)
	if err != nil {
		return "", fmt.Errorf("%w: %w", upstream.ErrBadResponse, err)
	}
	if res.Post() {
		// A POST answer's envelope may move with every answer (GraphQL's
		// extensions.cost): only its records tell a change, and errors
		// are no state of the collection.
		errs, _ := extract.Lookup(doc, "errors")
		if err := upstream.GraphQLErrors(errs); err != nil {
			return "", err
		}
		return extract.New(res).HashRecords(doc)
	}
	return extract.New(res).HashBody(doc)
}

// emptyValidatorPrefix begins the validator of an answer that on_status
// maps to empty under the etag and last_modified strategies: it is no
// upstream's validator, so it is never sent back in a conditional request.
const emptyValidatorPrefix = "tidemark:empty:"

// emptyByStatus turns a probe's error into the validator of an empty
// collection where the resource's on_status maps its status to empty: a
// stable state (the same validator every time), not a failure. The hash
// strategy gets the hash of a 200 answer with no records, so an upstream
// that switches between the two is not a change. Other statuses with an
// action are marked for the retry decision; other errors return as they are.
func emptyByStatus(res *config.Resource, kind tidemark.ValidatorKind, err error) (string, error) {
	var se *upstream.StatusError
	if !errors.As(err, &se) {
		return "", err
	}
	if se.Action = res.StatusAction(se.Code); se.Action != config.OnStatusEmpty {
		return "", err
	}
	if kind != tidemark.ValidatorHash {
		return emptyValidatorPrefix + "0", nil
	}
	var doc any = []any{}
	if p := res.Records.Path; p != "" {
		parts := strings.Split(p, ".")
		for i := len(parts) - 1; i >= 0; i-- {
			doc = map[string]any{parts[i]: doc}
		}
	}
	return extract.New(res).HashBody(doc)
}

// nextInterval is the adaptive probe interval: back to probe.every on a
// change, half as long again after each unchanged probe, up to max_every.
func nextInterval(p config.Probe, current time.Duration, changed bool) time.Duration {
	every, maxEvery := p.Every.D(), max(p.MaxEvery.D(), p.Every.D())
	if changed || current < every {
		return every
	}
	return min(current+current/2, maxEvery)
}
