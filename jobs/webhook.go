package jobs

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
)

// WebhookMaxRetry is how many times a failed delivery is retried (with
// RetryDelay's backoff: 2 s doubling to 5 min, about 28 minutes in all)
// before the task is archived as dead, where `tidemark retry` and Asynqmon
// list it.
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
	return newTask(TypeWebhook, p, opts)
}

// ParseWebhook decodes a webhook payload.
func ParseWebhook(t *asynq.Task) (WebhookPayload, error) {
	return parsePayload[WebhookPayload](t, TypeWebhook)
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
func Subscribed(hook config.Webhook, event tidemark.EventType) bool {
	return len(hook.Events) == 0 || slices.Contains(hook.Events, event)
}

// WebhookSink enqueues one delivery task per event and subscribed webhook
// of the config in force. An already enqueued delivery is not an error: the
// relay hands an event again after a crash, and the deterministic task id
// makes that a no-op.
func WebhookSink(client *asynq.Client, conf config.Provider) events.Sink {
	return func(ctx context.Context, ev events.Event) error {
		for i, hook := range conf.Current().Webhooks {
			if !Subscribed(hook, ev.Type) {
				continue
			}
			id := DeliveryID(ev.ID, i)
			task, err := NewWebhook(WebhookPayload{Webhook: i, URLID: WebhookURLID(hook.URL), DeliveryID: id, Event: ev.Data})
			if err != nil {
				return err
			}
			if _, err := client.EnqueueContext(ctx, task, WebhookOptions(id)...); err != nil && !AlreadyQueued(err) {
				return fmt.Errorf("enqueue webhook %d delivery %s: %w", i, id, err)
			}
		}
		return nil
	}
}

// Sign is the X-Tidemark-Signature value of body under secret:
// "sha256=" and the hex HMAC-SHA256. It signs the body alone, so a captured
// request can be replayed as long as the secret is unchanged; it is kept for
// receivers (and upstreams) that predate the Standard Webhooks headers.
//
// Outbound webhooks still send it for one release, deprecated: receivers
// should verify webhook-signature (see SignStandard) instead.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a signature made by Sign, in constant time.
func VerifySignature(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// The Standard Webhooks (https://www.standardwebhooks.com) headers that sign
// a delivery: its id (the same on every retry), the attempt's time in unix
// seconds, and one or more space-separated "v1,<base64 HMAC-SHA256>"
// signatures of id + "." + timestamp + "." + body.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// WebhookTolerance is how far a webhook-timestamp may be from the
// receiver's clock, either way: an older (or a future) signed request is
// refused as a possible replay.
const WebhookTolerance = 5 * time.Minute

// Errors of VerifyStandard.
var (
	ErrWebhookTimestamp = errors.New("webhook-timestamp out of tolerance")
	ErrWebhookSignature = errors.New("webhook-signature does not match")
)

// WebhookKey is the HMAC key of a webhook secret, as Standard Webhooks
// defines it: a secret starting with "whsec_" carries the key base64-encoded
// after that prefix; any other secret is the key itself, byte for byte. The
// error never quotes the secret.
func WebhookKey(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("a secret starting with whsec_ must continue in standard base64: %w", err)
	}
	if len(key) == 0 {
		return nil, errors.New("a secret starting with whsec_ must carry a key after the prefix")
	}
	return key, nil
}

// SignStandard is the webhook-signature value of a delivery: "v1," and the
// base64 HMAC-SHA256 under key of id.timestamp.body.
func SignStandard(key []byte, id string, timestamp int64, body []byte) string {
	return signStandard(key, id, strconv.FormatInt(timestamp, 10), body)
}

// signStandard signs the timestamp as the header carries it: a verifier
// must hash the header's text, not a number reformatted from it.
func signStandard(key []byte, id, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// VerifyStandard checks Standard Webhooks headers at time now: the timestamp
// within WebhookTolerance (ErrWebhookTimestamp), then any of the
// space-separated signatures, each compared in constant time
// (ErrWebhookSignature). It does not remember ids: refusing a replayed id
// inside the tolerance is the caller's job.
func VerifyStandard(key []byte, id, timestamp, signatures string, body []byte, now time.Time) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q is not unix seconds", ErrWebhookTimestamp, HeaderWebhookTimestamp, timestamp)
	}
	if skew := now.Sub(time.Unix(sec, 0)); skew > WebhookTolerance || skew < -WebhookTolerance {
		return fmt.Errorf("%w: %s %d is %s from the server's clock, more than the %s allowed (a replay, or a wrong clock)",
			ErrWebhookTimestamp, HeaderWebhookTimestamp, sec, skew.Abs().Round(time.Second), WebhookTolerance)
	}
	want := []byte(signStandard(key, id, timestamp, body))
	for sig := range strings.FieldsSeq(signatures) {
		if hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return fmt.Errorf("%w: want v1,<base64 HMAC-SHA256 of %s.%s.body>", ErrWebhookSignature, HeaderWebhookID, HeaderWebhookTimestamp)
}
