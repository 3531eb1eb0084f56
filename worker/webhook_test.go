package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// startHookWorker runs a worker delivering conf's webhooks until the test
// ends, and returns its Redis and a client of its queues.
func startHookWorker(t *testing.T, conf *config.Config, log *slog.Logger) (asynq.RedisConnOpt, *asynq.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Concurrency: 4, ShutdownTimeout: time.Second}, conf, st, redisOpt, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	client := asynq.NewClient(redisOpt)
	t.Cleanup(func() { client.Close() })
	return redisOpt, client
}

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
		{URL: flakySrv.URL, SecretEnv: "TIDEMARK_TEST_HOOK_SECRET", Events: []tidemark.EventType{"data.updated"}},
		{URL: downSrv.URL, SecretEnv: "TIDEMARK_TEST_HOOK_SECRET"},
		{URL: downSrv.URL + "/never", Events: []tidemark.EventType{"run.failed"}}, // not subscribed
	}}
	redisOpt, client := startHookWorker(t, conf, testLogger(t))
	ev := events.Event{ID: 42, Type: "data.updated", Source: "shop", Resource: "orders", Data: json.RawMessage(`{"id":42,"event":"data.updated"}`)}
	// A short retry budget for the receiver that stays down, so it dies
	// within the test: enqueue its delivery first, then let the sink
	// find it already there (the same delivery id) and not duplicate it.
	downTask, _ := jobs.NewWebhook(jobs.WebhookPayload{Webhook: 1, URLID: jobs.WebhookURLID(downSrv.URL), DeliveryID: jobs.DeliveryID(42, 1), Event: ev.Data})
	if _, err := client.Enqueue(downTask, append(jobs.WebhookOptions(jobs.DeliveryID(42, 1)), asynq.MaxRetry(1))...); err != nil {
		t.Fatal(err)
	}
	sink := jobs.WebhookSink(client, conf)
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

// TestWebhookReceiverDownTenSeconds sends events while the receiver is
// down (connection refused) for 10 s; with the production retry schedule
// (jobs.RetryDelay: 2 s, 4 s, 8 s, ...) every event arrives once it is back,
// each exactly once, validly signed, and no delivery dies.
func TestWebhookReceiverDownTenSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 10 s outage and the retries after it")
	}
	// t.Setenv: not parallel.
	t.Setenv("TIDEMARK_TEST_OUTAGE_SECRET", "0utage")
	const (
		outage  = 10 * time.Second
		nEvents = 20
	)
	// The receiver's address is reserved now and listened on only after
	// the outage: until then every attempt is refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rc := &receiver{deliveries: map[string]int{}, secret: "0utage"}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conf := &config.Config{Webhooks: []config.Webhook{
		{URL: "http://" + addr + "/hook", SecretEnv: "TIDEMARK_TEST_OUTAGE_SECRET", Events: []tidemark.EventType{"data.updated"}},
	}}
	redisOpt, client := startHookWorker(t, conf, testLogger(t))
	sink := jobs.WebhookSink(client, conf)
	down := time.Now()
	want := map[string]string{} // delivery id → body
	for i := range int64(nEvents) {
		id := 1000 + i
		data := fmt.Sprintf(`{"id":%d,"event":"data.updated","source":"shop","resource":"orders"}`, id)
		ev := events.Event{ID: id, Type: "data.updated", Source: "shop", Resource: "orders", Data: json.RawMessage(data)}
		if err := sink(ctx, ev); err != nil {
			t.Fatalf("sink event %d: %v", id, err)
		}
		want[jobs.DeliveryID(id, 0)] = data
	}

	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()
	// The outage is real: deliveries fail and wait for their retry.
	deadline := time.Now().Add(outage)
	for {
		retry, err := insp.ListRetryTasks("default")
		if err == nil && len(retry) == nEvents {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("during the outage: %d deliveries waiting for a retry (%v), want all %d", len(retry), err, nEvents)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition with a deadline
	}
	time.Sleep(time.Until(down.Add(outage))) // the outage itself: the receiver stays away for 10 s
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("receiver back on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: rc}
	go srv.Serve(l)
	defer srv.Close()
	back := time.Now()

	deadline = time.Now().Add(90 * time.Second)
	for {
		_, _, bodies := rc.snapshot()
		if len(bodies) >= nEvents {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the receiver returned: %d of %d events delivered", time.Since(back).Round(time.Second), len(bodies), nEvents)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition with a deadline
	}
	t.Logf("every event delivered %s after the receiver returned (%s after the first send)",
		time.Since(back).Round(100*time.Millisecond), time.Since(down).Round(100*time.Millisecond))
	// Nothing more trickles in: give straggling duplicates a moment to show.
	time.Sleep(time.Second) // a bounded look for extra deliveries, not synchronisation
	attempts, badSig, bodies := rc.snapshot()
	if badSig != 0 {
		t.Errorf("%d of %d deliveries badly signed", badSig, attempts)
	}
	got := map[string]bool{}
	for _, b := range bodies {
		got[b] = true
	}
	if len(bodies) != nEvents || len(got) != nEvents {
		t.Errorf("receiver got %d bodies (%d distinct), want each of the %d events once", len(bodies), len(got), nEvents)
	}
	rc.mu.Lock()
	for id, body := range want {
		if !got[body] {
			t.Errorf("event of delivery %s lost", id)
		}
		if n := rc.deliveries[id]; n != 1 {
			t.Errorf("delivery %s arrived %d times, want once", id, n)
		}
	}
	rc.mu.Unlock()
	if archived, err := insp.ListArchivedTasks("default"); err != nil || len(archived) != 0 {
		t.Errorf("dead deliveries after the receiver came back: %d (%v), want none", len(archived), err)
	}
}
