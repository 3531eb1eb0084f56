package demoapi

import (
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// badRequest is a client error answered 400 with its message.
type badRequest string

func (e badRequest) Error() string { return string(e) }

// pageSize parses a limit-like parameter: default 100, capped at 1000.
func pageSize(q url.Values, name string) (int, error) {
	v := q.Get(name)
	if v == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, badRequest(fmt.Sprintf("%s must be a positive integer, got %q", name, v))
	}
	return min(n, maxPageSize), nil
}

// intParam parses an integer parameter >= lo; def when absent.
func intParam(q url.Values, name string, def, lo int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		return 0, badRequest(fmt.Sprintf("%s must be an integer >= %d, got %q", name, lo, v))
	}
	return n, nil
}

// sinceFilter parses updated_since: RFC 3339 with or without fractional
// seconds, inclusive.
func sinceFilter(q url.Values) (filter, error) {
	v := q.Get("updated_since")
	if v == "" {
		return filter{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return filter{}, badRequest(fmt.Sprintf("updated_since must be an RFC 3339 timestamp, got %q", v))
	}
	ms := t.UnixMilli()
	if t.Sub(time.UnixMilli(ms)) > 0 { // updated_at has ms precision: round up
		ms++
	}
	return filter{on: true, sinceMs: ms}, nil
}

// page is what a list request gathered under the read lock.
type page struct {
	rows    []row
	next    int // index of the first matching record after the page; -1: last page
	total   int // transactions, settlements
	pageNum int // transactions
	size    int
	etag    string
	lastMod time.Time
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, res int, seq uint64) {
	q := r.URL.Query()
	p, notModified, err := s.gather(r, q, res)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	h := w.Header()
	if p.etag != "" {
		h.Set("ETag", p.etag)
	}
	if !p.lastMod.IsZero() {
		h.Set("Last-Modified", p.lastMod.UTC().Format(http.TimeFormat))
	}
	if notModified {
		w.WriteHeader(http.StatusNotModified)
		return
	}

	bp := s.bufs.Get().(*[]byte)
	b := s.render((*bp)[:0], r, q, res, p, seq)
	if res == resInventory && p.next >= 0 {
		h.Set("Link", "<"+nextURL(r, q, "after", strconv.Itoa(p.rows[len(p.rows)-1].idx+1))+`>; rel="next"`)
	}
	writeBody(w, r, http.StatusOK, b)
	if cap(b) <= 4<<20 {
		*bp = b
		s.bufs.Put(bp)
	}
}

// gather validates the query and snapshots the page under the read lock,
// so that the validators and the body describe the same state.
func (s *Server) gather(r *http.Request, q url.Values, res int) (p page, notModified bool, err error) {
	var f filter
	start, rank := 0, -1 // rank >= 0: the page starts at that live (or matching) rank
	switch res {
	case resTicketSales, resInventory, resTaxSummaries:
		name, cursor := "limit", "starting_after"
		if res == resInventory {
			cursor = "after"
		}
		if res == resTaxSummaries {
			name, cursor = "per_page", "page_token"
		}
		if p.size, err = pageSize(q, name); err != nil {
			return p, false, err
		}
		if v := q.Get(cursor); v != "" {
			if start, err = parseCursor(res, v); err != nil {
				return p, false, err
			}
		}
		if res == resTicketSales {
			if f, err = sinceFilter(q); err != nil {
				return p, false, err
			}
		}
	case resTransactions:
		if p.size, err = pageSize(q, "per_page"); err != nil {
			return p, false, err
		}
		if p.pageNum, err = intParam(q, "page", 1, 1); err != nil {
			return p, false, err
		}
		if f, err = sinceFilter(q); err != nil {
			return p, false, err
		}
		rank = (p.pageNum - 1) * p.size
	case resSettlements:
		if p.size, err = pageSize(q, "limit"); err != nil {
			return p, false, err
		}
		if rank, err = intParam(q, "offset", 0, 0); err != nil {
			return p, false, err
		}
	}

	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.tables[res]
	switch res {
	case resTicketSales, resInventory:
		p.etag = s.etag(t, r)
		if res == resInventory {
			p.etag = "W/" + p.etag
		}
		if etagMatch(r.Header.Get("If-None-Match"), p.etag) {
			return p, true, nil
		}
	case resTransactions:
		p.lastMod = t.lastMod
		t.lmServed.Store(true)
		if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !p.lastMod.After(ims) {
			return p, true, nil
		}
	}
	if rank >= 0 {
		if f.on {
			start = t.filteredStart(rank, f)
		} else {
			start = t.selectLive(rank)
		}
		p.total = t.filteredTotal(f)
	}
	p.rows, p.next = t.collect(make([]row, 0, p.size), start, p.size, f)
	if f.on && rank >= 0 && len(p.rows) > 0 {
		t.rememberRank(rank+len(p.rows), p.rows[len(p.rows)-1].idx+1, f)
	}
	return p, false, nil
}

// parseCursor returns the index a page starts from.
func parseCursor(res int, v string) (int, error) {
	switch res {
	case resInventory:
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, badRequest(fmt.Sprintf("after must be a record id, got %q", v))
		}
		return n, nil // records after id n start at index n
	case resTaxSummaries:
		raw, err := base64.RawURLEncoding.DecodeString(v)
		if err == nil {
			if digits, ok := strings.CutPrefix(string(raw), "after:"); ok {
				if n, err := strconv.Atoi(digits); err == nil && n >= 0 {
					return n, nil
				}
			}
		}
		return 0, badRequest(fmt.Sprintf("invalid page_token %q", v))
	default:
		i := parseID(res, v)
		if i < 0 {
			return 0, badRequest(fmt.Sprintf("starting_after must be a record id, got %q", v))
		}
		return i + 1, nil
	}
}

