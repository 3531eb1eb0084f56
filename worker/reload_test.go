package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/worker"
)

// TestRemovedResourceTasksDropped: a probe or fetch queued for a resource a
// reload has removed completes as a no-op (its handler returns no error:
// no run, never dead), after the worker has looked at the config file once
// more; when that look finds the resource (the scheduler reloaded first),
// the task runs.
func TestRemovedResourceTasksDropped(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 7, Records: 50})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	full := demoConfig(t, srv.URL)
	conf := demoConfig(t, srv.URL)
	conf.Sources[0].Resources = slices.DeleteFunc(conf.Sources[0].Resources, func(r config.Resource) bool { return r.Name == "ticket_sales" })
	live := config.NewLive(conf)
	var refreshes atomic.Int64
	var adopt atomic.Bool
	w := workertest.New(t, live, worker.Config{Concurrency: 2, Refresh: func() bool {
		refreshes.Add(1)
		if adopt.Load() {
			live.Store(full)
			return true
		}
		return false
	}})
	res := full.Source("demo").Resource("ticket_sales")
	probe, _ := jobs.NewProbe(jobs.ProbePayload{Source: "demo", Resource: "ticket_sales", Trigger: jobs.TriggerSchedule})
	if err := w.Work(t, probe, jobs.ProbeOptions(res)...); err != nil {
		t.Errorf("probe of a removed resource: %v, want it completed", err)
	}
	fetch, _ := jobs.NewFetch(jobs.FetchPayload{Source: "demo", Resource: "ticket_sales", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual})
	if err := w.Work(t, fetch, jobs.FetchOptions(res)...); err != nil {
		t.Errorf("fetch of a removed resource: %v, want it completed", err)
	}
	if n := refreshes.Load(); n != 2 {
		t.Errorf("%d looks at the config file, want one per task", n)
	}
	ctx := context.Background()
	if runs, _ := w.Store.Runs(ctx, store.RunFilter{Resource: "ticket_sales"}); len(runs) != 0 {
		t.Errorf("%d runs of a removed resource, want none", len(runs))
	}

	adopt.Store(true)
	if err := w.Work(t, fetch, jobs.FetchOptions(res)...); err != nil {
		t.Fatalf("fetch of a resource the file names: %v, want it completed", err)
	}
	runs, _ := w.Store.Runs(ctx, store.RunFilter{Resource: "ticket_sales"})
	if len(runs) != 1 || runs[0].Status != store.StatusSucceeded || runs[0].RecordsCreated != 50 {
		t.Errorf("runs after the config file named the resource: %+v, want one succeeded run of 50 records", runs)
	}
}

// TestReloadedSourceNewClient: a reload that moves a source to another base
// URL gets new tasks a client for it, while a fetch that began before
// finishes on the old client.
func TestReloadedSourceNewClient(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 7, Records: 300}) // three pages of ticket_sales
	held, release := make(chan struct{}), make(chan struct{})
	var holdOnce, releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var oldHits, newHits atomic.Int64
	oldSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oldHits.Add(1)
		if r.URL.Query().Get("starting_after") != "" {
			holdOnce.Do(func() { close(held); <-release }) // the second page, once
		}
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(oldSrv.Close)
	newSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		newHits.Add(1)
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(newSrv.Close)

	live := config.NewLive(demoConfig(t, oldSrv.URL))
	w := workertest.New(t, live, worker.Config{Concurrency: 2})
	fetched := make(chan error, 1)
	go func() {
		fetched <- w.Fetch(t, jobs.FetchPayload{Source: "demo", Resource: "ticket_sales", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual})
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the fetch did not ask for its second page within 30s")
	}
	live.Store(demoConfig(t, newSrv.URL))
	releaseOnce.Do(func() { close(release) })
	if err := <-fetched; err != nil {
		t.Fatalf("the fetch begun before the reload: %v", err)
	}
	if n := newHits.Load(); n != 0 {
		t.Errorf("the fetch begun before the reload sent %d requests to the new base URL, want all to the old", n)
	}
	if n := oldHits.Load(); n < 3 {
		t.Errorf("%d requests to the old base URL, want the fetch's three pages", n)
	}

	if err := w.Fetch(t, jobs.FetchPayload{Source: "demo", Resource: "ticket_sales", Mode: tidemark.RunFull, Trigger: jobs.TriggerManual}); err != nil {
		t.Fatalf("the fetch after the reload: %v", err)
	}
	if n := newHits.Load(); n == 0 {
		t.Error("the fetch after the reload sent nothing to the new base URL")
	}
}

// TestAbandonedRunOfRemovedResourceEnds: a fetch whose worker died after
// its resource was removed (its run running, its lock lapsed) is ended by
// the takeover check, not left running for ever.
func TestAbandonedRunOfRemovedResourceEnds(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 7, Records: 10})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	w := workertest.Start(t, demoConfig(t, srv.URL), worker.Config{Concurrency: 1, TakeoverCheck: 50 * time.Millisecond})
	ctx := context.Background()
	run := store.Run{Source: "demo", Resource: "gone", Kind: tidemark.RunFull, Trigger: jobs.TriggerSchedule, TaskID: "died", Attempt: 1}
	if err := w.Store.StartRun(ctx, &run); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the abandoned run ended", func() (bool, string) {
		got, err := w.Store.Run(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Status == store.StatusInterrupted, got.Status + " " + got.Error
	})
}

// TestRemovedWebhookDeliveryDropped: a delivery queued for a webhook a
// reload has removed completes (its handler returns no error) without
// posting, rather than dying.
func TestRemovedWebhookDeliveryDropped(t *testing.T) {
	t.Parallel()
	var posts atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { posts.Add(1) }))
	t.Cleanup(hook.Close)
	w := workertest.New(t, demoConfig(t, "http://127.0.0.1:1"), worker.Config{Concurrency: 1}) // no webhooks
	id := jobs.DeliveryID(7, 0)
	task, err := jobs.NewWebhook(jobs.WebhookPayload{Webhook: 0, URLID: jobs.WebhookURLID(hook.URL), DeliveryID: id, Event: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Work(t, task, jobs.WebhookOptions(id)...); err != nil {
		t.Errorf("delivery to a removed webhook: %v, want it completed", err)
	}
	if n := posts.Load(); n != 0 {
		t.Errorf("%d posts to a removed webhook", n)
	}
}
