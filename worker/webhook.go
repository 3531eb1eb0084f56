package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/jobs"
)

// webhookClient posts deliveries. It does not follow redirects: a receiver
// that moved answers 3xx, which fails (and retries) the delivery visibly
// rather than posting a signed body somewhere the config never named.
var webhookClient = &http.Client{
	Timeout: 15 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// webhookHandler delivers one event to one configured webhook. Any answer
// but 2xx fails the attempt; asynq retries with backoff and archives the
// task (dead) after jobs.WebhookMaxRetry retries.
type webhookHandler struct{ w *Worker }

func (h webhookHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := jobs.ParseWebhook(t)
	if err != nil {
		return err
	}
	hooks := h.w.conf().Webhooks
	if p.Webhook < 0 || p.Webhook >= len(hooks) || jobs.WebhookURLID(hooks[p.Webhook].URL) != p.URLID {
		// Removed (or moved) by a config reload: the operator no longer
		// wants it, and a dead task would only page someone.
		h.w.log.Info("webhook delivery dropped: its webhook is no longer in the config", "delivery_id", p.DeliveryID, "webhook", p.Webhook)
		return nil
	}
	hook := hooks[p.Webhook]
	var secret string
	var key []byte
	if hook.SecretEnv != "" {
		if secret = os.Getenv(hook.SecretEnv); secret == "" {
			// Retried: the operator may set it and restart the workers.
			return fmt.Errorf("webhook delivery %s: webhooks[%d].secret_env: environment variable %s is empty", p.DeliveryID, p.Webhook, hook.SecretEnv)
		}
		if key, err = jobs.WebhookKey(secret); err != nil {
			// Retried, like an empty secret: fixing it needs a restart, not a new event.
			return fmt.Errorf("webhook delivery %s: webhooks[%d].secret_env: environment variable %s: %w", p.DeliveryID, p.Webhook, hook.SecretEnv, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, webhookClient.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook.URL, bytes.NewReader(p.Event))
	if err != nil {
		return fmt.Errorf("webhook delivery %s: webhooks[%d].url: %w: %w", p.DeliveryID, p.Webhook, err, jobs.ErrBadInput)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tidemark-webhook")
	req.Header.Set("X-Tidemark-Delivery", p.DeliveryID)
	if secret != "" {
		sign(req.Header, key, secret, p.DeliveryID, time.Now(), p.Event)
	}
	start := time.Now()
	resp, err := webhookClient.Do(req)
	if err != nil {
		// The error names the URL; it came from the config, not a secret.
		return fmt.Errorf("webhook delivery %s to webhooks[%d]: %w", p.DeliveryID, p.Webhook, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook delivery %s to webhooks[%d]: receiver answered %s", p.DeliveryID, p.Webhook, resp.Status)
	}
	h.w.log.Info("webhook delivered", "delivery_id", p.DeliveryID, "webhook", p.Webhook, "status", resp.StatusCode, "duration_ms", time.Since(start).Milliseconds())
	return nil
}

// sign sets the Standard Webhooks headers of one attempt: webhook-id is the
// delivery id, the same on every retry, so a receiver can drop duplicates;
// webhook-timestamp is this attempt's, so a retry is signed afresh and a
// receiver can refuse old captures. X-Tidemark-Signature (the body's HMAC
// under the secret's bytes) is deprecated and kept for one release, for
// receivers that verify it today.
func sign(h http.Header, key []byte, secret, deliveryID string, now time.Time, body []byte) {
	ts := now.Unix()
	h.Set(jobs.HeaderWebhookID, deliveryID)
	h.Set(jobs.HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	h.Set(jobs.HeaderWebhookSignature, jobs.SignStandard(key, deliveryID, ts, body))
	h.Set("X-Tidemark-Signature", jobs.Sign([]byte(secret), body))
}

// warnUnsigned logs, once per worker, each webhook configured without a
// secret: its deliveries go out unsigned and a receiver cannot tell them
// from forgeries. The URL is left out (it may carry a token).
func (w *Worker) warnUnsigned() {
	for i, hook := range w.conf().Webhooks {
		if hook.SecretEnv == "" {
			w.log.Warn("webhook has no secret_env: its deliveries are not signed", "webhook", i, "url_id", jobs.WebhookURLID(hook.URL))
		}
	}
}
