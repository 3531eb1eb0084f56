// Package jobs defines tidemark's asynq tasks: their types, payloads,
// constructors and queues, and the one place where an error is classified as
// retryable or not.
package jobs

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/ratelimit"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// Task types.
const (
	TypeProbe   = "probe"
	TypeFetch   = "fetch"
	TypeWebhook = "webhook"
)

// Triggers: why a task was enqueued.
const (
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
	TriggerProbe    = "probe"
	TriggerWebhook  = "webhook"
	TriggerRetry    = "retry"
	// TriggerTakeover: a fetch that resumes the run of a worker that is gone.
	TriggerTakeover = "takeover"
	// TriggerParent: a parent resource's run changed records, and its
	// children (config parent) are read for them.
	TriggerParent = "parent"
)

// Queues are the fetch (and webhook) queues, by priority, with the default
// weights the fetch pool gives them.
var Queues = map[string]int{
	config.PriorityCritical: 6,
	config.PriorityDefault:  3,
	config.PriorityLow:      1,
}

// ProbePrefix starts the name of each probe queue: probes have queues of
// their own (probe_critical, probe_default, probe_low) because asynq's
// queues belong to a server, and probes run in a pool (an asynq server) of
// their own so that long fetches never starve them.
const ProbePrefix = "probe_"

// ProbeQueues are the probe queues with the default weights the probe pool
// gives them: the weights of Queues, by priority.
var ProbeQueues = map[string]int{
	ProbePrefix + config.PriorityCritical: 6,
	ProbePrefix + config.PriorityDefault:  3,
	ProbePrefix + config.PriorityLow:      1,
}

// AllQueues lists every queue tasks live in, sorted: for ops commands and
// autoscalers that must see them all.
func AllQueues() []string {
	qs := make([]string, 0, len(Queues)+len(ProbeQueues))
	for q := range Queues {
		qs = append(qs, q)
	}
	for q := range ProbeQueues {
		qs = append(qs, q)
	}
	slices.Sort(qs)
	return qs
}

// Queue is the fetch queue of a resource's tasks: its priority.
func Queue(res *config.Resource) string {
	if _, ok := Queues[res.Priority]; ok {
		return res.Priority
	}
	return config.PriorityDefault
}

// ProbeQueue is the probe queue of a resource: probe_ and its priority.
func ProbeQueue(res *config.Resource) string {
	return ProbePrefix + Queue(res)
}

// WeightsDefault is Queues' weights written as ParseWeights reads them,
// "critical=6,default=3,low=1": the default of the worker's --queue-weights.
func WeightsDefault() string {
	parts := make([]string, 0, len(Queues))
	for _, p := range []string{config.PriorityCritical, config.PriorityDefault, config.PriorityLow} {
		parts = append(parts, p+"="+strconv.Itoa(Queues[p]))
	}
	return strings.Join(parts, ",")
}

// ParseWeights parses queue weights by priority, "critical=6,default=3,low=1",
// into the weights of the fetch queues and of the probe queues. Every
// priority must be named once, with a weight of at least 1.
func ParseWeights(s string) (fetch, probe map[string]int, err error) {
	fetch, probe = map[string]int{}, map[string]int{}
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, nil, fmt.Errorf("%q: want PRIORITY=WEIGHT", part)
		}
		if _, known := Queues[name]; !known {
			return nil, nil, fmt.Errorf("%q: unknown priority %q (want critical, default or low)", part, name)
		}
		if _, dup := fetch[name]; dup {
			return nil, nil, fmt.Errorf("priority %q given twice", name)
		}
		w, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil || w < 1 {
			return nil, nil, fmt.Errorf("%q: weight must be a whole number of at least 1", part)
		}
		fetch[name], probe[ProbePrefix+name] = w, w
	}
	for name := range Queues {
		if _, ok := fetch[name]; !ok {
			return nil, nil, fmt.Errorf("no weight for priority %q", name)
		}
	}
	return fetch, probe, nil
}

