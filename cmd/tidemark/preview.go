package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/oauth"
	"github.com/tidemark/tidemark/store"
	"github.com/tidemark/tidemark/upstream"
	"github.com/tidemark/tidemark/worker"
)

// Preview limits.
const (
	previewMaxPages       = 10
	previewDefaultRecords = 20
	// previewDBTimeout bounds the wait for a database that may be away:
	// preview goes on without it.
	previewDBTimeout = 5 * time.Second
)

// previewNoDB is what preview says when it cannot read the database.
const previewNoDB = "(database not reachable: cannot say what would change)"

// previewRateNote says why preview needs no Redis.
const previewRateNote = "preview requests are outside the fleet's rate limit (no Redis is used): mind the source's budget"

// previewOptions are preview's flags.
type previewOptions struct {
	pages, records int
	delta, json    bool
	probe          bool
}

// preview runs the first pages of a resource as a fetch would, writing
// nothing, and shows what tidemark would do with them.
func (e env) preview(args []string) error {
	var s settings
	fs := flag.NewFlagSet("tidemark preview", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "Usage: tidemark preview SOURCE/RESOURCE [--pages N] [--delta] [--records N] [--json] [--probe=false]")
		fmt.Fprintln(e.stderr, "Reads the first pages of a resource as a fetch would, writes nothing (no Postgres writes but an OAuth2 refresh token rotated on the way, no Redis,")
		fmt.Fprintln(e.stderr, "no events), and shows the requests, records, ids, cursors, hashes, next-page decisions, the probe's")
		fmt.Fprintln(e.stderr, "validators and, when the database is reachable, what each record would do there.")
		fs.PrintDefaults()
	}
	fs.StringVar(&s.configPath, "config", e.or("TIDEMARK_CONFIG", defaultConfigPath), "config file (TIDEMARK_CONFIG)")
	fs.StringVar(&s.databaseURL, "database-url", e.or("TIDEMARK_DATABASE_URL", defaultDatabaseURL), "Postgres URL, read only (TIDEMARK_DATABASE_URL)")
	var o previewOptions
	fs.IntVar(&o.pages, "pages", 1, fmt.Sprintf("pages to read, at most %d", previewMaxPages))
	fs.IntVar(&o.records, "records", previewDefaultRecords, "records to show per page (0: none)")
	fs.BoolVar(&o.delta, "delta", false, "preview the delta request (the stored watermark applied) instead of the full read")
	fs.BoolVar(&o.json, "json", false, "write the preview as JSON")
	fs.BoolVar(&o.probe, "probe", true, "also send the resource's probe request(s) and show its validator")
	if err := parse(fs, reorder(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("preview wants one SOURCE/RESOURCE, got %d arguments", fs.NArg())
	}
	if o.pages < 1 || o.pages > previewMaxPages {
		return usagef("--pages %d: want 1 to %d", o.pages, previewMaxPages)
	}
	if o.records < 0 {
		return usagef("--records %d: want 0 or more", o.records)
	}
	srcName, resName, err := splitKey(fs.Arg(0), true)
	if err != nil {
		return err
	}
	conf, err := s.loadConfig()
	if err != nil {
		return err
	}
	src := conf.Source(srcName)
	if src == nil || src.Resource(resName) == nil {
		return notConfigured(conf, s.configPath, srcName, resName)
	}
	res := src.Resource(resName)
	if o.delta && res.Delta == nil {
		return usagef("--delta: %s/%s has no delta in %s: every read of it is a full read", srcName, resName, s.configPath)
	}
	p := &previewer{src: src, res: res, opts: o, key: store.Key{Source: srcName, Resource: resName}}
	p.readDatabase(e.ctx, s.databaseURL)
	if p.client, err = e.previewClient(src, p.db); err != nil {
		if p.db != nil {
			p.db.Close()
		}
		return usageError{err}
	}
	rep, runErr := p.run(e.ctx)
	if o.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.writeText(e.stdout)
	}
	return runErr
}

