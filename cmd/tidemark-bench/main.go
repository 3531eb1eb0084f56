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

// parse reads the command line into a bench configuration; the error is
// flag.ErrHelp for -h, or a usage error already written to stderr.
func parse(args []string, stderr io.Writer) (bench.Config, error) {
	var c bench.Config
	fs := flag.NewFlagSet("tidemark-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.Quick, "quick", false, "smoke run: every workload scaled down (a few minutes; workload 9 is the longest)")
	fs.IntVar(&c.Records, "records", 0, "ticket_sales records of workloads 1-3 (default 1000000, 50000 with --quick)")
	fs.IntVar(&c.ProbeTasks, "probes", 0, "probes of workload 4 (default 10000, 3000 with --quick)")
	fs.DurationVar(&c.Day, "day", 0, "real length of workload 5's compressed day (default 3m, 40s with --quick)")
	fs.IntVar(&c.DayRecords, "day-records", 0, "records per resource in workload 5 (default 10000, 2000 with --quick)")
	fs.IntVar(&c.FreshChanges, "fresh-changes", 0, "upstream changes timed to SSE in workload 6 (default 200, 60 with --quick)")
	fs.IntVar(&c.ScheduleResources, "schedule-resources", 0, "configured resources of workload 8's largest schedule; the others are a tenth and a hundredth, at least 100 (default 100000, 2000 with --quick)")
	fs.IntVar(&c.Parents, "parents", 0, "parent records of workload 9's parent-child sync (default 10000, 2000 with --quick)")
	fs.IntVar(&c.Reps, "reps", 0, "times each side of a wall-clock ratio is measured, interleaved; the table shows the median and range (default 3)")
	fs.StringVar(&c.Workloads, "workloads", "", "workloads to run, e.g. 1,4 (default all; 2, 3 and 7 run with 1)")
	fs.IntVar(&c.Concurrency, "probe-concurrency", 0, "worker probe pool and bare asynq concurrency in workload 4 (default 4)")
	fs.StringVar(&c.AdminDatabaseURL, "admin-database-url", os.Getenv("TIDEMARK_BENCH_DATABASE_URL"), "Postgres URL bench databases are created from (TIDEMARK_BENCH_DATABASE_URL; default postgres://postgres@127.0.0.1:5432/postgres)")
	fs.StringVar(&c.RedisAddr, "redis-addr", os.Getenv("TIDEMARK_BENCH_REDIS_ADDR"), "Redis host:port (TIDEMARK_BENCH_REDIS_ADDR; default 127.0.0.1:6379)")
	fs.StringVar(&c.BinDir, "bin", "", "directory with prebuilt tidemark and demo-upstream (default: go build into a temporary directory)")
	fs.StringVar(&c.Results, "out", "bench/results.md", "Markdown file the results are written to (\"\" for none; with -workloads, none unless given)")
	fs.StringVar(&c.ProfileDir, "profile", "", "also replay the first sync's hot path in-process, stage by stage, with a CPU profile written to this directory")
	fs.BoolVar(&c.Keep, "keep", false, "keep the tidemark_bench_* databases after the run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tidemark-bench: unexpected argument %q\n", fs.Arg(0))
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.Workloads != "" && !flagSet(fs, "out") {
		// The file holds every workload's row: a run of some of them
		// would replace it with theirs alone.
		c.Results = ""
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
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

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
