package worker_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/jobs"
)

// The receiver's side, exactly as docs/operations.md ("Verifying webhooks")
// shows it; TestVerifyingWebhooksDocs keeps the two the same.

// BEGIN docs/operations.md
// verifyWebhook checks a tidemark webhook delivery: its Standard Webhooks
// signature, in constant time, and a timestamp at most 5 minutes from now.
// secret is the value of the webhook's secret_env.
func verifyWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(rest); err != nil {
			return fmt.Errorf("secret: %w", err)
		}
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: want unix seconds", ts)
	}
	if age := now.Sub(time.Unix(sec, 0)); age > 5*time.Minute || age < -5*time.Minute {
		return fmt.Errorf("webhook-timestamp %s is %s away from now: refused", ts, age)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := []byte("v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), want) {
			return nil // also drop a webhook-id you have already handled
		}
	}
	return errors.New("webhook-signature: no valid v1 signature")
}

// END docs/operations.md

// docBlock returns the first fenced block of language lang after the
// heading in docs/operations.md.
func docBlock(t *testing.T, heading, lang string) string {
	t.Helper()
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/operations.md has no heading %q", heading)
	}
	_, block, ok := strings.Cut(section, "```"+lang+"\n")
	if !ok {
		t.Fatalf("docs/operations.md %q has no ```%s block", heading, lang)
	}
	block, _, _ = strings.Cut(block, "```\n")
	return block
}

// TestVerifyingWebhooksDocs: the Go snippet in docs/operations.md is the
// verifyWebhook above, byte for byte, so the tests that verify real
// deliveries with it test what the docs tell receivers to run.
func TestVerifyingWebhooksDocs(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("webhook_verify_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, code, _ := strings.Cut(string(src), "// BEGIN docs/operations.md\n")
	code, _, _ = strings.Cut(code, "\n// END docs/operations.md")
	if doc := docBlock(t, "## Verifying webhooks", "go"); strings.TrimSpace(doc) != strings.TrimSpace(code) {
		t.Fatalf("the Go snippet of docs/operations.md differs from verifyWebhook in webhook_verify_test.go:\n--- docs\n%s\n--- test\n%s", doc, code)
	}
}

// TestVerifyingWebhooksPython runs the Python snippet of docs/operations.md
// against signatures made by jobs.SignStandard (skipped without python3).
func TestVerifyingWebhooksPython(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed: the Python snippet is not checked")
	}
	snippet := docBlock(t, "## Verifying webhooks", "python")
	body := []byte(`{"id":7,"event":"data.updated"}`)
	for _, tt := range []struct {
		name, secret string
		key          []byte
		// age is how long before the check the delivery was signed; the
		// time is taken in the subtest, which may wait a long while for
		// its turn among the package's parallel tests.
		age  time.Duration
		body []byte
		ok   bool
	}{
		{"plain secret", "s3cret", []byte("s3cret"), 0, body, true},
		{"whsec_ secret", "whsec_" + base64.StdEncoding.EncodeToString([]byte("k3y-bytes")), []byte("k3y-bytes"), 0, body, true},
		{"tampered body", "s3cret", []byte("s3cret"), 0, []byte(`{"id":8}`), false},
		{"six minutes old", "s3cret", []byte("s3cret"), 6 * time.Minute, body, false},
		{"six minutes ahead", "s3cret", []byte("s3cret"), -6 * time.Minute, body, false},
		{"no headers", "s3cret", nil, 0, body, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := time.Now().Add(-tt.age)
			headers := map[string]string{}
			if tt.key != nil {
				headers = map[string]string{
					"webhook-id":        "webhook-7-0",
					"webhook-timestamp": strconv.FormatInt(ts.Unix(), 10),
					"webhook-signature": "v1,bm90IGl0 " + jobs.SignStandard(tt.key, "webhook-7-0", ts.Unix(), body),
				}
			}
			in, _ := json.Marshal(map[string]any{"secret": tt.secret, "headers": headers, "body": base64.StdEncoding.EncodeToString(tt.body)})
			cmd := exec.Command(py, "-c", snippet+`
import json, sys
a = json.load(sys.stdin)
try:
    verify_webhook(a["secret"], a["headers"], base64.b64decode(a["body"]))
    print("ok")
except ValueError as e:
    print("refused:", e)
`)
			cmd.Stdin = strings.NewReader(string(in))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("python3: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)) == "ok"; got != tt.ok {
				t.Fatalf("python snippet said %q; want ok = %v", out, tt.ok)
			}
		})
	}
}

// delivery is one request a hookSink received.
type delivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

// hookSink records every request, answering 500 to the first failFirst.
type hookSink struct {
	mu        sync.Mutex
	failFirst int
	got       []delivery
}

func (s *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, delivery{r.Header.Clone(), body, time.Now()})
	if len(s.got) <= s.failFirst {
		http.Error(w, "down", http.StatusInternalServerError)
	}
}

