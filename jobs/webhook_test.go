package jobs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/jobs"
)

// The Standard Webhooks specification's test vector: matching it means any
// of the specification's libraries verifies tidemark's deliveries.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignStandardVector(t *testing.T) {
	t.Parallel()
	key, err := jobs.WebhookKey(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := jobs.SignStandard(key, vectorID, vectorTimestamp, []byte(vectorBody)); got != vectorSignature {
		t.Fatalf("SignStandard = %s, want the specification's %s", got, vectorSignature)
	}
}

func TestWebhookKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, secret, want, err string
	}{
		{name: "plain secret: its bytes", secret: "s3cret", want: "s3cret"},
		{name: "whsec_: base64 after the prefix", secret: "whsec_a2V5LWJ5dGVz", want: "key-bytes"},
		{name: "whsec_ with bad base64", secret: "whsec_not*base64!", err: "must continue in standard base64"},
		{name: "whsec_ and nothing", secret: "whsec_", err: "must carry a key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := jobs.WebhookKey(tt.secret)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("WebhookKey(%q) error %v, want one saying %q", tt.secret, err, tt.err)
				}
				if rest := tt.secret[len("whsec_"):]; rest != "" && strings.Contains(err.Error(), rest) {
					t.Fatalf("WebhookKey error %q quotes the secret", err)
				}
				return
			}
			if err != nil || string(key) != tt.want {
				t.Fatalf("WebhookKey(%q) = %q, %v; want %q", tt.secret, key, err, tt.want)
			}
		})
	}
}

func TestVerifyStandard(t *testing.T) {
	t.Parallel()
	key, _ := jobs.WebhookKey(vectorSecret)
	signedAt := time.Unix(vectorTimestamp, 0)
	tests := []struct {
		name, timestamp, signatures, body string
		now                               time.Time
		want                              error
	}{
		{name: "the vector", timestamp: "1614265330", signatures: vectorSignature, body: vectorBody, now: signedAt},
		{name: "one of several signatures", timestamp: "1614265330", signatures: "v1,bm9wZQ== " + vectorSignature, body: vectorBody, now: signedAt},
		{name: "4m59s old", timestamp: "1614265330", signatures: vectorSignature, body: vectorBody, now: signedAt.Add(299 * time.Second)},
		{name: "5m01s old", timestamp: "1614265330", signatures: vectorSignature, body: vectorBody, now: signedAt.Add(301 * time.Second), want: jobs.ErrWebhookTimestamp},
		{name: "5m01s ahead", timestamp: "1614265330", signatures: vectorSignature, body: vectorBody, now: signedAt.Add(-301 * time.Second), want: jobs.ErrWebhookTimestamp},
		{name: "no timestamp", timestamp: "", signatures: vectorSignature, body: vectorBody, now: signedAt, want: jobs.ErrWebhookTimestamp},
		{name: "timestamp written otherwise", timestamp: "+1614265330", signatures: vectorSignature, body: vectorBody, now: signedAt, want: jobs.ErrWebhookSignature},
		{name: "other body", timestamp: "1614265330", signatures: vectorSignature, body: `{"test": 1}`, now: signedAt, want: jobs.ErrWebhookSignature},
		{name: "no signature", timestamp: "1614265330", signatures: "", body: vectorBody, now: signedAt, want: jobs.ErrWebhookSignature},
		{name: "another scheme", timestamp: "1614265330", signatures: "v1a," + vectorSignature[3:], body: vectorBody, now: signedAt, want: jobs.ErrWebhookSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := jobs.VerifyStandard(key, vectorID, tt.timestamp, tt.signatures, []byte(tt.body), tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("VerifyStandard = %v, want %v", err, tt.want)
			}
		})
	}
}
