// Package metrics owns tidemark's Prometheus metrics: the counters and
// histograms every role updates with one-line calls (runs, records changed,
// upstream requests, probes, drift, rate-limit waits), registered on
// Registry, and the collectors only the server role registers, which read
// shared state at scrape time (freshness lag from sync_state, asynq queue
// sizes from Redis), so that every server replica reports the same fleet-wide
// truth and workers do not report queues once each.
//
// Labels are bounded: source, resource, kind, status, op, result, HTTP code
// class and queue names, never record ids, task ids or URLs.
package metrics
