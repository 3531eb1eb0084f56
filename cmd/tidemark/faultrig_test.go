package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/store"
)

// The fault suites (crash_test.go, restart_test.go, memory_test.go,
// secrets_test.go) share this rig: a config file, a database, a Redis DB and
// the tidemark binary, with helpers that check invariants in SQL.

// ticketSalesYAML is one source whose ticket_sales resource is read in
// cursor pages of `limit` records.
func ticketSalesYAML(source, baseURL string, allowPrivate bool, limit int, extra string) string {
	return fmt.Sprintf(`  - name: %s
    base_url: %s
    allow_private: %t
    timeout: 5s
%s    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        records: {path: data, id: id}
        ignore_fields: [meta.request_id]
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: %d}
        full_sync: {every: 1h, detect_deletes: true}
`, source, baseURL, allowPrivate, extra, limit)
}

type rig struct {
	t        *testing.T
	bin      string
	conf     *config.Config
	dbURL    string
	redisURL string
	env      []string
	st       *store.Store
}

// newRig writes the config (sources: the YAML list items) and opens the
// store. extraEnv is added to every process's environment.
func newRig(t *testing.T, sources, dbURL, redisURL string, extraEnv ...string) *rig {
	t.Helper()
	bin, _ := binaries(t)
	yaml := "sources:\n" + sources
	conf, err := config.Parse("rig.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	path := filepath.Join(t.TempDir(), "tidemark.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	env := append([]string{
		"TIDEMARK_CONFIG=" + path,
		"TIDEMARK_DATABASE_URL=" + dbURL,
		"TIDEMARK_REDIS_URL=" + redisURL,
		"TIDEMARK_SHUTDOWN_TIMEOUT=2s",
	}, extraEnv...)
	return &rig{t: t, bin: bin, conf: conf, dbURL: dbURL, redisURL: redisURL, env: env, st: st}
}

// logBuf collects a process's output.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startLogged is start (fleet_test.go) that also keeps the process's output.
func startLogged(t *testing.T, name string, env []string, bin string, args ...string) (*proc, *logBuf) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	logs := &logBuf{}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			logs.mu.Lock()
			logs.buf.Write(sc.Bytes())
			logs.buf.WriteByte('\n')
			logs.mu.Unlock()
			if testing.Verbose() {
				t.Logf("%s: %s", name, sc.Text())
			}
		}
		io.Copy(io.Discard, out)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p, logs
}

// wait polls cond until it holds or the deadline passes.
func wait(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last: %s", what, within, state)
		}
		time.Sleep(100 * time.Millisecond) // polling the database
	}
}

// sync enqueues a full read with the CLI.
func (r *rig) sync(key string) {
	r.t.Helper()
	cmd := exec.Command(r.bin, "sync", key, "--full")
	cmd.Env = append(os.Environ(), r.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("tidemark sync %s: %v\n%s", key, err, out)
	}
}

func (r *rig) runs(source string) []store.Run {
	r.t.Helper()
	rs, err := r.st.Runs(context.Background(), store.RunFilter{Source: source, Limit: 1000})
	if err != nil {
		r.t.Fatal(err)
	}
	return rs
}

// waitRun waits for the newest run of source to satisfy ok.
func (r *rig) waitRun(source string, within time.Duration, ok func(store.Run) bool) store.Run {
	r.t.Helper()
	var found store.Run
	wait(r.t, within, "a run of "+source, func() (bool, string) {
		rs := r.runs(source)
		if len(rs) == 0 {
			return false, "no run"
		}
		found = rs[0]
		return ok(rs[0]), fmt.Sprintf("run %d attempt %d %s pages %d %q", rs[0].ID, rs[0].Attempt, rs[0].Status, rs[0].Pages, rs[0].Error)
	})
	return found
}

