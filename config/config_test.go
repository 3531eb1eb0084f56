package config

import (
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark"
)

// env returns a lookup over vars, so tests need not touch the process
// environment (and can run in parallel).
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func problems(t *testing.T, err error) []Problem {
	t.Helper()
	if err == nil {
		return nil
	}
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	return cerr.Problems
}

func mustParse(t *testing.T, yaml string, vars map[string]string) *Config {
	t.Helper()
	cfg, err := parse("t.yaml", []byte(yaml), env(vars))
	if err != nil {
		t.Fatalf("parse:\n%v", err)
	}
	return cfg
}

func TestExamplesParse(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			if _, err := Load(f); err != nil {
				t.Fatalf("Load(%s):\n%v", f, err)
			}
		})
	}
}

func TestDemoConfig(t *testing.T) {
	t.Parallel()
	cfg, err := Load("../examples/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sources) != 1 {
		t.Fatalf("got %d sources, want 1", len(cfg.Sources))
	}
	s := cfg.Source("demo")
	if s == nil {
		t.Fatal("no source demo")
	}
	if !s.AllowPrivate || s.MaxConcurrency != 4 || s.Timeout.D() != 10*time.Second {
		t.Errorf("source settings: %+v", s)
	}
	if want := (RateLimit{Requests: 50, Per: Duration(time.Second), Burst: 10}); s.RateLimit == nil || *s.RateLimit != want {
		t.Errorf("rate_limit = %+v, want %+v", s.RateLimit, want)
	}
	if !strings.HasPrefix(s.BaseURL, "http://") {
		t.Errorf("base_url = %q", s.BaseURL)
	}

	delta := &Delta{Param: "updated_since", Field: "updated_at", Format: FormatRFC3339, Overlap: Duration(2 * time.Second), ClockSkew: Duration(5 * time.Second)}
	tests := []struct {
		name      string
		path      string
		priority  string
		freshness time.Duration
		records   Records
		style     string
		limit     string // limit_param
		probe     Probe
		delta     *Delta
		full      time.Duration
	}{
		{"ticket_sales", "/v1/ticket_sales", PriorityCritical, 30 * time.Second, Records{Path: "data", ID: "id"}, PaginationCursor, "limit",
			Probe{Strategy: tidemark.ProbeETag, Method: "HEAD", Every: Duration(5 * time.Second), MaxEvery: Duration(20 * time.Second), Limit: 1}, delta, 10 * time.Minute},
		{"inventory_movements", "/v1/inventory_movements", PriorityCritical, 30 * time.Second, Records{Path: "", ID: "id"}, PaginationLink, "limit",
			Probe{Strategy: tidemark.ProbeETag, Method: "GET", Every: Duration(5 * time.Second), MaxEvery: Duration(20 * time.Second), Limit: 1}, &Delta{Param: "after", Field: "id", Format: FormatNumber, ClockSkew: Duration(5 * time.Second)}, 10 * time.Minute},
		{"transactions", "/api/transactions", PriorityCritical, 30 * time.Second, Records{Path: "transactions", ID: "txn_id"}, PaginationPage, "per_page",
			Probe{Strategy: tidemark.ProbeDelta, Method: "GET", Every: Duration(5 * time.Second), MaxEvery: Duration(20 * time.Second)}, delta, 10 * time.Minute},
		{"settlements", "/settlements", PriorityLow, 10 * time.Minute, Records{Path: "results", ID: "settlement.id"}, PaginationOffset, "limit",
			Probe{Strategy: tidemark.ProbeHash, Method: "GET", Every: Duration(30 * time.Second), MaxEvery: Duration(5 * time.Minute), Limit: 1}, nil, time.Hour},
		{"tax_summaries", "/v2/tax/summaries", PriorityLow, time.Hour, Records{Path: "result.items", ID: "id"}, PaginationNextURL, "per_page",
			Probe{Strategy: tidemark.ProbeRollingHash, Method: "GET", Every: Duration(time.Minute), MaxEvery: Duration(30 * time.Minute)}, nil, time.Hour},
	}
	if len(s.Resources) != len(tests) {
		t.Errorf("got %d resources, want %d", len(s.Resources), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := s.Resource(tt.name)
			if r == nil {
				t.Fatal("missing")
			}
			if r.Path != tt.path || r.Priority != tt.priority || r.Freshness.D() != tt.freshness {
				t.Errorf("path/priority/freshness = %q %q %s", r.Path, r.Priority, r.Freshness)
			}
			if r.Records != tt.records {
				t.Errorf("records = %+v, want %+v", r.Records, tt.records)
			}
			if r.Pagination.Style != tt.style || r.Pagination.LimitParam != tt.limit || r.Pagination.Limit != 100 {
				t.Errorf("pagination = %+v", r.Pagination)
			}
			if r.Probe != tt.probe {
				t.Errorf("probe = %+v, want %+v", r.Probe, tt.probe)
			}
			if !reflect.DeepEqual(r.Delta, tt.delta) {
				t.Errorf("delta = %+v, want %+v", r.Delta, tt.delta)
			}
			reads := 2 // page, offset, link, next_url: a second read confirms a delete
			if tt.style == PaginationCursor {
				reads = 1
			}
			if r.FullSync != (FullSync{Every: Duration(tt.full), DetectDeletes: true, MaxDeleteFraction: 0.2, DeleteAfterReads: reads}) {
				t.Errorf("full_sync = %+v", r.FullSync)
			}
		})
	}
	if got := s.Resource("ticket_sales").IgnoreFields; !reflect.DeepEqual(got, []string{"meta.request_id"}) {
		t.Errorf("ticket_sales ignore_fields = %q", got)
	}
	p := s.Resource("ticket_sales").Pagination
	if p.CursorParam != "starting_after" || p.NextField != "next_cursor" {
		t.Errorf("ticket_sales cursor = %+v", p)
	}
	if p := s.Resource("transactions").Pagination; p.PageParam != "page" || *p.Start != 1 {
		t.Errorf("transactions pages = %+v", p)
	}
	if p := s.Resource("settlements").Pagination; p.OffsetParam != "offset" {
		t.Errorf("settlements offset = %+v", p)
	}
	if p := s.Resource("tax_summaries").Pagination; p.NextField != "next_url" {
		t.Errorf("tax_summaries next_field = %q", p.NextField)
	}
}