// FetchPayload is the payload of a fetch task. It names what to sync; it
// never carries credentials or URLs.
type FetchPayload struct {
	Source   string `json:"source"`
	Resource string `json:"resource"`
	// Mode is the kind of run the fetch makes: delta or full.
	Mode    tidemark.RunKind `json:"mode"`
	Trigger string           `json:"trigger"`
	// ConfirmDeletes lets a full read tombstone every record it does not
	// see, past the max_delete_fraction brake and the second read that
	// pagination styles wait for (tidemark sync --full --confirm-deletes).
	ConfirmDeletes bool `json:"confirm_deletes,omitempty"`
	// Resume continues the interrupted read of another task from its
	// checkpoint (tidemark retry, sync --full --resume, a hand-back's copy).
	// A task otherwise resumes only its own reads: a new request reads
	// afresh, since an old read's first pages predate it.
	Resume bool `json:"resume,omitempty"`
	// TakeOver is the run this fetch resumes because its worker is gone
	// (its fetch lock lapsed while the run was running). The fetch ends at
	// once when that run has ended meanwhile, or another fetch holds the
	// resource.
	TakeOver int64 `json:"take_over,omitempty"`
	// Read is the task whose read this one continues, when not itself: a
	// copy Resubmit made of it. The read's fetch lock, held across its
	// hand-backs, is the read's, so the copy takes it up.
	Read string `json:"read,omitempty"`
}

// NewFetch returns a fetch task for a resource.
func NewFetch(p FetchPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.Mode != tidemark.RunDelta && p.Mode != tidemark.RunFull {
		return nil, fmt.Errorf("fetch %s/%s: unknown mode %q", p.Source, p.Resource, p.Mode)
	}
	return newTask(TypeFetch, p, opts)
}

// ParseFetch decodes a fetch payload.
func ParseFetch(t *asynq.Task) (FetchPayload, error) { return parsePayload[FetchPayload](t, TypeFetch) }

// newTask returns a task of type typ with payload p as its JSON.
func newTask(typ string, p any, opts []asynq.Option) (*asynq.Task, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(typ, body, opts...), nil
}

// parsePayload decodes the JSON payload of t, a task of type typ; a payload
// that does not decode never will, so its error skips the retries.
func parsePayload[P any](t *asynq.Task, typ string) (P, error) {
	var p P
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("%s payload: %w: %w", typ, err, ErrBadInput)
	}
	return p, nil
}

// FetchOptions are the asynq options of a fetch task of res.
func FetchOptions(res *config.Resource) []asynq.Option {
	return []asynq.Option{
		asynq.Queue(Queue(res)),
		asynq.MaxRetry(8),
		asynq.Timeout(time.Hour),
	}
}

// Permanent reports whether err will fail the same way however often it is
// retried: one of the terminal errors (bad input, an unusable or blocked
// upstream answer, an error Classify has marked already), a 4xx other than
// 408/429 (and a 403 that says the rate-limit budget is spent), or an
// OAuth2 token endpoint's 4xx (invalid_grant, invalid_client).
func Permanent(err error) bool {
	if slices.ContainsFunc(terminal, func(t error) bool { return errors.Is(err, t) }) {
		return true
	}
	var te *upstream.TokenError
	if errors.As(err, &te) { // before the API's status: a refused token request decides
		return te.Permanent()
	}
	var se *upstream.StatusError
	if errors.As(err, &se) {
		switch se.Action { // the resource's on_status decides first
		case config.OnStatusFail:
			return true
		case config.OnStatusRetry:
			return false
		}
		return se.Code >= 400 && se.Code < 500 && !se.RateLimited &&
			se.Code != http.StatusRequestTimeout && se.Code != http.StatusTooManyRequests
	}
	return false
}

// ErrBadInput marks errors caused by configuration or data that a retry will
// not fix (an unknown resource, a record without an id, a payload that does
// not parse). A handler that must not be retried wraps it and returns; it
// never says asynq.SkipRetry itself (Classify does).
var ErrBadInput = errors.New("bad input")

// terminal are the errors no retry fixes, wherever they are wrapped.
// asynq.SkipRetry is among them so that classifying twice changes nothing.
var terminal = []error{ErrBadInput, upstream.ErrBadResponse, upstream.ErrBlocked, asynq.SkipRetry}

