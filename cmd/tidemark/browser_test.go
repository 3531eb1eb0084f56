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

	"github.com/tidemark/tidemark"
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
		// The width the dashboard must fit (issue 20): an on-call laptop.
		chromedp.WindowSize(1280, 900),
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
// with tidemark's queues. Asked to (see screenshot), it saves the dashboard
// to docs/dashboard.png.
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
	screenshot(t, ctx, "dashboard.png", chromedp.CaptureScreenshot())

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

// screenshotsEnv asks the browser tests to rewrite the screenshots in docs/.
// Without it they leave the tree alone, so `make test` keeps it clean. To
// regenerate them (and commit the PNGs):
//
//	TIDEMARK_SCREENSHOTS=1 go test ./cmd/tidemark -run 'InBrowser' -count=1
const screenshotsEnv = "TIDEMARK_SCREENSHOTS"

// screenshot saves what shot captures to docs/name, when screenshotsEnv is 1.
func screenshot(t *testing.T, ctx context.Context, name string, shot chromedp.Action[[]byte]) {
	t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("../../docs", name), png, 0o644); err != nil {
		t.Fatalf("save the screenshot: %v", err)
	}
	t.Logf("saved docs/%s", name)
}

// fault switches demo-upstream's injected fault (POST /_faults).
func (f *demoFleet) fault(body string) {
	f.t.Helper()
	resp, err := http.Post(f.upstream+"/_faults", "application/json", strings.NewReader(body))
	if err != nil {
		f.t.Fatalf("POST /_faults %s: %v", body, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		f.t.Fatalf("POST /_faults %s: HTTP %d: %s", body, resp.StatusCode, b)
	}
}

// click presses the element sel selects.
func click(t *testing.T, ctx context.Context, what, sel string) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(cctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("press %s: %v", what, err)
	}
}

// TestFailingResourceInBrowser makes one demo resource fail (its upstream
// answers 500) and follows it in headless Chromium at 1280 px: the cause is
// readable on the resource's own dashboard row (plain words, since when,
// attempts, what happens next) and the table fits the window; the runs list
// hides successful probes until asked; the resource page draws its four
// charts (uPlot canvases), shows the cause, and its buttons work: pause
// shows paused, resume schedules again, sync now enqueues a fetch. Asked to
// (see screenshot), it saves docs/dashboard-failing.png and
// docs/resource-page.png.
func TestFailingResourceInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	f := startDemoFleet(t)
	f.fault(`{"mode":"error_500","resource":"settlements"}`)
	f.mutate(`{"resource":"ticket_sales","creates":1}`) // a probe that sees a change: a successful probe run

	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+f.addr+"/")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	causeOnTheRow(t, ctx)
	quietProbesHidden(t, ctx)
	driftOfTheLastFullSync(t, ctx, f)
	screenshot(t, ctx, "dashboard-failing.png", chromedp.CaptureScreenshot())
	resourcePage(t, ctx, f)
}

// causeOnTheRow: the failing demo/settlements row says why, readable at
// 1280 px.
func causeOnTheRow(t *testing.T, ctx context.Context) {
	t.Helper()
	const row = `document.querySelector('#resources tr[data-key="demo/settlements"]')`
	waitPage(t, ctx, 20*time.Second, "the cause on the failing resource's row", `(() => { const c = `+row+`?.querySelector(".cause");
		return !!c && c.textContent.includes("the upstream failed (HTTP 500 Internal Server Error) at GET http://") &&
		  /since .*, \d+ attempts?; (next|dead|retrying)/.test(c.textContent); })()`)
	t.Logf("cause on the row: %s", eval[string](t, ctx, row+`.querySelector(".cause").textContent`))
	// Readable: inside the window, nothing scrolled sideways.
	if !eval[bool](t, ctx, `(() => { const r = `+row+`.querySelector(".cause").getBoundingClientRect(), sec = document.querySelector("#resources").closest("section");
		return innerWidth === 1280 && r.width > 0 && r.left >= 0 && r.right <= innerWidth &&
		  document.documentElement.scrollWidth <= innerWidth && sec.scrollWidth <= sec.clientWidth; })()`) {
		t.Errorf("at 1280 px the resources table does not fit (window %d, page %d, table section %d of %d wide)",
			eval[int](t, ctx, `innerWidth`), eval[int](t, ctx, `document.documentElement.scrollWidth`),
			eval[int](t, ctx, `document.querySelector("#resources").closest("section").scrollWidth`),
			eval[int](t, ctx, `document.querySelector("#resources").closest("section").clientWidth`))
	}

}

