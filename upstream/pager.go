package upstream

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

// ErrBadResponse marks a response tidemark cannot use: malformed JSON, a
// records field that is not an array, a broken next link, a pagination
// loop. Retrying the same request at once will not help; the run fails with
// the reason and the next run tries again.
var ErrBadResponse = errors.New("bad response")

func badResponse(method, url string, err error) error {
	return fmt.Errorf("%s %s: %w: %w", method, redact(url), ErrBadResponse, err)
}

// Page is one fetched and extracted page of a resource.
type Page struct {
	URL     string
	Header  http.Header
	Records []extract.Record
	// Rejected are the page's records that cannot be used as they are (no
	// usable id, one id twice): the page goes on without them.
	Rejected []extract.Rejected
	Requests int
	// Next is the URL of the following page; "" on the last page.
	Next string
	// Date is the upstream's clock when it answered (its Date header);
	// zero when it sent none.
	Date time.Time
	// EmptyStatus is the HTTP status that on_status maps to empty when the
	// page is such an answer (no records, the last page); 0 otherwise.
	EmptyStatus int
	// Shifted: this offset page did not begin with the record the page
	// before ended with. Records moved (were deleted or reordered) during
	// the read, and the read may have skipped some.
	Shifted bool
	// Decision says why the page is the last, or where Next came from, in
	// an operator's words (tidemark preview shows it).
	Decision string
	// NotModified: the first page's conditional GET (Pager.IfNoneMatch)
	// was answered 304, and the read ends there with nothing read.
	NotModified bool
}

// Position is where a walk of a resource's pages is: the next request and
// what the walk knows of the pages before it. It is everything a checkpoint
// needs to resume the walk.
type Position struct {
	// Next is the URL of the next request; "" once the last page is read.
	Next string `json:"next_url"`
	// Vars are the values of the next request's body template (method
	// POST): the cursor a POST carries in its body is here.
	Vars Vars `json:"vars,omitempty"`
	// Served is the largest page the upstream served in this read (page and
	// offset styles): a page shorter than that is the last. Never the
	// limit asked for: an upstream may cap its pages below it.
	Served int `json:"served,omitempty"`
	// Read counts the records read so far, for total_field.
	Read int64 `json:"read,omitempty"`
	// LastID is the id the previous offset page ended with: the next page
	// is asked to begin one record early, with it, which proves that no
	// record moved out from under the read in between.
	LastID string `json:"last_id,omitempty"`
	// Changed says the collection changed while it was read, so that with
	// page numbers a record may have slid past the read:
	//   - the total (total_field) moved from the first page's;
	//   - a page's Last-Modified is not before the first page's Date: a
	//     record (of the page, or of the collection) was modified once the
	//     read had begun, or in its first second (both have one-second
	//     resolution, and a change in that second may have come after);
	//   - the ETag moved from one page to the next, where two consecutive
	//     pages have shown it to be the collection's (the same on both),
	//     not each page's own.
	// Date and Total are the first page's, ETag the last page's.
	Date      time.Time `json:"date,omitzero"`
	Total     int64     `json:"total,omitempty"`
	ETag      string    `json:"etag,omitempty"`
	ETagWide  bool      `json:"etag_wide,omitempty"`
	ETagMoved bool      `json:"etag_moved,omitempty"`
	Changed   bool      `json:"changed,omitempty"`
	// Unproven: an offset page too small to overlap (one record) was
	// followed by another, so the read cannot prove it skipped nothing
	// there, as page numbers never can.
	Unproven bool `json:"unproven,omitempty"`
}

// Pager walks the pages of one resource.
type Pager struct {
	c     *Client
	res   *config.Resource
	ex    *extract.Extractor
	pos   Position
	pages int
	// seen maps a digest of each continuation (a cursor, a next URL) or of
	// each page's ids and of its first id (page and offset styles) to the
	// page it came with: one coming back is a loop.
	seen map[[32]byte]int
	// why is nextURL's reason for its decision (Page.Decision).
	why string
	// cursor is the cursor style's next cursor, as cursorNext found it.
	cursor string
	// ifNoneMatch, when set, makes the walk's first request conditional.
	ifNoneMatch string
}

// IfNoneMatch makes the walk's first request a conditional GET with etag:
// a 304 ends the walk with a NotModified page. Only for a collection read
// in one page before, whose first page is then all of it.
func (p *Pager) IfNoneMatch(etag string) { p.ifNoneMatch = etag }

