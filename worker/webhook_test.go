package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// receiver records deliveries; it fails the first failFirst attempts.
type receiver struct {
	mu         sync.Mutex
	attempts   int
	failFirst  int
	deliveries map[string]int // delivery id → attempts seen
	bodies     []string
	badSig     int
	secret     string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.attempts++
	rc.deliveries[r.Header.Get("X-Tidemark-Delivery")]++
	if !jobs.VerifySignature([]byte(rc.secret), body, r.Header.Get("X-Tidemark-Signature")) {
		rc.badSig++
	}
	if rc.attempts <= rc.failFirst {
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	rc.bodies = append(rc.bodies, string(body))
}

func (rc *receiver) snapshot() (int, int, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.attempts, rc.badSig, append([]string(nil), rc.bodies...)
}

func TestWebhookDelivery(t *testing.T) {
	// t.Setenv: not parallel.
	t.Setenv("TIDEMARK_TEST_HOOK_SECRET", "s3cret")
	flaky := &receiver{failFirst: 1, deliveries: map[string]int{}, secret: "s3cret"}
	down := &receiver{failFirst: 1 << 30, deliveries: map[string]int{}, secret: "s3cret"}
	flakySrv, downSrv := httptest.NewServer(flaky), httptest.NewServer(down)
	defer flakySrv.Close()
	defer downSrv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conf := &config.Config{Webhooks: []config.Webhook{
		{URL: flakySrv.URL, SecretEnv: "TIDEMARK_TEST_HOOK_SECRET", Events: []string{"data.updated"}},
		{URL: downSrv.URL, SecretEnv: "TIDEMARK_TEST_HOOK_SECRET"},
		{URL: downSrv.URL + "/never", Events: []string{"run.failed"}}, // not subscribed
	}}
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Concurrency: 4, ShutdownTimeout: time.Second}, conf, st, redisOpt, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	client := asynq.NewClient(redisOpt)
	defer client.Close()
	ev := events.Event{ID: 42, Type: "data.updated", Source: "shop", Resource: "orders", Data: json.RawMessage(`{"id":42,"event":"data.updated"}`)}
	// A short retry budget for the receiver that stays down, so it dies
	// within the test: enqueue its delivery first, then let the sink
	// find it already there (the same delivery id) and not duplicate it.
	downTask, _ := jobs.NewWebhook(jobs.WebhookPayload{Webhook: 1, URLID: jobs.WebhookURLID(downSrv.URL), DeliveryID: jobs.DeliveryID(42, 1), Event: ev.Data})
	if _, err := client.Enqueue(downTask, append(jobs.WebhookOptions(jobs.DeliveryID(42, 1)), asynq.MaxRetry(1))...); err != nil {
		t.Fatal(err)
	}
	sink := jobs.WebhookSink(client, conf.Webhooks)
	for range 2 { // the relay handing the same event twice delivers it once
		if err := sink(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}

	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		attempts, badSig, bodies := flaky.snapshot()
		archived, _ := insp.ListArchivedTasks("default")
		if len(bodies) == 1 && len(archived) == 1 {
			if attempts != 2 || badSig != 0 || bodies[0] != string(ev.Data) {
				t.Fatalf("flaky receiver: %d attempts, %d bad signatures, bodies %v; want 2 attempts, valid signatures, the event once", attempts, badSig, bodies)
			}
			if archived[0].ID != jobs.DeliveryID(42, 1) || archived[0].LastErr == "" {
				t.Fatalf("dead delivery = %s (%q); want %s with its error", archived[0].ID, archived[0].LastErr, jobs.DeliveryID(42, 1))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: flaky receiver got %v (%d attempts); archived %d", bodies, attempts, len(archived))
		}
		time.Sleep(100 * time.Millisecond) // polling a condition with a deadline
	}
	downAttempts, badSig, _ := down.snapshot()
	if downAttempts != 2 || badSig != 0 {
		t.Fatalf("down receiver: %d attempts (%d badly signed); want 2 (1 + 1 retry), signed", downAttempts, badSig)
	}
	for id, n := range flaky.deliveries {
		if id != jobs.DeliveryID(42, 0) {
			t.Fatalf("flaky receiver got delivery id %q (%d times); want %s", id, n, jobs.DeliveryID(42, 0))
		}
	}
	ti, err := insp.GetTaskInfo("default", jobs.DeliveryID(42, 1))
	if err != nil || bytes.Contains(ti.Payload, []byte("s3cret")) {
		t.Fatalf("dead task %v (%v): payload must exist and never carry the secret", ti, err)
	}
}