func (s *hookSink) deliveries() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]delivery(nil), s.got...)
}

// TestWebhookStandardSignature delivers one event to three webhooks: a
// plain secret (whose receiver fails the first attempt, so the delivery is
// retried), a whsec_ secret, and none. Every signed attempt passes the
// docs' verifyWebhook, carries the delivery id as webhook-id (the same on
// the retry) and its own timestamp, and still has the deprecated
// X-Tidemark-Signature; the unsigned webhook gets no signature headers.
func TestWebhookStandardSignature(t *testing.T) {
	// t.Setenv: not parallel.
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a 24-byte signing key!!!"))
	t.Setenv("TIDEMARK_TEST_PLAIN_SECRET", "plain-s3cret")
	t.Setenv("TIDEMARK_TEST_WHSEC_SECRET", whsec)
	plain, std, none := &hookSink{failFirst: 1}, &hookSink{}, &hookSink{}
	var urls []string
	for _, s := range []*hookSink{plain, std, none} {
		srv := httptest.NewServer(s)
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	conf := &config.Config{Webhooks: []config.Webhook{
		{URL: urls[0], SecretEnv: "TIDEMARK_TEST_PLAIN_SECRET"},
		{URL: urls[1], SecretEnv: "TIDEMARK_TEST_WHSEC_SECRET"},
		{URL: urls[2]},
	}}
	ctx := context.Background()
	logs := &syncBuffer{}
	_, client := startHookWorker(t, conf, slog.New(slog.NewJSONHandler(logs, nil)))
	ev := events.Event{ID: 77, Type: "data.updated", Source: "shop", Resource: "orders", Data: json.RawMessage(`{"id":77,"event":"data.updated"}`)}
	if err := jobs.WebhookSink(client, conf)(ctx, ev); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(30 * time.Second)
	for len(plain.deliveries()) < 2 || len(std.deliveries()) < 1 || len(none.deliveries()) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %d, %d, %d attempts; want 2 (one retry), 1, 1", len(plain.deliveries()), len(std.deliveries()), len(none.deliveries()))
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
	for _, tt := range []struct {
		name, secret string
		sink         *hookSink
		index        int
	}{
		{"plain secret", "plain-s3cret", plain, 0},
		{"whsec_ secret", whsec, std, 1},
	} {
		for i, d := range tt.sink.deliveries() {
			if err := verifyWebhook(tt.secret, d.header, d.body, d.at); err != nil {
				t.Errorf("%s, attempt %d: the docs' verifyWebhook refused it: %v (headers %v)", tt.name, i+1, err, d.header)
			}
			if got, want := d.header.Get("webhook-id"), jobs.DeliveryID(77, tt.index); got != want {
				t.Errorf("%s, attempt %d: webhook-id %q, want the delivery id %q on every attempt", tt.name, i+1, got, want)
			}
			if !jobs.VerifySignature([]byte(tt.secret), d.body, d.header.Get("X-Tidemark-Signature")) {
				t.Errorf("%s, attempt %d: the deprecated X-Tidemark-Signature is missing or wrong", tt.name, i+1)
			}
			if err := verifyWebhook(tt.secret, d.header, d.body, d.at.Add(6*time.Minute)); err == nil {
				t.Errorf("%s, attempt %d: verifyWebhook accepted it six minutes later", tt.name, i+1)
			}
			if err := verifyWebhook("wrong", d.header, d.body, d.at); err == nil {
				t.Errorf("%s, attempt %d: verifyWebhook accepted it under another secret", tt.name, i+1)
			}
		}
	}
	// whsec_: the key is the decoded bytes, not the secret's text.
	d := std.deliveries()[0]
	ts, _ := strconv.ParseInt(d.header.Get("webhook-timestamp"), 10, 64)
	if d.header.Get("webhook-signature") != jobs.SignStandard([]byte("a 24-byte signing key!!!"), d.header.Get("webhook-id"), ts, d.body) {
		t.Errorf("whsec_ secret: signature %q is not made with the base64-decoded key", d.header.Get("webhook-signature"))
	}
	for _, h := range []string{"webhook-id", "webhook-timestamp", "webhook-signature", "X-Tidemark-Signature"} {
		if v := none.deliveries()[0].header.Get(h); v != "" {
			t.Errorf("webhook without a secret: header %s = %q, want none (delivered unsigned)", h, v)
		}
	}
	// The worker said so, once, naming the unsigned webhook only; no
	// secret appears in its log.
	log := logs.String()
	if n := strings.Count(log, `"msg":"webhook has no secret_env: its deliveries are not signed","webhook":2`); n != 1 || strings.Count(log, "no secret_env") != 1 {
		t.Errorf("worker log warns %d times about webhook 2 (%d in all), want once:\n%s", n, strings.Count(log, "no secret_env"), log)
	}
	for _, secret := range []string{"plain-s3cret", whsec} {
		if strings.Contains(log, secret) {
			t.Errorf("worker log holds a webhook secret")
		}
	}
}