// FirstURL is the URL of a resource's first page, with extra parameters (the
// delta watermark) added.
func FirstURL(c *Client, res *config.Resource, extra url.Values) string {
	p := url.Values{}
	pg := res.Pagination
	if pg.LimitParam != "" && pg.Limit > 0 {
		p.Set(pg.LimitParam, strconv.Itoa(pg.Limit))
	}
	switch pg.Style {
	case config.PaginationPage:
		p.Set(pg.PageParam, strconv.Itoa(start(pg)))
	case config.PaginationOffset:
		p.Set(pg.OffsetParam, "0")
	}
	for k, vs := range extra {
		p[k] = vs
	}
	return c.URL(res.Path, p)
}

// FirstPosition is where a read of res begins: its first URL (FirstURL,
// with extra) and, for a POST, the values of its body template: vars, the
// page size as {limit}, and no {cursor} yet.
func FirstPosition(c *Client, res *config.Resource, extra url.Values, vars Vars) Position {
	pos := Position{Next: FirstURL(c, res, extra)}
	if res.Post() {
		pos.Vars = Vars{"cursor": nil, "limit": res.Pagination.Limit}
		maps.Copy(pos.Vars, vars)
	}
	return pos
}

// Body is the body of the request at pos: nil for a GET.
func Body(res *config.Resource, pos Position) ([]byte, error) {
	if !res.Post() {
		return nil, nil
	}
	return Render(res.Body, pos.Vars)
}

// NewPager starts a walk at pos (FirstURL, or a checkpoint's position);
// pages is how many pages the read has already read, which counts towards
// pagination.max_pages.
func NewPager(c *Client, res *config.Resource, pos Position, pages int) *Pager {
	return &Pager{c: c, res: res, ex: extract.New(res), pos: pos, pages: pages, seen: map[[32]byte]int{}}
}

// Position is where the walk is now.
func (p *Pager) Position() Position { return p.pos }

// Done reports whether the last page has been read.
func (p *Pager) Done() bool { return p.pos.Next == "" }

// Next fetches, extracts and returns the next page. A page that fails to
// parse is an error naming the page's URL (without query) and what was wrong.
func (p *Pager) Next(ctx context.Context) (*Page, error) {
	current := p.pos.Next
	if current == "" {
		return nil, fmt.Errorf("pager: no next page")
	}
	method := cmp.Or(p.res.Method, http.MethodGet)
	if max := p.res.Pagination.MaxPages; max > 0 && p.pages >= max {
		return nil, badResponse(method, current, fmt.Errorf("the read has reached pagination.max_pages (%d pages) without a last page: "+
			"a pagination loop tidemark could not recognise, or a resource larger than max_pages allows", max))
	}
	body, err := Body(p.res, p.pos)
	if err != nil {
		return nil, badResponse(method, current, err)
	}
	var header http.Header
	if p.ifNoneMatch != "" && p.pages == 0 && method == http.MethodGet {
		header = http.Header{"If-None-Match": {p.ifNoneMatch}}
	}
	resp, err := p.c.Send(ctx, method, current, header, body)
	if err != nil {
		return p.onStatus(current, err)
	}
	if resp.Status == http.StatusNotModified && header != nil {
		p.pages++
		p.pos.Next = ""
		return &Page{URL: current, Header: resp.Header, Requests: resp.Requests, NotModified: true,
			Decision: "the first page is not modified (304): the collection is as last read"}, nil
	}
	return p.readPage(method, current, resp)
}