func pageToken(idx int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("after:" + strconv.Itoa(idx+1)))
}

// etag hashes the resource generation and the query string: the same query
// against an unchanged resource has the same tag.
func (s *Server) etag(t *table, r *http.Request) string {
	h := fnv.New64a()
	var b [24]byte
	putUint64(b[0:], s.nonce)
	putUint64(b[8:], uint64(t.res))
	putUint64(b[16:], t.gen)
	_, _ = h.Write(b[:])
	_, _ = h.Write([]byte(r.URL.RawQuery))
	return `"` + strconv.FormatUint(h.Sum64()|1<<63, 16) + `"`
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

// etagMatch implements If-None-Match with the weak comparison: a list of
// tags or "*".
func etagMatch(header, etag string) bool {
	if header == "" {
		return false
	}
	opaque := strings.TrimPrefix(etag, "W/")
	for part := range strings.SplitSeq(header, ",") {
		part = strings.TrimSpace(part)
		if part == "*" || strings.TrimPrefix(part, "W/") == opaque {
			return true
		}
	}
	return false
}

// nextURL is the absolute URL of the request with one parameter replaced.
func nextURL(r *http.Request, q url.Values, key, value string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	next := make(url.Values, len(q)+1)
	for k, v := range q {
		next[k] = v
	}
	next.Set(key, value)
	u := url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawQuery: next.Encode()}
	return u.String()
}

func (s *Server) requestID(seq uint64) string {
	return "req_" + strconv.FormatUint(mix(seq^s.nonce)|1<<63, 16)
}

// render appends the response body of a list page.
func (s *Server) render(b []byte, r *http.Request, q url.Values, res int, p page, seq uint64) []byte {
	reqID := ""
	if res == resTicketSales {
		reqID = s.requestID(seq)
	}
	records := func(b []byte) []byte {
		b = append(b, '[')
		for i, row := range p.rows {
			if i > 0 {
				b = append(b, ',')
			}
			b = s.codec.appendRecord(b, res, row, reqID)
		}
		return append(b, ']')
	}
	switch res {
	case resTicketSales:
		b = append(b, `{"data":`...)
		b = records(b)
		if p.next >= 0 {
			b = append(b, `,"has_more":true,"next_cursor":"`...)
			b = s.codec.appendID(b, res, p.rows[len(p.rows)-1].idx)
			b = append(b, `"}`...)
		} else {
			b = append(b, `,"has_more":false,"next_cursor":null}`...)
		}
	case resInventory:
		b = records(b)
	case resTransactions:
		b = append(b, `{"transactions":`...)
		b = records(b)
		b = append(b, `,"page":`...)
		b = strconv.AppendInt(b, int64(p.pageNum), 10)
		b = append(b, `,"per_page":`...)
		b = strconv.AppendInt(b, int64(p.size), 10)
		b = append(b, `,"total":`...)
		b = strconv.AppendInt(b, int64(p.total), 10)
		b = append(b, '}')
	case resSettlements:
		b = append(b, `{"results":`...)
		b = records(b)
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(p.total), 10)
		b = append(b, '}')
	case resTaxSummaries:
		b = append(b, `{"result":{"items":`...)
		b = records(b)
		if p.next >= 0 {
			b = append(b, `},"next_url":"`...)
			b = append(b, nextURL(r, q, "page_token", pageToken(p.rows[len(p.rows)-1].idx))...)
			b = append(b, `"}`...)
		} else {
			b = append(b, `},"next_url":null}`...)
		}
	}
	return append(b, '\n')
}
