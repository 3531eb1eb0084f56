package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tidemark/tidemark/internal/testenv"
)

// chromiumPath is Debian's Chromium; .ci/run installs it.
const chromiumPath = "/usr/bin/chromium"

// demoRecords per resource keeps the initial full reads short.
const demoRecords = 50

// demoFleet is `tidemark run` (scheduler, worker, server in one process)
// syncing the five demo resources from a demo-upstream process, every probe
// on a 1 s interval.
type demoFleet struct {
	t        *testing.T
	addr     string // tidemark's server
	upstream string // http://host:port of demo-upstream
	token    string // the admin token, if extraEnv set one
}

// probeEvery is the probe interval the demo fleet's config sets everywhere.
const probeEvery = time.Second

// startDemoFleet starts the fleet; extraEnv adds to tidemark's environment.
func startDemoFleet(t *testing.T, extraEnv ...string) *demoFleet {
	t.Helper()
	tidemark, upstream := binaries(t)
	demo, err := os.ReadFile("../../examples/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Every probe (and its adaptive back-off ceiling) at 1 s.
	probeLine := regexp.MustCompile(`(?m)^\s*probe: \{.*\}$`)
	every := regexp.MustCompile(`(max_)?every: \w+`)
	conf := probeLine.ReplaceAllFunc(demo, func(line []byte) []byte {
		return every.ReplaceAll(line, []byte("${1}every: 1s"))
	})
	if n := bytes.Count(conf, []byte("every: 1s")); n < 5 {
		t.Fatalf("demo config: %d probes set to 1s, want 5 (did examples/demo.yaml change shape?)", n)
	}
	confPath := filepath.Join(t.TempDir(), "tidemark.yaml")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	upAddr, addr := freeAddr(t), freeAddr(t)
	start(t, "demo-upstream", nil, upstream, "--addr", upAddr, "--records", fmt.Sprint(demoRecords))
	waitTCP(t, upAddr)
	env := []string{
		"TIDEMARK_CONFIG=" + confPath,
		"TIDEMARK_DATABASE_URL=" + testenv.Database(t),
		"TIDEMARK_REDIS_URL=" + testenv.Redis(t),
		"DEMO_UPSTREAM_URL=http://" + upAddr,
		"TIDEMARK_ADDR=" + addr,
		"TIDEMARK_SHUTDOWN_TIMEOUT=2s",
	}
	env = append(env, extraEnv...)
	start(t, "tidemark run", env, tidemark, "run")
	waitTCP(t, addr)
	f := &demoFleet{t: t, addr: addr, upstream: "http://" + upAddr}
	for _, kv := range extraEnv {
		if v, ok := strings.CutPrefix(kv, "TIDEMARK_ADMIN_TOKEN="); ok {
			f.token = v
		}
	}
	// The first full reads: every resource holds the upstream's records.
	wait(t, 60*time.Second, "initial sync of the five demo resources", func() (bool, string) {
		var views []struct {
			Source, Resource string
			Records          int64
		}
		if err := f.getJSON("/api/resources", &views); err != nil {
			return false, err.Error()
		}
		synced := 0
		for _, v := range views {
			if v.Records == demoRecords {
				synced++
			}
		}
		return len(views) == 5 && synced == 5, fmt.Sprintf("%+v", views)
	})
	return f
}

func (f *demoFleet) getJSON(path string, v any) error {
	req, _ := http.NewRequest("GET", "http://"+f.addr+path, nil)
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// mutation is demo-upstream's answer to POST /_mutate.
type mutation struct {
	Created []string `json:"created"`
	Updated []string `json:"updated"`
	Deleted []string `json:"deleted"`
}

// mutate forces a change upstream now (POST /_mutate).
func (f *demoFleet) mutate(body string) mutation {
	f.t.Helper()
	resp, err := http.Post(f.upstream+"/_mutate", "application/json", strings.NewReader(body))
	if err != nil {
		f.t.Fatalf("POST /_mutate %s: %v", body, err)
	}
	defer resp.Body.Close()
	var m mutation
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		f.t.Fatalf("POST /_mutate %s: HTTP %d: %s", body, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		f.t.Fatalf("POST /_mutate %s: %v", body, err)
	}
	return m
}

// browser starts headless Chromium, or skips the test when it is absent.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("the browser test needs Debian's chromium at %s (apt-get install chromium; .ci/run installs it): %v", chromiumPath, err)
	}
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Skipf("%s is not executable: %v", chromiumPath, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	// Start the browser now, so that a broken install fails here, clearly.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// eval runs a JavaScript expression in the page with a short deadline.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitPage polls a JavaScript condition in the page until it is true.
func waitPage(t *testing.T, ctx context.Context, within time.Duration, what, js string) time.Duration {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(within)
	for {
		if eval[bool](t, ctx, js) {
			return time.Since(begin)
		}
		if time.Now().After(deadline) {
			body := eval[string](t, ctx, `document.body.innerText`)
			t.Fatalf("%s: not within %s (condition %s); page:\n%s", what, within, js, body)
		}
		time.Sleep(50 * time.Millisecond) // polling the page
	}
}

// TestDashboardInBrowser drives the dashboard in headless Chromium against
// `tidemark run` and demo-upstream: it shows the five resources; a change
// forced upstream appears on the open page within probe.every + 2 s, with no
// reload; "sync now" brings a new run row; /monitoring/ renders Asynqmon
// with tidemark's queues. It saves the dashboard to docs/dashboard.png.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	f := startDemoFleet(t)
	base := "http://" + f.addr

	// The five resources, each with its records, and the live stream open.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	resources := []string{"ticket_sales", "inventory_movements", "transactions", "settlements", "tax_summaries"}
	for _, r := range resources {
		waitPage(t, ctx, 10*time.Second, "dashboard row demo/"+r, fmt.Sprintf(
			`(() => { const tr = document.querySelector('#resources tr[data-key="demo/%s"]'); return !!tr && tr.children[3].textContent.trim() === "%d"; })()`,
			r, demoRecords))
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#resources tbody tr").length`); n != len(resources) {
		t.Errorf("dashboard shows %d resource rows, want %d", n, len(resources))
	}
	waitPage(t, ctx, 10*time.Second, "event stream connected", `document.querySelector("#conn").textContent === "live"`)

	// A marker on window survives only if the page is never reloaded.
	eval[bool](t, ctx, `(window.__noReload = true)`)

	// A change forced upstream: one created ticket sale. The page must show
	// the new record count and the event in the live feed.
	feedBefore := eval[int](t, ctx, `document.querySelectorAll("#feed li").length`)
	m := f.mutate(`{"resource":"ticket_sales","creates":1}`)
	if len(m.Created) != 1 {
		t.Fatalf("mutate: %+v, want one created record", m)
	}
	took := waitPage(t, ctx, probeEvery+2*time.Second, "forced change on the open page", fmt.Sprintf(
		`(() => { const tr = document.querySelector('#resources tr[data-key="demo/ticket_sales"]');
		  const feed = [...document.querySelectorAll("#feed li")];
		  return tr.children[3].textContent.trim() === "%d" && feed.length > %d &&
		    feed.some(li => li.textContent.includes("demo/ticket_sales data.updated +1")); })()`,
		demoRecords+1, feedBefore))
	t.Logf("forced upstream change on the page after %s", took)
	if !eval[bool](t, ctx, `window.__noReload === true`) {
		t.Fatal("the page was reloaded")
	}

	// "sync now" on a resource: a new run row appears.
	maxRun := eval[int](t, ctx, `Math.max(0, ...[...document.querySelectorAll("#runs tr[data-run]")].map(tr => +tr.dataset.run))`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#resources tr[data-key="demo/tax_summaries"] button[data-act="sync"]`))); err != nil {
		t.Fatalf("press sync now: %v", err)
	}
	waitPage(t, ctx, 10*time.Second, `a new, finished run row after "sync now"`, fmt.Sprintf(
		`[...document.querySelectorAll("#runs tr[data-run]")].some(tr => +tr.dataset.run > %d &&
		   tr.children[1].textContent === "demo/tax_summaries" && tr.children[3].textContent === "manual" && tr.children[4].textContent === "succeeded") &&
		 document.querySelector('#resources tr[data-key="demo/tax_summaries"] .badge').textContent === "fresh"`, maxRun))
	if !eval[bool](t, ctx, `window.__noReload === true`) {
		t.Fatal("the page was reloaded")
	}

	// The screenshot for the README, once the feed has settled.
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile("../../docs/dashboard.png", png, 0o644); err != nil {
		t.Fatalf("save the screenshot: %v", err)
	}

	// Asynqmon, with tidemark's queues.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/monitoring/")); err != nil {
		t.Fatalf("open /monitoring/: %v", err)
	}
	queues := []string{"critical", "low", "probe_critical", "probe_low"}
	waitPage(t, ctx, 15*time.Second, "Asynqmon lists tidemark's queues", fmt.Sprintf(
		`(() => { const cells = [...document.querySelectorAll("table td, table th")].map(c => c.textContent.trim());
		   return %s.every(q => cells.includes(q)); })()`, jsArray(queues)))
}

