package upstream

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tidemark/tidemark/config"
)

// Each page says why it is the last or where the next comes from
// (Page.Decision, which tidemark preview shows), in every style.
func TestPageDecision(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		pg     config.Pagination
		bodies []string // the pages, in order
		want   []string // each page's Decision
	}{
		{"none", config.Pagination{Style: config.PaginationNone},
			[]string{`[{"id":1}]`}, []string{"last page: pagination style none reads one page"}},
		{"cursor", config.Pagination{Style: config.PaginationCursor, CursorParam: "after", NextField: "next"},
			[]string{`{"data":[{"id":1}],"next":"c2"}`, `{"data":[{"id":2}],"next":""}`},
			[]string{`next page: after="c2", from the response's next`, "last page: next is empty"}},
		{"cursor with has more", config.Pagination{Style: config.PaginationCursor, CursorParam: "after", NextField: "next", HasMoreField: "more"},
			[]string{`{"data":[{"id":1}],"next":"c2","more":true}`, `{"data":[{"id":2}],"next":"c3","more":false}`},
			[]string{`next page: after="c2", from the response's next`, "last page: more is false"}},
		{"cursor from the last record", config.Pagination{Style: config.PaginationCursor, CursorParam: "starting_after", CursorFrom: config.CursorFromLastRecord, HasMoreField: "has_more"},
			[]string{`{"data":[{"id":"ch_1"},{"id":"ch_2"}],"has_more":true}`, `{"data":[{"id":"ch_3"}],"has_more":false}`},
			[]string{`next page: starting_after="ch_2", from the last record's id`, "last page: has_more is false"}},
		{"cursor from the last record, set aside", config.Pagination{Style: config.PaginationCursor, CursorParam: "starting_after", CursorFrom: config.CursorFromLastRecord, HasMoreField: "has_more"},
			[]string{`{"data":[{"id":"ch_1"},{"id":"ch_\ud800"}],"has_more":true}`, `{"data":[{"id":"ch_3"},{"name":"no id"}],"has_more":true}`, `{"data":[{"id":"ch_4"}],"has_more":false}`},
			[]string{"next page: starting_after=\"ch_\ufffd\", from the last record's id", `next page: starting_after="ch_3", from the last record's id`, "last page: has_more is false"}},
		{"cursor from the last record, no has_more", config.Pagination{Style: config.PaginationCursor, CursorParam: "starting_after", CursorFrom: config.CursorFromLastRecord},
			[]string{`{"data":[{"id":"ch_1"}]}`, `{"data":[]}`},
			[]string{`next page: starting_after="ch_1", from the last record's id`, "last page: the page is empty"}},
		{"total", config.Pagination{Style: config.PaginationPage, PageParam: "p", TotalField: "total"},
			[]string{`{"data":[{"id":1},{"id":2}],"total":3}`, `{"data":[{"id":3}],"total":3}`},
			[]string{"next page: p=2 (2 of total 3 read)", "last page: 3 of total 3 read"}},
		{"has more", config.Pagination{Style: config.PaginationOffset, OffsetParam: "o", HasMoreField: "more"},
			[]string{`{"data":[{"id":1},{"id":2}],"more":true}`, `{"data":[{"id":2},{"id":3}],"more":false}`},
			[]string{"next page: o=1 (more is true)", "last page: more is false"}},
		{"next url", config.Pagination{Style: config.PaginationNextURL, NextField: "next"},
			[]string{`{"data":[{"id":1}],"next":"/items?n=2"}`, `{"data":[{"id":2}]}`},
			[]string{"next page: the URL in the response's next", "last page: the response has no next"}},
		{"empty", config.Pagination{Style: config.PaginationPage, PageParam: "p"},
			[]string{`{"data":[]}`}, []string{"last page: the page is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			served := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, tt.bodies[min(served, len(tt.bodies)-1)])
				served++
			}))
			defer srv.Close()
			records := config.Records{Path: "data", ID: "id"}
			if tt.pg.Style == config.PaginationNone {
				records.Path = ""
			}
			src := &config.Source{Name: "s", BaseURL: srv.URL, AllowPrivate: true}
			res := &config.Resource{Name: "r", Path: "/items", Records: records, Pagination: tt.pg}
			c, err := New(src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			pager := NewPager(c, res, Position{Next: FirstURL(c, res, nil)}, 0)
			for i, want := range tt.want {
				page, err := pager.Next(context.Background())
				if err != nil {
					t.Fatalf("page %d: %v", i+1, err)
				}
				if page.Decision != want {
					t.Errorf("page %d: Decision %q, want %q", i+1, page.Decision, want)
				}
			}
			if !pager.Done() {
				t.Errorf("the pager is not done after %d pages", len(tt.want))
			}
		})
	}
}
