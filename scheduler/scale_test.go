package scheduler_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/scheduler"
	"github.com/tidemark/tidemark/store"
)

// TestTickEnsuresStatesOfALargeConfig: a scheduler's first tick over more
// resources than one INSERT can carry parameters for (Postgres takes 65,535
// a statement, three a row) creates every resource's state row. Nothing is
// due (no probe, no full sync), so the tick only ensures and reads them.
func TestTickEnsuresStatesOfALargeConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const sources, perSource = 25, 1000 // 25,000 resources: 75,000 parameters in one statement
	var y strings.Builder
	y.WriteString("sources:\n")
	for i := range sources {
		fmt.Fprintf(&y, "  - name: s%d\n    base_url: http://127.0.0.1:9\n    allow_private: true\n    resources:\n", i)
		for j := range perSource {
			fmt.Fprintf(&y, "      - {name: r%d, path: /r, records: {id: id}}\n", j)
		}
	}
	c, err := config.Parse("large.yaml", []byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	redisOpt, err := asynq.ParseRedisURI(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(redisOpt)
	t.Cleanup(func() { client.Close() })

	s := scheduler.New(scheduler.Config{}, c, st, client, slog.New(slog.DiscardHandler))
	if err := s.Tick(ctx); err != nil {
		t.Fatalf("first tick over %d resources: %v", sources*perSource, err)
	}
	var n int64
	if err := st.DBForTests().Table("sync_state").Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != sources*perSource {
		t.Errorf("%d state rows after the first tick, want %d", n, sources*perSource)
	}
}