func (r *rig) count(query string, args ...any) int64 {
	r.t.Helper()
	var n int64
	if err := r.st.DBForTests().Raw(query, args...).Scan(&n).Error; err != nil {
		r.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// assertMirrors checks the source's ticket_sales against what the upstream
// serves (assertMirrorsResource).
func (r *rig) assertMirrors(source string, up *demoapi.Server) {
	r.t.Helper()
	r.assertMirrorsResource(source, up, "ticket_sales")
}

// assertMirrorsResource checks a resource against what the upstream serves:
// the same ids with the same content hashes, each key once, each created
// once (version 1, one created audit row, no update or delete).
func (r *rig) assertMirrorsResource(source string, up *demoapi.Server, resource string) {
	r.t.Helper()
	t := r.t
	ex := extract.New(r.conf.Source(source).Resource(resource))
	want := map[string]string{}
	for id, raw := range up.Export(resource) {
		doc, err := extract.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := ex.Record(doc)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = rec.Hash
	}
	var rows []struct {
		ExternalID  string
		ContentHash string
		Version     int
	}
	if err := r.st.DBForTests().Raw(`SELECT external_id, content_hash, version FROM records
		WHERE source = ? AND resource = ? AND deleted_at IS NULL`, source, resource).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, row := range rows {
		if _, dup := got[row.ExternalID]; dup {
			t.Errorf("%s/%s: record %s twice", source, resource, row.ExternalID)
		}
		got[row.ExternalID] = row.ContentHash
		if row.Version != 1 {
			t.Errorf("%s/%s: record %s has version %d, want 1 (created once, never changed)", source, resource, row.ExternalID, row.Version)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s/%s: %d records, upstream serves %d", source, resource, len(got), len(want))
	}
	bad := 0
	for id, h := range want {
		if got[id] != h {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s/%s: %d of %d records missing or with another content hash than upstream's", source, resource, bad, len(want))
	}
	where := `source = ? AND resource = ?`
	if n := r.count(`SELECT count(*) FROM records WHERE `+where+` AND deleted_at IS NOT NULL`, source, resource); n != 0 {
		t.Errorf("%s/%s: %d tombstones, want 0", source, resource, n)
	}
	// Each creation is audited exactly once: in a created row, or counted
	// in the first load's summary (initial_load) rows.
	if n := r.count(`SELECT `+createdAudited+where+` AND op IN ('created', 'initial_load')`, source, resource); n != int64(len(want)) {
		t.Errorf("%s/%s: %d creations audited, want %d (each record exactly once)", source, resource, n, len(want))
	}
	if n := r.count(`SELECT count(*) FROM record_changes WHERE `+where+` AND op NOT IN ('created', 'initial_load')`, source, resource); n != 0 {
		t.Errorf("%s/%s: %d updated/deleted audit rows, want 0", source, resource, n)
	}
}

// assertOutboxOnce checks that the source's data.updated events account for
// each created record exactly once and were all published.
func (r *rig) assertOutboxOnce(source string, wantCreated int64) {
	r.t.Helper()
	sum := r.count(`SELECT coalesce(sum((payload->>'created')::bigint), 0) FROM outbox WHERE source = ? AND event = 'data.updated'`, source)
	if sum != wantCreated {
		r.t.Errorf("%s: outbox data.updated events count %d creations, want %d (each change announced once)", source, sum, wantCreated)
	}
	if n := r.count(`SELECT count(*) FROM outbox WHERE source = ? AND published_at IS NULL`, source); n != 0 {
		r.t.Errorf("%s: %d outbox events never published", source, n)
	}
}

// sseReplay reads the server's event stream from the start until it has
// seen want events of source, failing on a repeated or out-of-order id.
func sseReplay(t *testing.T, addr, source string, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/events?source="+source, nil)
	req.Header.Set("Last-Event-ID", "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("SSE: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("SSE: HTTP %d", resp.StatusCode)
	}
	seen := map[int64]bool{}
	last := int64(0)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for len(seen) < want && sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "id:")
		if !ok {
			continue
		}
		id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			t.Fatalf("SSE id %q: %v", v, err)
		}
		if seen[id] || id <= last {
			t.Errorf("SSE: event %d after %d: repeated or out of order", id, last)
		}
		seen[id] = true
		last = id
	}
	if len(seen) != want {
		t.Errorf("SSE replay from 0: %d distinct events of %s, want %d (%v)", len(seen), source, want, sc.Err())
	}
}

// pubsubIDs decodes the ids of published event payloads of source.
func pubsubIDs(payloads []string, source string) map[int64]int {
	ids := map[int64]int{}
	for _, p := range payloads {
		var ev struct {
			ID     int64  `json:"id"`
			Event  string `json:"event"`
			Source string `json:"source"`
		}
		// Outbox events only: run.progress shares the channel, without an
		// outbox id.
		if json.Unmarshal([]byte(p), &ev) == nil && ev.Source == source && ev.ID > 0 && ev.Event != "" && ev.Event != "run.progress" {
			ids[ev.ID]++
		}
	}
	return ids
}

// createdAudited, followed by a condition on record_changes, counts the
// creations the audit trail records: a created row each, or a first load's
// initial_load row for as many as it counts (docs/architecture.md, "The
// audit trail"). Every creation counts once, whichever way it is audited.
const createdAudited = `coalesce(sum(CASE op WHEN 'created' THEN 1 ELSE records END), 0) FROM record_changes WHERE `