// quietProbesHidden: the runs list shows failed probes, and successful ones
// only when asked.
func quietProbesHidden(t *testing.T, ctx context.Context) {
	t.Helper()
	// The probes the dashboard hides by default: those that ended well. A
	// probe still running (its row exists between StartRun and FinishRun)
	// is shown, and is not one of them.
	const quiet = `[...document.querySelectorAll("#runs tr[data-run]")].filter(tr => tr.children[2].textContent === "probe" && ["succeeded", "not_modified"].includes(tr.children[4].textContent)).length`
	waitPage(t, ctx, 10*time.Second, "a failed probe of demo/settlements in the runs list",
		`[...document.querySelectorAll("#runs tr[data-run]")].some(tr => tr.children[1].textContent === "demo/settlements" && tr.children[4].textContent === "failed")`)
	if n := eval[int](t, ctx, quiet); n != 0 {
		t.Errorf("the runs list shows %d successful probe runs by default, want none", n)
	}
	click(t, ctx, "show successful probes", "#show-unchanged")
	waitPage(t, ctx, 10*time.Second, "successful probe runs after the toggle", quiet+` > 0`)
	click(t, ctx, "hide successful probes", "#show-unchanged")
	waitPage(t, ctx, 10*time.Second, "successful probe runs hidden again", quiet+` === 0`)

	// Toggled on and off quickly, with the answer to "on" slower than the
	// answer to "off" (as it was once in CI): the stale answer must not
	// draw over the newer one.
	eval[bool](t, ctx, `(() => { const real = window.fetch; window.slowAnswers = 0;
		window.fetch = async (url, opts) => { const res = await real(url, opts);
		  if (String(url).includes("/api/runs?limit=25")) { await new Promise(r => setTimeout(r, 700)); window.slowAnswers++; }
		  return res; };
		return true; })()`)
	jsClick(t, ctx, "show successful probes", "#show-unchanged")
	jsClick(t, ctx, "hide successful probes", "#show-unchanged")
	waitPage(t, ctx, 10*time.Second, "the slow answer to the first toggle", `window.slowAnswers >= 1`)
	if n := eval[int](t, ctx, quiet); n != 0 {
		t.Errorf("after a quick show-then-hide, the runs list shows %d successful probe runs: a stale answer drew over the newer one", n)
	}
}

// driftOfTheLastFullSync: the drift column shows the last full sync's drift.
func driftOfTheLastFullSync(t *testing.T, ctx context.Context, f *demoFleet) {
	t.Helper()
	// A full read of ticket_sales, then a delta (whose drift is null) after
	// a change upstream: the row's last run is the delta.
	type runs struct {
		Runs []struct {
			ID     int64
			Kind   string
			Status string
			Drift  *int64
		}
	}
	newest := func(kind tidemark.RunKind, after int64) (int64, *int64) {
		var r runs
		if err := f.getJSON("/api/runs?source=demo&resource=ticket_sales&status=succeeded&kind="+string(kind)+"&limit=1", &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Runs) == 0 || r.Runs[0].ID <= after {
			return 0, nil
		}
		return r.Runs[0].ID, r.Runs[0].Drift
	}
	before, _ := newest(tidemark.RunFull, 0)
	jsClick(t, ctx, "full sync of ticket_sales", `#resources tr[data-key="demo/ticket_sales"] button[data-act="sync?mode=full"]`)
	var full int64
	var drift *int64
	wait(t, 15*time.Second, "ticket_sales: the full read finished", func() (bool, string) {
		full, drift = newest(tidemark.RunFull, before)
		return full > 0, ""
	})
	if drift == nil {
		t.Fatalf("ticket_sales: full run %d recorded no drift", full)
	}
	f.mutate(`{"resource":"ticket_sales","creates":1}`)
	wait(t, 15*time.Second, "ticket_sales: a delta after the full read", func() (bool, string) {
		id, _ := newest(tidemark.RunDelta, full)
		return id > 0, ""
	})
	waitPage(t, ctx, 15*time.Second, "the drift column shows the last full read's drift with a delta as the last run", fmt.Sprintf(
		`(() => { const tr = document.querySelector('#resources tr[data-key="demo/ticket_sales"]');
		   return /^#\d+ delta/.test(tr.children[6].textContent) && tr.children[8].textContent.trim() === "%d"; })()`, *drift))
}

