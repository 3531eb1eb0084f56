package worker

import (
	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark/jobs"
)

// muxes are the handlers of the fetch pool (fetches, webhook deliveries)
// and of the probe pool, each behind its middleware: what Run serves and
// what Work runs, so that a test's task meets the same chain.
func (w *Worker) muxes() (fetches, probes *asynq.ServeMux) {
	fetches = asynq.NewServeMux()
	fetches.Use(w.track, w.classify)
	fetches.Handle(jobs.TypeFetch, w.dropUnconfigured(w.handBack(fetchHandler{w})))
	fetches.Handle(jobs.TypeWebhook, webhookHandler{w})
	probes = asynq.NewServeMux()
	probes.Use(w.track, w.classify)
	probes.Handle(jobs.TypeProbe, w.dropUnconfigured(w.handBack(probeHandler{w})))
	return fetches, probes
}