// TestDashboardLoginInBrowser logs in through the form of a server with an
// admin token, in headless Chromium: the dashboard then goes live over SSE
// and Asynqmon opens with the session cookie alone, which page scripts
// cannot read; "log out" ends the session, and the dashboard sends the
// browser back to the form.
func TestDashboardLoginInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	const token = "br0wser-l0gin-t0ken"
	f := startDemoFleet(t, "TIDEMARK_ADMIN_TOKEN="+token)
	base := "http://" + f.addr
	// Each step that navigates waits for an element only the next page
	// has, so that no script runs in a page being replaced.
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	step("open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitReady(chromedp.CSS(`input[name=token]`)))
	waitPage(t, ctx, 10*time.Second, "the login form", `location.pathname === "/login"`)
	step("log in",
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), token),
		chromedp.Submit(chromedp.CSS(`input[name=token]`)),
		chromedp.WaitReady(chromedp.CSS(`#conn`)))
	waitPage(t, ctx, 15*time.Second, "the live dashboard after logging in",
		`location.pathname === "/" && document.querySelector("#conn").textContent === "live" && document.querySelectorAll("#resources tbody tr").length === 5`)
	if c := eval[string](t, ctx, `document.cookie`); strings.Contains(c, token) || strings.Contains(c, "tidemark_session") {
		t.Fatalf("page scripts can read %q: the session cookie must be HttpOnly and never hold the token", c)
	}

	step("open /monitoring/", chromedp.Navigate(base+"/monitoring/"))
	waitPage(t, ctx, 15*time.Second, "Asynqmon with the session cookie",
		`[...document.querySelectorAll("table td, table th")].some(c => c.textContent.trim() === "probe_critical")`)

	step("open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitReady(chromedp.CSS(`#conn`)))
	step("log out", chromedp.Click(chromedp.CSS(`form[action="/logout"] button`)), chromedp.WaitReady(chromedp.CSS(`input[name=token]`)))
	waitPage(t, ctx, 10*time.Second, "the login form after logging out", `location.pathname === "/login"`)
	step("open the dashboard after logging out", chromedp.Navigate(base+"/"), chromedp.WaitReady(chromedp.CSS(`input[name=token]`)))
	waitPage(t, ctx, 10*time.Second, "the dashboard refused after logging out", `location.pathname === "/login"`)
}

func jsArray(s []string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