// readPage extracts the records of the page resp brought and finds the page
// after it.
func (p *Pager) readPage(method, current string, resp *Response) (*Page, error) {
	// A page that came back but cannot be used still cost its requests:
	// the run row counts them (Requests).
	bad := func(err error) error {
		return &RequestError{Err: badResponse(method, current, err), Requests: resp.Requests}
	}
	// Scan + DocRecords give exactly what Decode + Records give, for about
	// a sixth of the CPU (extract.BenchmarkPage): a full sync's hot path.
	doc, err := extract.Scan(resp.Body)
	if err != nil {
		return nil, bad(err)
	}
	defer doc.Release()
	if p.res.Post() {
		errs, _ := doc.Lookup("errors")
		if err := GraphQLErrors(errs); err != nil {
			return nil, &RequestError{Err: fmt.Errorf("%s %s: %w", method, redact(current), err), Requests: resp.Requests}
		}
	}
	records, rejected, err := p.ex.DocRecords(doc)
	if err != nil {
		return nil, bad(err)
	}
	p.pages++
	page := &Page{URL: current, Header: resp.Header, Records: records, Rejected: rejected, Requests: resp.Requests}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		page.Date = d
	}
	served := len(records) + len(rejected) // as the upstream served them
	if p.pos.LastID != "" {
		// An offset page asked to begin with the last record of the page
		// before: drop that copy, or note that records moved.
		if len(records) > 0 && records[0].ID == p.pos.LastID && !rejectedAt(rejected, 0) {
			page.Records = records[1:]
		} else {
			page.Shifted = true
		}
	}
	p.watch(resp.Header, doc, page.Date)
	p.cursor = ""
	next, err := p.nextURL(current, resp, doc, page, served)
	if err != nil {
		return nil, bad(err)
	}
	if err := p.loop(current, page, next); err != nil {
		return nil, bad(err)
	}
	p.advance(page, next, served)
	return page, nil
}

// advance moves the position past page, whose upstream served served
// records, to next ("" after the last page).
func (p *Pager) advance(page *Page, next string, served int) {
	p.pos.Served = max(p.pos.Served, served)
	p.pos.Read += int64(len(page.Records) + len(page.Rejected))
	p.pos.Next = next
	if p.res.Post() && next != "" && p.res.Pagination.Style == config.PaginationCursor {
		p.pos.Vars = p.pos.Vars.with("cursor", p.cursor)
	}
	page.Next = next
	page.Decision = p.why
}

// onStatus applies the resource's on_status to a failed request: a status
// mapped to empty is a page without records and the last one; fail and
// retry mark the error for the task's retry decision (StatusError.Action).
// Any other error is returned as it is.
func (p *Pager) onStatus(current string, err error) (*Page, error) {
	var se *StatusError
	if !errors.As(err, &se) {
		return nil, err
	}
	se.Action = p.res.StatusAction(se.Code)
	if se.Action != config.OnStatusEmpty {
		return nil, err
	}
	p.pages++
	// An offset page asked to begin with the previous page's last record
	// and got none: records moved, as with an empty 200 (see Next).
	shifted := p.pos.LastID != ""
	p.pos.Next, p.pos.LastID = "", ""
	page := &Page{URL: current, Header: se.Header, Requests: Requests(err), EmptyStatus: se.Code, Shifted: shifted}
	if page.Header == nil {
		page.Header = http.Header{}
	}
	// Dated like any page: the read's start on the upstream's clock
	// decides whether a Last-Modified seen before it is safe to confirm.
	if d, err := http.ParseTime(page.Header.Get("Date")); err == nil {
		page.Date = d
		if p.pos.Date.IsZero() && p.pos.Read == 0 {
			p.pos.Date = d
		}
	}
	return page, nil
}

// watch notes whether the collection changed during the read
// (Position.Changed).
func (p *Pager) watch(h http.Header, doc *extract.Doc, date time.Time) {
	etag := h.Get("ETag")
	total, _ := p.total(doc) // -1 when malformed: nextURL fails the read on it
	pos := &p.pos
	first := pos.Read == 0 && pos.Date.IsZero() && pos.ETag == "" && pos.Total == 0
	if first {
		pos.Date, pos.Total, pos.ETag = date, total, etag
	}
	if lm, err := http.ParseTime(h.Get("Last-Modified")); err == nil && !pos.Date.IsZero() && !lm.Before(pos.Date) {
		pos.Changed = true
	}
	if first {
		return
	}
	switch {
	case etag != "" && etag == pos.ETag:
		pos.ETagWide = true
	case etag != pos.ETag:
		pos.ETagMoved = true
	}
	pos.ETag = etag
	pos.Changed = pos.Changed || total != pos.Total || pos.ETagWide && pos.ETagMoved
}

func rejectedAt(rejected []extract.Rejected, index int) bool {
	for _, r := range rejected {
		if r.Index == index {
			return true
		}
	}
	return false
}

