package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config sets what a bench run measures and where.
type Config struct {
	// Records is the size of the ticket_sales resource of workloads 1-3.
	// Default 1,000,000 (50,000 with Quick).
	Records int
	// ProbeTasks is how many probes (and bare asynq tasks) workload 4 runs.
	// Default 10,000 (3,000 with Quick).
	ProbeTasks int
	// Day is the real length of workload 5's compressed day. Default 3m
	// (40s with Quick).
	Day time.Duration
	// DayRecords is the initial size of each resource in workload 5.
	// Default 10,000 (2,000 with Quick).
	DayRecords int
	// FreshChanges is how many upstream changes workload 6 times to SSE.
	// Default 200 (60 with Quick).
	FreshChanges int
	// ScheduleResources is the largest schedule of workload 8; the others
	// are a tenth and a hundredth of it (at least 100). Default 100,000
	// (2,000 with Quick).
	ScheduleResources int
	// Parents is how many parent records workload 9's parent-child sync
	// has. Default 10,000 (2,000 with Quick).
	Parents int
	// Reps is how many times each side of a wall-clock ratio is measured,
	// interleaved, in one run; the table shows the median and the range.
	// Default 3.
	Reps int
	// Quick scales every workload down to a smoke run of a few minutes.
	Quick bool
	// Workloads selects workloads by number ("1,4"); empty runs all. 2, 3
	// and 7 need 1 and run with it.
	Workloads string
	// Concurrency is the worker's probe pool concurrency in workload 4 and
	// the bare asynq server's. Default 4 (the worker's probe pool default).
	Concurrency int
	// AdminDatabaseURL is where tidemark_bench_* databases are created.
	// Default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
	AdminDatabaseURL string
	// RedisAddr is the Redis server; a free database number 1..15 is
	// reserved as internal/testenv does. Default 127.0.0.1:6379.
	RedisAddr string
	// BinDir holds prebuilt tidemark and demo-upstream; empty builds them
	// with `go build` into a temporary directory.
	BinDir string
	// Results is the Markdown file the table is written to; empty writes none.
	Results string
	// ProfileDir, when set, receives a CPU profile of an in-process replay of
	// the first sync's hot path and a per-stage timing breakdown (see profile.go).
	ProfileDir string
	// Keep leaves the databases in place after the run.
	Keep bool
}

