package discover

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/upstream"
)

// limitNames are page-size parameters, most common first.
var limitNames = []string{"limit", "per_page", "page_size", "pageSize", "perPage", "_limit", "size", "count"}

// cursorFields are response fields that carry the next page's cursor.
var cursorFields = []string{"next_cursor", "nextCursor", "next_page_token", "nextPageToken", "next_token", "nextToken",
	"continuation_token", "continuationToken", "cursor", "next"}

// page is one fetched page.
type page struct {
	resp *response
	doc  any
	recs []map[string]any
	ids  []string
}

// get fetches and parses one page of the resource.
func (s *session) get(ctx context.Context, u string) (*page, error) {
	resp, err := s.p.do(ctx, "GET", u, nil)
	if err != nil {
		return nil, err
	}
	if resp.status < 200 || resp.status > 299 {
		return nil, fmt.Errorf("HTTP %d", resp.status)
	}
	doc, err := extract.Decode(resp.body)
	if err != nil {
		return nil, fmt.Errorf("not JSON")
	}
	recs, ids, err := recordsAt(doc, s.recPath, s.id)
	if err != nil {
		return nil, err
	}
	s.remember(recs, ids)
	return &page{resp: resp, doc: doc, recs: recs, ids: ids}, nil
}

// why turns a failed step's error into evidence text.
func why(err error) string {
	if errors.Is(err, errBudget) {
		return "not tried: request budget spent"
	}
	return err.Error()
}

// pagination detects and confirms how pages are walked, trying the ways
// tidemark supports in turn: the first that the first page shows wins.
func (s *session) pagination(ctx context.Context) error {
	n := len(s.ids1)
	doc, _ := s.doc.(map[string]any)
	if s.conn != nil {
		s.graphQLPagination()
		return nil
	}
	// 1. RFC 8288 Link rel=next.
	if found, err := s.linkPagination(ctx); found || err != nil {
		return err
	}
	// 2. A next-URL field in the body.
	if found, err := s.nextURLPagination(ctx, doc); found || err != nil {
		return err
	}
	hasMore, hasMoreField := s.hasMore(doc)
	// 3. A cursor field.
	if found, err := s.cursorPagination(ctx, doc); found || err != nil {
		return err
	}
	// 4. has_more without a cursor: the next page starts after the last id.
	if hasMoreField != "" && !hasMore {
		s.res.Pagination.Style = config.PaginationNone
		s.note("pagination", "high", fmt.Sprintf("%q is false on the first page: all %d records fit on one page", hasMoreField, n))
		return nil
	}
	// 5. Page or offset parameters, confirmed by comparing pages.
	if n >= 3 {
		ok, err := s.pageParams(ctx)
		if ok || err != nil {
			return err
		}
	}
	// 6. None.
	return s.noPagination(doc, hasMore, hasMoreField)
}

// nextURLPagination pages by a response field holding the next page's URL,
// if the first page has one.
func (s *session) nextURLPagination(ctx context.Context, doc map[string]any) (bool, error) {
	path, val, found := s.nextURLField(doc)
	if !found {
		return false, nil
	}
	pg := &s.res.Pagination
	pg.Style, pg.NextField = config.PaginationNextURL, path
	if val == "" {
		s.note("pagination", "medium", fmt.Sprintf("field %q is null on the first page (the only page); not confirmed by following", path))
		return true, nil
	}
	next, err := upstream.ResolveLink(s.page1.url, val)
	if err != nil {
		return true, notUnderstood(fmt.Sprintf("field %q holds %q, not a usable URL", path, val), "a valid next-page URL")
	}
	ok, limitParam, ev := s.follow(ctx, next)
	s.setLimit(limitParam, len(s.ids1))
	if ok {
		s.note("pagination", "high", fmt.Sprintf("field %q holds the next page's URL; following it returned the next page%s", path, ev))
	} else {
		s.note("pagination", "medium", fmt.Sprintf("field %q looks like the next page's URL; not confirmed: %s", path, ev))
	}
	return true, nil
}

