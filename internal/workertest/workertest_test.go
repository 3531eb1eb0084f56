package workertest_test

import (
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/workertest"
	"github.com/tidemark/tidemark/worker"
)

// A test that ends right after Start (its tasks all run with Work) stops
// the worker before Run is past its start: that is no failure.
func TestStartThenEndAtOnce(t *testing.T) {
	t.Parallel()
	conf, err := config.Parse("start.yaml", []byte(`
sources:
  - name: s
    base_url: http://127.0.0.1:1
    allow_private: true
    resources:
      - name: r
        path: /r
        records: {path: data, id: id}
`))
	if err != nil {
		t.Fatal(err)
	}
	workertest.Start(t, conf, worker.Config{})
}
