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

	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/store"
)

// profile replays the hot path of a full sync in this process, stage by
// stage, so that each stage's cost is measured on its own (the worker
// interleaves them): the HTTP reads of every page, decoding and extracting
// them (extract: JSON decode, canonical JSON, sha256), and applying them
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
		doc, err := extract.Decode(body)
		if err != nil {
			return err
		}
		c, _ := extract.Lookup(doc, "next_cursor")
		s, ok := c.(string)
		if !ok || s == "" {
			break
		}
		next = s
	}
	httpTook := time.Since(t)
	// The cursor lookup decoded each body once: time the decode on its own.
	t = time.Now()
	for _, b := range bodies {
		if _, err := extract.Decode(b); err != nil {
			return err
		}
	}
	decodeTook := time.Since(t)

	ex := extract.New(res)
	pages := make([][]store.Record, 0, len(bodies))
	t = time.Now()
	for _, b := range bodies {
		doc, err := extract.Decode(b)
		if err != nil {
			return err
		}
		recs, err := ex.Records(doc)
		if err != nil {
			return err
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
	apply := func(pass int64) (time.Duration, error) {
		t := time.Now()
		for _, p := range pages {
			if _, err := st.ApplyPage(ctx, store.Page{Key: key, RunID: 1, Records: p, PassID: pass}); err != nil {
				return 0, err
			}
		}
		return time.Since(t), nil
	}
	firstTook, err := apply(1)
	if err != nil {
		return err
	}
	sameTook, err := apply(2)
	if err != nil {
		return err
	}
	sameNoSeenTook, err := apply(0)
	if err != nil {
		return err
	}
	t = time.Now()
	if _, err := st.FinishFullRead(ctx, key, 1, 2, true); err != nil {
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
	e.note("profile (in-process replay, %s records, %d pages, %s of JSON): HTTP GET of every page %s; JSON decode alone %s; decode+extract (canonical JSON + sha256) %s; ApplyPage into an empty table %s; ApplyPage unchanged with seen-set %s, without %s; FinishFullRead %s; VersionHash %s. CPU profile: %s.",
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