func (c *Config) setDefaults() {
	if c.Quick {
		c.Records = cmp.Or(c.Records, 50_000)
		c.ProbeTasks = cmp.Or(c.ProbeTasks, 3_000)
		c.Day = cmp.Or(c.Day, 40*time.Second)
		c.DayRecords = cmp.Or(c.DayRecords, 2_000)
		c.FreshChanges = cmp.Or(c.FreshChanges, 60)
		c.ScheduleResources = cmp.Or(c.ScheduleResources, 2_000)
		c.Parents = cmp.Or(c.Parents, 2_000)
	}
	c.Parents = cmp.Or(c.Parents, 10_000)
	c.Records = cmp.Or(c.Records, 1_000_000)
	c.ProbeTasks = cmp.Or(c.ProbeTasks, 10_000)
	c.Day = cmp.Or(c.Day, 3*time.Minute)
	c.DayRecords = cmp.Or(c.DayRecords, 10_000)
	c.FreshChanges = cmp.Or(c.FreshChanges, 200)
	c.ScheduleResources = cmp.Or(c.ScheduleResources, 100_000)
	c.Concurrency = cmp.Or(c.Concurrency, 4)
	c.Reps = cmp.Or(c.Reps, 3)
	c.AdminDatabaseURL = cmp.Or(c.AdminDatabaseURL, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	c.RedisAddr = cmp.Or(c.RedisAddr, "127.0.0.1:6379")
}

func (c *Config) want(n int) bool {
	if c.Workloads == "" {
		return true
	}
	for f := range strings.SplitSeq(c.Workloads, ",") {
		if strings.TrimSpace(f) == fmt.Sprint(n) {
			return true
		}
	}
	return false
}

// Row is one line of the results table.
type Row struct {
	ID       string
	Workload string
	Tidemark string // what tidemark measured
	Baseline string // what the baseline measured
	Ratio    string // the figure the target is about
	Target   string
	// Met is whether the target is met; nil when the row has no target.
	Met *bool
}

// Report is the outcome of a bench run.
type Report struct {
	Rows  []Row
	Notes []string
	Began time.Time
	Took  time.Duration
	CPUs  int
	Model string
	Flags string
}

func met(ok bool) *bool { return &ok }

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# tidemark bench results\n\n")
	fmt.Fprintf(&b, "- date: %s\n", r.Began.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "- machine: %d CPUs (runtime.NumCPU), model %q, %s/%s, %s\n", r.CPUs, r.Model, runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(&b, "- run: `tidemark-bench %s`, took %s\n\n", r.Flags, r.Took.Round(time.Second))
	b.WriteString(Table(r.Rows))
	if len(r.Notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// Table renders rows as a Markdown table, in workload order (the workloads
// run in another order: 7 is measured with 1).
func Table(rows []Row) string {
	rows = slices.Clone(rows)
	slices.SortStableFunc(rows, func(a, b Row) int {
		x, _ := strconv.Atoi(a.ID)
		y, _ := strconv.Atoi(b.ID)
		return cmp.Compare(x, y)
	})
	var b strings.Builder
	b.WriteString("| # | workload | tidemark | baseline (same run) | ratio | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		m := "-"
		if r.Met != nil {
			m = "no"
			if *r.Met {
				m = "yes"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.ID, r.Workload, r.Tidemark, r.Baseline, r.Ratio, r.Target, m)
	}
	return b.String()
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAvg is the 1-minute load average (Linux), "unknown" elsewhere.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

// env is what the workloads share.
type env struct {
	cfg    Config
	bin    string // directory of tidemark and demo-upstream
	tmp    string
	redis  *redisDB
	log    io.Writer
	report *Report
}

func (e *env) tidemark() string { return filepath.Join(e.bin, "tidemark") }
func (e *env) upstream() string { return filepath.Join(e.bin, "demo-upstream") }

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (e *env) note(format string, args ...any) {
	e.report.Notes = append(e.report.Notes, fmt.Sprintf(format, args...))
}

// Run runs the selected workloads and returns the report; progress goes to
// log. A workload that fails is reported in the notes and the others still
// run; the error lists every failure.
func Run(ctx context.Context, cfg Config, flags string, log io.Writer) (*Report, error) {
	cfg.setDefaults()
	rep := &Report{Began: time.Now(), CPUs: runtime.NumCPU(), Model: cpuModel(), Flags: flags}
	tmp, err := os.MkdirTemp("", "tidemark-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	e := &env{cfg: cfg, bin: cfg.BinDir, tmp: tmp, log: log, report: rep}
	if e.bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return nil, err
		}
		e.bin = filepath.Join(tmp, "bin")
		e.logf("building tidemark and demo-upstream into %s", e.bin)
		if err := build(ctx, root, e.bin); err != nil {
			return nil, err
		}
	}
	if e.redis, err = reserveRedis(ctx, cfg.RedisAddr); err != nil {
		return nil, err
	}
	defer e.redis.release(context.WithoutCancel(ctx))
	e.logf("using Redis db %d, Postgres %s (databases %s*)", e.redis.n, redactURL(cfg.AdminDatabaseURL), databasePrefix)

	loadStart := loadAvg()
	var errs []error
	step := func(name string, fn func(context.Context) error) {
		if ctx.Err() != nil {
			return
		}
		if err := e.redis.flush(ctx); err != nil {
			errs = append(errs, err)
			return
		}
		began := time.Now()
		e.logf("workload %s: start", name)
		if err := fn(ctx); err != nil {
			e.logf("workload %s: FAILED: %v", name, err)
			e.note("workload %s failed: %v", name, err)
			errs = append(errs, fmt.Errorf("workload %s: %w", name, err))
			return
		}
		e.logf("workload %s: done in %s", name, time.Since(began).Round(time.Second))
		e.note("workload %s took %s of wall time (setup included).", name, time.Since(began).Round(time.Second))
	}
	if cfg.want(1) || cfg.want(2) || cfg.want(3) || cfg.want(7) {
		step("1-3, 7 (sync, memory)", e.syncWorkloads)
	}
	if cfg.want(4) {
		step("4 (probes)", e.probeWorkload)
	}
	if cfg.want(5) {
		step("5 (API economy)", e.economyWorkload)
	}
	if cfg.want(6) {
		step("6 (freshness)", e.freshnessWorkload)
	}
	if cfg.want(8) {
		step("8 (scale of the schedule)", e.scheduleWorkload)
	}
	if cfg.want(9) {
		step("9 (parent-child partitions)", e.partitionsWorkload)
	}
	if cfg.ProfileDir != "" {
		step("profile", e.profile)
		step("profile (probes)", e.profileProbes)
	}
	rep.Took = time.Since(rep.Began)
	e.note("load average (1 min) at the start %s, at the end %s: other processes on the machine share its %d CPUs, and every ratio above compares figures taken under the same load.", loadStart, loadAvg(), rep.CPUs)
	if cfg.Results != "" {
		if err := os.WriteFile(cfg.Results, []byte(rep.Markdown()), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", cfg.Results, err))
		}
	}
	return rep, errors.Join(errs...)
}

// ratio formats a/b.
func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// thousands formats n with thin separators: 1,000,000.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i, c := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
