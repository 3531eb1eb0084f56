package server

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
)

// Cause says why a failing resource is not fresh, in plain words, and what
// tidemark will do about it next. The status table and the dashboard show
// it on the resource's row.
type Cause struct {
	// Summary is the last error in plain words: what went wrong, the HTTP
	// status and the request (its URL without query string or user info).
	Summary string `json:"summary"`
	// Kind is the kind of failure.
	Kind       CauseKind `json:"kind"`
	HTTPStatus int       `json:"http_status,omitempty"`
	// Request is the failed request, "METHOD URL", when the error names it.
	Request string `json:"request,omitempty"`
	// Error is the last failed run's error as recorded.
	Error string `json:"error"`
	// Since is when the first failure of the current streak began;
	// Attempts counts the failures in the streak.
	Since    time.Time `json:"since"`
	Attempts int       `json:"attempts"`
	// RunID, RunKind and TaskID are the last failed run and its task.
	RunID   int64            `json:"run_id"`
	RunKind tidemark.RunKind `json:"run_kind"`
	TaskID  string           `json:"task_id,omitempty"`
	// Next says what tidemark will do next, in words ("next attempt at
	// 15:04:05 UTC", "dead: run `tidemark retry …`"); NextAt is when, if
	// known.
	Next   string     `json:"next"`
	NextAt *time.Time `json:"next_at,omitempty"`
	// Dead is true when nothing will retry the task: an operator must.
	Dead bool `json:"dead"`
}

// CauseKind is the kind of failure a Cause reads from a run's error.
type CauseKind string

// Cause kinds.
const (
	CauseHTTPAuth        CauseKind = "http_auth"
	CauseHTTPNotFound    CauseKind = "http_not_found"
	CauseHTTPRateLimited CauseKind = "http_rate_limited"
	CauseHTTPClientError CauseKind = "http_client_error"
	CauseHTTPServerError CauseKind = "http_server_error"
	CauseTimeout         CauseKind = "timeout"
	CauseConnection      CauseKind = "connection"
	CauseBlocked         CauseKind = "blocked"
	CauseBadResponse     CauseKind = "bad_response"
	CauseError           CauseKind = "error"
)

// Text is the cause in one line, for the status table.
func (c *Cause) Text() string {
	attempts := fmt.Sprintf("%d attempts", c.Attempts)
	if c.Attempts == 1 {
		attempts = "1 attempt"
	}
	return fmt.Sprintf("%s; failing since %s UTC (%s); %s",
		c.Summary, c.Since.UTC().Format(time.DateTime), attempts, c.Next)
}

var (
	requestInError = regexp.MustCompile(`\b(GET|HEAD|POST|PUT|PATCH|DELETE) (https?://\S+): `)
	statusInError  = regexp.MustCompile(`\bHTTP (\d{3})\b`)
)

// newCause reads a failure streak: the failure in plain words, when and how
// often. What happens next is the queue's to say (nextFromQueue); until it
// has, the run's own status tells.
func newCause(streak store.FailureStreak) *Cause {
	run := streak.Last
	c := &Cause{Error: run.Error, Since: streak.Since, Attempts: streak.Attempts,
		RunID: run.ID, RunKind: run.Kind, TaskID: run.TaskID}
	what := describe(c, run.Error)
	if m := requestInError.FindStringSubmatch(run.Error); m != nil {
		// Redacted at the source already (upstream.Client); again here,
		// so that no path to the screen depends on that alone.
		c.Request = m[1] + " " + upstream.Redact(m[2])
		c.Error = strings.Replace(c.Error, m[1]+" "+m[2], c.Request, 1)
		what += " at " + c.Request
	}
	c.Summary = what
	if run.Status == store.StatusDead {
		c.markDead()
	} else {
		c.Next = "will retry"
	}
	return c
}

func (c *Cause) markDead() {
	c.Dead = true
	c.Next = "dead: nothing retries it"
	if c.TaskID != "" {
		c.Next = "dead: run `tidemark retry " + c.TaskID + "`"
	}
}