// cursorPagination pages by a response field carrying the next cursor, if
// the first page has one, and finds the query parameter that takes it.
func (s *session) cursorPagination(ctx context.Context, doc map[string]any) (bool, error) {
	path, val, found := s.cursorField(doc)
	if !found {
		return false, nil
	}
	pg := &s.res.Pagination
	pg.Style, pg.NextField = config.PaginationCursor, path
	last := ""
	if len(s.ids1) > 0 {
		last = s.ids1[len(s.ids1)-1]
	}
	params := cursorParams(path, val == last)
	if val == "" {
		pg.CursorParam = params[0]
		s.note("pagination", "low", fmt.Sprintf("field %q is null on the first page (the only page); the cursor parameter %q is a guess, not confirmed: check the API's docs", path, params[0]))
		return true, nil
	}
	var tried []string
	for _, param := range params {
		if s.p.remaining() < 1 {
			break
		}
		ok, limitParam, ev := s.follow(ctx, withParams(s.url, param, val))
		tried = append(tried, param)
		if ok {
			pg.CursorParam = param
			s.setLimit(limitParam, len(s.ids1))
			s.note("pagination", "high", fmt.Sprintf("field %q carries the next cursor (%q); sending it as %s returned the next page%s", path, val, param, ev))
			return true, nil
		}
	}
	return true, notUnderstood(fmt.Sprintf("cursor field %q = %q, but none of the parameters tried (%s) returned the next page", path, val, strings.Join(tried, ", ")),
		"the name of the query parameter that takes the cursor (see the API's docs), or a larger --max-requests")
}

// noPagination proposes no pagination when nothing on the first page says
// there are more, and fails discovery when something does (has_more true,
// a total beyond the page) but no supported way to walk the pages was found.
func (s *session) noPagination(doc map[string]any, hasMore bool, hasMoreField string) error {
	n := len(s.ids1)
	more := ""
	switch {
	case hasMore:
		more = fmt.Sprintf("%q is true: there are more pages, and tidemark's cursor pagination needs the next cursor in a response field, not the last record's id", hasMoreField)
	default:
		if f, total := s.total(doc); total > n {
			more = fmt.Sprintf("field %q says %d records, the first page has %d", f, total, n)
		}
	}
	if more != "" {
		return notUnderstood(more+"; no next link, next-URL or cursor field, and no page or offset parameter returned the next page",
			"a way to walk the pages that tidemark supports (Link header, next URL or cursor field, page or offset parameters)")
	}
	s.res.Pagination.Style = config.PaginationNone
	ev := fmt.Sprintf("no Link header, next-URL or cursor field; %d records on the first page", n)
	conf := "medium"
	if f, total := s.total(doc); f != "" && total == n {
		ev += fmt.Sprintf(" and %q says %d in all", f, total)
		conf = "high"
	} else if n >= 3 {
		ev += "; page and offset parameters did not change the response"
	}
	if slices.Contains([]int{10, 20, 25, 30, 50, 100, 200, 250, 500, 1000}, n) && conf != "high" {
		ev += fmt.Sprintf(". WARNING: %d is a typical page size: if the API pages some other way, only the first page is synced", n)
		conf = "low"
	}
	s.note("pagination", conf, ev)
	return nil
}

// linkPagination pages by an RFC 8288 Link header, if the first page has one.
func (s *session) linkPagination(ctx context.Context) (bool, error) {
	n := len(s.ids1)
	pg := &s.res.Pagination
	links := s.page1.header.Values("Link")
	if link := upstream.NextLink(links); link != "" {
		next, err := upstream.ResolveLink(s.page1.url, link)
		if err != nil {
			return true, notUnderstood("a Link rel=next header that is not a usable URL: "+err.Error(), "a valid next link")
		}
		pg.Style = config.PaginationLink
		ok, limitParam, ev := s.follow(ctx, next)
		s.setLimit(limitParam, n)
		if ok {
			s.note("pagination", "high", "Link rel=\"next\" header; following it returned the next page (no id seen twice)"+ev)
		} else {
			s.note("pagination", "medium", "Link rel=\"next\" header; not confirmed: "+ev)
		}
		return true, nil
	}
	if strings.Contains(strings.ToLower(strings.Join(links, ",")), "rel=") {
		pg.Style = config.PaginationLink
		s.note("pagination", "medium", "Link header without rel=\"next\" on the first page: the first page is also the last")
		return true, nil
	}
	return false, nil
}

