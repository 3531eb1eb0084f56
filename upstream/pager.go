package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

// ErrBadResponse marks a response tidemark cannot use: malformed JSON, records
// without ids, a broken next link. Retrying the same request at once will
// not help; the run fails with the reason and the next run tries again.
var ErrBadResponse = errors.New("bad response")

func badResponse(url string, err error) error {
	return fmt.Errorf("GET %s: %w: %w", redact(url), ErrBadResponse, err)
}

// Page is one fetched and extracted page of a resource.
type Page struct {
	URL      string
	Header   http.Header
	Records  []extract.Record
	Requests int
	// Next is the URL of the following page; "" on the last page.
	Next string
}

// Pager walks the pages of one resource. Its whole position is the URL of
// the next request, so a checkpoint is just that URL.
type Pager struct {
	c    *Client
	res  *config.Resource
	ex   *extract.Extractor
	next string
}

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

// NewPager starts a walk at url: FirstURL, or a checkpoint's next URL.
func NewPager(c *Client, res *config.Resource, url string) *Pager {
	return &Pager{c: c, res: res, ex: extract.New(res), next: url}
}

// Done reports whether the last page has been read.
func (p *Pager) Done() bool { return p.next == "" }

// Next fetches, extracts and returns the next page. A page that fails to
// parse is an error naming the page's URL (without query) and what was wrong.
func (p *Pager) Next(ctx context.Context) (*Page, error) {
	if p.next == "" {
		return nil, fmt.Errorf("pager: no next page")
	}
	current := p.next
	resp, err := p.c.Do(ctx, http.MethodGet, current, nil)
	if err != nil {
		return nil, err
	}
	// Scan + DocRecords give exactly what Decode + Records give, for about
	// a sixth of the CPU (extract.BenchmarkPage): a full sync's hot path.
	doc, err := extract.Scan(resp.Body)
	if err != nil {
		return nil, badResponse(current, err)
	}
	defer doc.Release()
	records, err := p.ex.DocRecords(doc)
	if err != nil {
		return nil, badResponse(current, err)
	}
	next, err := p.nextURL(current, resp, doc, len(records))
	if err != nil {
		return nil, badResponse(current, err)
	}
	if next != "" && next == current {
		return nil, badResponse(current, errors.New("pagination loop: the next page is the page just read"))
	}
	p.next = next
	return &Page{URL: current, Header: resp.Header, Records: records, Requests: resp.Requests, Next: next}, nil
}

func (p *Pager) nextURL(current string, resp *Response, doc *extract.Doc, n int) (string, error) {
	pg := p.res.Pagination
	switch pg.Style {
	case config.PaginationNone, "":
		return "", nil
	case config.PaginationCursor:
		tok, ok := doc.Lookup(pg.NextField)
		if !ok || tok == nil || n == 0 {
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
			return "", nil
		}
		return setParam(current, pg.CursorParam, s)
	case config.PaginationLink:
		link := nextLink(resp.Header.Values("Link"))
		if link == "" {
			return "", nil
		}
		return resolve(resp.URL, link)
	case config.PaginationNextURL:
		v, ok := doc.Lookup(pg.NextField)
		if !ok || v == nil {
			return "", nil
		}
		s, isStr := v.(string)
		if !isStr {
			return "", fmt.Errorf("next URL field %q is not a string", pg.NextField)
		}
		if s == "" {
			return "", nil
		}
		return resolve(resp.URL, s)
	case config.PaginationPage:
		if n == 0 || n < pg.Limit {
			return "", nil
		}
		page, err := intParam(current, pg.PageParam, start(pg))
		if err != nil {
			return "", err
		}
		return setParam(current, pg.PageParam, strconv.Itoa(page+1))
	case config.PaginationOffset:
		if n == 0 || n < pg.Limit {
			return "", nil
		}
		off, err := intParam(current, pg.OffsetParam, 0)
		if err != nil {
			return "", err
		}
		return setParam(current, pg.OffsetParam, strconv.Itoa(off+n))
	}
	return "", fmt.Errorf("unknown pagination style %q", pg.Style)
}

func start(pg config.Pagination) int {
	if pg.Start != nil {
		return *pg.Start
	}
	return 1
}

func setParam(raw, key, value string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set(key, value)
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
		return "", fmt.Errorf("next link %q: %w", ref, err)
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