// loop fails a walk that comes back to where it has been: a continuation
// (cursor, next URL) seen before, or a page or offset page holding exactly
// the ids of an earlier page (an upstream that ignores the page parameter).
func (p *Pager) loop(current string, page *Page, next string) error {
	pg := p.res.Pagination
	var key [32]byte
	var what string
	switch pg.Style {
	case config.PaginationPage, config.PaginationOffset:
		if len(page.Records) == 0 {
			return nil
		}
		h := sha256.New()
		for _, r := range page.Records {
			h.Write([]byte(r.ID))
			h.Write([]byte{0})
		}
		copy(key[:], h.Sum(nil))
		param := pg.PageParam
		if pg.Style == config.PaginationOffset {
			param = pg.OffsetParam
		}
		what = fmt.Sprintf("%s=%s returned the same records as page %%d (does the upstream ignore %s?)", param, queryParam(current, param), param)
		// Each position holds a record of its own: a page beginning with
		// the record an earlier page began with is the first page again
		// (changes in between can make the rest of it differ), unless
		// records visibly moved (an offset page that did not begin where
		// the page before ended).
		first := sha256.Sum256([]byte("first\x00" + page.Records[0].ID))
		if at, ok := p.seen[first]; ok && !page.Shifted {
			return fmt.Errorf("pagination loop at page %d: %s=%s begins with the record page %d began with (does the upstream ignore %s?)",
				p.pages, param, queryParam(current, param), at, param)
		}
		p.seen[first] = p.pages
	case config.PaginationCursor:
		if next == "" {
			return nil
		}
		key = sha256.Sum256([]byte(p.cursor))
		what = fmt.Sprintf("the upstream sent cursor %.60q again (%s; first sent with page %%d)", p.cursor, cmp.Or(pg.CursorParam, "{cursor}"))
	default: // link, next_url
		if next == "" {
			return nil
		}
		key = sha256.Sum256([]byte(next))
		what = fmt.Sprintf("the next link to %s came back (the same URL as after page %%d)", redact(next))
	}
	if first, ok := p.seen[key]; ok {
		return fmt.Errorf("pagination loop at page %d: "+what, p.pages, first)
	}
	p.seen[key] = p.pages
	return nil
}

func queryParam(raw, key string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Query().Get(key)
}

// nextURL decides whether a page is the last and where the next one is.
// Page and offset reads end only where the upstream says so: an empty page;
// total_field or has_more_field, where configured; otherwise a page shorter
// than the largest the upstream has served in this read. A page shorter
// than the limit asked for is not enough: an upstream may cap its pages.
func (p *Pager) nextURL(current string, resp *Response, doc *extract.Doc, page *Page, served int) (string, error) {
	pg := p.res.Pagination
	switch pg.Style {
	case config.PaginationNone, "":
		p.why = "last page: pagination style none reads one page"
		return "", nil
	case config.PaginationCursor:
		return p.cursorNext(current, doc, served)
	case config.PaginationLink:
		link := nextLink(resp.Header.Values("Link"))
		if link == "" {
			p.why = `last page: no Link header with rel="next"`
			return "", nil
		}
		p.why = `next page: the Link header's rel="next"`
		next, err := resolve(resp.URL, link)
		return p.c.StripKey(next), err
	case config.PaginationNextURL:
		v, ok := doc.Lookup(pg.NextField)
		if !ok || v == nil {
			p.why = fmt.Sprintf("last page: the response has no %s", pg.NextField)
			return "", nil
		}
		s, isStr := v.(string)
		if !isStr {
			return "", fmt.Errorf("next URL field %q is not a string", pg.NextField)
		}
		if s == "" {
			p.why = fmt.Sprintf("last page: %s is empty", pg.NextField)
			return "", nil
		}
		p.why = fmt.Sprintf("next page: the URL in the response's %s", pg.NextField)
		next, err := resolve(resp.URL, s)
		return p.c.StripKey(next), err
	case config.PaginationPage, config.PaginationOffset:
		last, err := p.lastPage(doc, page, served)
		if err != nil || last {
			p.pos.LastID = ""
			return "", err
		}
		if pg.Style == config.PaginationPage {
			n, err := intParam(current, pg.PageParam, start(pg))
			if err != nil {
				return "", err
			}
			p.why = fmt.Sprintf("next page: %s=%d (%s)", pg.PageParam, n+1, p.why)
			return SetParams(current, pg.PageParam, strconv.Itoa(n+1))
		}
		off, err := intParam(current, pg.OffsetParam, 0)
		if err != nil {
			return "", err
		}
		off += served
		p.pos.LastID = ""
		if n := len(page.Records); served >= 2 && n > 0 && !rejectedAt(page.Rejected, served-1) {
			// Overlap by one record (see Position.LastID). Not with pages
			// of one: asking again from the same offset would not move.
			off--
			p.pos.LastID = page.Records[n-1].ID
		} else {
			p.pos.Unproven = true
		}
		p.why = fmt.Sprintf("next page: %s=%d (%s)", pg.OffsetParam, off, p.why)
		return SetParams(current, pg.OffsetParam, strconv.Itoa(off))
	}
	return "", fmt.Errorf("unknown pagination style %q", pg.Style)
}