// TestAllProblemsReported is the contract of `tidemark config check`: every
// problem, each with file, line and field path, in line order.
func TestAllProblemsReported(t *testing.T) {
	t.Parallel()
	const doc = `sources:
  - name: box
    base_url: http://127.0.0.1:9000
    timeout: 10 seconds
    resources:
      - name: sales
        path: /sales
        records: {path: data}
        colour: blue
      - name: refunds
        path: /refunds
        records: {id: id}
      - name: sales
        path: /sales/v2
        records: {id: id}
`
	cfg, err := parse("tidemark.yaml", []byte(doc), env(nil))
	if cfg != nil {
		t.Errorf("got a config despite problems")
	}
	want := []Problem{
		{"tidemark.yaml", 4, "sources[0].timeout", `invalid duration "10 seconds" (want e.g. 10s, 1m30s, 24h)`},
		{"tidemark.yaml", 8, "sources[0].resources[0].records.id", "required"},
		{"tidemark.yaml", 9, "sources[0].resources[0].colour", "unknown field"},
		{"tidemark.yaml", 13, "sources[0].resources[2].name", `duplicate resource name "sales" (first at line 6)`},
	}
	if got := problems(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%v\nwant:\n%v", err, (&Error{Problems: want}).Error())
	}
	wantText := `tidemark.yaml:4: sources[0].timeout: invalid duration "10 seconds" (want e.g. 10s, 1m30s, 24h)
tidemark.yaml:8: sources[0].resources[0].records.id: required
tidemark.yaml:9: sources[0].resources[0].colour: unknown field
tidemark.yaml:13: sources[0].resources[2].name: duplicate resource name "sales" (first at line 6)`
	if err.Error() != wantText {
		t.Errorf("Error() =\n%s\nwant\n%s", err, wantText)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Parallel()
	const tmpl = `sources:
  - name: s
    base_url: BASE
    max_concurrency: CONC
    resources:
      - name: r
        path: /r
        records: {id: id}
`
	vars := map[string]string{"URL": "http://upstream:9000", "EMPTY": "", "N": "8", "WORD": "many"}
	tests := []struct {
		name     string
		base     string
		conc     string
		wantBase string
		wantConc int
		wantErr  string // a line of the error
		notInErr string // what the error must not say as well
	}{
		{name: "set", base: "${URL}", wantBase: "http://upstream:9000", wantConc: 4},
		{name: "default unused when set", base: "${URL:-http://127.0.0.1:9000}", wantBase: "http://upstream:9000", wantConc: 4},
		{name: "default when unset", base: "${NOPE:-http://127.0.0.1:9000}", wantBase: "http://127.0.0.1:9000", wantConc: 4},
		{name: "default when empty", base: "${EMPTY:-http://127.0.0.1:9000}", wantBase: "http://127.0.0.1:9000", wantConc: 4},
		{name: "embedded", base: "http://${WORD}.example:80/v1", wantBase: "http://many.example:80/v1", wantConc: 4},
		{name: "quoted", base: `"${URL}"`, wantBase: "http://upstream:9000", wantConc: 4},
		{name: "before number conversion", base: "${URL}", conc: "${N}", wantBase: "http://upstream:9000", wantConc: 8},
		{name: "number default", base: "${URL}", conc: "${NOPE:-2}", wantBase: "http://upstream:9000", wantConc: 2},
		{name: "lone dollar kept", base: "http://h/$x", wantBase: "http://h/$x", wantConc: 4},
		{name: "escaped", base: "http://h/$${x}", wantBase: "http://h/${x}", wantConc: 4},
		{name: "unset without default is named", base: "${NOPE_URL}",
			wantErr: "t.yaml:3: environment variable NOPE_URL is not set (sources[0].base_url)", notInErr: "required"},
		{name: "each unset variable is named", base: "http://${NOPE_HOST}:${NOPE_PORT}",
			wantErr: "t.yaml:3: environment variable NOPE_PORT is not set (sources[0].base_url)", notInErr: "invalid"},
		{name: "unset in a number", base: "${URL}", conc: "${NOPE_N}",
			wantErr: "t.yaml:4: environment variable NOPE_N is not set (sources[0].max_concurrency)"},
		{name: "set but empty is empty", base: "${EMPTY}",
			wantErr: "t.yaml:3: sources[0].base_url: required"},
		{name: "optional with an empty default", base: "${NOPE:-}",
			wantErr: "t.yaml:3: sources[0].base_url: required"},
		{name: "bad number after expansion", base: "${URL}", conc: "${WORD}",
			wantErr: `t.yaml:4: sources[0].max_concurrency: invalid whole number "many"`},
		{name: "unterminated", base: "${URL",
			wantErr: `t.yaml:3: sources[0].base_url: unterminated ${ in "${URL"`},
		{name: "bad name", base: "${1X}",
			wantErr: "t.yaml:3: sources[0].base_url: invalid variable reference ${1X}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := strings.Replace(tmpl, "BASE", tt.base, 1)
			if tt.conc == "" {
				doc = strings.Replace(doc, "    max_concurrency: CONC\n", "", 1)
			}
			doc = strings.Replace(doc, "CONC", tt.conc, 1)
			cfg, err := parse("t.yaml", []byte(doc), env(vars))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				if tt.notInErr != "" && strings.Contains(err.Error(), tt.notInErr) {
					t.Errorf("error = %v, want it not to say %q", err, tt.notInErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := cfg.Sources[0]; s.BaseURL != tt.wantBase || s.MaxConcurrency != tt.wantConc {
				t.Errorf("base_url, max_concurrency = %q, %d; want %q, %d", s.BaseURL, s.MaxConcurrency, tt.wantBase, tt.wantConc)
			}
		})
	}

	t.Run("keys are not expanded", func(t *testing.T) {
		t.Parallel()
		doc := "sources:\n  - name: s\n    ${KEY}: x\n"
		_, err := parse("t.yaml", []byte(doc), env(map[string]string{"KEY": "base_url"}))
		if err == nil || !strings.Contains(err.Error(), "t.yaml:3: sources[0].${KEY}: unknown field") {
			t.Errorf("error = %v", err)
		}
	})
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    ByteSize
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "1_000", want: 1000},
		{in: "12B", want: 12},
		{in: "512KB", want: 512_000},
		{in: "512kB", want: 512_000},
		{in: "3MB", want: 3_000_000},
		{in: "2GB", want: 2_000_000_000},
		{in: "4KiB", want: 4096},
		{in: "64MiB", want: 64 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "1 GiB", want: 1 << 30},
		{in: "", wantErr: true},
		{in: "MiB", wantErr: true},
		{in: "64mib", wantErr: true},
		{in: "64 megs", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "1.5GiB", wantErr: true},
		{in: "99999999999TiB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseByteSize(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d, error %t", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil {
				back, err := ParseByteSize(got.String())
				if err != nil || back != got {
					t.Errorf("round trip via %q = %d, %v", got.String(), back, err)
				}
			}
		})
	}

	t.Run("in a config", func(t *testing.T) {
		t.Parallel()
		cfg := mustParse(t, minimalWith(4, "max_body: 512KiB"), nil)
		if got := cfg.Sources[0].MaxBody; got != 512*KiB {
			t.Errorf("max_body = %s", got)
		}
		_, err := parse("t.yaml", []byte(minimalWith(4, "max_body: 64 megs")), env(nil))
		if want := `t.yaml:4: sources[0].max_body: invalid byte size "64 megs"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want %q", err, want)
		}
	})
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, minimalWith(4, "rate_limit: {requests: 10, per: 1s}")+
		"      - name: tax\n        path: /tax\n        records: {id: id}\n        pagination: {style: next_url}\n"+
		"        delta: {param: since, field: ts}\n", nil)
	s := cfg.Sources[0]
	if s.MaxConcurrency != 4 || s.Timeout.D() != 30*time.Second || s.MaxBody != 64*MiB {
		t.Errorf("source defaults: concurrency %d, timeout %s, max_body %s", s.MaxConcurrency, s.Timeout, s.MaxBody)
	}
	if s.RateLimit.Burst != 1 {
		t.Errorf("burst = %d, want 1", s.RateLimit.Burst)
	}
	start := 1
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"priority", s.Resources[0].Priority, PriorityDefault},
		{"freshness", s.Resources[0].Freshness.D(), 5 * time.Minute},
		{"pagination", s.Resources[0].Pagination, Pagination{Style: PaginationNone, Limit: 100, PageParam: "page", Start: &start, OffsetParam: "offset",
			MaxPages: 100000, ResumeWithin: Duration(time.Hour)}},
		{"next_url field", s.Resources[1].Pagination.NextField, "next_url"},
		{"probe", s.Resources[0].Probe, Probe{Strategy: tidemark.ProbeNone, Method: "GET", Every: Duration(time.Minute), MaxEvery: Duration(time.Minute)}},
		{"no delta", s.Resources[0].Delta, (*Delta)(nil)},
		{"delta format", *s.Resources[1].Delta, Delta{Param: "since", Field: "ts", Format: FormatRFC3339, ClockSkew: Duration(5 * time.Second)}},
		{"full_sync", s.Resources[0].FullSync, FullSync{Every: Duration(24 * time.Hour), MaxDeleteFraction: 0.2, DeleteAfterReads: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %+v, want %+v", tt.got, tt.want)
			}
		})
	}

	t.Run("max_every follows every", func(t *testing.T) {
		t.Parallel()
		cfg := mustParse(t, minimalWith(8, "probe: {strategy: etag, method: head, every: 10s}"), nil)
		if p := cfg.Sources[0].Resources[0].Probe; p.MaxEvery.D() != 10*time.Second || p.Method != "HEAD" {
			t.Errorf("probe = %+v", p)
		}
	})
}

// minimalWith returns a valid config with extra spliced in at line 8,
// indented to the level given: 8 for a resource key, 4 for a source key,
// 0 for a top-level key. Later lines of extra keep their own indentation.
func minimalWith(indent int, extra string) string {
	doc := `sources:
  - name: s
    base_url: http://127.0.0.1:9000
    resources:
      - name: r
        path: /r
        records: {id: id}
`
	if extra == "" {
		return doc
	}
	pad := strings.Repeat(" ", indent)
	var b strings.Builder
	for line := range strings.Lines(extra) {
		b.WriteString(pad + strings.TrimSuffix(line, "\n") + "\n")
	}
	if indent == 4 {
		// Source keys go before resources, so the resource list stays last
		// and tests may append resources; the extra still starts at line 4.
		return strings.Replace(doc, "    resources:\n", b.String()+"    resources:\n", 1)
	}
	return doc + b.String()
}

func TestValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []string // "line: field: message" prefixes, one per problem
	}{
		{"valid", minimalWith(0, ""), nil},
		{"empty file", "", []string{"1: sources: at least one source required"}},
		{"no sources", "sources: []\n", []string{"1: sources: at least one source required"}},
		{"source name required", strings.Replace(minimalWith(0, ""), "name: s", "name: \"\"", 1),
			[]string{"2: sources[0].name: required"}},
		{"source name pattern", strings.Replace(minimalWith(0, ""), "name: s", "name: Box-Office", 1),
			[]string{`2: sources[0].name: source name "Box-Office" must match [a-z0-9_]+`}},
		{"duplicate source", minimalWith(0, "") + strings.TrimPrefix(minimalWith(0, ""), "sources:\n"),
			[]string{`8: sources[1].name: duplicate source name "s" (first at line 2)`}},
		{"base_url required", strings.Replace(minimalWith(0, ""), "http://127.0.0.1:9000", "", 1),
			[]string{"3: sources[0].base_url: required"}},
		{"base_url relative", strings.Replace(minimalWith(0, ""), "http://127.0.0.1:9000", "/api", 1),
			[]string{`3: sources[0].base_url: "/api" must be an absolute http:// or https:// URL`}},
		{"base_url scheme", strings.Replace(minimalWith(0, ""), "http://", "ftp://", 1),
			[]string{`3: sources[0].base_url: "ftp://127.0.0.1:9000" must be an absolute`}},
		{"base_url credentials", strings.Replace(minimalWith(0, ""), "http://", "http://u:p@", 1),
			[]string{"3: sources[0].base_url: credentials in a URL are not allowed"}},
		{"no resources", "sources:\n  - name: s\n    base_url: http://h\n    resources: []\n",
			[]string{"4: sources[0].resources: at least one resource required"}},
		{"resource name pattern", strings.Replace(minimalWith(0, ""), "name: r", "name: Ticket Sales", 1),
			[]string{`5: sources[0].resources[0].name: resource name "Ticket Sales" must match`}},
		{"resource path required", strings.Replace(minimalWith(0, ""), "path: /r", "path: \"\"", 1),
			[]string{"6: sources[0].resources[0].path: required"}},
		{"resource path slash", strings.Replace(minimalWith(0, ""), "path: /r", "path: v1/r", 1),
			[]string{`6: sources[0].resources[0].path: "v1/r" must start with /`}},
		{"records.id required", strings.Replace(minimalWith(0, ""), "{id: id}", "{path: data}", 1),
			[]string{"7: sources[0].resources[0].records.id: required"}},
		{"records missing entirely", strings.Replace(minimalWith(0, ""), "        records: {id: id}\n", "", 1),
			[]string{"5: sources[0].resources[0].records.id: required"}},
		{"dotted path", minimalWith(8, "ignore_fields: [meta..id]"),
			[]string{`8: sources[0].resources[0].ignore_fields[0]: invalid dotted path "meta..id"`}},
		{"priority", minimalWith(8, "priority: urgent"),
			[]string{`8: sources[0].resources[0].priority: unknown priority "urgent" (want critical | default | low)`}},
		{"audit.initial_load", minimalWith(8, "audit: {initial_load: none}"),
			[]string{`8: sources[0].resources[0].audit.initial_load: unknown value "none" (want summary | records)`}},
		{"rate_limit_headers", minimalWith(4, "rate_limit_headers: honor"),
			[]string{`4: sources[0].rate_limit_headers: unknown value "honor" (want honour | ignore)`}},
		{"freshness negative", minimalWith(8, "freshness: -5s"),
			[]string{"8: sources[0].resources[0].freshness: must be greater than 0"}},
		{"pagination style", minimalWith(8, "pagination: {style: scroll}"),
			[]string{`8: sources[0].resources[0].pagination.style: unknown style "scroll"`}},
		{"cursor needs keys", minimalWith(8, "pagination: {style: cursor}"),
			[]string{"8: sources[0].resources[0].pagination.cursor_param: required for style cursor",
				"8: sources[0].resources[0].pagination.next_field: required for style cursor"}},
		{"limit zero", minimalWith(8, "pagination: {style: page, limit: 0}"),
			[]string{"8: sources[0].resources[0].pagination.limit: must be greater than 0"}},
		{"limit negative", minimalWith(8, "pagination: {style: offset, limit: -1}"),
			[]string{"8: sources[0].resources[0].pagination.limit: must be greater than 0"}},
		{"key unused by style", minimalWith(8, "pagination:\n  style: page\n  cursor_param: after"),
			[]string{"10: sources[0].resources[0].pagination.cursor_param: not used by style page (used by cursor)"}},
		{"probe strategy", minimalWith(8, "probe: {strategy: poll}"),
			[]string{`8: sources[0].resources[0].probe.strategy: unknown strategy "poll"`}},
		{"probe method", minimalWith(8, "probe: {strategy: etag, method: POST}"),
			[]string{`8: sources[0].resources[0].probe.method: unknown method "POST" (want HEAD | GET)`}},
		{"hash needs GET", minimalWith(8, "probe: {strategy: hash, method: HEAD}"),
			[]string{"8: sources[0].resources[0].probe.method: strategy hash reads the body: use GET"}},
		{"delta probe needs a delta", minimalWith(8, "probe: {strategy: delta}"),
			[]string{"8: sources[0].resources[0].probe.strategy: delta reads the changes since the watermark as the probe: it needs a delta section (delta.field and delta.param)"}},
		{"delta probe reads the body", minimalWith(8, "probe: {strategy: delta, method: HEAD}\ndelta: {param: since, field: at}"),
			[]string{"8: sources[0].resources[0].probe.method: strategy delta reads the body: use GET"}},
		{"delta probe has no path", minimalWith(8, "probe: {strategy: delta, path: \"/r?x=1\"}\ndelta: {param: since, field: at}"),
			[]string{"8: sources[0].resources[0].probe.path: not with strategy delta: it reads the delta read's own pages"}},
		{"rolling probe has no limit", minimalWith(8, "pagination: {style: page, limit_param: n}\nprobe: {strategy: rolling_hash, limit: 1}"),
			[]string{"9: sources[0].resources[0].probe.limit: not with strategy rolling_hash: its page is the full read's page, of pagination.limit"}},
		{"probe every zero", minimalWith(8, "probe:\n  strategy: etag\n  every: 0s"),
			[]string{"10: sources[0].resources[0].probe.every: must be greater than 0"}},
		{"max_every shorter", minimalWith(8, "probe: {strategy: etag, every: 1m, max_every: 30s}"),
			[]string{"8: sources[0].resources[0].probe.max_every: 30s must not be shorter than every (1m0s)"}},
		{"probe path", minimalWith(8, "probe: {strategy: etag, path: \"r?limit=1\"}"),
			[]string{`8: sources[0].resources[0].probe.path: "r?limit=1" must start with /`}},
		{"probe limit zero", minimalWith(8, "pagination: {style: offset, limit_param: limit}\nprobe: {strategy: hash, limit: 0}"),
			[]string{"9: sources[0].resources[0].probe.limit: must be greater than 0"}},
		{"probe limit needs limit_param", minimalWith(8, "pagination: {style: offset}\nprobe: {strategy: hash, limit: 1}"),
			[]string{"9: sources[0].resources[0].probe.limit: needs pagination.limit_param to send the page size in"}},
		{"probe limit with path", minimalWith(8, "pagination: {style: offset, limit_param: limit}\nprobe: {strategy: etag, path: /r, limit: 1}"),
			[]string{"9: sources[0].resources[0].probe.limit: not with probe.path: put the page size in the path's query"}},
		{"delta needs param and field", minimalWith(8, "delta: {format: unix}"),
			[]string{"8: sources[0].resources[0].delta.param: required",
				"8: sources[0].resources[0].delta.field: required"}},
		{"delta format", minimalWith(8, "delta: {param: since, field: ts, format: iso}"),
			[]string{`8: sources[0].resources[0].delta.format: unknown format "iso" (want rfc3339 | unix | unix_ms | number)`}},
		{"delta overlap", minimalWith(8, "delta: {param: since, field: ts, overlap: -1s}"),
			[]string{"8: sources[0].resources[0].delta.overlap: must not be negative"}},
		{"allow_hosts entries", minimalWith(4, "allow_hosts: [169.254.169.254, 10.0.0.0/8, api.internal, 'not a host']"),
			[]string{`4: sources[0].allow_hosts[3]: "not a host" is not a host name, IP address or CIDR prefix`}},
		{"number cursors have no overlap", minimalWith(8, "delta: {param: after, field: id, format: number, overlap: 1s}"),
			[]string{"8: sources[0].resources[0].delta.overlap: must be 0 with format number (an overlap is a duration)"}},
		{"full_sync every", minimalWith(8, "full_sync: {every: -1h}"),
			[]string{"8: sources[0].resources[0].full_sync.every: must be greater than 0"}},
		{"rate_limit requests", minimalWith(4, "rate_limit: {per: 1s}"),
			[]string{"4: sources[0].rate_limit.requests: must be greater than 0"}},
		{"rate_limit per zero", minimalWith(4, "rate_limit:\n  requests: 5\n  per: 0s"),
			[]string{"6: sources[0].rate_limit.per: must be greater than 0"}},
		{"max_concurrency zero", minimalWith(4, "max_concurrency: 0"),
			[]string{"4: sources[0].max_concurrency: must be greater than 0"}},
		{"timeout negative", minimalWith(4, "timeout: -1s"),
			[]string{"4: sources[0].timeout: must be greater than 0"}},
		{"auth type", minimalWith(4, "auth: {type: oauth}"),
			[]string{`4: sources[0].auth.type: unknown auth type "oauth" (want bearer | header | query | basic | oauth2)`}},
		{"auth type required", minimalWith(4, "auth: {token_env: TOKEN}"),
			[]string{"4: sources[0].auth.type: required"}},
		{"bearer needs token", minimalWith(4, "auth: {type: bearer}"),
			[]string{"4: sources[0].auth: auth type bearer needs token_env or token_file"}},
		{"bearer token twice", minimalWith(4, "auth: {type: bearer, token_env: T, token_file: /run/t}"),
			[]string{"4: sources[0].auth.token_file: set token_env or token_file, not both"}},
		{"header needs header", minimalWith(4, "auth: {type: header, token_env: T}"),
			[]string{"4: sources[0].auth.header: required for auth type header"}},
		{"query needs param", minimalWith(4, "auth: {type: query, token_env: T}"),
			[]string{"4: sources[0].auth.param: required for auth type query"}},
		{"query param name", minimalWith(4, "auth: {type: query, token_env: T, param: \"api key\"}"),
			[]string{`4: sources[0].auth.param: invalid query parameter name "api key"`}},
		{"key in the path", strings.Replace(minimalWith(4, "auth: {type: query, token_env: T, param: api_key}"), "path: /r", "path: /r?api_key=abc", 1),
			[]string{"7: sources[0].resources[0].path: must not carry api_key: auth (type query) adds it to every request"}},
		{"param unused by bearer", minimalWith(4, "auth: {type: bearer, token_env: T, param: api_key}"),
			[]string{"4: sources[0].auth.param: not used by auth type bearer"}},
		{"on_status action", minimalWith(8, "on_status:\n  404: empty\n  403: ignore"),
			[]string{`10: sources[0].resources[0].on_status.403: unknown action "ignore" (want empty | fail | retry)`}},
		{"on_status 429", minimalWith(8, "on_status: {429: retry}"),
			[]string{"8: sources[0].resources[0].on_status.429: 429 cannot be mapped"}},
		{"on_status 304", minimalWith(8, "on_status: {304: empty}"),
			[]string{"8: sources[0].resources[0].on_status.304: status 304 cannot be mapped"}},
		{"on_status not a status", minimalWith(8, "on_status: {not_found: empty}"),
			[]string{`8: sources[0].resources[0].on_status.not_found: "not_found" is not an HTTP status code`}},
		{"basic needs env", minimalWith(4, "auth:\n  type: basic\n  username_env: USER"),
			[]string{"4: sources[0].auth.password_env: required for auth type basic"}},
		{"basic with token", minimalWith(4, "auth: {type: basic, username_env: U, password_env: P, token_env: T}"),
			[]string{"4: sources[0].auth.token_env: not used by auth type basic"}},
		{"oauth2 needs its keys", minimalWith(4, "auth: {type: oauth2}"),
			[]string{"4: sources[0].auth.token_url: required for auth type oauth2",
				"4: sources[0].auth.client_id_env: required for auth type oauth2",
				"4: sources[0].auth.grant_type: required for auth type oauth2 (client_credentials | refresh_token)"}},
		{"oauth2 client credentials need a secret", minimalWith(4, "auth: {type: oauth2, grant_type: client_credentials, token_url: https://auth.example.com/token, client_id_env: ID}"),
			[]string{"4: sources[0].auth.client_secret_env: required for grant_type client_credentials"}},
		{"oauth2 refresh needs its token", minimalWith(4, "auth: {type: oauth2, grant_type: refresh_token, token_url: https://auth.example.com/token, client_id_env: ID}"),
			[]string{"4: sources[0].auth.refresh_token_env: required for grant_type refresh_token"}},
		{"oauth2 refresh token unused", minimalWith(4, "auth: {type: oauth2, grant_type: client_credentials, token_url: https://a.example/t, client_id_env: ID, client_secret_env: S, refresh_token_env: R}"),
			[]string{"4: sources[0].auth.refresh_token_env: not used by grant_type client_credentials"}},
		{"oauth2 grant and style", minimalWith(4, "auth: {type: oauth2, grant_type: password, token_url: https://a.example/t, client_id_env: ID, auth_style: header}"),
			[]string{`4: sources[0].auth.grant_type: unknown grant type "password" (want client_credentials | refresh_token)`,
				`4: sources[0].auth.auth_style: unknown value "header" (want body | basic)`}},
		{"oauth2 token url", minimalWith(4, "auth: {type: oauth2, grant_type: refresh_token, token_url: /token, client_id_env: ID, refresh_token_env: R}"),
			[]string{"4: sources[0].auth.token_url:"}},
		{"oauth2 secret instead of env name", minimalWith(4, "auth: {type: oauth2, grant_type: client_credentials, token_url: https://a.example/t, client_id_env: ID, client_secret_env: s3cr3t-value}"),
			[]string{`4: sources[0].auth.client_secret_env: "s3cr3t-value" is not an environment variable name`}},
		{"oauth2 scopes and params", minimalWith(4, "auth:\n  type: oauth2\n  grant_type: client_credentials\n  token_url: https://a.example/t\n  client_id_env: ID\n  client_secret_env: S\n  scopes: [read, 'two words']\n  token_params: {client_secret: x, audience: api}"),
			[]string{`10: sources[0].auth.scopes[1]: invalid scope "two words"`,
				"11: sources[0].auth.token_params.client_secret: set by tidemark itself: use client_secret_env"}},
		{"oauth2 keys on bearer", minimalWith(4, "auth: {type: bearer, token_env: T, token_url: https://a.example/t, scopes: [read]}"),
			[]string{"4: sources[0].auth.token_url: not used by auth type bearer",
				"4: sources[0].auth.scopes: not used by auth type bearer"}},
		{"bearer keys on oauth2", minimalWith(4, "auth: {type: oauth2, grant_type: client_credentials, token_url: https://a.example/t, client_id_env: ID, client_secret_env: S, token_env: T}"),
			[]string{"4: sources[0].auth.token_env: not used by auth type oauth2"}},
		{"secret instead of env name", minimalWith(4, "auth: {type: bearer, token_env: sk-live-123}"),
			[]string{`4: sources[0].auth.token_env: "sk-live-123" is not an environment variable name`}},
		{"authorization header", minimalWith(4, "headers:\n  Accept: application/json\n  authorization: Bearer x"),
			[]string{"6: sources[0].headers.authorization: credentials do not belong in headers: use auth"}},
		{"header name", minimalWith(4, "headers: {\"Bad Header\": x}"),
			[]string{`4: sources[0].headers.Bad Header: invalid header name "Bad Header"`}},
		{"webhook", minimalWith(0, "webhooks:\n  - url: /hook\n    secret_env: HOOK_SECRET\n    events: [data.updated, data.deleted, data.updated]"),
			[]string{`9: webhooks[0].url: "/hook" must be an absolute http:// or https:// URL`,
				`11: webhooks[0].events[1]: unknown event "data.deleted"`,
				`11: webhooks[0].events[2]: duplicate event "data.updated"`}},
		{"webhook url required", minimalWith(0, "webhooks:\n  - events: [run.failed]"),
			[]string{"9: webhooks[0].url: required"}},
		{"unknown field suggests", minimalWith(8, "pagnation: {style: page}"),
			[]string{`8: sources[0].resources[0].pagnation: unknown field (did you mean "pagination"?)`}},
		{"unknown top-level field", minimalWith(0, "webhook: []"),
			[]string{`8: webhook: unknown field (did you mean "webhooks"?)`}},
		{"duplicate key", minimalWith(8, "path: /again"),
			[]string{"8: sources[0].resources[0].path: duplicate key (first at line 6)"}},
		{"list expected", minimalWith(8, "ignore_fields: meta.id"),
			[]string{`8: sources[0].resources[0].ignore_fields: expected a list, found "meta.id"`}},
		{"mapping expected, reported once", strings.Replace(minimalWith(0, ""), "{id: id}", "id", 1),
			[]string{`7: sources[0].resources[0].records: expected a mapping, found "id"`}},
		{"boolean", minimalWith(4, "allow_private: maybe"),
			[]string{`4: sources[0].allow_private: invalid boolean "maybe"`}},
		{"number", minimalWith(4, "max_concurrency: four"),
			[]string{`4: sources[0].max_concurrency: invalid whole number "four"`}},
		{"syntax", "sources:\n  - name: s\n    base_url: x: y\n",
			[]string{"3: invalid YAML: mapping values are not allowed in this context"}},
		{"two documents", minimalWith(0, "---\nsources: []"),
			[]string{"8: more than one YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse("t.yaml", []byte(tt.doc), env(nil))
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v\n--- config:\n%s", len(got), len(tt.want), err, tt.doc)
			}
			for i, w := range tt.want {
				if s := got[i].String(); !strings.HasPrefix(s, "t.yaml:"+w) {
					t.Errorf("problem %d = %q, want prefix %q", i, s, "t.yaml:"+w)
				}
			}
		})
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, `sources:
  - name: s
    base_url: http://h
    resources:
      - &base
        name: a
        path: /a
        records: {id: id}
        probe: &probe {strategy: etag, every: 5s}
      - <<: *base
        name: b
        path: /b
      - name: c
        path: /c
        records: {id: id}
        probe: *probe
`, nil)
	rs := cfg.Sources[0].Resources
	want := Probe{Strategy: tidemark.ProbeETag, Method: "GET", Every: Duration(5 * time.Second), MaxEvery: Duration(5 * time.Second)}
	if rs[1].Name != "b" || rs[1].Path != "/b" || rs[1].Records.ID != "id" || rs[1].Probe != want || rs[2].Probe != want {
		t.Errorf("resources = %+v", rs)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestValidateBuilt(t *testing.T) {
	t.Parallel()
	var empty Config
	if err := empty.Validate(); err == nil || err.Error() != "sources: at least one source required" {
		t.Errorf("Validate(empty) = %v", err)
	}
	cfg := Config{Sources: []Source{{
		Name:      "s",
		BaseURL:   "https://api.example.com",
		Resources: []Resource{{Name: "r", Path: "/r", Records: Records{ID: "id"}}},
	}}}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestEach(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, minimalWith(0, "")+"      - name: r2\n        path: /r2\n        records: {id: id}\n"+
		strings.Replace(strings.TrimPrefix(minimalWith(0, ""), "sources:\n"), "name: s", "name: t", 1), nil)
	var got []string
	cfg.Each(func(s *Source, r *Resource) { got = append(got, s.Name+"/"+r.Name) })
	if want := []string{"s/r", "s/r2", "t/r"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Each visited %q, want %q", got, want)
	}
}

// TestValidationRequests covers method, body, cursor_from and delta
// start/window: each mistake names its line and key.
func TestValidationRequests(t *testing.T) {
	t.Parallel()
	gql := "method: post\nbody: {query: q, variables: {after: \"{cursor}\", first: \"{limit}\"}}\npagination: {style: cursor, next_field: data.p.pageInfo.endCursor, has_more_field: data.p.pageInfo.hasNextPage}\n"
	tests := []struct {
		name  string
		extra string // resource keys, from line 8
		want  []string
	}{
		{"graphql", gql, nil},
		{"stripe list", "pagination: {style: cursor, cursor_param: starting_after, cursor_from: last_record, has_more_field: has_more}\n" +
			"delta: {param: \"created[gte]\", field: created, format: unix, start: \"2024-01-01T00:00:00Z\", window: {size: 720h, end_param: \"created[lt]\"}}\n", nil},
		{"unknown method", "method: PUT", []string{`8: sources[0].resources[0].method: unknown method "PUT" (want GET | POST)`}},
		{"post without body", "method: POST", []string{"5: sources[0].resources[0].body: required with method POST"}},
		{"body on a GET", "body: {q: 1}", []string{"8: sources[0].resources[0].body: only with method POST"}},
		{"body not a mapping", "method: POST\nbody: [1]", []string{"9: sources[0].resources[0].body: expected a mapping (the JSON object to send)"}},
		{"placeholders without their config", "method: POST\nbody: {a: \"{cursor}\", b: \"x {since}\", c: \"{until}\"}",
			[]string{"9: sources[0].resources[0].body: uses {cursor}, which needs pagination.style cursor",
				"9: sources[0].resources[0].body: uses {since}, which needs delta",
				"9: sources[0].resources[0].body: uses {until}, which needs delta.window"}},
		{"cursor goes nowhere", "method: POST\nbody: {q: 1}\npagination: {style: cursor, next_field: n}",
			[]string{"10: sources[0].resources[0].pagination.cursor_param: required for style cursor (or, with method POST, {cursor} in the body)"}},
		{"next_field with last_record", "pagination: {style: cursor, cursor_param: a, cursor_from: last_record, next_field: n}",
			[]string{"8: sources[0].resources[0].pagination.next_field: not used with cursor_from last_record"}},
		{"unknown cursor_from", "pagination: {style: cursor, cursor_param: a, cursor_from: header}",
			[]string{`8: sources[0].resources[0].pagination.cursor_from: unknown value "header"`}},
		{"cursor_from on pages", "pagination: {style: page, cursor_from: last_record}",
			[]string{"8: sources[0].resources[0].pagination.cursor_from: not used by style page"}},
		{"has_more on links", "pagination: {style: link, has_more_field: more}",
			[]string{"8: sources[0].resources[0].pagination.has_more_field: not used by style link (used by page | offset | cursor)"}},
		{"etag on a POST", gql + "probe: {strategy: etag}",
			[]string{"11: sources[0].resources[0].probe.strategy: etag is not available with method POST"}},
		{"HEAD on a POST", gql + "probe: {strategy: hash, method: HEAD}",
			[]string{"11: sources[0].resources[0].probe.method: strategy hash reads the body: use GET",
				"11: sources[0].resources[0].probe.method: HEAD is not available with method POST"}},
		{"delta.param optional with POST", gql + "delta: {field: updated_at}", nil},
		{"delta.param required with GET", "delta: {field: updated_at}", []string{"8: sources[0].resources[0].delta.param: required (with method POST"}},
		{"bad start", "delta: {param: p, field: f, start: yesterday}",
			[]string{`8: sources[0].resources[0].delta.start: "yesterday" is neither an RFC 3339 timestamp`}},
		{"start with numbers", "delta: {param: p, field: f, format: number, start: 24h}",
			[]string{"8: sources[0].resources[0].delta.start: not with format number"}},
		{"window without start", "delta: {param: p, field: f, window: {size: 24h, end_param: e}}",
			[]string{"8: sources[0].resources[0].delta.start: required with window"}},
		{"window without size or end", "delta: {param: p, field: f, start: 24h, window: {size: 0}}",
			[]string{"8: sources[0].resources[0].delta.window.size: must be greater than 0",
				"8: sources[0].resources[0].delta.window.end_param: required (with method POST"}},
		{"relative start deletes", "delta: {param: p, field: f, start: 24h, window: {size: 1h, end_param: e}}\nfull_sync: {detect_deletes: true}",
			[]string{"8: sources[0].resources[0].delta.start: must be a timestamp with window and full_sync.detect_deletes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := minimalWith(8, tt.extra)
			_, err := parse("t.yaml", []byte(doc), env(nil))
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v\n--- config:\n%s", len(got), len(tt.want), err, doc)
			}
			for i, w := range tt.want {
				if s := got[i].String(); !strings.HasPrefix(s, "t.yaml:"+w) {
					t.Errorf("problem %d = %q, want prefix %q", i, s, "t.yaml:"+w)
				}
			}
		})
	}
}
