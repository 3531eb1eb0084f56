package sim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// API is how the simulated upstream serves its collection.
type API struct {
	// Style is the pagination style (config.Pagination*).
	Style string
	// Order is the list order: pages of page and offset reads are
	// positions in it; cursor, link and next_url tokens are positions
	// after a record in it (keyset), as such APIs do.
	Order Order
	// Cap is the largest page the upstream serves, whatever was asked
	// (0: no cap).
	Cap int
	// Probe is etag | etag_weak | last_modified | hash | delta |
	// rolling_hash | none: the validators it sends (collection-wide, as a
	// list endpoint's are; none for the strategies that read pages).
	Probe string
	// HeadUnsupported answers HEAD with 405.
	HeadUnsupported bool
	// DeltaParam filters by the cursor: updated_at >= it (time formats)
	// or seq > it (number).
	DeltaParam string
	Format     string
	// EmptyStatus, when set (404), is the status of an answer with no
	// records (an empty collection, an empty delta, a page past the end),
	// as APIs do that report "nothing here" as not found; the config maps
	// it to empty (on_status).
	EmptyStatus int
	// Shape varies the cursor style: "" is a cursor in a response field
	// with GET; "graphql" a POST whose JSON body carries the cursor (and
	// the page size and the delta's lower bound), answered as a GraphQL
	// connection (pageInfo.hasNextPage, endCursor); "last_record" is
	// Stripe's list: starting_after the id of the page's last record,
	// and has_more.
	Shape string
	// Nodes lists a graphql answer's records in nodes, not edges[].node.
	Nodes bool
	// WindowParam, when set, bounds the delta filter from above:
	// updated_at before it (delta.window's end_param, or a graphql body's
	// before).
	WindowParam string
}

// Shapes of the cursor style (API.Shape).
const (
	ShapeGraphQL    = "graphql"
	ShapeLastRecord = "last_record"
)

// Faults are the misbehaviours the driver turns on for a while. The zero
// value is a well-behaved upstream.
type Faults struct {
	Status5xx   int           // the next N list requests answer 500, 502 or 503
	RateLimited int           // the next N answer 429 with Retry-After: 1
	Truncate    int           // the next N bodies are cut short
	Slow        time.Duration // every list response is this late
	IgnorePage  bool          // page and offset parameters are ignored (always the first page)
	Cycle       bool          // a continuation token leads back to an earlier one
	// ExpireAfter makes continuation tokens issued now invalid after
	// this long (410); SingleUse makes them work once (400 on reuse).
	ExpireAfter time.Duration
	SingleUse   bool
	// MidRead is the chance that a batch of changes lands just before a
	// list request is answered: changes during reads.
	MidRead float64
}

// Upstream is an HTTP API over a Model.
type Upstream struct {
	m   *Model
	api API

	mu       sync.Mutex
	faults   Faults
	rng      *rand.Rand
	requests int
	empties  int // answers with api.EmptyStatus
	tokens   map[string]*token
	issued   []string
	// served maps the id of each record a last_record page served to its
	// position: starting_after continues after that position even once
	// the record is gone (keyset, WHERE id > ?), as list APIs do.
	served map[string]int64
}

type token struct {
	primary, pos int64
	// from is the token of the request that issued this one ("" for a
	// first page): the chain a read follows.
	from        string
	issued      time.Time
	expireAfter time.Duration
	singleUse   bool
	uses        int
}

// NewUpstream serves m as api describes.
func NewUpstream(m *Model, api API, seed uint64) *Upstream {
	return &Upstream{m: m, api: api, rng: rand.New(rand.NewPCG(seed, 0xfa17)), tokens: map[string]*token{}, served: map[string]int64{}}
}

// SetFaults replaces the active misbehaviours.
func (u *Upstream) SetFaults(f Faults) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.faults = f
}

// Requests is how many requests the upstream has answered.
func (u *Upstream) Requests() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests
}

