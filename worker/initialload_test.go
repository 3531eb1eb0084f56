package worker_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/demoapi"
	"github.com/tidemark/tidemark/store"
)

// TestFirstLoadAuditedAsOneSummary: a resource's first load writes one
// initial_load row (its count, its run, the run's version hash) and no
// created row, unless it sets audit.initial_load: records; records created
// after the first load are audited one by one either way.
func TestFirstLoadAuditedAsOneSummary(t *testing.T) {
	t.Parallel()
	up := demoapi.New(demoapi.Options{Seed: 7, Records: 345})
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	conf := demoConfig(t, srv.URL)
	perRecord := &conf.Sources[0].Resources[1]
	perRecord.Audit.InitialLoad = config.InitialLoadRecords
	f := startFleetWith(t, conf, up)

	f.fullSync(0)
	type row struct {
		Resource, Op string
		Rows, Sum    int64
		Hash         string
	}
	audited := func(after int64) map[string]row {
		var rows []row
		if err := f.store.DBForTests().Raw(`SELECT resource, op, count(*) AS rows, coalesce(sum(records), 0) AS sum, coalesce(max(new_hash), '') AS hash
			FROM record_changes WHERE run_id > ? GROUP BY resource, op`, after).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		out := map[string]row{}
		for _, r := range rows {
			out[r.Resource+" "+r.Op] = r
		}
		return out
	}
	first := audited(0)
	runs, err := f.store.Runs(context.Background(), store.RunFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		name := r.Resource
		if name == perRecord.Name {
			if got := first[name+" created"].Rows; got != r.RecordsCreated || first[name+" initial_load"].Rows != 0 {
				t.Errorf("%s (audit.initial_load: records): %d created rows for %d records created, and %+v", name, got, r.RecordsCreated, first[name+" initial_load"])
			}
			continue
		}
		s := first[name+" initial_load"]
		if s.Rows != 1 || s.Sum != r.RecordsCreated || s.Hash != r.VersionHash || r.RecordsCreated == 0 {
			t.Errorf("%s: first load audited as %+v, want one initial_load row of %d records, version %s", name, s, r.RecordsCreated, r.VersionHash)
		}
		if n := first[name+" created"].Rows; n != 0 {
			t.Errorf("%s: %d created rows in the first load", name, n)
		}
	}

	before := f.lastRunID()
	for _, name := range demoapi.Resources {
		if _, err := up.Mutate(demoapi.Mutation{Resource: name, Creates: 3}); err != nil {
			t.Fatal(err)
		}
	}
	f.fullSync(before)
	later := audited(before)
	for _, name := range demoapi.Resources {
		if later[name+" created"].Rows != 3 || later[name+" initial_load"].Rows != 0 {
			t.Errorf("%s after its first load: %+v created, %+v initial_load; want 3 created rows", name, later[name+" created"], later[name+" initial_load"])
		}
	}
}
