package jobs_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/jobs"
)

// TestWebhookSinkFollowsReload: the sink delivers each event to the
// webhooks of the config in force when it is handed the event.
func TestWebhookSinkFollowsReload(t *testing.T) {
	t.Parallel()
	parse := func(webhooks string) *config.Config {
		t.Helper()
		c, err := config.Parse("test.yaml", []byte(`sources:
  - name: s
    base_url: http://127.0.0.1:9000
    resources:
      - {name: r, path: /r, records: {id: id}}
`+webhooks))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	insp := asynq.NewInspector(redisOpt)
	defer insp.Close()
	live := config.NewLive(parse(""))
	sink := jobs.WebhookSink(client, live)
	ctx := context.Background()
	ev := events.Event{ID: 1, Type: tidemark.EventDataUpdated, Data: []byte(`{}`)}
	if err := sink(ctx, ev); err != nil {
		t.Fatal(err)
	}
	live.Store(parse("webhooks:\n  - {url: http://127.0.0.1:9100/hook}\n"))
	ev.ID = 2
	if err := sink(ctx, ev); err != nil {
		t.Fatal(err)
	}
	tasks, _ := insp.ListPendingTasks(config.PriorityDefault)
	if len(tasks) != 1 || tasks[0].ID != jobs.DeliveryID(2, 0) {
		t.Fatalf("pending deliveries %v, want one, of event 2 (after the reload added the webhook)", tasks)
	}
}
