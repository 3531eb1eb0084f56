package jobs

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
)

// WebhookMaxRetry is how many times a failed delivery is retried (with
// RetryDelay's backoff, about an hour and a half in all) before the task is
// archived as dead, where `tidemark retry` and Asynqmon list it.
const WebhookMaxRetry = 12

// WebhookPayload is the payload of a webhook delivery task. It names the
// webhook by its index in the config and a fingerprint of its URL (so a
// reordered config fails the task rather than posting elsewhere); it never
// carries the secret, which the worker reads from the webhook's secret_env.
type WebhookPayload struct {
	Webhook    int             `json:"webhook"`
	URLID      string          `json:"url_id"`
	DeliveryID string          `json:"delivery_id"`
	Event      json.RawMessage `json:"event"`
}

// WebhookURLID fingerprints a webhook URL for WebhookPayload.URLID; the URL
// itself may carry a token and stays out of Redis.
func WebhookURLID(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:8])
}

// DeliveryID names the delivery of event id to webhook index. It is the
// task id too: enqueuing the same delivery twice (a relay retrying after a
// crash, two relays) is refused by asynq.
func DeliveryID(eventID int64, index int) string {
	return fmt.Sprintf("webhook-%d-%d", eventID, index)
}

// NewWebhook returns a webhook delivery task.
func NewWebhook(p WebhookPayload, opts ...asynq.Option) (*asynq.Task, error) {
	if p.DeliveryID == "" || len(p.Event) == 0 {
		return nil, fmt.Errorf("webhook %d: delivery id and event are required", p.Webhook)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeWebhook, body, opts...), nil
}

// ParseWebhook decodes a webhook payload.
func ParseWebhook(t *asynq.Task) (WebhookPayload, error) {
	var p WebhookPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("webhook payload: %w: %w", err, asynq.SkipRetry)
	}
	return p, nil
}

// WebhookOptions are the asynq options of a delivery: its task id (see
// DeliveryID), a bounded retry budget, and a retention that keeps a
// delivered task's id reserved for a day so a late duplicate is refused.
func WebhookOptions(deliveryID string) []asynq.Option {
	return []asynq.Option{
		asynq.TaskID(deliveryID),
		asynq.Queue(config.PriorityDefault),
		asynq.MaxRetry(WebhookMaxRetry),
		asynq.Timeout(time.Minute),
		asynq.Retention(24 * time.Hour),
	}
}

// Subscribed reports whether hook wants events of type event.
func Subscribed(hook config.Webhook, event string) bool {
	return len(hook.Events) == 0 || slices.Contains(hook.Events, event)
}

// WebhookSink enqueues one delivery task per event and subscribed webhook.
// An already enqueued delivery is not an error: the relay hands an event
// again after a crash, and the deterministic task id makes that a no-op.
func WebhookSink(client *asynq.Client, hooks []config.Webhook) events.Sink {
	return func(ctx context.Context, ev events.Event) error {
		for i, hook := range hooks {
			if !Subscribed(hook, ev.Type) {
				continue
			}
			id := DeliveryID(ev.ID, i)
			task, err := NewWebhook(WebhookPayload{Webhook: i, URLID: WebhookURLID(hook.URL), DeliveryID: id, Event: ev.Data})
			if err != nil {
				return err
			}
			if _, err := client.EnqueueContext(ctx, task, WebhookOptions(id)...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
				return fmt.Errorf("enqueue webhook %d delivery %s: %w", i, id, err)
			}
		}
		return nil
	}
}

// Sign is the X-Tidemark-Signature value of body under secret:
// "sha256=" and the hex HMAC-SHA256.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a signature made by Sign, in constant time.
func VerifySignature(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}
