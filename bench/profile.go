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
	"sync"
	"time"

	"github.com/tidemark/tidemark/config"
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
	rig, err := e.startRig(ctx, "profile", func(base string) string {
		return fmt.Sprintf(syncConfig, base)
	}, "--records", fmt.Sprint(n), "--seed", "1")
	if err != nil {
		return err
	}
	defer rig.close(ctx)
	res := rig.src.Resource("ticket_sales")
	profilePath, stopProfile, err := startCPUProfile(e.cfg.ProfileDir, "cpu.pprof")
	if err != nil {
		return err
	}
	defer stopProfile()

	var t replayTimes
	bodies, total, err := readAllPages(ctx, rig.up.base+res.Path, &t)
	if err != nil {
		return err
	}
	if err := timeScan(bodies, &t); err != nil {
		return err
	}
	pages, err := extractPages(res, bodies, &t)
	if err != nil {
		return err
	}
	if err := replayApply(ctx, rig.db.url, res, pages, &t); err != nil {
		return err
	}
	per := func(d time.Duration) string {
		return fmt.Sprintf("%s (%.1f µs/record)", secs(d), float64(d.Microseconds())/float64(n))
	}
	e.note("profile (in-process replay, %s records, %d pages, %s of JSON): HTTP GET of every page %s; JSON scan alone %s; scan+extract (canonical JSON + sha256) %s; ApplyPage into an empty table %s; ApplyPage unchanged with seen-set %s, without %s; FinishFullRead %s; VersionHash %s. CPU profile: %s.",
		thousands(int64(n)), len(bodies), mib(total), per(t.http), per(t.decode), per(t.extract),
		per(t.first), per(t.same), per(t.sameNoSeen), secs(t.finish), secs(t.versionHash), profilePath)
	return nil
}

// replayTimes are the replay's stages' wall times.
type replayTimes struct {
	http, decode, extract   time.Duration
	first, same, sameNoSeen time.Duration // ApplyPage of every page
	finish, versionHash     time.Duration
}

// startCPUProfile writes a CPU profile to dir/name until stop is called.
func startCPUProfile(dir, name string) (path string, stop func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return "", nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return "", nil, err
	}
	return f.Name(), sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		f.Close()
	}), nil
}

// readAllPages GETs every page of the cursor-paginated collection at u, 1000
// records a page, and returns the raw bodies and their total size.
func readAllPages(ctx context.Context, u string, t *replayTimes) (bodies [][]byte, total int64, err error) {
	began := time.Now()
	next := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if next != "" {
			q.Set("starting_after", next)
		}
		body, err := get(ctx, u+"?"+q.Encode())
		if err != nil {
			return nil, 0, err
		}
		bodies = append(bodies, body)
		total += int64(len(body))
		doc, err := extract.Scan(body)
		if err != nil {
			return nil, 0, err
		}
		c, _ := doc.Lookup("next_cursor")
		doc.Release()
		s, ok := c.(string)
		if !ok || s == "" {
			break
		}
		next = s
	}
	t.http = time.Since(began)
	return bodies, total, nil
}

// timeScan times the JSON scan of every body on its own (readAllPages'
// cursor lookup scanned each once, within the HTTP time).
func timeScan(bodies [][]byte, t *replayTimes) error {
	began := time.Now()
	for _, b := range bodies {
		doc, err := extract.Scan(b)
		if err != nil {
			return err
		}
		doc.Release()
	}
	t.decode = time.Since(began)
	return nil
}

// extractPages does what the worker's pager does with a page: scan, then
// records with their canonical payloads and hashes.
func extractPages(res *config.Resource, bodies [][]byte, t *replayTimes) ([][]store.Record, error) {
	ex := extract.New(res)
	pages := make([][]store.Record, 0, len(bodies))
	began := time.Now()
	for _, b := range bodies {
		doc, err := extract.Scan(b)
		if err != nil {
			return nil, err
		}
		recs, rejected, err := ex.DocRecords(doc)
		doc.Release()
		if err != nil {
			return nil, err
		}
		if len(rejected) > 0 {
			return nil, fmt.Errorf("%s", rejected[0].Reason)
		}
		page := make([]store.Record, len(recs))
		for i, r := range recs {
			page[i] = store.Record{ExternalID: r.ID, Payload: r.Payload, Hash: r.Hash}
		}
		pages = append(pages, page)
	}
	t.extract = time.Since(began)
	return pages, nil
}

// replayApply applies the pages through store as a full run would: into
// an empty table, then unchanged with a seen-set and without, then
// finishes the read (with delete detection) and computes the version hash.
func replayApply(ctx context.Context, dbURL string, res *config.Resource, pages [][]store.Record, t *replayTimes) error {
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer st.Close()
	key := store.Key{Source: "bench", Resource: res.Name}
	if err := st.EnsureStates(ctx, []store.Key{key}); err != nil {
		return err
	}
	run := store.Run{Source: key.Source, Resource: key.Resource, Kind: store.KindFull, Trigger: "manual"}
	if err := st.StartRun(ctx, &run); err != nil {
		return err
	}
	seen := map[int64]int64{} // ids per pass, as the checkpoints count them
	apply := func(pass int64) (time.Duration, error) {
		began := time.Now()
		for _, p := range pages {
			if _, err := st.ApplyPage(ctx, store.Page{Key: key, RunID: run.ID, Records: p, PassID: pass}); err != nil {
				return 0, err
			}
			seen[pass] += int64(len(p))
		}
		return time.Since(began), nil
	}
	if t.first, err = apply(run.ID); err != nil {
		return err
	}
	if t.same, err = apply(run.ID + 1); err != nil {
		return err
	}
	if t.sameNoSeen, err = apply(0); err != nil {
		return err
	}
	began := time.Now()
	if _, err := st.FinishFullRead(ctx, store.FullRead{Key: key, RunID: run.ID, PassID: run.ID + 1, SeenIDs: seen[run.ID+1],
		Policy: store.DeletePolicy{Detect: true, AfterReads: 1, MaxFraction: 1}}); err != nil {
		return err
	}
	t.finish = time.Since(began)
	began = time.Now()
	if _, err := st.VersionHash(ctx, key); err != nil {
		return err
	}
	t.versionHash = time.Since(began)
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
