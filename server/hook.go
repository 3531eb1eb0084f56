package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
)

// MaxHookBody is the largest inbound hook body, 1 MiB. A larger one is
// refused with 413: truncating it would check the signature of something
// the sender never signed. An upstream's notification needs only to say
// that something changed.
const MaxHookBody = 1 << 20

// HookWindowDefault is Config.HookWindow's default: about five probes a
// second at most (see hookProbe), however many hooks arrive. A hook after
// the first of its window waits for the next whole second, so a longer
// window slows a busy resource. Measured with TestChangeToSSELatency's
// hooks (one per change, several a second), change to /api/events: 0.11s
// at the median and 0.2s at p99 without coalescing; 0.15s and 1.1s with
// 250ms; 0.74s and 1.1s with 1s.
const HookWindowDefault = 250 * time.Millisecond

// maxWebhookID bounds a webhook-id, which becomes part of a Redis key.
const maxWebhookID = 256

// hookError is a refused hook: its HTTP status and what was wrong.
type hookError struct {
	code int
	msg  string
}

// hook is an upstream's change notification: it enqueues a probe of the
// resource soon (see hookProbe). With a secret for the source
// (TIDEMARK_HOOK_SECRET_<SOURCE>) the request must be signed, the Standard
// Webhooks way (webhook-id, webhook-timestamp, webhook-signature: checked
// for age and replay) or with the body-only X-Tidemark-Signature /
// X-Hub-Signature-256 (sha256=<hex HMAC-SHA256>), which cannot be protected
// against replay; the admin token is accepted instead. Without a secret the
// admin token is required (when one is set).
func (s *Server) hook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxHookBody))
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over the %d-byte (1 MiB) limit of inbound hooks: a change notification needs no more", MaxHookBody))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	webhookID, herr := s.checkHook(r, r.PathValue("source"), body)
	if herr != nil {
		writeError(w, herr.code, herr.msg)
		return
	}
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	// The id is used up only by a hook that gets this far: a sender whose
	// hook was refused sends it again with the same id.
	var seen string
	if webhookID != "" {
		if seen, herr = s.remember(r.Context(), src.Name, webhookID); herr != nil {
			writeError(w, herr.code, herr.msg)
			return
		}
	}
	id, queue, coalesced, err := s.hookProbe(r.Context(), src, res)
	if err != nil {
		if seen != "" {
			// The sender retries with the same webhook-id: that retry is
			// not a replay, since this attempt did nothing.
			s.rdb.Del(context.WithoutCancel(r.Context()), seen)
		}
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("enqueue probe %s/%s: %v", src.Name, res.Name, err))
		return
	}
	if coalesced {
		// At a thousand hooks a second, one line each would drown the log.
		s.log.Debug("inbound hook coalesced", "source", src.Name, "resource", res.Name, "task_id", id)
	} else {
		s.log.Info("inbound hook", "source", src.Name, "resource", res.Name, "task_id", id)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"source": src.Name, "resource": res.Name, "task_id": id, "queue": queue, "coalesced": coalesced,
	})
}

// checkHook authenticates an inbound hook of source. webhookID is the
// verified id of a Standard Webhooks signature ("" with any other
// authentication): remember refuses it once used.
func (s *Server) checkHook(r *http.Request, source string, body []byte) (webhookID string, _ *hookError) {
	secret := s.cfg.HookSecret(source)
	if secret == "" {
		if !s.authorized(r) {
			return "", &hookError{http.StatusUnauthorized, "missing or wrong admin token (or set " + HookSecretEnv(source) + " to accept signed hooks)"}
		}
		return "", nil
	}
	if s.cfg.AdminToken != "" && s.authorized(r) {
		return "", nil
	}
	if r.Header.Get(jobs.HeaderWebhookSignature) != "" {
		return s.checkStandard(r, source, secret, body)
	}
	sig := cmp.Or(r.Header.Get("X-Tidemark-Signature"), r.Header.Get("X-Hub-Signature-256"))
	if !jobs.VerifySignature([]byte(secret), body, sig) {
		return "", &hookError{http.StatusUnauthorized, "missing or wrong signature: send webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks), " +
			"or X-Tidemark-Signature (or X-Hub-Signature-256) = sha256=<hex HMAC-SHA256 of the body> under " + HookSecretEnv(source)}
	}
	return "", nil
}

