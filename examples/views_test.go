package examples_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// TestExampleView syncs the GitHub issues example through the worker and
// queries its typed view the way the README does: columns inferred from the
// records, typed, and a WHERE on them.
func TestExampleView(t *testing.T) {
	t.Parallel()
	c := cases[slices.IndexFunc(cases, func(c exampleCase) bool { return c.name == "github_issues" })]
	fx := loadFixture(t, c)
	srv := httptest.NewServer(c.serve(fx))
	t.Cleanup(srv.Close)
	conf, err := config.Load(c.file)
	if err != nil {
		t.Fatal(err)
	}
	src := &conf.Sources[0]
	src.BaseURL, src.AllowPrivate, src.RateLimit = srv.URL, true, nil
	res := &src.Resources[0]
	res.Pagination.Limit = pageSize
	f := startFleet(t, conf)
	key := store.Key{Source: src.Name, Resource: res.Name}
	f.fetch(t, key, tidemark.RunFull)

	results, err := f.store.RefreshViews(context.Background(), conf)
	if err != nil {
		t.Fatalf("RefreshViews: %v", err)
	}
	types := map[string]string{}
	for _, col := range results[0].Columns {
		types[col.Name] = col.Type
	}
	for name, want := range map[string]string{"number": "numeric", "title": "text", "state": "text", "locked": "boolean",
		"created_at": "timestamptz", "user": "jsonb", "labels": "jsonb"} {
		if types[name] != want {
			t.Errorf("github_issues.%s: %s, want %s (all: %v)", name, types[name], want, types)
		}
	}
	var open []struct {
		Number int64
		Login  string
	}
	if err := f.store.DBForTests().Raw(`SELECT number, "user" ->> 'login' AS login FROM tidemark_data.github_issues
		WHERE state = 'open' AND NOT deleted AND created_at > '2000-01-01' ORDER BY number`).Scan(&open).Error; err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range fx.records {
		if r["state"] == "open" {
			want++
		}
	}
	if len(open) != want || want == 0 || open[0].Login == "" {
		t.Errorf("open issues in the view: %+v, want %d with logins", open, want)
	}
}