// cursorNext is the cursor style's next URL: the URL with the next cursor
// (the response's next_field, or the id of the page's last record) in
// cursor_param, where there is one; "" on the last page: an empty page,
// has_more_field false, or no cursor. The cursor is left in p.cursor (a
// POST carries it in its body).
func (p *Pager) cursorNext(current string, doc *extract.Doc, served int) (string, error) {
	pg := p.res.Pagination
	if served == 0 {
		p.why = "last page: the page is empty"
		return "", nil
	}
	more, err := p.hasMore(doc)
	if err != nil || !more {
		return "", err
	}
	s, err := p.nextCursor(doc)
	if err != nil || s == "" {
		if err == nil && pg.HasMoreField != "" {
			err = fmt.Errorf("%s is true, but %s", pg.HasMoreField, strings.TrimPrefix(p.why, "last page: "))
		}
		return "", err
	}
	p.cursor = s
	if pg.CursorParam == "" {
		p.why = fmt.Sprintf("next page: {cursor} %.60q, from %s", s, p.cursorSource())
		return current, nil // the cursor goes in the body
	}
	p.why = fmt.Sprintf("next page: %s=%.60q, from %s", pg.CursorParam, s, p.cursorSource())
	return SetParams(current, pg.CursorParam, s)
}

// hasMore reads has_more_field, when configured: false ends the read.
func (p *Pager) hasMore(doc *extract.Doc) (bool, error) {
	f := p.res.Pagination.HasMoreField
	if f == "" {
		return true, nil
	}
	v, ok := doc.Lookup(f)
	more, isBool := v.(bool)
	if !ok || !isBool {
		return false, fmt.Errorf("has-more field %q is not true or false", f)
	}
	if !more {
		p.why = fmt.Sprintf("last page: %s is false", f)
	}
	return more, nil
}

// nextCursor is the next cursor: the response's next_field, or the page's
// last record's id; "" when there is none (p.why says why).
func (p *Pager) nextCursor(doc *extract.Doc) (string, error) {
	pg := p.res.Pagination
	if pg.CursorFrom == config.CursorFromLastRecord {
		// The page's last record, even one set aside: the next page
		// begins after it whether or not tidemark could store it.
		id, ok := p.ex.LastID(doc)
		if !ok {
			p.why = "last page: no record of the page has an id to continue after"
		}
		return id, nil
	}
	tok, ok := doc.Lookup(pg.NextField)
	if !ok || tok == nil {
		p.why = fmt.Sprintf("last page: the response has no %s", pg.NextField)
		return "", nil
	}
	var s string
	switch v := tok.(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	default:
		return "", fmt.Errorf("cursor field %q is not a string or number", pg.NextField)
	}
	if s == "" {
		p.why = fmt.Sprintf("last page: %s is empty", pg.NextField)
	}
	return s, nil
}

// cursorSource names where the cursor comes from, for messages.
func (p *Pager) cursorSource() string {
	if p.res.Pagination.CursorFrom == config.CursorFromLastRecord {
		return "the last record's " + p.res.Records.ID
	}
	return "the response's " + p.res.Pagination.NextField
}

// GraphQLErrors is the error of a POST answer whose body carries a
// non-empty top-level errors array, given as errs (GraphQL's way of failing
// with 200): its data is missing or partial, and taking it as a page would
// read a failure as an empty or a changed collection. The error quotes the
// messages, not the body. It is not ErrBadResponse: GraphQL reports
// transient failures (THROTTLED) so too, and the task retries.
func GraphQLErrors(errs any) error {
	list, isList := errs.([]any)
	if !isList || len(list) == 0 {
		return nil
	}
	var msgs []string
	for _, e := range list {
		msg, _ := extract.Lookup(e, "message")
		text, _ := msg.(string)
		if code, ok := extract.Lookup(e, "extensions.code"); ok {
			text = fmt.Sprintf("%s (%v)", text, code)
		}
		msgs = append(msgs, fmt.Sprintf("%.200q", text))
		if len(msgs) == 3 {
			break
		}
	}
	more := ""
	if len(list) > len(msgs) {
		more = fmt.Sprintf(" and %d more", len(list)-len(msgs))
	}
	return fmt.Errorf("the upstream answered with %d GraphQL errors: %s%s", len(list), strings.Join(msgs, "; "), more)
}

