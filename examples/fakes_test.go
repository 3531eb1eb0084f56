package examples_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The fakes below answer what each example's config asks, the way the real
// API documents it: envelopes, page links and tokens, filters, validators and
// conditional requests, auth. What the real API would refuse they refuse;
// what an example gets wrong is noted as a problem the test reports.

// baseOf is the scheme and host the request came to, for absolute links.
func baseOf(r *http.Request) string { return "http://" + r.Host }

func writeJSON(w http.ResponseWriter, code int, contentType string, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func intParam(q url.Values, key string, def, max int) (int, error) {
	v := q.Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q is not a positive integer", key, v)
	}
	return min(n, max), nil
}

// pageOf is page (from 1) of size records, and whether more follow.
func pageOf(recs []map[string]any, page, size int) ([]map[string]any, bool) {
	from := min((page-1)*size, len(recs))
	to := min(from+size, len(recs))
	return recs[from:to], to < len(recs)
}

// ---- GitHub REST API: GET /repos/{owner}/{repo}/issues ----------------------
// https://docs.github.com/rest/issues/issues#list-repository-issues
// Bare array; per_page (default 30, max 100) and page; Link header with
// rel="next"/"last" (and "prev"/"first" after page 1) pointing at
// /repositories/{id}/issues; state (open|closed|all, default open), sort
// (created|updated|comments, default created), direction (default desc),
// since (updated at or after, ISO 8601); ETag on every answer and 304 to a
// matching If-None-Match, which does not count against the rate limit.
func serveGitHub(fx *fixture) http.HandlerFunc {
	const repoPath, idPath = "/repos/golang/go/issues", "/repositories/23096959/issues"
	return func(w http.ResponseWriter, r *http.Request) {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		ghErr := func(code int, msg string) {
			fx.problem("%s %s: %d %s", r.Method, r.URL, code, msg)
			writeJSON(w, code, "application/json; charset=utf-8", map[string]string{
				"message": msg, "documentation_url": "https://docs.github.com/rest", "status": strconv.Itoa(code)})
		}
		if r.URL.Path != repoPath && r.URL.Path != idPath {
			ghErr(http.StatusNotFound, "Not Found")
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+githubToken {
			ghErr(http.StatusUnauthorized, "Bad credentials")
			return
		}
		if r.Method != http.MethodGet {
			ghErr(http.StatusMethodNotAllowed, "the example probes with a conditional GET, not "+r.Method)
			return
		}
		if a := r.Header.Get("Accept"); a != "application/vnd.github+json" {
			fx.problem("Accept %q, want application/vnd.github+json", a)
		}
		q := r.URL.Query()
		perPage, err := intParam(q, "per_page", 30, 100)
		if err != nil {
			ghErr(http.StatusUnprocessableEntity, err.Error())
			return
		}
		page, err := intParam(q, "page", 1, 1<<20)
		if err != nil {
			ghErr(http.StatusUnprocessableEntity, err.Error())
			return
		}
		var since time.Time
		if s := q.Get("since"); s != "" {
			if since, err = time.Parse(time.RFC3339, s); err != nil {
				ghErr(http.StatusUnprocessableEntity, "Validation Failed: since "+s)
				return
			}
		}
		state := q.Get("state")
		if state == "" {
			state = "open"
		}
		var recs []map[string]any
		for _, rec := range fx.records {
			updated, _ := time.Parse(time.RFC3339, rec["updated_at"].(string))
			if (state == "all" || rec["state"] == state) && !updated.Before(since) {
				recs = append(recs, rec)
			}
		}
		sortKey := map[string]string{"": "created_at", "created": "created_at", "updated": "updated_at"}[q.Get("sort")]
		if sortKey == "" {
			ghErr(http.StatusUnprocessableEntity, "Validation Failed: sort "+q.Get("sort"))
			return
		}
		desc := q.Get("direction") != "asc"
		sort.SliceStable(recs, func(i, j int) bool {
			a, b := recs[i][sortKey].(string), recs[j][sortKey].(string)
			if desc {
				return a > b
			}
			return a < b
		})
		items, more := pageOf(recs, page, perPage)
		body, _ := json.Marshal(items)
		sum := sha256.Sum256(body)
		etag := `W/"` + hex.EncodeToString(sum[:]) + `"`
		h := w.Header()
		h.Set("ETag", etag)
		h.Set("Cache-Control", "private, max-age=60, s-maxage=60")
		h.Set("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
		h.Set("X-GitHub-Media-Type", "github.v3; format=json")
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
		h.Set("X-RateLimit-Resource", "core")
		if r.Header.Get("If-None-Match") == etag {
			fx.counts["304"]++
			h.Set("X-RateLimit-Remaining", strconv.Itoa(5000-fx.counts["200"]))
			h.Set("X-RateLimit-Used", strconv.Itoa(fx.counts["200"]))
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fx.counts["200"]++
		h.Set("X-RateLimit-Remaining", strconv.Itoa(5000-fx.counts["200"]))
		h.Set("X-RateLimit-Used", strconv.Itoa(fx.counts["200"]))
		link := func(p int, rel string) string {
			q := url.Values{}
			for k, vs := range r.URL.Query() {
				q[k] = vs
			}
			q.Set("page", strconv.Itoa(p))
			return fmt.Sprintf(`<%s%s?%s>; rel="%s"`, baseOf(r), idPath, q.Encode(), rel)
		}
		var links []string
		if page > 1 {
			links = append(links, link(page-1, "prev"))
		}
		if more {
			last := max(1, (len(recs)+perPage-1)/perPage)
			links = append(links, link(page+1, "next"), link(last, "last"))
		}
		if page > 1 {
			links = append(links, link(1, "first"))
		}
		if len(links) > 0 {
			h.Set("Link", strings.Join(links, ", "))
		}
		h.Set("Content-Type", "application/json; charset=utf-8")
		w.Write(body)
	}
}

// ---- Stripe Search API: GET /v1/charges/search -------------------------------
// https://docs.stripe.com/api/charges/search, https://docs.stripe.com/search
// {"object":"search_result","url":...,"has_more":bool,"data":[...],
// "next_page":token|null}; query is required; limit 1..100 (default 10);
// page=<next_page> continues; newest charges first. Bearer secret key.
func serveStripe(fx *fixture) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		w.Header().Set("Request-Id", fmt.Sprintf("req_%d", fx.counts["200"]+fx.counts["4xx"]))
		stripeErr := func(code int, msg string) {
			fx.counts["4xx"]++
			fx.problem("%s %s: %d %s", r.Method, r.URL, code, msg)
			writeJSON(w, code, "application/json", map[string]any{"error": map[string]string{"type": "invalid_request_error", "message": msg}})
		}
		if r.URL.Path != "/v1/charges/search" && r.URL.Path != "/v1/charges" || r.Method != http.MethodGet {
			stripeErr(http.StatusNotFound, "Unrecognized request URL ("+r.Method+": "+r.URL.Path+").")
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+stripeKey {
			stripeErr(http.StatusUnauthorized, "Invalid API Key provided.")
			return
		}
		if r.URL.Path == "/v1/charges" {
			serveStripeList(fx, w, r, stripeErr)
			return
		}
		q := r.URL.Query()
		query := q.Get("query")
		if query == "" {
			stripeErr(http.StatusBadRequest, "Missing required param: query.")
			return
		}
		var after int64
		if _, err := fmt.Sscanf(query, "created>%d", &after); err != nil {
			stripeErr(http.StatusBadRequest, "this fake understands only created>N, not "+query)
			return
		}
		limit, err := intParam(q, "limit", 10, 100)
		if err != nil {
			stripeErr(http.StatusBadRequest, "Invalid integer: "+q.Get("limit"))
			return
		}
		var recs []map[string]any
		for _, rec := range fx.records {
			if int64(rec["created"].(float64)) > after {
				recs = append(recs, rec)
			}
		}
		sort.SliceStable(recs, func(i, j int) bool { return recs[i]["created"].(float64) > recs[j]["created"].(float64) })
		// next_page is an opaque token; here it encodes the position after
		// the last charge returned.
		page := 1
		if tok := q.Get("page"); tok != "" {
			b, err := base64.RawURLEncoding.DecodeString(tok)
			if err == nil {
				page, err = strconv.Atoi(string(b))
			}
			if err != nil || page < 1 {
				stripeErr(http.StatusBadRequest, "Invalid page token: "+tok)
				return
			}
		}
		items, more := pageOf(recs, page, limit)
		var next any
		if more {
			next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(page + 1)))
		}
		fx.counts["200"]++
		writeJSON(w, http.StatusOK, "application/json", map[string]any{
			"object": "search_result", "url": "/v1/charges/search", "has_more": more, "data": items, "next_page": next})
	}
}