// follow fetches a candidate next page, also trying a smaller page size, and
// reports whether it is a real next page (records, none seen on the first).
func (s *session) follow(ctx context.Context, next string) (ok bool, limitParam string, evidence string) {
	n := len(s.ids1)
	name := s.limitName(next)
	k := n / 2
	u := next
	if k >= 1 {
		u = withParams(next, name, strconv.Itoa(k))
	}
	p, err := s.get(ctx, u)
	if err != nil && u != next && s.p.remaining() > 0 && !errors.Is(err, errBudget) {
		// The API may refuse an unknown page-size parameter: try the link as given.
		u, k = next, 0
		p, err = s.get(ctx, u)
	}
	if err != nil {
		return false, "", why(err)
	}
	if len(p.ids) == 0 {
		return false, "", "the next page is empty"
	}
	if !disjoint(p.ids, s.ids1) {
		return false, "", "the next page repeats records of the first"
	}
	if k >= 1 && len(p.ids) == k && k < n {
		return true, name, fmt.Sprintf("; %s=%d gave pages of %d", name, k, k)
	}
	return true, "", ""
}

// setLimit records a confirmed page-size parameter; the proposed size is the
// one the API chose itself on the first page, known to be accepted.
func (s *session) setLimit(param string, n int) {
	if param == "" {
		return
	}
	s.res.Pagination.LimitParam = param
	s.res.Pagination.Limit = max(n, 1)
}

// limitName guesses the page-size parameter: one already in the next URL or
// the given URL, one the body names, else "limit".
func (s *session) limitName(next string) string {
	for _, raw := range []string{next, s.url} {
		if u, err := url.Parse(raw); err == nil {
			for _, n := range limitNames {
				if u.Query().Has(n) {
					return n
				}
			}
		}
	}
	if doc, ok := s.doc.(map[string]any); ok {
		for _, n := range limitNames[:5] {
			if _, ok := doc[n]; ok {
				return n
			}
		}
	}
	return "limit"
}

// nextURLField finds a body field holding the next page's URL (or null).
func (s *session) nextURLField(doc map[string]any) (path, value string, found bool) {
	if doc == nil {
		return "", "", false
	}
	var nullPath string
	for _, p := range fieldPaths(doc, 2) {
		last := strings.ToLower(p[strings.LastIndex(p, ".")+1:])
		if !strings.Contains(last, "next") || strings.Contains(last, "cursor") || strings.Contains(last, "token") {
			continue
		}
		v, _ := extract.Lookup(doc, p)
		switch x := v.(type) {
		case string:
			if strings.HasPrefix(x, "http://") || strings.HasPrefix(x, "https://") || strings.HasPrefix(x, "/") || strings.HasPrefix(x, "?") {
				return p, x, true
			}
		case nil:
			if strings.Contains(last, "url") || strings.Contains(last, "link") || strings.Contains(last, "href") || last == "next" {
				nullPath = p
			}
		}
	}
	if nullPath != "" {
		return nullPath, "", true
	}
	return "", "", false
}

// cursorField finds a body field holding the next cursor (or null).
func (s *session) cursorField(doc map[string]any) (path, value string, found bool) {
	if doc == nil {
		return "", "", false
	}
	paths := fieldPaths(doc, 2)
	for _, name := range cursorFields {
		for _, p := range paths {
			if p[strings.LastIndex(p, ".")+1:] != name {
				continue
			}
			v, _ := extract.Lookup(doc, p)
			switch x := v.(type) {
			case nil:
				return p, "", true
			default:
				if t, ok := scalarText(x); ok {
					return p, t, true
				}
			}
		}
	}
	return "", "", false
}