// Classify turns a handler's error into what asynq should do with it, once
// for every handler (the worker's classify middleware): a permanent error
// skips the remaining retries. A hand-back (see HandBack) is never marked:
// it is not a failure, so it is never archived for it.
func Classify(err error) error {
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return err
	}
	if _, back := HandBack(err); back {
		return err
	}
	if Permanent(err) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

// Final reports whether the attempt that ended with err is its task's
// last: err is permanent, or retriesLeft (what asynq still gives the task)
// is 0. A run it recorded is then dead, not failed (a hand-back aside: see
// HandBack).
func Final(err error, retriesLeft int) bool {
	return Permanent(err) || retriesLeft == 0
}

// HandBack reports whether err means "not now" rather than "failed": the
// fleet-wide limiter would make the request wait longer than a handler may
// block (a *ratelimit.DelayError), or the upstream answered 429 (or 503 with
// Retry-After, or 403 with its budget spent), which has put the source in
// cooldown. The task goes back to
// its queue for the returned delay; it is not a failure, does not use up a
// retry and is never archived for it.
func HandBack(err error) (time.Duration, bool) {
	if err == nil {
		return 0, false
	}
	if d, ok := ratelimit.AsDelay(err); ok {
		return max(d, minHandBack), true
	}
	var se *upstream.StatusError
	if errors.As(err, &se) {
		switch {
		case se.Code == http.StatusTooManyRequests, se.RateLimited:
			// The limiter's cooldown (to the reset, or Retry-After)
			// hands the task back again with the exact delay.
			return max(se.RetryAfter, minHandBack), true
		case se.Code == http.StatusServiceUnavailable && se.RetryAfter > 0 && se.Action != config.OnStatusFail:
			return max(se.RetryAfter, minHandBack), true
		}
	}
	return 0, false
}

// minHandBack is the shortest hand-back delay, so that a task does not spin
// through the queue on a limit about to lift.
const minHandBack = 100 * time.Millisecond

// IsFailure is asynq's IsFailure: a hand-back (see HandBack) is not a
// failure, so it neither increments the task's retry count nor asynq's
// failed counters.
func IsFailure(err error) bool {
	_, back := HandBack(err)
	return !back
}

// Resubmit is a copy of t (the task id) to enqueue in queue after d, for a
// hand-back at the retry limit: asynq archives a task whose retries are
// used up whatever IsFailure says, so the handler revokes the task
// (asynq.RevokeTask) and enqueues this copy instead. The copy keeps the
// retries left (0: its next real failure makes it dead), and gets a new
// task id, since the original is still active while it is enqueued.
func Resubmit(t *asynq.Task, id, queue string, retriesLeft int, d time.Duration) *asynq.Task {
	timeout := time.Hour
	payload := t.Payload()
	switch t.Type() {
	case TypeProbe:
		timeout = 2 * time.Minute
	case TypeWebhook:
		timeout = time.Minute
	case TypeFetch:
		// The copy continues the original's read, under its fetch lock.
		var p FetchPayload
		if json.Unmarshal(payload, &p) == nil {
			p.Resume = true
			p.Read = cmp.Or(p.Read, id)
			if b, err := json.Marshal(p); err == nil {
				payload = b
			}
		}
	}
	return asynq.NewTask(t.Type(), payload,
		asynq.Queue(queue), asynq.MaxRetry(max(retriesLeft, 0)), asynq.Timeout(timeout), asynq.ProcessIn(d))
}

// RetryDelay is asynq's delay before retry n: a hand-back's own delay (see
// HandBack); otherwise exponential from 2 s, capped at 5 min, and at least
// what an upstream's Retry-After asked for.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if d, ok := HandBack(err); ok {
		return d
	}
	d := 2 * time.Second << min(n, 8)
	d = min(d, 5*time.Minute)
	var se *upstream.StatusError
	if errors.As(err, &se) && se.RetryAfter > d {
		d = se.RetryAfter
	}
	return d
}

