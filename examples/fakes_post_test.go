package examples_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// ---- Stripe list API: GET /v1/charges ---------------------------------------
// https://docs.stripe.com/api/charges/list, https://docs.stripe.com/api/pagination
// {"object":"list","url":"/v1/charges","has_more":bool,"data":[...]}; newest
// first; limit 1..100 (default 10); starting_after=<id> continues after
// that object (an unknown id is a 400 resource_missing); created[gte],
// created[gt], created[lt], created[lte] filter on the creation time.
func serveStripeList(fx *fixture, w http.ResponseWriter, r *http.Request, stripeErr func(int, string)) {
	q := r.URL.Query()
	limit, err := intParam(q, "limit", 10, 100)
	if err != nil {
		stripeErr(http.StatusBadRequest, "Invalid integer: "+q.Get("limit"))
		return
	}
	keep := func(created int64) bool { return true }
	for _, op := range []string{"gte", "gt", "lt", "lte"} {
		v := q.Get("created[" + op + "]")
		if v == "" {
			continue
		}
		bound, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			stripeErr(http.StatusBadRequest, "Invalid integer: "+v)
			return
		}
		prev := keep
		keep = func(c int64) bool {
			ok := map[string]bool{"gte": c >= bound, "gt": c > bound, "lt": c < bound, "lte": c <= bound}[op]
			return ok && prev(c)
		}
	}
	var recs []map[string]any
	for _, rec := range fx.records {
		if keep(int64(rec["created"].(float64))) {
			recs = append(recs, rec)
		}
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i]["created"].(float64) > recs[j]["created"].(float64) })
	from := 0
	if after := q.Get("starting_after"); after != "" {
		from = -1
		for i, rec := range recs {
			if rec["id"] == after {
				from = i + 1
			}
		}
		if from < 0 {
			stripeErr(http.StatusBadRequest, "No such charge: '"+after+"'")
			return
		}
	}
	to := min(from+limit, len(recs))
	if q.Has("starting_after") {
		fx.counts["starting_after"]++
	}
	if q.Has("created[gte]") && q.Has("created[lt]") {
		fx.counts["window"]++
	}
	fx.counts["200"]++
	writeJSON(w, http.StatusOK, "application/json", map[string]any{
		"object": "list", "url": "/v1/charges", "has_more": to < len(recs), "data": recs[from:to]})
}

// ---- Shopify Admin GraphQL API: POST /admin/api/2024-10/graphql.json ---------
// https://shopify.dev/docs/api/admin-graphql/latest/queries/products,
// https://shopify.dev/docs/api/usage/pagination-graphql,
// https://shopify.dev/docs/api/usage/rate-limits: a JSON body {query,
// variables}; products(first, after, query, sortKey, reverse) → {edges:
// [{cursor, node}], pageInfo: {hasNextPage, endCursor}}; the search query
// "updated_at:>'<time>'"; errors as 200 {"errors": [...]}; the cost of each
// query and the bucket's state in extensions.cost; the token in
// X-Shopify-Access-Token.
var shopifyUpdatedAfter = regexp.MustCompile(`^updated_at:>'([^']+)'$`)

func serveShopify(fx *fixture) http.HandlerFunc {
	bucket := 2000.0
	return func(w http.ResponseWriter, r *http.Request) {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		gqlErr := func(code int, msg string) {
			fx.counts["4xx"]++
			fx.problem("%s %s: %s", r.Method, r.URL.Path, msg)
			writeJSON(w, code, "application/json", map[string]any{"errors": []map[string]any{{"message": msg}}})
		}
		if r.URL.Path != "/admin/api/2024-10/graphql.json" || r.Method != http.MethodPost {
			gqlErr(http.StatusNotFound, "Not Found")
			return
		}
		if r.Header.Get("X-Shopify-Access-Token") != shopifyToken {
			gqlErr(http.StatusUnauthorized, "[API] Invalid API key or access token (unrecognized login or wrong password)")
			return
		}
		var req struct {
			Query     string `json:"query"`
			Variables struct {
				First *int    `json:"first"`
				After *string `json:"after"`
				Query string  `json:"query"`
			} `json:"variables"`
		}
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&req) != nil || req.Query == "" {
			gqlErr(http.StatusBadRequest, "Bad Request: a JSON body {query, variables} is required")
			return
		}
		v := req.Variables
		if v.First == nil || *v.First < 1 || *v.First > 250 {
			fx.counts["200"]++
			writeJSON(w, http.StatusOK, "application/json", map[string]any{"errors": []map[string]any{{
				"message": "you must provide one of first or last (at most 250)", "extensions": map[string]any{"code": "BAD_REQUEST"}}}})
			fx.problem("first = %v", v.First)
			return
		}
		m := shopifyUpdatedAfter.FindStringSubmatch(v.Query)
		after, err := time.Time{}, error(nil)
		if m == nil {
			err = fmt.Errorf("unexpected search query %q", v.Query)
		} else {
			after, err = time.Parse(time.RFC3339, m[1])
		}
		if err != nil {
			gqlErr(http.StatusBadRequest, err.Error())
			return
		}
		var recs []map[string]any
		for _, rec := range fx.records {
			if t, _ := time.Parse(time.RFC3339, rec["updatedAt"].(string)); t.After(after) {
				recs = append(recs, rec)
			}
		}
		// sortKey: UPDATED_AT, reverse: true; ties by id.
		sort.SliceStable(recs, func(i, j int) bool { return recs[i]["updatedAt"].(string) > recs[j]["updatedAt"].(string) })
		from := 0
		if v.After != nil {
			fx.counts["after"]++
			from = -1
			for i, rec := range recs {
				if shopifyCursor(rec) == *v.After {
					from = i + 1
				}
			}
			if from < 0 {
				gqlErr(http.StatusBadRequest, "Invalid cursor for current pagination.")
				return
			}
		}
		to := min(from+*v.First, len(recs))
		edges := []map[string]any{}
		for _, rec := range recs[from:to] {
			edges = append(edges, map[string]any{"cursor": shopifyCursor(rec), "node": rec})
		}
		var end any
		if len(edges) > 0 {
			end = edges[len(edges)-1]["cursor"]
		}
		cost := float64(2 + len(edges))
		bucket = bucket - cost + 1 // some restored since: the body moves with every answer
		fx.counts["200"]++
		writeJSON(w, http.StatusOK, "application/json", map[string]any{
			"data": map[string]any{"products": map[string]any{
				"edges":    edges,
				"pageInfo": map[string]any{"hasNextPage": to < len(recs), "endCursor": end},
			}},
			"extensions": map[string]any{"cost": map[string]any{
				"requestedQueryCost": 2 + *v.First, "actualQueryCost": cost,
				"throttleStatus": map[string]any{"maximumAvailable": 2000.0, "currentlyAvailable": bucket, "restoreRate": 100.0},
			}},
		})
	}
}

// shopifyCursor is an opaque cursor for a product (Shopify's encode the
// sort key and the id).
func shopifyCursor(rec map[string]any) string {
	return fmt.Sprintf("eyJ%x", rec["id"].(string)+"|"+rec["updatedAt"].(string))
}