// cursorParams are the parameters to try for a cursor, most likely first.
func cursorParams(field string, isLastID bool) []string {
	name := strings.ToLower(field[strings.LastIndex(field, ".")+1:])
	var ps []string
	switch {
	case strings.Contains(name, "page_token") || strings.Contains(name, "pagetoken"):
		ps = []string{"page_token", "pageToken", "token", "cursor"}
	case isLastID:
		ps = []string{"starting_after", "after", "since_id", "cursor", "after_id", "from"}
	default:
		ps = []string{"cursor", "after", "page_token", "starting_after", "next", "token"}
	}
	return ps
}

// hasMore reads a has_more-like boolean.
func (s *session) hasMore(doc map[string]any) (bool, string) {
	for _, p := range fieldPaths(doc, 2) {
		last := strings.ToLower(p[strings.LastIndex(p, ".")+1:])
		if last == "has_more" || last == "hasmore" || last == "has_next" || last == "hasnext" || last == "more" {
			v, _ := extract.Lookup(doc, p)
			if b, ok := v.(bool); ok {
				return b, p
			}
		}
	}
	return false, ""
}

// total reads a total-count field.
func (s *session) total(doc map[string]any) (string, int) {
	for _, p := range fieldPaths(doc, 2) {
		last := strings.ToLower(p[strings.LastIndex(p, ".")+1:])
		if last == "total" || last == "count" || last == "total_count" || last == "totalcount" || last == "total_results" {
			v, _ := extract.Lookup(doc, p)
			if t, ok := scalarText(v); ok {
				if n, err := strconv.Atoi(t); err == nil {
					return p, n
				}
			}
		}
	}
	return "", 0
}

type pageTry struct {
	style, param, limit string
}

// pageParams tries page and offset parameters and keeps the first a second
// request confirms.
func (s *session) pageParams(ctx context.Context) (bool, error) {
	tries, maxTries := s.pageTries()
	k := len(s.ids1) / 3
	var tried []string
	for i, t := range tries {
		if i >= maxTries || s.p.remaining() < 1 {
			break
		}
		var u string
		if t.style == config.PaginationPage {
			u = withParams(s.url, t.param, "2", t.limit, strconv.Itoa(k))
		} else {
			u = withParams(s.url, t.param, strconv.Itoa(k), t.limit, strconv.Itoa(k))
		}
		tried = append(tried, t.param+"/"+t.limit)
		p, err := s.get(ctx, u)
		if err != nil {
			continue
		}
		if s.confirmPageTry(ctx, t, k, p.ids) {
			return true, nil
		}
	}
	if len(tried) > 0 {
		s.pagingTried = tried
	}
	return false, nil
}

// pageTries lists the page and offset parameters to try, those the first
// page's fields or the URL's query name first, and how many of them to try:
// three, and one more for each so named.
func (s *session) pageTries() ([]pageTry, int) {
	tries := []pageTry{
		{config.PaginationPage, "page", "per_page"},
		{config.PaginationOffset, "offset", "limit"},
		{config.PaginationPage, "_page", "_limit"},
		{config.PaginationPage, "page", "limit"},
		{config.PaginationPage, "page", "page_size"},
		{config.PaginationOffset, "_start", "_limit"},
		{config.PaginationOffset, "skip", "limit"},
	}
	hints := map[string]bool{}
	if doc, ok := s.doc.(map[string]any); ok {
		for k := range doc {
			hints[k] = true
		}
	}
	if u, err := url.Parse(s.url); err == nil {
		for k := range u.Query() {
			hints[k] = true
		}
	}
	score := func(t pageTry) int {
		n := 0
		if hints[t.param] {
			n += 2
		}
		if hints[t.limit] {
			n++
		}
		return n
	}
	sort.SliceStable(tries, func(i, j int) bool { return score(tries[i]) > score(tries[j]) })
	maxTries := 3
	for _, t := range tries {
		if score(t) > 0 {
			maxTries++
		}
	}
	return tries, maxTries
}

