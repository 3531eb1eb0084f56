package jobs_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/upstream"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		err       error
		permanent bool
	}{
		{"404", &upstream.StatusError{Code: 404}, true},
		{"401", &upstream.StatusError{Code: 401}, true},
		{"408 retries", &upstream.StatusError{Code: 408}, false},
		{"429 retries", &upstream.StatusError{Code: 429}, false},
		{"403 with the budget spent retries", &upstream.StatusError{Code: 403, RateLimited: true}, false},
		// A hand-back is never archived for it, even where on_status says fail.
		{"403 with the budget spent and on_status 403: fail is handed back", &upstream.StatusError{Code: 403, RateLimited: true, Action: "fail"}, false},
		{"403", &upstream.StatusError{Code: 403}, true},
		{"500 retries", &upstream.StatusError{Code: 500}, false},
		{"503 retries", &upstream.StatusError{Code: 503}, false},
		{"on_status 404: retry", &upstream.StatusError{Code: 404, Action: "retry"}, false},
		{"on_status 500: fail", &upstream.StatusError{Code: 500, Action: "fail"}, true},
		{"on_status 503: fail, with Retry-After", &upstream.StatusError{Code: 503, Action: "fail", RetryAfter: time.Second}, true},
		{"bad response", fmt.Errorf("page: %w", upstream.ErrBadResponse), true},
		{"bad input", fmt.Errorf("x: %w", jobs.ErrBadInput), true},
		{"network", errors.New("connection refused"), false},
		{"address refused by the guard", fmt.Errorf("GET x: %w", upstream.ErrBlocked), true},
		{"token endpoint: invalid_grant", fmt.Errorf("GET x: %w", &upstream.TokenError{Status: 400, Code: "invalid_grant"}), true},
		{"token endpoint: invalid_client", &upstream.TokenError{Status: 401, Code: "invalid_client"}, true},
		{"token endpoint: 503 retries", &upstream.TokenError{Status: 503}, false},
		{"token endpoint: 429 retries", &upstream.TokenError{Status: 429}, false},
		{"token endpoint: no answer retries", &upstream.TokenError{Err: errors.New("connection refused")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := jobs.Classify(tt.err)
			if skip := errors.Is(got, asynq.SkipRetry); skip != tt.permanent {
				t.Fatalf("Classify(%v) skips retry = %v, want %v", tt.err, skip, tt.permanent)
			}
			if !errors.Is(got, tt.err) {
				t.Fatalf("Classify lost the original error")
			}
		})
	}
}

// TestUnreadablePayloadsAreTerminal: a payload that does not parse fails
// the same way every time, so its task is not retried.
func TestUnreadablePayloadsAreTerminal(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		parse func(*asynq.Task) error
	}{
		{jobs.TypeFetch, func(t *asynq.Task) error { _, err := jobs.ParseFetch(t); return err }},
		{jobs.TypeProbe, func(t *asynq.Task) error { _, err := jobs.ParseProbe(t); return err }},
		{jobs.TypeWebhook, func(t *asynq.Task) error { _, err := jobs.ParseWebhook(t); return err }},
	} {
		err := tt.parse(asynq.NewTask(tt.name, []byte("{not json")))
		if !errors.Is(jobs.Classify(err), asynq.SkipRetry) {
			t.Errorf("%s: an unreadable payload is classified %v, want it to skip retries", tt.name, jobs.Classify(err))
		}
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	if d := jobs.RetryDelay(0, errors.New("x"), nil); d != 2*time.Second {
		t.Errorf("first retry after %s, want 2s", d)
	}
	if d := jobs.RetryDelay(20, errors.New("x"), nil); d != 5*time.Minute {
		t.Errorf("late retry after %s, want the 5m cap", d)
	}
	if d := jobs.RetryDelay(0, &upstream.StatusError{Code: 429, RetryAfter: time.Minute}, nil); d != time.Minute {
		t.Errorf("retry after a 429 with Retry-After 60 = %s, want 1m", d)
	}
}

// TestHandBackOnStatusFail: a 503 with Retry-After goes back to the queue,
// unless on_status maps 503 to fail.
func TestHandBackOnStatusFail(t *testing.T) {
	t.Parallel()
	if _, back := jobs.HandBack(&upstream.StatusError{Code: 503, RetryAfter: time.Second}); !back {
		t.Error("503 with Retry-After is not handed back")
	}
	if _, back := jobs.HandBack(&upstream.StatusError{Code: 503, RetryAfter: time.Second, Action: "fail"}); back {
		t.Error("503 mapped to fail is handed back")
	}
}