// previewClient is the upstream client preview reads with: no fleet
// limiter, since preview must run without Redis (previewRateNote), and for
// auth type oauth2 tokens bought in this process. A refresh token the
// endpoint rotates meanwhile is stored as a worker stores it (db), or the
// fleet's connection would die with the old one.
func (e env) previewClient(src *config.Source, db *store.Store) (*upstream.Client, error) {
	opts := upstream.Options{AllowHosts: src.AllowHosts, Getenv: e.getenv}
	if src.Auth != nil && src.Auth.Type == config.AuthOAuth2 {
		key, err := e.secretKey()
		if err != nil {
			return nil, err
		}
		tokens, err := oauth.New(oauth.Config{Source: src, Key: key, Getenv: e.getenv, Store: db})
		if err != nil {
			return nil, err
		}
		opts.Tokens = tokens
	}
	return upstream.New(src, opts)
}

// previewReport is what preview shows: the text and the JSON forms are of
// this one value.
type previewReport struct {
	Source   string           `json:"source"`
	Resource string           `json:"resource"`
	Mode     tidemark.RunKind `json:"mode"`
	// Database is "read", or why it could not be (previewNoDB).
	Database    string         `json:"database"`
	DBError     string         `json:"database_error,omitempty"`
	Watermark   string         `json:"watermark,omitempty"`
	Notes       []string       `json:"notes"`
	Probe       *previewProbe  `json:"probe,omitempty"`
	Pages       []previewPage  `json:"pages"`
	Requests    int            `json:"requests"`
	Totals      map[string]int `json:"would"`
	NotReadNext string         `json:"unread_next_url,omitempty"`
	// NotReadBody is the unread next request's body (method POST).
	NotReadBody json.RawMessage `json:"unread_next_body,omitempty"`
	Error       string          `json:"error,omitempty"`
}

type previewProbe struct {
	Strategy  tidemark.ProbeStrategy `json:"strategy"`
	Method    string                 `json:"method,omitempty"`
	URL       string                 `json:"url"`
	Kind      tidemark.ValidatorKind `json:"kind,omitempty"`
	Validator string                 `json:"validator,omitempty"`
	Stored    string                 `json:"stored,omitempty"`
	Changed   bool                   `json:"changed"`
	Requests  int                    `json:"requests"`
	Error     string                 `json:"error,omitempty"`
}

type previewPage struct {
	Number int    `json:"number"`
	Method string `json:"method,omitempty"` // POST; "" for GET
	URL    string `json:"url"`
	// Body is the request's body (method POST): built from the config's
	// body template, which holds no secrets (no ${VAR} is expanded in it),
	// and the read's cursors and bounds.
	Body     json.RawMessage   `json:"body,omitempty"`
	Requests int               `json:"requests"`
	Records  []previewRecord   `json:"records"`
	Omitted  int               `json:"records_not_shown,omitempty"`
	Total    int               `json:"records_extracted"`
	Rejected []previewRejected `json:"rejected"`
	Next     string            `json:"next_url,omitempty"`
	Decision string            `json:"decision"`
}

type previewRecord struct {
	ID         string `json:"id"`
	Cursor     string `json:"cursor,omitempty"`
	CursorNote string `json:"cursor_note,omitempty"`
	Hash       string `json:"hash"`
	// Would is store.WouldCreate, WouldUpdate, WouldUnchanged, or "?"
	// without a database.
	Would string `json:"would"`
}

type previewRejected struct {
	ID     string `json:"id,omitempty"`
	Reason string `json:"reason"`
	// Where: "extract" (no usable id, an id repeated) or "store" (a value
	// Postgres cannot store). Both are quarantined by a fetch.
	Where string `json:"where"`
}

// previewer is one preview: the resource, its client, and what the
// database says of it (db nil when it cannot be read).
type previewer struct {
	src    *config.Source
	res    *config.Resource
	key    store.Key
	client *upstream.Client
	opts   previewOptions
	db     *store.Store
	state  store.State
	dbErr  error
}

