package jobs_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/ratelimit"
	"github.com/tidemark/tidemark/upstream"
)

func TestHandBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		err   error
		back  bool
		delay time.Duration
	}{
		{"limiter delay", fmt.Errorf("GET x: %w", &ratelimit.DelayError{Source: "s", Reason: "cooldown", RetryIn: 3 * time.Second}), true, 3 * time.Second},
		{"429 with Retry-After", &upstream.RequestError{Err: &upstream.StatusError{Code: 429, RetryAfter: 3 * time.Second}}, true, 3 * time.Second},
		{"429 without Retry-After", &upstream.StatusError{Code: 429}, true, 100 * time.Millisecond},
		{"503 with Retry-After", &upstream.StatusError{Code: 503, RetryAfter: 5 * time.Second}, true, 5 * time.Second},
		{"503 without is a failure", &upstream.StatusError{Code: 503}, false, 0},
		{"500 is a failure", &upstream.StatusError{Code: 500}, false, 0},
		{"404 is a failure", &upstream.StatusError{Code: 404}, false, 0},
		{"403 with the budget spent", &upstream.StatusError{Code: 403, RateLimited: true}, true, 100 * time.Millisecond},
		{"403 is a failure", &upstream.StatusError{Code: 403}, false, 0},
		{"nil", nil, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, back := jobs.HandBack(tt.err)
			if back != tt.back || d != tt.delay {
				t.Errorf("HandBack = %s, %t; want %s, %t", d, back, tt.delay, tt.back)
			}
			if tt.err != nil && jobs.IsFailure(tt.err) == tt.back {
				t.Errorf("IsFailure = %t, want %t", !tt.back, !tt.back)
			}
			if tt.back {
				if got := jobs.RetryDelay(7, tt.err, nil); got != tt.delay {
					t.Errorf("RetryDelay after 7 retries = %s, want the hand-back's %s", got, tt.delay)
				}
			}
		})
	}
}

func TestResubmit(t *testing.T) {
	t.Parallel()
	orig := asynq.NewTask(jobs.TypeProbe, []byte(`{"source":"s","resource":"r"}`))
	cp := jobs.Resubmit(orig, "task-1", "probe_critical", 0, 3*time.Second)
	if cp.Type() != orig.Type() || string(cp.Payload()) != string(orig.Payload()) {
		t.Errorf("copy %s %s, want %s %s", cp.Type(), cp.Payload(), orig.Type(), orig.Payload())
	}
}

func TestParseWeights(t *testing.T) {
	t.Parallel()
	fetch, probe, err := jobs.ParseWeights(" critical=8, default=2 ,low=1")
	if err != nil {
		t.Fatal(err)
	}
	if fetch["critical"] != 8 || fetch["default"] != 2 || fetch["low"] != 1 || probe["probe_critical"] != 8 || len(probe) != 3 {
		t.Errorf("fetch %v probe %v", fetch, probe)
	}
	for _, bad := range []string{"", "critical=6,default=3", "critical=6,default=3,low=1,low=2", "critical=x,default=3,low=1", "critical:6,default=3,low=1"} {
		if _, _, err := jobs.ParseWeights(bad); err == nil {
			t.Errorf("ParseWeights(%q): no error", bad)
		}
	}
}