// confirmPageTry reads the ids of the page t's parameters asked for (page 2,
// or offset k, with pages of k) against the first page's, and on a match
// proposes t's pagination.
func (s *session) confirmPageTry(ctx context.Context, t pageTry, k int, ids []string) bool {
	n := len(s.ids1)
	pg := &s.res.Pagination
	switch {
	case t.style == config.PaginationPage && slices.Equal(ids, s.ids1[k:2*k]):
		s.setPage(t, 1, true, n, fmt.Sprintf("%s=2&%s=%d returned records %d-%d of the first page: pages count from 1 and %s sets the page size", t.param, t.limit, k, k+1, 2*k, t.limit))
	case t.style == config.PaginationPage && slices.Equal(ids, s.ids1[2*k:3*k]):
		s.setPage(t, 0, true, n, fmt.Sprintf("%s=2&%s=%d returned records %d-%d of the first page: pages count from 0 and %s sets the page size", t.param, t.limit, k, 2*k+1, 3*k, t.limit))
	case t.style == config.PaginationPage && len(ids) > 0 && disjoint(ids, s.ids1) && len(ids) != k:
		start, ev := s.firstPageNumber(ctx, t)
		s.setPage(t, start, false, n, fmt.Sprintf("%s=2 returned %d records none of which is on the first page (%s is ignored)", t.param, len(ids), t.limit)+ev)
	case t.style == config.PaginationOffset && slices.Equal(ids, s.ids1[k:2*k]):
		pg.Style, pg.OffsetParam = config.PaginationOffset, t.param
		s.setLimit(t.limit, n)
		s.note("pagination", "high", fmt.Sprintf("%s=%d&%s=%d returned records %d-%d of the first page", t.param, k, t.limit, k, k+1, 2*k))
	case t.style == config.PaginationOffset && len(ids) >= n-k && slices.Equal(ids[:n-k], s.ids1[k:]):
		pg.Style, pg.OffsetParam, pg.Limit = config.PaginationOffset, t.param, n
		s.note("pagination", "high", fmt.Sprintf("%s=%d returned the first page shifted by %d (%s is ignored: pages of %d)", t.param, k, k, t.limit, n))
	default:
		return false
	}
	return true
}

// firstPageNumber asks for page 1 of t, when the budget allows, to tell
// whether pages count from 1 or from 0; the evidence says how it knows.
func (s *session) firstPageNumber(ctx context.Context, t pageTry) (start int, evidence string) {
	if s.p.remaining() <= 0 {
		return 1, "; the first page number (1) is assumed"
	}
	p1, err := s.get(ctx, withParams(s.url, t.param, "1"))
	switch {
	case err != nil:
		return 1, ""
	case slices.Equal(p1.ids, s.ids1):
		return 1, fmt.Sprintf("; %s=1 is the first page: pages count from 1", t.param)
	default:
		return 0, fmt.Sprintf("; %s=1 is not the first page: pages count from 0", t.param)
	}
}

func (s *session) setPage(t pageTry, start int, limitOK bool, n int, ev string) {
	pg := &s.res.Pagination
	pg.Style, pg.PageParam = config.PaginationPage, t.param
	pg.Start = &start
	pg.Limit = n
	if limitOK {
		s.setLimit(t.limit, n)
	}
	s.note("pagination", "high", ev+fmt.Sprintf("; a page shorter than %d is the last", n))
}

// fieldPaths lists the dotted paths of an object's fields, nested objects
// down to depth levels, records excluded.
func fieldPaths(doc map[string]any, depth int) []string {
	var out []string
	var walk func(m map[string]any, prefix string, d int)
	walk = func(m map[string]any, prefix string, d int) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := join(prefix, k)
			out = append(out, p)
			if c, ok := m[k].(map[string]any); ok && d < depth {
				walk(c, p, d+1)
			}
		}
	}
	if doc != nil {
		walk(doc, "", 1)
	}
	return out
}

func disjoint(a, b []string) bool {
	set := make(map[string]bool, len(b))
	for _, v := range b {
		set[v] = true
	}
	for _, v := range a {
		if set[v] {
			return false
		}
	}
	return true
}