// checkStandard checks a Standard Webhooks signature: a webhook-id, a
// timestamp within jobs.WebhookTolerance, and a valid signature. It
// returns the id.
func (s *Server) checkStandard(r *http.Request, source, secret string, body []byte) (string, *hookError) {
	key, err := jobs.WebhookKey(secret)
	if err != nil {
		return "", &hookError{http.StatusInternalServerError, HookSecretEnv(source) + ": " + err.Error()}
	}
	id := r.Header.Get(jobs.HeaderWebhookID)
	if id == "" || len(id) > maxWebhookID {
		return "", &hookError{http.StatusBadRequest, fmt.Sprintf("%s: required with %s, at most %d bytes", jobs.HeaderWebhookID, jobs.HeaderWebhookSignature, maxWebhookID)}
	}
	err = jobs.VerifyStandard(key, id, r.Header.Get(jobs.HeaderWebhookTimestamp), r.Header.Get(jobs.HeaderWebhookSignature), body, s.cfg.Now())
	if err != nil {
		return "", &hookError{http.StatusUnauthorized, err.Error()}
	}
	return id, nil
}

// remember marks a source's webhook-id used, and refuses one used before
// as a replay. It returns the Redis key of the mark. An id is remembered
// for twice jobs.WebhookTolerance: a timestamp is accepted from tolerance
// before to tolerance after the server's clock, so a replay of the same
// request cannot outlive the memory of its id.
func (s *Server) remember(ctx context.Context, source, id string) (string, *hookError) {
	seen := "tidemark:hook-seen:" + source + ":" + id
	fresh, err := s.rdb.SetNX(ctx, seen, 1, 2*jobs.WebhookTolerance).Result()
	if err != nil {
		return "", &hookError{http.StatusServiceUnavailable, "remember webhook-id: " + err.Error()}
	}
	if !fresh {
		return "", &hookError{http.StatusConflict, fmt.Sprintf("%s %q was already accepted within the last %s: refused as a replay", jobs.HeaderWebhookID, id, 2*jobs.WebhookTolerance)}
	}
	return seen, nil
}

// hookProbe enqueues a probe of res for an inbound hook, at most one per
// HookWindow: the probe's task id names the window, and asynq refuses a
// second task with the same id. A hook whose window has its probe already
// (which may have run before the change this hook announces) gets a probe
// scheduled at the next window's start (in whole seconds, below), so every
// hook is followed by a probe that starts after it. A hook for which that
// one exists too is coalesced into it: a burst of hooks costs one probe per
// window, plus at most one a second with windows under a second.
// Retention keeps a finished probe's id taken until its window is over:
// without it a hook after the probe finished would enqueue another at once.
func (s *Server) hookProbe(ctx context.Context, src *config.Source, res *config.Resource) (id, queue string, coalesced bool, err error) {
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: src.Name, Resource: res.Name, Trigger: jobs.TriggerWebhook}, jobs.ProbeOptions(res)...)
	if err != nil {
		return "", "", false, err
	}
	window := s.cfg.HookWindow
	slot := s.cfg.Now().Truncate(window)
	// asynq schedules in whole seconds (rounded down, which could start the
	// probe before a hook it covers): the next probe waits for the first
	// whole second at or after the next window's start, and takes that
	// window's id when it starts one.
	next := slot.Add(window)
	if up := next.Truncate(time.Second); !up.Equal(next) {
		next = up.Add(time.Second)
	}
	// asynq also counts retention in whole seconds from the whole second a
	// task finished in, both rounded down: 2s more covers that.
	retention := window + 2*time.Second
	for _, at := range []time.Time{slot, next} {
		id = "hook-probe:" + src.Name + ":" + res.Name + ":" + strconv.FormatInt(at.UnixMilli(), 10)
		opts := []asynq.Option{asynq.TaskID(id), asynq.Retention(retention)}
		if at.After(slot) {
			opts = append(opts, asynq.ProcessAt(at))
		}
		info, err := s.client.EnqueueContext(ctx, task, opts...)
		if err == nil {
			return info.ID, info.Queue, false, nil
		}
		if !jobs.AlreadyQueued(err) {
			return "", "", false, err
		}
	}
	return id, jobs.ProbeQueue(res), true, nil
}