// readDatabase opens the database and reads the resource's sync state;
// one that cannot be read leaves db nil and says why in dbErr.
func (p *previewer) readDatabase(ctx context.Context, dbURL string) {
	ctx, cancel := context.WithTimeout(ctx, previewDBTimeout)
	defer cancel()
	db, err := store.Open(ctx, dbURL)
	if err != nil {
		p.dbErr = err
		return
	}
	st, err := db.State(ctx, p.key)
	if err != nil && !errors.Is(err, store.ErrNotFound) { // not found: never synced
		db.Close()
		p.dbErr = err
		return
	}
	p.db, p.state = db, st
}

// run builds the report: the probe, then the pages. The error is the
// first that stopped the preview (the report holds what came before it).
func (p *previewer) run(ctx context.Context) (*previewReport, error) {
	if p.db != nil {
		defer p.db.Close()
	}
	// As the fetch decides: a changed id path makes any read a full one,
	// a changed delta field or format leaves the watermark unused.
	watermark, rekey, notes := worker.DeltaStart(p.res, p.state)
	rep := &previewReport{Source: p.key.Source, Resource: p.key.Resource, Mode: jobs.ModeFor(p.res, !p.opts.delta || rekey),
		Database: "read", Notes: append([]string{previewRateNote}, notes...), Totals: map[string]int{}, Pages: []previewPage{},
		Watermark: p.state.Watermark}
	if p.dbErr != nil {
		rep.Database, rep.DBError = previewNoDB, p.dbErr.Error()
	}
	first, firstNotes := p.first(rep.Mode, watermark)
	rep.Notes = append(rep.Notes, firstNotes...)
	switch st := p.res.Probe.Strategy; {
	case !p.opts.probe || st == tidemark.ProbeNone || st == "":
	case st == tidemark.ProbeDelta || st == tidemark.ProbeRollingHash:
		// These probes read the collection's own pages, with state a
		// preview does not write: the pages below show what they read.
		rep.Notes = append(rep.Notes, fmt.Sprintf("probe.strategy %s reads the resource's own pages (delta: the delta read's first page; rolling_hash: one page of the last full read per probe): the pages below are what it reads", st))
	default:
		rep.Probe = p.probe(ctx)
		rep.Requests += rep.Probe.Requests
	}
	pager := upstream.NewPager(p.client, p.res, first, 0)
	readStart := time.Time{}
	for n := 1; n <= p.opts.pages && !pager.Done(); n++ {
		url := pager.Position().Next
		body, _ := upstream.Body(p.res, pager.Position()) // Next fails on the same error
		page, err := pager.Next(ctx)
		if err != nil {
			rep.Requests += upstream.Requests(err)
			err = fmt.Errorf("preview %s page %d (%s): %w", p.key, n, p.showURL(url), err)
			rep.Error = err.Error()
			return rep, err
		}
		rep.Requests += page.Requests
		readStart = cmp.Or(readStart, page.Date, time.Now().UTC())
		pv, err := p.page(ctx, n, page, readStart, rep.Totals)
		if err != nil {
			rep.Error = err.Error()
			return rep, err
		}
		if p.res.Post() {
			pv.Method, pv.Body = http.MethodPost, body
		}
		rep.Pages = append(rep.Pages, pv)
	}
	if !pager.Done() {
		rep.NotReadNext = p.showURL(pager.Position().Next)
		rep.NotReadBody, _ = upstream.Body(p.res, pager.Position())
	}
	return rep, nil
}

// first is the read's first position, as the fetch makes it, and notes
// on where a delta begins.
func (p *previewer) first(mode tidemark.RunKind, watermark string) (upstream.Position, []string) {
	var note string
	if d := p.res.Delta; mode == tidemark.RunDelta {
		from := "from the start"
		if d.Start != "" {
			from = "from delta.start (" + d.Start + ")"
		}
		switch lb, err := worker.DeltaLowerBound(d, watermark); {
		case p.db == nil:
			note = "the stored watermark is unknown without the database: this delta reads " + from + ", as a first sync would"
			watermark = ""
		case watermark == "":
			note = "no watermark to use: this delta reads " + from + ", as a first sync would"
		case err != nil:
			note = err.Error() + ": the delta reads from the start"
		default:
			note = fmt.Sprintf("watermark %s less delta.overlap (%s): %s=%s", watermark, d.Overlap.D(), cmp.Or(d.Param, "{since}"), lb)
		}
	}
	pos, notes := worker.FirstPosition(p.client, p.res, mode, watermark, time.Now())
	if note != "" {
		notes = append([]string{note}, notes...)
	}
	return pos, notes
}