// jsClick presses a button of the dashboard's tables from inside the page:
// they are redrawn on every event, and a node looked up first may be gone by
// the time a click reaches it.
func jsClick(t *testing.T, ctx context.Context, what, sel string) {
	t.Helper()
	if !eval[bool](t, ctx, fmt.Sprintf(`(() => { const b = document.querySelector(%q); if (b) b.click(); return !!b; })()`, sel)) {
		t.Fatalf("press %s: no %s on the page", what, sel)
	}
}

// resourcePage: the failing resource's page, opened from its row's link,
// draws its charts and shows the cause; its buttons work.
func resourcePage(t *testing.T, ctx context.Context, f *demoFleet) {
	t.Helper()
	jsClick(t, ctx, "the resource's link", `#resources tr[data-key="demo/settlements"] a.res`)
	waitPage(t, ctx, 10*time.Second, "the resource page", `location.pathname === "/resources/demo/settlements"`)
	// The first load (audit.initial_load: summary, the default) is one
	// entry of the state, with its count and run.
	waitPage(t, ctx, 20*time.Second, "four charts drawn, the cause shown, the first load as one entry", fmt.Sprintf(`(() => {
		const canvases = [...document.querySelectorAll(".chart canvas")].filter(c => c.width > 0 && c.height > 0 && c.getBoundingClientRect().width > 0);
		const firstLoad = [...document.querySelectorAll("#state dt")].find(dt => dt.textContent === "first load");
		return canvases.length === 4 && !document.querySelector("#cause").hidden &&
		  document.querySelector("#cause").textContent.includes("HTTP 500 Internal Server Error") &&
		  document.querySelector("#state").textContent.includes("probe interval") &&
		  !!firstLoad && firstLoad.nextElementSibling.textContent.startsWith("%d records, run #"); })()`, demoRecords))
	if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 1280 {
		t.Errorf("the resource page is %d px wide in a 1280 px window", w)
	}
	if n := eval[int](t, ctx, `[...document.querySelectorAll("#runs tbody tr")].findIndex(tr => tr.children[3].textContent !== "failed" && tr.children[3].textContent !== "dead")`); n == 0 {
		t.Error("the resource page's runs do not list failures first")
	}
	// The whole page at 1280 px: a viewport as tall as the page, since a
	// full-page capture drops the scrollbar and lays the page out wider.
	if os.Getenv(screenshotsEnv) == "1" {
		h := eval[int](t, ctx, `document.documentElement.scrollHeight`)
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, int64(h))); err != nil {
			t.Fatal(err)
		}
		waitPage(t, ctx, 5*time.Second, "the charts laid out again", `[...document.querySelectorAll(".chart")].every(c => c.querySelector(".uplot").getBoundingClientRect().right <= c.getBoundingClientRect().right)`)
		screenshot(t, ctx, "resource-page.png", chromedp.CaptureScreenshot())
		if err := chromedp.Do(ctx, chromedp.EmulateReset()); err != nil {
			t.Fatal(err)
		}
	}

	click(t, ctx, "pause", "#pause")
	waitPage(t, ctx, 10*time.Second, "paused after pressing pause",
		`document.querySelector("#health").textContent === "paused" && document.querySelector("#pause").textContent === "resume"`)
	var views []struct {
		Resource string
		State    struct{ Paused bool }
	}
	if err := f.getJSON("/api/resources", &views); err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if v.Resource == "settlements" && !v.State.Paused {
			t.Error("the pause button did not pause demo/settlements")
		}
	}
	click(t, ctx, "resume", "#pause")
	waitPage(t, ctx, 10*time.Second, "resumed after pressing resume",
		`document.querySelector("#health").textContent !== "paused" && document.querySelector("#pause").textContent === "pause"`)
	click(t, ctx, "sync now", `#actions button[data-act="sync"]`)
	waitPage(t, ctx, 10*time.Second, "a fetch enqueued by sync now", `/^enqueued (delta|full) fetch: task /.test(document.querySelector("#msg").textContent)`)

	// A fetch that dies at once (an unusable body is not retried): its task
	// is archived, and "retry dead tasks" re-enqueues it.
	f.fault(`{"mode":"malformed_json","resource":"settlements"}`)
	click(t, ctx, "full sync", `#actions button[data-act="sync?mode=full"]`)
	waitPage(t, ctx, 20*time.Second, "a dead task to retry", `!document.querySelector("#retry").disabled && /\(([1-9]\d*)\)/.test(document.querySelector("#retry").textContent)`)
	click(t, ctx, "retry dead tasks", "#retry")
	waitPage(t, ctx, 10*time.Second, "dead tasks retried", `/^retried [1-9]\d* dead task/.test(document.querySelector("#msg").textContent)`)
}