// describe sets c's kind and HTTP status from a run's error and returns
// what happened in plain words.
func describe(c *Cause, msg string) string {
	if m := statusInError.FindStringSubmatch(msg); m != nil {
		code, _ := strconv.Atoi(m[1])
		c.HTTPStatus = code
		status := fmt.Sprintf("HTTP %d %s", code, http.StatusText(code))
		switch {
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			c.Kind = CauseHTTPAuth
			return "the upstream refused tidemark's credentials (" + status + ")"
		case code == http.StatusNotFound || code == http.StatusGone:
			c.Kind = CauseHTTPNotFound
			return "the upstream has no such path (" + status + ")"
		case code == http.StatusTooManyRequests:
			c.Kind = CauseHTTPRateLimited
			return "the upstream is rate limiting tidemark (" + status + ")"
		case code >= 500:
			c.Kind = CauseHTTPServerError
			return "the upstream failed (" + status + ")"
		default:
			c.Kind = CauseHTTPClientError
			return "the upstream rejected the request (" + status + ")"
		}
	}
	lower := strings.ToLower(msg)
	for _, k := range []struct {
		needle string
		kind   CauseKind
		words  string
	}{
		{"timeout", CauseTimeout, "the upstream did not answer in time"},
		{"deadline exceeded", CauseTimeout, "the upstream did not answer in time"},
		{"timed out", CauseTimeout, "the upstream did not answer in time"},
		{"connection refused", CauseConnection, "the upstream refused the connection"},
		{"connection reset", CauseConnection, "the upstream cut the connection"},
		{"no such host", CauseConnection, "the upstream's host name does not resolve"},
		{"eof", CauseConnection, "the upstream cut the connection"},
		{"refused to connect to", CauseBlocked, "tidemark refused the address (private or not allowed by the config)"},
	} {
		if strings.Contains(lower, k.needle) {
			c.Kind = k.kind
			return k.words
		}
	}
	if _, detail, ok := strings.Cut(msg, upstream.ErrBadResponse.Error()+": "); ok {
		c.Kind = CauseBadResponse
		return "the upstream's answer is unusable: " + shorten(detail, 160)
	}
	c.Kind = CauseError
	return shorten(msg, 200)
}

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// nextFromQueue says what happens next from the task queues: the last failed
// run's task waiting for its retry, archived (dead), or gone, when the next
// scheduled probe is what comes next. A queue that cannot be read leaves
// what the run said, and returns the error.
func (c *Cause) nextFromQueue(insp *asynq.Inspector, res *config.Resource, st *store.State, now time.Time) error {
	if c.TaskID == "" {
		c.nextProbe(res, st, now)
		return nil
	}
	queue := jobs.Queue(res)
	if c.RunKind == tidemark.RunProbe {
		queue = jobs.ProbeQueue(res)
	}
	info, err := insp.GetTaskInfo(queue, c.TaskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		// Retried by an operator, or (probes) left to the next probe.
		c.Dead = false
		c.nextProbe(res, st, now)
	case err != nil:
		c.unreadable(err)
		return err
	case info.State == asynq.TaskStateArchived:
		c.markDead()
	case info.State == asynq.TaskStateRetry || info.State == asynq.TaskStateScheduled:
		at := info.NextProcessAt
		c.Dead, c.NextAt = false, &at
		c.Next = fmt.Sprintf("next attempt at %s UTC", at.UTC().Format(time.TimeOnly))
		if info.State == asynq.TaskStateRetry && info.Retried > 0 {
			// asynq counts a failed attempt's retry when it schedules it:
			// the attempt to come is retry number Retried. (A hand-back
			// waits without counting one.)
			c.Next += fmt.Sprintf(" (retry %d of %d)", info.Retried, info.MaxRetry)
		}
	case info.State == asynq.TaskStateCompleted:
		c.Dead = false
		c.nextProbe(res, st, now)
	default: // pending, active, aggregating
		c.Dead = false
		c.Next = "retrying now"
	}
	return nil
}

func (c *Cause) unreadable(err error) {
	c.Next += " (the task queue cannot be read: " + shorten(err.Error(), 80) + ")"
}

// nextProbe says when the next probe runs: the scheduler's next_probe_at.
func (c *Cause) nextProbe(res *config.Resource, st *store.State, now time.Time) {
	if res.Probe.Strategy == tidemark.ProbeNone || st == nil || st.NextProbeAt == nil || !st.NextProbeAt.After(now) {
		c.Next = "next attempt when the scheduler next finds it due"
		return
	}
	at := *st.NextProbeAt
	c.NextAt = &at
	c.Next = fmt.Sprintf("next probe at %s UTC", at.UTC().Format(time.TimeOnly))
}

// FillNext asks the task queues what happens next to each failing
// resource of views (Resources leaves it to the run's status). asynq's
// Inspector takes no context: a Redis that does not answer costs its
// client's timeouts, once: after the first such error the others are not
// asked.
func FillNext(conf *config.Config, insp *asynq.Inspector, views []ResourceView) {
	now := time.Now()
	var down error
	for i := range views {
		v := &views[i]
		if v.Cause == nil {
			continue
		}
		if v.State != nil && v.State.Paused {
			continue // Resources said so
		}
		if down != nil {
			v.Cause.unreadable(down)
			continue
		}
		res := conf.Source(v.Source).Resource(v.Resource)
		down = v.Cause.nextFromQueue(insp, res, v.State, now)
	}
}