// probe runs the resource's probe against the stored validators.
func (p *previewer) probe(ctx context.Context) *previewProbe {
	pr := &previewProbe{Strategy: p.res.Probe.Strategy, URL: p.showURL(worker.ProbeURL(p.client, p.res))}
	if pr.Strategy != tidemark.ProbeHash {
		pr.Method = p.res.Probe.Method
	}
	out, requests, err := worker.Probe(ctx, p.client, p.res, p.state)
	pr.Requests = requests
	if err != nil {
		pr.Error = err.Error()
		return pr
	}
	pr.Kind, pr.Validator, pr.Changed = out.Kind, out.Validator, out.Changed
	pr.Stored = p.state.Confirmed(out.Kind)
	return pr
}

// page describes one read page: each record with its id, cursor, hash and
// what it would do in the database, and the page's rejected records.
func (p *previewer) page(ctx context.Context, n int, page *upstream.Page, readStart time.Time, totals map[string]int) (previewPage, error) {
	pv := previewPage{Number: n, URL: p.showURL(page.URL), Requests: page.Requests, Total: len(page.Records),
		Decision: page.Decision, Records: []previewRecord{}, Rejected: []previewRejected{}}
	if page.Next != "" {
		pv.Next = p.showURL(page.Next)
	}
	for _, r := range page.Rejected {
		pv.Rejected = append(pv.Rejected, previewRejected{ID: r.ID, Reason: r.Reason, Where: "extract"})
	}
	recs := make([]store.Record, len(page.Records))
	for i, r := range page.Records {
		recs[i] = store.Record{ExternalID: r.ID, Payload: r.Payload, Hash: r.Hash}
	}
	var out store.Outlook
	if p.db != nil {
		var err error
		if out, err = p.db.WouldApply(ctx, p.key, recs); err != nil {
			return pv, err
		}
		for _, a := range out.Aside {
			pv.Rejected = append(pv.Rejected, previewRejected{ID: a.ExternalID, Reason: a.Reason, Where: "store"})
		}
	}
	for i, r := range page.Records {
		rec := previewRecord{ID: r.ID, Hash: r.Hash, Would: "?"}
		if p.db != nil {
			switch op := out.Ops[r.ID]; {
			case op == "": // set aside by the store: listed with the page's quarantine
				rec.Would = "quarantine"
			case out.Tombstoned[r.ID]:
				rec.Would = op + " (deleted: comes back)"
				totals[op]++
			default:
				rec.Would = op
				totals[op]++
			}
		}
		if d := p.res.Delta; d != nil {
			rec.Cursor, rec.CursorNote = worker.RecordCursor(r, d, readStart)
		}
		if i < p.opts.records {
			pv.Records = append(pv.Records, rec)
		}
	}
	pv.Omitted = len(page.Records) - len(pv.Records)
	totals["quarantine"] += len(pv.Rejected)
	return pv, nil
}

// showURL is a request URL as preview shows it: upstream.Redact's form
// (no query string, user info or fragment, which may carry secrets) with
// back only the query parameters tidemark itself sets from the config
// (pagination, the delta's lower bound) and those the configured path
// carries; any other parameter (a token in a next link) shows as
// [REDACTED].
func (p *previewer) showURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.RawQuery == "" {
		return upstream.Redact(raw)
	}
	pg := p.res.Pagination
	known := []string{pg.LimitParam, pg.PageParam, pg.OffsetParam, pg.CursorParam}
	if d := p.res.Delta; d != nil {
		known = append(known, d.Param)
		if d.Window != nil {
			known = append(known, d.Window.EndParam)
		}
	}
	if path, err := url.Parse(p.res.Path); err == nil {
		for k := range path.Query() {
			known = append(known, k)
		}
	}
	q := u.Query()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(q)) {
		for _, v := range q[k] {
			v = url.QueryEscape(v)
			if k == "" || !slices.Contains(known, k) {
				v = "[REDACTED]"
			}
			parts = append(parts, url.QueryEscape(k)+"="+v)
		}
	}
	return upstream.Redact(raw) + "?" + strings.Join(parts, "&")
}

