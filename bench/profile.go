package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/store"
)

// profile replays the hot path of a full sync in this process, stage by
// stage, so that each stage's cost is measured on its own (the worker
// interleaves them): the HTTP reads of every page, scanning and extracting
// them as the worker's pager does (extract.Scan, canonical JSON, sha256), and applying them
// with store.ApplyPage — first into an empty table, then again unchanged,
// with and without the full read's seen-set — and finally VersionHash. A
// CPU profile of the whole replay goes to ProfileDir/cpu.pprof; it shows
// Go's side only, Postgres's time shows up as the stages' wall time.
func (e *env) profile(ctx context.Context) error {
	n := min(e.cfg.Records, 200_000)
	db, err := createDatabase(ctx, e.cfg.AdminDatabaseURL, "profile")
	if err != nil {
		return err
	}
	if !e.cfg.Keep {
		defer db.drop(context.WithoutCancel(ctx))
	}
	up, err := startUpstream(ctx, e.upstream(), e.tmp, "upstream-profile", "--records", fmt.Sprint(n), "--seed", "1")
	if err != nil {
		return err
	}
	defer up.stop()
	_, conf, err := e.writeConfig("profile.yaml", fmt.Sprintf(syncConfig, up.base))
	if err != nil {
		return err
	}
	res := conf.Sources[0].Resource("ticket_sales")
	if err := os.MkdirAll(e.cfg.ProfileDir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(e.cfg.ProfileDir, "cpu.pprof"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()

	// HTTP: every page, raw.
	var bodies [][]byte
	var total int64
	t := time.Now()
	next := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if next != "" {
			q.Set("starting_after", next)
		}
		body, err := get(ctx, up.base+res.Path+"?"+q.Encode())
		if err != nil {
			return err
		}
		bodies = append(bodies, body)
		total += int64(len(body))
		doc, err := extract.Scan(body)
		if err != nil {
			return err
		}
		c, _ := doc.Lookup("next_cursor")
		doc.Release()
		s, ok := c.(string)
		if !ok || s == "" {
			break
		}
		next = s
	}
	httpTook := time.Since(t)
	// The cursor lookup scanned each body once: time the scan on its own.
	t = time.Now()
	for _, b := range bodies {
		doc, err := extract.Scan(b)
		if err != nil {
			return err
		}
		doc.Release()
	}
	decodeTook := time.Since(t)

	// What the worker's pager does with a page: scan, then records with
	// their canonical payloads and hashes.
	ex := extract.New(res)
	pages := make([][]store.Record, 0, len(bodies))
	t = time.Now()
	for _, b := range bodies {
		doc, err := extract.Scan(b)
		if err != nil {
			return err
		}
		recs, rejected, err := ex.DocRecords(doc)
		doc.Release()
		if err != nil {
			return err
		}
		if len(rejected) > 0 {
			return fmt.Errorf("%s", rejected[0].Reason)
		}
		page := make([]store.Record, len(recs))
		for i, r := range recs {
			page[i] = store.Record{ExternalID: r.ID, Payload: r.Payload, Hash: r.Hash}
		}
		pages = append(pages, page)
	}
	extractTook := time.Since(t)

	st, err := store.Open(ctx, db.url)
	if err != nil {
		return err
	}
	defer st.Close()
	key := store.Key{Source: "bench", Resource: res.Name}
	if err := st.EnsureStates(ctx, []store.Key{key}); err != nil {
		return err
	}
	run := store.Run{Source: key.Source, Resource: key.Resource, Kind: tidemark.RunFull, Trigger: "manual"}
	if err := st.StartRun(ctx, &run); err != nil {
		return err
	}
	seen := map[int64]int64{} // ids per pass, as the checkpoints count them
	apply := func(pass int64) (time.Duration, error) {
		t := time.Now()
		for _, p := range pages {
			if _, err := st.ApplyPage(ctx, store.Page{Key: key, RunID: run.ID, Records: p, PassID: pass}); err != nil {
				return 0, err
			}
			seen[pass] += int64(len(p))
		}
		return time.Since(t), nil
	}
	firstTook, err := apply(run.ID)
	if err != nil {
		return err
	}
	sameTook, err := apply(run.ID + 1)
	if err != nil {
		return err
	}
	sameNoSeenTook, err := apply(0)
	if err != nil {
		return err
	}
	t = time.Now()
	if _, err := st.FinishFullRead(ctx, store.FullRead{Key: key, RunID: run.ID, PassID: run.ID + 1, SeenIDs: seen[run.ID+1],
		Policy: store.DeletePolicy{Detect: true, AfterReads: 1, MaxFraction: 1}}); err != nil {
		return err
	}
	finishTook := time.Since(t)
	t = time.Now()
	if _, err := st.VersionHash(ctx, key); err != nil {
		return err
	}
	vhTook := time.Since(t)
	per := func(d time.Duration) string {
		return fmt.Sprintf("%s (%.1f µs/record)", secs(d), float64(d.Microseconds())/float64(n))
	}
	e.note("profile (in-process replay, %s records, %d pages, %s of JSON): HTTP GET of every page %s; JSON scan alone %s; scan+extract (canonical JSON + sha256) %s; ApplyPage into an empty table %s; ApplyPage unchanged with seen-set %s, without %s; FinishFullRead %s; VersionHash %s. CPU profile: %s.",
		thousands(int64(n)), len(bodies), mib(total), per(httpTook), per(decodeTook), per(extractTook),
		per(firstTook), per(sameTook), per(sameNoSeenTook), secs(finishTook), secs(vhTook), f.Name())
	return nil
}

func get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return io.ReadAll(resp.Body)
}
