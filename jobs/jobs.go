// Package jobs defines tidemark's asynq tasks: their types, payloads,
// constructors and queues, and the one place where an error is classified as
// retryable or not.
package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/upstream"
)

// Task types.
const (
	TypeProbe   = "probe"
	TypeFetch   = "fetch"
	TypeWebhook = "webhook"
)

// Fetch modes.
const (
	ModeDelta = "delta"
	ModeFull  = "full"
)

// Triggers: why a task was enqueued.
const (
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
	TriggerProbe    = "probe"
	TriggerWebhook  = "webhook"
	TriggerRetry    = "retry"
)

// Queues, by priority, with the weights workers give them.
var Queues = map[string]int{
	config.PriorityCritical: 6,
	config.PriorityDefault:  3,
	config.PriorityLow:      1,
}

// Queue is the queue of a resource's tasks.
func Queue(res *config.Resource) string {
	if _, ok := Queues[res.Priority]; ok {
		return res.Priority
	}
	return config.PriorityDefault
}

// FetchPayload is the payload of a fetch task. It names what to sync; it
// never carries credentials or URLs.
type FetchPayload struct {
	Source   string `json:"source"`
	Resource string `json:"resource"`
	Mode     string `json:"mode"`
	Trigger  string `json:"trigger"`
}

// NewFetch returns a fetch task for a resource.
func NewFetch(p FetchPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.Mode != ModeDelta && p.Mode != ModeFull {
		return nil, fmt.Errorf("fetch %s/%s: unknown mode %q", p.Source, p.Resource, p.Mode)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeFetch, body, opts...), nil
}

// ParseFetch decodes a fetch payload.
func ParseFetch(t *asynq.Task) (FetchPayload, error) {
	var p FetchPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("fetch payload: %w: %w", err, asynq.SkipRetry)
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
// retried: bad input from the upstream, a 4xx other than 408/429, a bad
// payload, or an explicit asynq.SkipRetry.
func Permanent(err error) bool {
	if errors.Is(err, asynq.SkipRetry) || errors.Is(err, ErrBadInput) ||
		errors.Is(err, upstream.ErrBadResponse) || errors.Is(err, upstream.ErrBlocked) {
		return true
	}
	var se *upstream.StatusError
	if errors.As(err, &se) {
		return se.Code >= 400 && se.Code < 500 &&
			se.Code != http.StatusRequestTimeout && se.Code != http.StatusTooManyRequests
	}
	return false
}

// ErrBadInput marks errors caused by configuration or data that a retry will
// not fix (an unknown resource, a record without an id).
var ErrBadInput = errors.New("bad input")

// Classify turns a handler error into what asynq should do with it: a
// permanent error skips the remaining retries.
func Classify(err error) error {
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return err
	}
	if Permanent(err) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

// RetryDelay is asynq's delay before retry n: exponential from 2 s, capped
// at 5 min, and at least what an upstream's Retry-After asked for.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
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
func ModeFor(res *config.Resource, full bool) string {
	if full || res.Delta == nil {
		return ModeFull
	}
	return ModeDelta
}

// ProbePayload is the payload of a probe task: a cheap check whether a
// resource changed.
type ProbePayload struct {
	Source   string `json:"source"`
	Resource string `json:"resource"`
	Trigger  string `json:"trigger"`
}

// NewProbe returns a probe task for a resource.
func NewProbe(p ProbePayload, opts ...asynq.Option) (*asynq.Task, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeProbe, body, opts...), nil
}

// ParseProbe decodes a probe payload.
func ParseProbe(t *asynq.Task) (ProbePayload, error) {
	var p ProbePayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("probe payload: %w: %w", err, asynq.SkipRetry)
	}
	return p, nil
}

// ProbeOptions are the asynq options of a probe task of res: probes are
// cheap and frequent, so a failed one is not retried for long (the next
// tick probes again).
func ProbeOptions(res *config.Resource) []asynq.Option {
	return []asynq.Option{
		asynq.Queue(Queue(res)),
		asynq.MaxRetry(2),
		asynq.Timeout(2 * time.Minute),
	}
}
