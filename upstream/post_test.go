package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tidemark/tidemark/config"
)

// graphQLResource reads a GraphQL connection, records at edges[].node.
func graphQLResource(t *testing.T, handler http.HandlerFunc) (*Client, *config.Resource) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	res := &config.Resource{Name: "r", Path: "/graphql.json", Method: config.MethodPost,
		Body:    config.Body{"query": "{ p }", "variables": map[string]any{"after": "{cursor}", "first": "{limit}"}},
		Records: config.Records{Path: "data.p.edges", Item: "node", ID: "id"},
		Pagination: config.Pagination{Style: config.PaginationCursor, CursorFrom: config.CursorFromResponse, Limit: 2,
			NextField: "data.p.pageInfo.endCursor", HasMoreField: "data.p.pageInfo.hasNextPage"}}
	c, err := New(&config.Source{Name: "s", BaseURL: srv.URL, AllowPrivate: true}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, res
}

type gqlVars struct {
	After *string `json:"after"`
	First int     `json:"first"`
}

// TestPostPagerCursorInBody: a POST read sends its body as JSON, the cursor
// null on the first page, then pageInfo.endCursor; hasNextPage false ends
// it; a pager started from a mid-way position (a checkpoint) sends that
// position's cursor.
func TestPostPagerCursorInBody(t *testing.T) {
	t.Parallel()
	var seen []gqlVars
	c, res := graphQLResource(t, func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Query     string  `json:"query"`
			Variables gqlVars `json:"variables"`
		}
		raw, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(raw, &body) != nil || body.Query != "{ p }" {
			http.Error(w, "bad request "+string(raw), http.StatusBadRequest)
			return
		}
		seen = append(seen, body.Variables)
		n := 0
		if body.Variables.After != nil {
			fmt.Sscanf(*body.Variables.After, "c%d", &n)
		}
		fmt.Fprintf(w, `{"data":{"p":{"edges":[{"cursor":"e","node":{"id":%d}},{"cursor":"e","node":{"id":%d}}],"pageInfo":{"hasNextPage":%t,"endCursor":"c%d"}}}}`,
			n+1, n+2, n+2 < 6, n+2)
	})
	first := FirstPosition(c, res, nil, nil)
	pager := NewPager(c, res, first, 0)
	var ids []string
	var mid Position
	for !pager.Done() {
		page, err := pager.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			ids = append(ids, r.ID)
		}
		if len(ids) == 2 {
			mid = pager.Position()
		}
	}
	if got := strings.Join(ids, ","); got != "1,2,3,4,5,6" {
		t.Fatalf("ids %s, want 1..6", got)
	}
	if len(seen) != 3 || seen[0].After != nil || seen[0].First != 2 || *seen[1].After != "c2" || *seen[2].After != "c4" {
		t.Fatalf("variables sent: %+v", seen)
	}
	// The checkpoint's position, through JSON as it is stored.
	b, _ := json.Marshal(mid)
	var saved Position
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatal(err)
	}
	seen = nil
	if _, err := NewPager(c, res, saved, 1).Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].After == nil || *seen[0].After != "c2" || seen[0].First != 2 {
		t.Fatalf("resumed pager sent %+v, want after c2, first 2", seen)
	}
}

// TestGraphQLErrors: a 200 carrying errors fails the page, quoting the
// messages, never read as an empty page.
func TestGraphQLErrors(t *testing.T) {
	t.Parallel()
	c, res := graphQLResource(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"errors":[{"message":"Field 'p' doesn't exist on type 'QueryRoot'","extensions":{"code":"undefinedField"}},
			{"message":"two"},{"message":"three"},{"message":"four"}],"data":null,"extensions":{"cost":{"requestedQueryCost":1}}}`)
	})
	_, err := NewPager(c, res, FirstPosition(c, res, nil, nil), 0).Next(context.Background())
	if err == nil {
		t.Fatal("a page of GraphQL errors was taken")
	}
	want := `POST ` // then the URL without its query
	msg := err.Error()
	if !strings.HasPrefix(msg, want) || !strings.Contains(msg, `4 GraphQL errors: "Field 'p' doesn't exist on type 'QueryRoot' (undefinedField)"; "two"; "three" and 1 more`) ||
		strings.Contains(msg, "requestedQueryCost") || errors.Is(err, ErrBadResponse) {
		t.Errorf("error %q: want the messages, not the body, and retryable", msg)
	}
}
