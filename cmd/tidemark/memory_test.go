package main

import (
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

// maxWorkerRSS is the peak resident memory a worker may reach while its
// upstreams send a gzip bomb and an endless body.
const maxWorkerRSS = 200 << 20

// TestWorkerMemoryBoundedByHostileBodies runs a worker process over three
// sources: one answers with a gzip bomb (1 MiB that inflates to 1 GiB), one
// with an endless body, one normally. Each hostile read fails (dead)
// naming max_body and commits nothing; meanwhile the good source syncs,
// twice; the worker's peak RSS (VmHWM) stays under 200 MB.
func TestWorkerMemoryBoundedByHostileBodies(t *testing.T) {
	t.Parallel()
	serve := func(opts demoapi.Options) (*demoapi.Server, string) {
		up := demoapi.New(opts)
		srv := httptest.NewServer(up)
		t.Cleanup(srv.Close)
		return up, srv.URL
	}
	_, bombURL := serve(demoapi.Options{Seed: 1, Records: 100, Fault: demoapi.FaultSpec{Mode: demoapi.FaultGzipBomb}})
	_, endlessURL := serve(demoapi.Options{Seed: 2, Records: 100, Fault: demoapi.FaultSpec{Mode: demoapi.FaultEndless}})
	good, goodURL := serve(demoapi.Options{Seed: 3, Records: 1000, Latency: 20 * time.Millisecond})
	// max_body 16 MiB: the worker holds at most one body of that size per
	// task in flight. The timeout is generous so that max_body, not the
	// clock, stops the hostile bodies even on a loaded machine.
	hostile := func(name, url string) string {
		return strings.Replace(ticketSalesYAML(name, url, true, 100, "    max_body: 16MiB\n"), "timeout: 5s", "timeout: 60s", 1)
	}
	r := newRig(t,
		hostile("mem_bomb", bombURL)+hostile("mem_endless", endlessURL)+
			ticketSalesYAML("mem_good", goodURL, true, 100, ""),
		testenv.Database(t), testenv.Redis(t))
	worker := start(t, "worker", r.env, r.bin, "worker")
	for _, s := range []string{"mem_bomb", "mem_endless", "mem_good"} {
		r.sync(s + "/ticket_sales")
	}
	r.waitRun("mem_good", 60*time.Second, func(run store.Run) bool { return run.Status == store.StatusSucceeded })
	for _, tc := range []struct{ source, cause string }{
		{"mem_bomb", "exceeds max_body (16777216 bytes, after gzip decompression)"},
		{"mem_endless", "exceeds max_body (16777216 bytes)"},
	} {
		// A bad response is permanent: the run is dead, not retried.
		wait(t, 60*time.Second, tc.source+" failing", func() (bool, string) {
			n := r.count(`SELECT count(*) FROM sync_runs WHERE source = ? AND status IN ('failed', 'dead')`, tc.source)
			return n >= 1, fmt.Sprintf("%d failed runs", n)
		})
		for _, run := range r.runs(tc.source) {
			if run.Status == store.StatusSucceeded || (run.Status != store.StatusRunning && !strings.Contains(run.Error, tc.cause)) {
				t.Errorf("%s run %d: %s %q, want failed naming %q", tc.source, run.ID, run.Status, run.Error, tc.cause)
			}
		}
		if n := r.count(`SELECT count(*) FROM records WHERE source = ?`, tc.source); n != 0 {
			t.Errorf("%s: %d records committed from a hostile body", tc.source, n)
		}
	}
	// Still serving: a second sync of the good source while the hostile
	// ones are read again.
	first := r.runs("mem_good")[0].ID
	r.sync("mem_bomb/ticket_sales")
	r.sync("mem_endless/ticket_sales")
	r.sync("mem_good/ticket_sales")
	r.waitRun("mem_good", 60*time.Second, func(run store.Run) bool { return run.ID > first && run.Status == store.StatusSucceeded })
	r.assertMirrors("mem_good", good)
	for _, s := range []string{"mem_bomb", "mem_endless"} {
		wait(t, 60*time.Second, s+" failing again", func() (bool, string) {
			n := r.count(`SELECT count(*) FROM sync_runs WHERE source = ? AND status IN ('failed', 'dead')`, s)
			return n >= 2, fmt.Sprintf("%d failed runs", n)
		})
	}

	if worker.exited() {
		t.Fatal("the worker died")
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", worker.cmd.Process.Pid))
	if err != nil {
		t.Skipf("no /proc status for the worker: %v", err)
	}
	peak := -1
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			peak, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			peak <<= 10
		}
	}
	if peak < 0 {
		t.Fatalf("no VmHWM in /proc status:\n%s", status)
	}
	t.Logf("worker peak RSS (VmHWM) %.1f MB", float64(peak)/(1<<20))
	if peak >= maxWorkerRSS {
		t.Errorf("worker peak RSS %.1f MB, want under %d MB", float64(peak)/(1<<20), maxWorkerRSS>>20)
	}
}
