// Package demoapi is the demo upstream API: a deterministic, in-memory HTTP
// service that stands in for a user's ticketing, inventory, payments,
// settlement and tax systems. It owns the data model of the five demo
// resources, their five pagination and change-metadata styles, the test
// endpoints (/_stats, /_stats/reset, /_mutate, /_faults) and the fault
// injection (rate limit, failures, latency, and the hostile fault modes of
// faults.go: resets, truncated, malformed, endless, bomb and trickling
// bodies, broken records, redirects). docs/demo-upstream.md is its specification.
//
// A record is held as a few bytes of state (version, updated_at, deleted);
// its JSON is generated from (seed, resource, id, version) when it is served,
// so a server can hold millions of records per resource.
//
// cmd/demo-upstream runs a Server as a process; tests mount one with
// net/http/httptest.
package demoapi