// ModeFor is the fetch mode for a resource: full when asked for, or when the
// resource has no delta filter to read changes only.
func ModeFor(res *config.Resource, full bool) tidemark.RunKind {
	if full || res.Delta == nil {
		return tidemark.RunFull
	}
	return tidemark.RunDelta
}

// ProbePayload is the payload of a probe task: a cheap check whether a
// resource changed.
type ProbePayload struct {
	Source   string `json:"source"`
	Resource string `json:"resource"`
	Trigger  string `json:"trigger"`
	// NextProbeAt, on a scheduled probe, is when the resource's next
	// scheduled probe is due (the end of this probe's slot): a retry after
	// it would only run beside that probe. Zero on other probes.
	NextProbeAt time.Time `json:"next_probe_at,omitzero"`
	// Basis, on a scheduled probe, is the resource's probe state as the
	// scheduler read it when it enqueued the probe: the probe then needs
	// no read of its own. It may be stale by the time the probe runs; the
	// worker judges a change against the stored state, and an unchanged
	// answer is written only where the stored validator is still the one
	// it matched (store.ProbeBatcher). Nil: the worker reads the state.
	Basis *ProbeBasis `json:"basis,omitempty"`
}

// ProbeBasis is what a probe needs of its resource's sync state. It holds
// no secret: validators (ETag, Last-Modified, the probe page's hash) are
// what the upstream hands every client, and the rest is bookkeeping.
type ProbeBasis struct {
	// Kind is the validator's kind: etag, last_modified or hash.
	Kind tidemark.ValidatorKind `json:"kind"`
	// Validator is the confirmed validator of the resource's probe
	// strategy ("" when none is confirmed yet).
	Validator string `json:"validator"`
	// IntervalMS is the adaptive probe interval in force (0: probe.every).
	IntervalMS int64 `json:"interval_ms,omitempty"`
	// HeadUnsupported: the upstream refused HEAD; probe by conditional GET.
	HeadUnsupported bool `json:"head_unsupported,omitempty"`
}

// BasisOf returns the basis of a probe of res from its sync state st, or
// nil when res's probe strategy keeps no validator of the three kinds a
// basis carries (the worker then reads the state itself).
func BasisOf(res *config.Resource, st store.State) *ProbeBasis {
	kind := res.Probe.Strategy.Validator()
	if !kind.Confirmable() {
		return nil
	}
	return &ProbeBasis{Kind: kind, Validator: st.Confirmed(kind), IntervalMS: st.ProbeIntervalMS, HeadUnsupported: st.HeadUnsupported}
}

// State is the basis as the sync state a probe reads: the confirmed
// validator of its kind, the interval and head_unsupported. A probe whose
// strategy a reload changed since finds no validator of its own kind in it,
// and so sees a change, which it checks against the stored state.
func (b ProbeBasis) State(k store.Key) store.State {
	st := store.State{Source: k.Source, Resource: k.Resource, ProbeIntervalMS: b.IntervalMS, HeadUnsupported: b.HeadUnsupported}
	switch b.Kind {
	case tidemark.ValidatorETag:
		st.ETag = b.Validator
	case tidemark.ValidatorLastModified:
		st.LastModified = b.Validator
	case tidemark.ValidatorHash:
		st.ProbeHash = b.Validator
	}
	return st
}

// NewProbe returns a probe task for a resource.
func NewProbe(p ProbePayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newTask(TypeProbe, p, opts)
}

// ParseProbe decodes a probe payload.
func ParseProbe(t *asynq.Task) (ProbePayload, error) { return parsePayload[ProbePayload](t, TypeProbe) }

// ProbeOptions are the asynq options of a probe task of res: probes are
// cheap and frequent, so a failed one is retried at most twice, and only
// while RetryDelay's backoff ends before the next probe is due; it is never
// archived (the worker's probe handler ends it instead: the scheduler's
// next probe is its retry).
func ProbeOptions(res *config.Resource) []asynq.Option {
	return []asynq.Option{
		asynq.Queue(ProbeQueue(res)),
		asynq.MaxRetry(2),
		asynq.Timeout(2 * time.Minute),
	}
}