// lastPage decides whether a page or offset page is the last (see nextURL).
func (p *Pager) lastPage(doc *extract.Doc, page *Page, served int) (bool, error) {
	pg := p.res.Pagination
	unread := served
	if p.pos.LastID != "" && !page.Shifted {
		unread-- // the overlapping record was read before
	}
	switch {
	case served == 0 || unread <= 0 && p.pos.LastID != "":
		p.why = "last page: the page holds no record not read before"
		if served == 0 {
			p.why = "last page: the page is empty"
		}
		return true, nil
	case pg.TotalField != "":
		total, err := p.total(doc)
		if err != nil {
			return false, err
		}
		read := p.pos.Read + int64(unread)
		if pg.Style == config.PaginationOffset {
			off, err := intParam(page.URL, pg.OffsetParam, 0)
			read = int64(off + served)
			if err != nil {
				return false, err
			}
		}
		p.why = fmt.Sprintf("%d of %s %d read", read, pg.TotalField, total)
		if read >= total {
			p.why = "last page: " + p.why
		}
		return read >= total, nil
	case pg.HasMoreField != "":
		v, ok := doc.Lookup(pg.HasMoreField)
		more, isBool := v.(bool)
		if !ok || !isBool {
			return false, fmt.Errorf("has-more field %q is not true or false", pg.HasMoreField)
		}
		p.why = fmt.Sprintf("%s is %t", pg.HasMoreField, more)
		if !more {
			p.why = "last page: " + p.why
		}
		return !more, nil
	}
	if served < p.pos.Served {
		p.why = fmt.Sprintf("last page: %d records, fewer than the %d of the largest page served", served, p.pos.Served)
		return true, nil
	}
	p.why = fmt.Sprintf("%d records, as many as the largest page served: the read ends at an empty or a shorter page", served)
	return false, nil
}

// total is the page's total_field: -1 when none is configured, an error
// when the field is missing or not a whole number.
func (p *Pager) total(doc *extract.Doc) (int64, error) {
	f := p.res.Pagination.TotalField
	if f == "" {
		return -1, nil
	}
	v, ok := doc.Lookup(f)
	num, isNum := v.(json.Number)
	n, err := num.Int64()
	if !ok || !isNum || err != nil {
		return -1, fmt.Errorf("total field %q is not a whole number", f)
	}
	return n, nil
}

func start(pg config.Pagination) int {
	if pg.Start != nil {
		return *pg.Start
	}
	return 1
}

// SetParams returns raw with the query parameters of params, name and value
// in turn, set (replacing values of the same name): the one way the pager
// and discover write a page's parameters.
func SetParams(raw string, params ...string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func intParam(raw, key string, def int) (int, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return 0, err
	}
	v := u.Query().Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("parameter %s=%q is not a number", key, v)
	}
	return n, nil
}

// resolve makes a next link absolute against the URL it came from.
func resolve(base, ref string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	r, err := url.Parse(ref)
	if err != nil {
		// Not the link itself: it may carry a credential the upstream
		// echoed, and the error ends up in run rows and logs.
		return "", fmt.Errorf("the next link is not a valid URL: %w", UnwrapURLError(err))
	}
	u := b.ResolveReference(r)
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("next link has scheme %q: only http and https are followed", u.Scheme)
	}
	return u.String(), nil
}

// nextLink returns the target of rel="next" in RFC 8288 Link header values.
func nextLink(values []string) string {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			if !strings.HasPrefix(part, "<") {
				continue
			}
			end := strings.Index(part, ">")
			if end < 0 {
				continue
			}
			target := part[1:end]
			for param := range strings.SplitSeq(part[end+1:], ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(param), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
					continue
				}
				for rel := range strings.FieldsSeq(strings.Trim(strings.TrimSpace(v), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target
					}
				}
			}
		}
	}
	return ""
}
