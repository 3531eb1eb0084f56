// Package bench is tidemark's benchmark harness (`make bench`): it builds
// tidemark and demo-upstream, runs them as real processes against databases
// of its own (tidemark_bench_*) and a reserved Redis database, and measures
// each workload against a baseline taken in the same run, so that every
// figure it reports is a ratio on the same noisy machine. Each side of a
// wall-clock ratio is measured Config.Reps times, the sides taking turns,
// and reported as the median with its range (see repeat.go).
//
// The workloads (issue 8): the first full sync of a large ticket_sales
// resource against a COPY of the same rows; an unchanged full resync; a 1%
// changed resync; probe throughput against bare asynq no-op tasks; and the
// API economy of a compressed day against a naive poller.
package bench