// writeText writes the report for a terminal.
func (r *previewReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "preview of %s/%s: %s read\n", r.Source, r.Resource, r.Mode)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if r.Database != "read" {
		fmt.Fprintf(w, "%s\n  (%s)\n", r.Database, r.DBError)
	}
	if pr := r.Probe; pr != nil {
		fmt.Fprintf(w, "\nprobe (%s) %s %s: %s\n", pr.Strategy, cmp.Or(pr.Method, "GET"), pr.URL, plural(pr.Requests, "request"))
		switch {
		case pr.Error != "":
			fmt.Fprintf(w, "  failed: %s\n", pr.Error)
		case pr.Changed:
			fmt.Fprintf(w, "  %s %s, stored %s: changed, a fetch would be enqueued\n", validatorName(pr.Kind), pr.Validator, cmp.Or(pr.Stored, "(none)"))
		default:
			fmt.Fprintf(w, "  %s %s, as stored: unchanged, no fetch\n", validatorName(pr.Kind), pr.Validator)
		}
	}
	for _, pg := range r.Pages {
		pg.writeText(w)
	}
	if r.NotReadNext != "" {
		if r.NotReadBody != nil {
			fmt.Fprintf(w, "\nnot read (--pages): POST %s\n  body: %s\n", r.NotReadNext, r.NotReadBody)
		} else {
			fmt.Fprintf(w, "\nnot read (--pages): GET %s\n", r.NotReadNext)
		}
	}
	fmt.Fprintf(w, "\n%s", plural(r.Requests, "HTTP request"))
	if r.Database == "read" {
		fmt.Fprintf(w, "; would create %d, update %d, leave %d unchanged, quarantine %d",
			r.Totals[store.WouldCreate], r.Totals[store.WouldUpdate], r.Totals[store.WouldUnchanged], r.Totals["quarantine"])
	} else {
		fmt.Fprintf(w, "; %s", previewNoDB)
	}
	fmt.Fprintln(w, "; nothing was written")
	if r.Error != "" {
		fmt.Fprintf(w, "stopped: %s\n", r.Error)
	}
}

// validatorName is how an operator knows a validator kind: by its header.
func validatorName(kind tidemark.ValidatorKind) string {
	switch kind {
	case tidemark.ValidatorETag:
		return "ETag"
	case tidemark.ValidatorLastModified:
		return "Last-Modified"
	case tidemark.ValidatorHash:
		return "body hash"
	}
	return string(kind)
}

func (pg previewPage) writeText(w io.Writer) {
	fmt.Fprintf(w, "\npage %d: %s %s (%s): %s extracted, %d to quarantine\n", pg.Number, cmp.Or(pg.Method, http.MethodGet), pg.URL, plural(pg.Requests, "request"), plural(pg.Total, "record"), len(pg.Rejected))
	if pg.Body != nil {
		fmt.Fprintf(w, "  body: %s\n", pg.Body)
	}
	if len(pg.Records) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tCURSOR\tHASH\tWOULD")
		for _, rec := range pg.Records {
			cursor := cmp.Or(rec.Cursor, "-")
			if rec.CursorNote != "" {
				cursor += " (" + rec.CursorNote + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%.12s\t%s\n", rec.ID, cursor, rec.Hash, rec.Would)
		}
		tw.Flush()
	}
	if pg.Omitted > 0 {
		fmt.Fprintf(w, "  … %d more records (--records)\n", pg.Omitted)
	}
	for _, rj := range pg.Rejected {
		fmt.Fprintf(w, "  quarantine (%s): %s\n", rj.Where, rj.Reason)
	}
	fmt.Fprintf(w, "  next: %s\n", pg.Decision)
	if pg.Next != "" {
		fmt.Fprintf(w, "        %s %s\n", cmp.Or(pg.Method, http.MethodGet), pg.Next)
	}
}
