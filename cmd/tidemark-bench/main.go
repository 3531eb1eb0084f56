// Command tidemark-bench runs tidemark's benchmark (`make bench`): it builds
// tidemark and demo-upstream, runs them as real processes against their own
// databases, and prints the results table (also written to bench/results.md).
// The workloads live in package bench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tidemark/tidemark/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c bench.Config
	fs := flag.NewFlagSet("tidemark-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.Quick, "quick", false, "smoke run: every workload scaled down (under two minutes)")
	fs.IntVar(&c.Records, "records", 0, "ticket_sales records of workloads 1-3 (default 1000000, 50000 with --quick)")
	fs.IntVar(&c.ProbeTasks, "probes", 0, "probes of workload 4 (default 10000, 3000 with --quick)")
	fs.DurationVar(&c.Day, "day", 0, "real length of workload 5's compressed day (default 3m, 40s with --quick)")
	fs.IntVar(&c.DayRecords, "day-records", 0, "records per resource in workload 5 (default 10000, 2000 with --quick)")
	fs.IntVar(&c.FreshChanges, "fresh-changes", 0, "upstream changes timed to SSE in workload 6 (default 200, 60 with --quick)")
	fs.IntVar(&c.ScheduleResources, "schedule-resources", 0, "configured resources of workload 8's larger schedule; the smaller is a tenth (default 10000, 2000 with --quick)")
	fs.IntVar(&c.Parents, "parents", 0, "parent records of workload 9's parent-child sync (default 10000, 2000 with --quick)")
	fs.StringVar(&c.Workloads, "workloads", "", "workloads to run, e.g. 1,4 (default all; 2, 3 and 7 run with 1)")
	fs.IntVar(&c.Concurrency, "probe-concurrency", 0, "worker probe pool and bare asynq concurrency in workload 4 (default 4)")
	fs.StringVar(&c.AdminDatabaseURL, "admin-database-url", os.Getenv("TIDEMARK_BENCH_DATABASE_URL"), "Postgres URL bench databases are created from (TIDEMARK_BENCH_DATABASE_URL; default postgres://postgres@127.0.0.1:5432/postgres)")
	fs.StringVar(&c.RedisAddr, "redis-addr", os.Getenv("TIDEMARK_BENCH_REDIS_ADDR"), "Redis host:port (TIDEMARK_BENCH_REDIS_ADDR; default 127.0.0.1:6379)")
	fs.StringVar(&c.BinDir, "bin", "", "directory with prebuilt tidemark and demo-upstream (default: go build into a temporary directory)")
	fs.StringVar(&c.Results, "out", "bench/results.md", "Markdown file the results are written to (\"\" for none)")
	fs.StringVar(&c.ProfileDir, "profile", "", "also replay the first sync's hot path in-process, stage by stage, with a CPU profile written to this directory")
	fs.BoolVar(&c.Keep, "keep", false, "keep the tidemark_bench_* databases after the run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tidemark-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	rep, err := bench.Run(ctx, c, strings.Join(args, " "), stderr)
	if rep != nil {
		fmt.Fprint(stdout, rep.Markdown())
	}
	if err != nil {
		fmt.Fprintln(stderr, "tidemark-bench:", err)
		return 1
	}
	return 0
}