// ---- JSON:API: GET /api/articles ---------------------------------------------
// https://jsonapi.org/format/: {"jsonapi":{...},"data":[...],"links":{"self",
// "first","next"},"meta":{...}}; links.next absent on the last page;
// page[size]/page[number]; sort=updated-at (ascending; "-" for descending);
// filter[updated-since]; an API key header. Last-Modified is the newest
// article's updated-at, on GET and HEAD; If-Modified-Since gets 304.
func serveJSONAPI(fx *fixture) http.HandlerFunc {
	const mediaType = "application/vnd.api+json"
	return func(w http.ResponseWriter, r *http.Request) {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		apiErr := func(code int, title string) {
			fx.problem("%s %s: %d %s", r.Method, r.URL, code, title)
			writeJSON(w, code, mediaType, map[string]any{"errors": []map[string]string{{"status": strconv.Itoa(code), "title": title}}})
		}
		if r.URL.Path != "/api/articles" {
			apiErr(http.StatusNotFound, "Not Found")
			return
		}
		if r.Header.Get("X-Api-Key") != cmsKey {
			apiErr(http.StatusUnauthorized, "Unauthorized")
			return
		}
		if a := r.Header.Get("Accept"); a != mediaType {
			apiErr(http.StatusNotAcceptable, "Not Acceptable: "+a)
			return
		}
		q := r.URL.Query()
		for k := range q {
			switch k {
			case "sort", "page[size]", "page[number]", "filter[updated-since]":
			default:
				apiErr(http.StatusBadRequest, "unsupported query parameter "+k)
				return
			}
		}
		size, err := intParam(q, "page[size]", 20, 100)
		if err != nil {
			apiErr(http.StatusBadRequest, err.Error())
			return
		}
		page, err := intParam(q, "page[number]", 1, 1<<20)
		if err != nil {
			apiErr(http.StatusBadRequest, err.Error())
			return
		}
		updated := func(rec map[string]any) string {
			return rec["attributes"].(map[string]any)["updated-at"].(string)
		}
		var newest time.Time
		var recs []map[string]any
		since := q.Get("filter[updated-since]")
		for _, rec := range fx.records {
			t, err := time.Parse(time.RFC3339, updated(rec))
			if err != nil {
				apiErr(http.StatusInternalServerError, err.Error())
				return
			}
			newest = maxTime(newest, t)
			if since != "" {
				s, err := time.Parse(time.RFC3339, since)
				if err != nil {
					apiErr(http.StatusBadRequest, "filter[updated-since]: "+err.Error())
					return
				}
				if t.Before(s) {
					continue
				}
			}
			recs = append(recs, rec)
		}
		switch q.Get("sort") {
		case "updated-at":
			sort.SliceStable(recs, func(i, j int) bool { return updated(recs[i]) < updated(recs[j]) })
		case "-updated-at":
			sort.SliceStable(recs, func(i, j int) bool { return updated(recs[i]) > updated(recs[j]) })
		case "":
		default:
			apiErr(http.StatusBadRequest, "unsupported sort "+q.Get("sort"))
			return
		}
		h := w.Header()
		h.Set("Last-Modified", newest.UTC().Format(http.TimeFormat))
		h.Set("Content-Type", mediaType)
		if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !newest.Truncate(time.Second).After(ims) {
			fx.counts["304"]++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if r.Method == http.MethodHead {
			fx.counts["HEAD"]++
			w.WriteHeader(http.StatusOK)
			return
		}
		if r.Method != http.MethodGet {
			apiErr(http.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
		fx.counts["200"]++
		items, more := pageOf(recs, page, size)
		link := func(p int) string {
			q := url.Values{}
			for k, vs := range r.URL.Query() {
				q[k] = vs
			}
			q.Set("page[number]", strconv.Itoa(p))
			q.Set("page[size]", strconv.Itoa(size))
			return baseOf(r) + r.URL.Path + "?" + q.Encode()
		}
		links := map[string]string{"self": link(page), "first": link(1)}
		if more {
			links["next"] = link(page + 1)
		}
		writeJSON(w, http.StatusOK, mediaType, map[string]any{
			"jsonapi": map[string]string{"version": "1.1"}, "data": items, "links": links,
			"meta": map[string]int{"total": len(recs)}})
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ---- json-server 0.17: GET /posts ----------------------------------------------
// https://github.com/typicode/json-server/tree/v0.17.4#paginate: the bare
// array; _page and _limit (default 10) page it, with X-Total-Count and a
// Link header (first/next/last); _sort/_order sort it; without _page, the
// whole collection. Express sends a weak ETag over the body it answers
// with and 304 to a matching If-None-Match.
func serveJSONServer(fx *fixture) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		if r.URL.Path != "/posts" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			fx.problem("%s %s: 404", r.Method, r.URL)
			writeJSON(w, http.StatusNotFound, "application/json; charset=utf-8", map[string]any{})
			return
		}
		q := r.URL.Query()
		recs := append([]map[string]any(nil), fx.records...)
		if s := q.Get("_sort"); s != "" {
			desc := q.Get("_order") == "desc"
			sort.SliceStable(recs, func(i, j int) bool {
				a, b := fmt.Sprint(recs[i][s]), fmt.Sprint(recs[j][s])
				if x, err := strconv.ParseFloat(a, 64); err == nil {
					y, _ := strconv.ParseFloat(b, 64)
					return (x < y) != desc
				}
				return (a < b) != desc
			})
		}
		h := w.Header()
		items := recs
		if q.Get("_page") != "" {
			page, err1 := intParam(q, "_page", 1, 1<<20)
			limit, err2 := intParam(q, "_limit", 10, 1<<20)
			if err1 != nil || err2 != nil {
				fx.problem("bad paging: %v %v", err1, err2)
			}
			var more bool
			items, more = pageOf(recs, page, limit)
			link := func(p int, rel string) string {
				q := r.URL.Query()
				q.Set("_page", strconv.Itoa(p))
				return fmt.Sprintf(`<%s%s?%s>; rel="%s"`, baseOf(r), r.URL.Path, q.Encode(), rel)
			}
			links := []string{link(1, "first")}
			if more {
				links = append(links, link(page+1, "next"))
			}
			links = append(links, link(max(1, (len(recs)+limit-1)/limit), "last"))
			h.Set("X-Total-Count", strconv.Itoa(len(recs)))
			h.Set("Access-Control-Expose-Headers", "X-Total-Count, Link")
			h.Set("Link", strings.Join(links, ", "))
		}
		body, _ := json.MarshalIndent(items, "", "  ")
		sum := sha1.Sum(body)
		etag := fmt.Sprintf(`W/"%x-%s"`, len(body), base64.StdEncoding.EncodeToString(sum[:])[:27])
		h.Set("ETag", etag)
		h.Set("X-Powered-By", "Express")
		h.Set("Content-Type", "application/json; charset=utf-8")
		if r.Header.Get("If-None-Match") == etag {
			fx.counts["304"]++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fx.counts["200"]++
		w.Write(body)
	}
}