// EmptyAnswers is how many answers had the status API.EmptyStatus.
func (u *Upstream) EmptyAnswers() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.empties
}

// ProbePath is the request a hash probe reads: the newest change first, one
// record, with the total (so creates, updates and deletes all show).
const ProbePath = "/items?sort=-changed&limit=1"

func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/items" {
		http.NotFound(w, r)
		return
	}
	if err := graphQLToQuery(r, u.api); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u.mu.Lock()
	u.requests++
	n := u.requests
	f := u.faults
	probe := r.URL.Query().Get("sort") == "-changed"
	var status int
	switch {
	case probe:
	case f.Status5xx > 0:
		u.faults.Status5xx--
		status = []int{500, 502, 503}[u.rng.IntN(3)]
	case f.RateLimited > 0:
		u.faults.RateLimited--
		status = http.StatusTooManyRequests
	}
	truncate := !probe && status == 0 && f.Truncate > 0
	if truncate {
		u.faults.Truncate--
	}
	mutate := !probe && f.MidRead > 0 && u.rng.Float64() < f.MidRead
	u.mu.Unlock()

	if f.Slow > 0 && !probe {
		time.Sleep(f.Slow) // a slow upstream, in the upstream's own goroutine
	}
	w.Header().Set("Date", u.m.now().UTC().Format(http.TimeFormat))
	switch status {
	case 0:
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
		writeError(w, status, "rate limited")
		return
	default:
		writeError(w, status, "upstream trouble")
		return
	}
	if mutate {
		u.m.Mutate(3, true)
	}
	if r.Method == http.MethodHead && u.api.HeadUnsupported {
		writeError(w, http.StatusMethodNotAllowed, "HEAD not supported")
		return
	}
	body, hdr, code := u.list(r, n, f)
	for k, v := range hdr {
		w.Header()[k] = v
	}
	if code != http.StatusOK {
		if code != http.StatusNotModified {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(code)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	if truncate {
		cutShort(w, body)
		return
	}
	w.Write(body)
}

// cutShort sends half of body and drops the connection.
func cutShort(w http.ResponseWriter, body []byte) {
	w.Write(body[:len(body)/2])
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
		}
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"error":%q}`, msg)
}

// list answers one list request: (body, headers, status).
func (u *Upstream) list(r *http.Request, response int, f Faults) ([]byte, http.Header, int) {
	q := r.URL.Query()
	m := u.m
	m.mu.Lock()
	defer m.mu.Unlock()
	hdr, unchanged := u.validators(r)
	if unchanged {
		return nil, hdr, http.StatusNotModified
	}
	all, err := u.narrow(u.ordered(q), q)
	if err != nil {
		return errorBody(err.Error()), hdr, http.StatusBadRequest
	}
	from, to, msg, code := u.window(all, q, f)
	if code != 0 {
		return errorBody(msg), hdr, code
	}
	page := all[from:to]
	if u.api.EmptyStatus != 0 && len(page) == 0 {
		u.mu.Lock() // under m.mu, as issue and redeem take it
		u.empties++
		u.mu.Unlock()
		return errorBody("not found"), hdr, u.api.EmptyStatus
	}
	more := to < len(all)
	if u.api.Shape == ShapeGraphQL {
		return u.connection(page, more, q.Get("cursor"), response, f), hdr, http.StatusOK
	}
	var b bytes.Buffer
	b.WriteString(`{"data":[`)
	for i, rc := range page {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(m.render(rc, response))
	}
	fmt.Fprintf(&b, `],"total":%d`, len(all))
	if u.api.Shape == ShapeLastRecord {
		u.serve(page)
		fmt.Fprintf(&b, `,"has_more":%t}`, more)
		return b.Bytes(), hdr, http.StatusOK
	}
	u.writeNext(&b, hdr, q, page, more, f)
	b.WriteByte('}')
	return b.Bytes(), hdr, http.StatusOK
}

// validators sets the collection's validators the API sends, and reports
// whether the request's conditional headers match them (a 304). The caller
// holds m.mu.
func (u *Upstream) validators(r *http.Request) (hdr http.Header, unchanged bool) {
	m := u.m
	hdr = http.Header{}
	etag := fmt.Sprintf(`"v%d"`, m.version)
	switch u.api.Probe {
	case "etag":
		hdr.Set("ETag", etag)
	case "etag_weak":
		etag = "W/" + etag
		hdr.Set("ETag", etag)
	case "last_modified":
		hdr.Set("Last-Modified", m.lastMod.UTC().Format(http.TimeFormat))
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && hdr.Get("ETag") != "" &&
		strings.TrimPrefix(inm, "W/") == strings.TrimPrefix(etag, "W/") {
		return hdr, true
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" && hdr.Get("Last-Modified") != "" {
		if t, err := http.ParseTime(ims); err == nil && !m.lastMod.Truncate(time.Second).After(t) {
			return hdr, true
		}
	}
	return hdr, false
}

// ordered is the collection in the API's order, or newest change first
// when the request asks sort=-changed. The caller holds m.mu.
func (u *Upstream) ordered(q url.Values) []*rec {
	if q.Get("sort") != "-changed" {
		return u.m.sorted(u.api.Order)
	}
	all := u.m.sorted(BySeq)
	slices.Reverse(all)
	return all
}

// window is the page the request asks of all: records [from, to), or the
// error message and status a bad token or unknown starting_after earns.
func (u *Upstream) window(all []*rec, q url.Values, f Faults) (from, to int, msg string, code int) {
	size := len(all)
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l > 0 {
		size = l
	}
	if u.api.Cap > 0 && size > u.api.Cap {
		size = u.api.Cap
	}
	switch u.api.Style {
	case "none":
		size = len(all)
	case "page":
		p, _ := strconv.Atoi(q.Get("page"))
		if f.IgnorePage {
			p = 1
		}
		from = max(p-1, 0) * size
	case "offset":
		from, _ = strconv.Atoi(q.Get("offset"))
		if f.IgnorePage {
			from = 0
		}
	default: // cursor, link, next_url: keyset after the token's record
		if from, msg, code = u.keysetStart(all, q); code != 0 {
			return 0, 0, msg, code
		}
	}
	from = min(max(from, 0), len(all))
	return from, min(from+size, len(all)), "", 0
}

// keysetStart is where a keyset page starts in all: after the record
// starting_after names (the last_record shape) or after the position the
// cursor token carries.
func (u *Upstream) keysetStart(all []*rec, q url.Values) (from int, msg string, code int) {
	if id := q.Get("starting_after"); u.api.Shape == ShapeLastRecord && id != "" {
		var ok bool
		if from, ok = u.afterServed(all, id); !ok {
			return 0, "no such object: " + id, http.StatusBadRequest
		}
	}
	if c := q.Get("cursor"); c != "" {
		t, msg, code := u.redeem(c)
		if code != 0 {
			return 0, msg, code
		}
		from = len(all)
		for i, rc := range all {
			if after(key(u.api.Order, rc), [2]int64{t.primary, t.pos}) {
				from = i
				break
			}
		}
	}
	return from, "", 0
}

// writeNext adds the way to the next page, for the styles that have one: a
// next_cursor field, a Link header or a next_url field, each carrying a
// cursor token issued after the page's last record.
func (u *Upstream) writeNext(b *bytes.Buffer, hdr http.Header, q url.Values, page []*rec, more bool, f Faults) {
	if u.api.Style != "cursor" && u.api.Style != "link" && u.api.Style != "next_url" {
		return
	}
	next := ""
	if more && len(page) > 0 {
		next = u.issue(key(u.api.Order, page[len(page)-1]), q.Get("cursor"), f)
	}
	switch u.api.Style {
	case "cursor":
		if next == "" {
			b.WriteString(`,"next_cursor":null`)
		} else {
			fmt.Fprintf(b, `,"next_cursor":%q`, next)
		}
	case "link", "next_url":
		if next != "" {
			nq := url.Values{}
			for k, v := range q {
				nq[k] = v
			}
			nq.Set("cursor", next)
			link := "/items?" + nq.Encode()
			if u.api.Style == "link" {
				hdr.Set("Link", fmt.Sprintf(`<%s>; rel="next"`, link))
			} else {
				fmt.Fprintf(b, `,"next_url":%q`, link)
			}
		}
	}
}

func errorBody(msg string) []byte { return fmt.Appendf(nil, `{"error":%q}`, msg) }

// key is a record's position in order o, for keyset tokens.
func key(o Order, r *rec) [2]int64 {
	switch o {
	case ByStamp:
		return [2]int64{stampNano(r), r.pos}
	case BySeq:
		return [2]int64{r.seq, r.pos}
	}
	return [2]int64{r.pos, r.pos}
}

func after(a, b [2]int64) bool { return a[0] > b[0] || a[0] == b[0] && a[1] > b[1] }

// filter keeps the records the delta parameter v selects.
func (u *Upstream) filter(all []*rec, v string) ([]*rec, error) {
	var keep []*rec
	if u.api.Format == "number" {
		since, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, err
		}
		for _, r := range all {
			if r.seq > since {
				keep = append(keep, r)
			}
		}
		return keep, nil
	}
	since, err := parseSince(v, u.api.Format)
	if err != nil {
		return nil, err
	}
	for _, r := range all {
		if r.stamp != nil && !r.stamp.Before(since) {
			keep = append(keep, r)
		}
	}
	return keep, nil
}

// narrow applies the delta parameter and the window's end of query q.
func (u *Upstream) narrow(all []*rec, q url.Values) ([]*rec, error) {
	var err error
	if v := q.Get(u.api.DeltaParam); u.api.DeltaParam != "" && v != "" {
		if all, err = u.filter(all, v); err != nil {
			return nil, fmt.Errorf("bad %s: %w", u.api.DeltaParam, err)
		}
	}
	if v := q.Get(u.api.WindowParam); u.api.WindowParam != "" && v != "" {
		if all, err = u.before(all, v); err != nil {
			return nil, fmt.Errorf("bad %s: %w", u.api.WindowParam, err)
		}
	}
	return all, nil
}

// serve notes the positions of a last_record page's records (afterServed).
func (u *Upstream) serve(page []*rec) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, rc := range page {
		u.served[rc.id.key()] = rc.pos
		if !rc.id.numeric {
			// An id tidemark refuses comes back as JSON decodes it.
			u.served[rc.id.str.decoded()] = rc.pos
		}
	}
}

// afterServed is where a last_record page after the record with id
// begins in all (listed ByID): after its position, even once it is gone;
// false for an id never served. Called under m.mu.
func (u *Upstream) afterServed(all []*rec, id string) (int, bool) {
	u.mu.Lock()
	p, ok := u.served[id]
	u.mu.Unlock()
	if !ok {
		return 0, false
	}
	if i := slices.IndexFunc(all, func(rc *rec) bool { return rc.pos > p }); i >= 0 {
		return i, true
	}
	return len(all), true
}

// before keeps the records a window's end v selects: updated_at before it.
func (u *Upstream) before(all []*rec, v string) ([]*rec, error) {
	end, err := parseSince(v, u.api.Format)
	if err != nil {
		return nil, err
	}
	var keep []*rec
	for _, r := range all {
		if r.stamp != nil && r.stamp.Before(end) {
			keep = append(keep, r)
		}
	}
	return keep, nil
}

func parseSince(v, format string) (time.Time, error) {
	switch format {
	case "unix":
		f, err := strconv.ParseFloat(v, 64)
		return time.UnixMilli(int64(f * 1000)), err
	case "unix_ms":
		n, err := strconv.ParseInt(v, 10, 64)
		return time.UnixMilli(n), err
	}
	return time.Parse(time.RFC3339Nano, v)
}

// issue makes a continuation token for the position after k, answering a
// request made with token from. Under the Cycle fault it leads back
// instead: to the token before from in the read's chain (A → B → A), or to
// from itself.
func (u *Upstream) issue(k [2]int64, from string, f Faults) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.tokens[from]; f.Cycle && ok {
		if t.from != "" {
			return t.from
		}
		return from
	}
	raw := fmt.Sprintf("%d|%d|%d", k[0], k[1], len(u.issued))
	tok := base64.RawURLEncoding.EncodeToString([]byte(raw))
	u.tokens[tok] = &token{primary: k[0], pos: k[1], from: from, issued: time.Now(), expireAfter: f.ExpireAfter, singleUse: f.SingleUse}
	u.issued = append(u.issued, tok)
	return tok
}

// redeem checks a continuation token: its position, or the error an API
// gives for an expired, reused or unknown one.
func (u *Upstream) redeem(tok string) (token, string, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.tokens[tok]
	switch {
	case !ok:
		return token{}, "invalid cursor", http.StatusBadRequest
	case t.expireAfter > 0 && time.Since(t.issued) > t.expireAfter:
		return token{}, "cursor expired", http.StatusGone
	case t.singleUse && t.uses > 0:
		return token{}, "cursor already used", http.StatusBadRequest
	}
	t.uses++
	return *t, "", 0
}

// graphQLToQuery reads a graphql shape's POST body (a GET is left as it
// is), {"query": ...,
// "variables": {"first", "after", "since"}}, into the query parameters the
// list answers from: limit, cursor and the delta parameter.
func graphQLToQuery(r *http.Request, api API) error {
	if r.Method != http.MethodPost {
		return nil
	}
	var body struct {
		Query     string `json:"query"`
		Variables struct {
			First  *int    `json:"first"`
			After  *string `json:"after"`
			Since  *string `json:"since"`
			Before *string `json:"before"`
		} `json:"variables"`
	}
	if r.Header.Get("Content-Type") != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Query == "" || body.Variables.First == nil {
		return fmt.Errorf("want a JSON body with query and variables.first: %v", err)
	}
	v := body.Variables
	q := url.Values{"limit": {strconv.Itoa(*v.First)}}
	if v.After != nil {
		q.Set("cursor", *v.After)
	}
	if v.Since != nil && api.DeltaParam != "" {
		q.Set(api.DeltaParam, *v.Since)
	}
	if v.Before != nil && api.WindowParam != "" {
		q.Set(api.WindowParam, *v.Before)
	}
	r.URL.RawQuery = q.Encode()
	return nil
}

// connection is a graphql shape's answer: the page as a GraphQL
// connection, with a cost extension that moves with every answer (as
// Shopify's does), which a hash of the body would take for a change.
func (u *Upstream) connection(page []*rec, more bool, from string, response int, f Faults) []byte {
	m := u.m
	var b bytes.Buffer
	if u.api.Nodes {
		b.WriteString(`{"data":{"items":{"nodes":[`)
	} else {
		b.WriteString(`{"data":{"items":{"edges":[`)
	}
	for i, rc := range page {
		if i > 0 {
			b.WriteByte(',')
		}
		if !u.api.Nodes {
			b.WriteString(`{"cursor":"opaque","node":`)
		}
		b.Write(m.render(rc, response))
		if !u.api.Nodes {
			b.WriteByte('}')
		}
	}
	end := "null"
	if len(page) > 0 {
		end = strconv.Quote(u.issue(key(u.api.Order, page[len(page)-1]), from, f))
	}
	fmt.Fprintf(&b, `],"pageInfo":{"hasNextPage":%t,"endCursor":%s}}},"extensions":{"cost":{"actualQueryCost":%d}}}`, more && len(page) > 0, end, response)
	return b.Bytes()
}
