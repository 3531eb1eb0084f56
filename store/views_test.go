package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// viewConf is a config with the given resources of source shop (no
// network: RefreshViews reads only names, fields and field_types).
func viewConf(resources ...config.Resource) *config.Config {
	conf := &config.Config{Sources: []config.Source{{Name: "shop", BaseURL: "http://127.0.0.1:1", Resources: resources}}}
	conf.SetDefaults()
	return conf
}

// putRecords stores payloads as records of shop/res, ids 1, 2, ... in
// order, each a second newer than the one before.
func putRecords(t *testing.T, s *store.Store, res string, payloads ...string) {
	t.Helper()
	for i, p := range payloads {
		err := s.DBForTests().Exec(`INSERT INTO records (source, resource, external_id, payload, content_hash, updated_at)
			VALUES ('shop', ?, ?, CAST(? AS jsonb), 'h', now() - make_interval(secs => ?))`,
			res, fmt.Sprint(i+1), p, len(payloads)-i).Error
		if err != nil {
			t.Fatal(err)
		}
	}
}

func refresh(t *testing.T, s *store.Store, conf *config.Config) map[string]store.ViewResult {
	t.Helper()
	results, err := s.RefreshViews(context.Background(), conf)
	if err != nil {
		t.Fatalf("RefreshViews: %v (%+v)", err, results)
	}
	return byView(results)
}

func byView(results []store.ViewResult) map[string]store.ViewResult {
	out := map[string]store.ViewResult{}
	for _, r := range results {
		out[r.View] = r
	}
	return out
}

// columns lists a view's columns as "name type", as Postgres reports them.
func columns(t *testing.T, s *store.Store, schema, view string) []string {
	t.Helper()
	var cols []string
	err := s.DBForTests().Raw(`SELECT column_name || ' ' || data_type FROM information_schema.columns
		WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position`, schema, view).Scan(&cols).Error
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

func TestViewsDeclaredAndInferred(t *testing.T) {
	t.Parallel()
	s := open(t)
	putRecords(t, s, "orders",
		`{"amount": 1250, "state": "open", "paid": true, "at": "2024-05-01T10:00:00Z", "meta": {"a": 1}, "note": null}`,
		`{"amount": "99.5", "state": "closed", "paid": false, "at": "2024-05-02T10:00:00+02:00", "meta": [1], "note": null}`)
	putRecords(t, s, "events",
		`{"id": 1, "kind": "a", "ok": true, "when": "2024-05-01T10:00:00Z", "tags": ["x"], "mixed": 1, "nothing": null}`,
		`{"id": 2, "kind": "b", "ok": false, "when": "2024-05-01T11:00:00.5Z", "tags": [], "mixed": "one", "nothing": null}`)
	conf := viewConf(
		config.Resource{Name: "orders", Path: "/o", Records: config.Records{ID: "id"},
			Fields:     map[string]string{"amount": "price.cents", "state": "status", "paid": "paid", "at": "at", "meta": "meta", "note": "note"},
			FieldTypes: map[string]string{"amount": "numeric", "state": "text"}},
		config.Resource{Name: "events", Path: "/e", Records: config.Records{ID: "id"}},
	)
	got := refresh(t, s, conf)
	if a := got["shop_orders"].Action; a != store.ViewCreated {
		t.Errorf("shop_orders: %s, want created", a)
	}
	want := map[string][]string{
		"shop_orders": {"external_id text", "synced_at timestamp with time zone", "deleted boolean", "payload jsonb",
			"amount numeric", "at timestamp with time zone", "meta jsonb", "note text", "paid boolean", "state text"},
		"shop_events": {"external_id text", "synced_at timestamp with time zone", "deleted boolean", "payload jsonb",
			"id numeric", "kind text", "mixed text", "nothing text", "ok boolean", "tags jsonb",
			"when timestamp with time zone"},
	}
	for view, cols := range want {
		if have := columns(t, s, "tidemark_data", view); !slices.Equal(have, cols) {
			t.Errorf("%s columns:\n have %q\n want %q", view, have, cols)
		}
	}
	for _, c := range got["shop_orders"].Columns {
		if c.Declared != (c.Name == "amount" || c.Name == "state") {
			t.Errorf("shop_orders.%s declared = %v", c.Name, c.Declared)
		}
	}

	// The query the feature exists for, and typed comparisons.
	var ids []string
	if err := s.DBForTests().Raw(`SELECT external_id FROM tidemark_data.shop_orders
		WHERE state = 'open' AND amount > 1000 AND paid AND at < '2024-05-02' AND NOT deleted`).Scan(&ids).Error; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"1"}) {
		t.Errorf("open orders = %q, want [1]", ids)
	}
	var amount float64
	s.DBForTests().Raw(`SELECT amount FROM tidemark_data.shop_orders WHERE external_id = '2'`).Scan(&amount)
	if amount != 99.5 {
		t.Errorf("amount from a numeric string = %v, want 99.5", amount)
	}
}

func TestViewsCastFailuresAreNullAndCounted(t *testing.T) {
	t.Parallel()
	s := open(t)
	putRecords(t, s, "orders",
		`{"amount": 12, "paid": true, "at": "2024-02-29T10:00:00Z"}`,
		`{"amount": "12.5", "paid": "false", "at": "2024-02-29 10:00:00+01:00"}`,
		`{"amount": "twelve", "paid": "yes", "at": "2023-02-29T10:00:00Z"}`,
		`{"amount": {"cents": 1}, "paid": 1, "at": "0000-01-01T00:00:00Z"}`,
		`{"amount": "1e99999999", "paid": null, "at": "2024-13-01T10:00:00Z"}`,
		`{"amount": null, "at": 1714557600}`,
		`{}`)
	conf := viewConf(config.Resource{Name: "orders", Path: "/o", Records: config.Records{ID: "id"},
		Fields:     map[string]string{"amount": "amount", "paid": "paid", "at": "at"},
		FieldTypes: map[string]string{"amount": "numeric", "paid": "boolean", "at": "timestamptz"}})
	got := refresh(t, s, conf)["shop_orders"]
	failures := map[string]int64{}
	for _, c := range got.Columns {
		failures[c.Name] = c.Failures
	}
	if want := map[string]int64{"amount": 3, "paid": 2, "at": 4}; !mapsEqual(failures, want) {
		t.Errorf("failures = %v, want %v", failures, want)
	}
	// Every row reads; what does not cast is NULL.
	type row struct {
		ExternalID string
		Amount     *float64
		Paid       *bool
		At         *time.Time
	}
	var rows []row
	if err := s.DBForTests().Raw(`SELECT external_id, amount, paid, at FROM tidemark_data.shop_orders ORDER BY external_id`).Scan(&rows).Error; err != nil {
		t.Fatalf("SELECT on a view with values that do not cast: %v", err)
	}
	if len(rows) != 7 {
		t.Fatalf("rows = %d, want 7", len(rows))
	}
	if rows[0].Amount == nil || *rows[0].Amount != 12 || rows[1].Amount == nil || *rows[1].Amount != 12.5 {
		t.Errorf("amounts that cast: %+v %+v", rows[0], rows[1])
	}
	for _, i := range []int{2, 3, 4} {
		if rows[i].Amount != nil {
			t.Errorf("record %s amount = %v, want NULL", rows[i].ExternalID, *rows[i].Amount)
		}
	}
	if rows[1].Paid == nil || *rows[1].Paid || rows[2].Paid != nil {
		t.Errorf("paid: %+v %+v", rows[1], rows[2])
	}
	if rows[1].At == nil || !rows[1].At.Equal(time.Date(2024, 2, 29, 9, 0, 0, 0, time.UTC)) || rows[2].At != nil {
		t.Errorf("at: %+v %+v", rows[1], rows[2])
	}
	// The counts are stored for /metrics.
	stored, err := s.CastFailures(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got2 := map[string]int64{}
	for _, c := range stored {
		got2[c.Field] = c.Failures
	}
	if !mapsEqual(got2, failures) {
		t.Errorf("stored counts = %v, want %v", got2, failures)
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestViewsFollowConfig(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	putRecords(t, s, "orders", `{"amount": "5", "state": "open", "paid": true}`)
	orders := config.Resource{Name: "orders", Path: "/o", Records: config.Records{ID: "id"},
		Fields: map[string]string{"amount": "amount", "state": "state"}}
	other := config.Resource{Name: "refunds", Path: "/r", Records: config.Records{ID: "id"}}
	refresh(t, s, viewConf(orders, other))
	// A view of someone else's in the schema is never dropped.
	if err := s.DBForTests().Exec(`CREATE VIEW tidemark_data.mine AS SELECT 1 AS one`).Error; err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name   string
		change func()
		want   map[string]string // view → action
		cols   []string          // shop_orders' field columns after
	}{
		{"unchanged", func() {}, map[string]string{"shop_orders": store.ViewUnchanged, "shop_refunds": store.ViewUnchanged}, []string{"amount text", "state text"}},
		// A new column goes after the view's columns: CREATE OR REPLACE.
		{"field added", func() { orders.Fields["paid"] = "paid" }, map[string]string{"shop_orders": store.ViewReplaced}, []string{"amount text", "state text", "paid boolean"}},
		{"field removed", func() { delete(orders.Fields, "state") }, map[string]string{"shop_orders": store.ViewRecreated}, []string{"amount text", "paid boolean"}},
		{"type changed", func() { orders.FieldTypes = map[string]string{"amount": "numeric"} }, map[string]string{"shop_orders": store.ViewRecreated}, []string{"amount numeric", "paid boolean"}},
		{"resource removed", func() {}, map[string]string{"shop_refunds": store.ViewDropped}, nil},
	}
	for _, step := range steps {
		step.change()
		conf := viewConf(orders, other)
		if step.name == "resource removed" {
			conf = viewConf(orders)
		}
		results, err := s.RefreshViews(ctx, conf)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got := byView(results)
		for view, action := range step.want {
			if got[view].Action != action {
				t.Errorf("%s: %s %s, want %s", step.name, view, got[view].Action, action)
			}
		}
		if step.cols != nil {
			cols := columns(t, s, "tidemark_data", "shop_orders")
			if fields := cols[4:]; !slices.Equal(fields, step.cols) {
				t.Errorf("%s: columns %q, want %q", step.name, fields, step.cols)
			}
		}
	}
	if cols := columns(t, s, "tidemark_data", "shop_refunds"); len(cols) != 0 {
		t.Errorf("shop_refunds still has columns %q", cols)
	}
	if cols := columns(t, s, "tidemark_data", "mine"); len(cols) != 1 {
		t.Errorf("a view tidemark did not make was dropped")
	}
	var amount float64
	s.DBForTests().Raw(`SELECT amount FROM tidemark_data.shop_orders`).Scan(&amount)
	if amount != 5 {
		t.Errorf("amount = %v after the type change, want 5", amount)
	}

	// A relation of the view's name that tidemark did not make fails that
	// view and no other.
	if err := s.DBForTests().Exec(`DROP VIEW tidemark_data.shop_orders; CREATE TABLE tidemark_data.shop_orders (x int)`).Error; err != nil {
		t.Fatal(err)
	}
	results, err := s.RefreshViews(ctx, viewConf(orders, other))
	got := byView(results)
	if err == nil || got["shop_orders"].Action != store.ViewFailed || !strings.Contains(got["shop_orders"].Err.Error(), "tidemark did not make") {
		t.Errorf("over a table of the same name: err %v, result %+v", err, got["shop_orders"])
	}
	if got["shop_refunds"].Action != store.ViewCreated {
		t.Errorf("shop_refunds: %s, want created beside the failure", got["shop_refunds"].Action)
	}
}

func TestViewsSchemaConfigured(t *testing.T) {
	t.Parallel()
	s := open(t)
	putRecords(t, s, "orders", `{"a": 1}`)
	conf := viewConf(config.Resource{Name: "orders", Path: "/o", Records: config.Records{ID: "id"}})
	conf.Views.Schema = "mirror"
	refresh(t, s, conf)
	if cols := columns(t, s, "mirror", "shop_orders"); len(cols) != 5 {
		t.Errorf("mirror.shop_orders columns = %q", cols)
	}
}

// Record keys become column names and SQL literals: quoted, they are names
// and never SQL.
func TestViewsQuoteIdentifiers(t *testing.T) {
	t.Parallel()
	s := open(t)
	long := strings.Repeat("k", 64)
	putRecords(t, s, "odd", `{"we\"ird": 1, "it's": "a", "Mixed Case": true, "x?y": "@z", "a; DROP TABLE records; --": 2, "external_id": "e", "`+long+`": 3}`)
	got := refresh(t, s, viewConf(config.Resource{Name: "odd", Path: "/o", Records: config.Records{ID: "id"}}))["shop_odd"]
	want := []string{"external_id text", "synced_at timestamp with time zone", "deleted boolean", "payload jsonb",
		"Mixed Case boolean", "a; DROP TABLE records; -- numeric", "it's text", "we\"ird numeric", "x?y text"}
	if cols := columns(t, s, "tidemark_data", "shop_odd"); !slices.Equal(cols, want) {
		t.Errorf("columns:\n have %q\n want %q", cols, want)
	}
	if len(got.Notes) != 2 {
		t.Errorf("notes = %q, want two: external_id taken, a key too long", got.Notes)
	}
	var weird int64
	var its, xy string
	db, _ := s.DBForTests().DB()
	if err := db.QueryRow(`SELECT "we""ird", "it's", "x?y" FROM tidemark_data.shop_odd`).Scan(&weird, &its, &xy); err != nil {
		t.Fatal(err)
	}
	if weird != 1 || its != "a" || xy != "@z" {
		t.Errorf("row = %d %q %q, want 1 a @z", weird, its, xy)
	}
	var n int64
	if err := s.DBForTests().Raw(`SELECT count(*) FROM records`).Scan(&n).Error; err != nil || n != 1 {
		t.Errorf("records: %d, %v", n, err)
	}
}

// A sync's write transaction neither blocks nor is blocked by the views: a
// query on a view reads while a page is being applied, and a view is
// recreated meanwhile. A reader holding a view makes a view change give up
// after the lock timeout rather than wait, and writes go on meanwhile.
func TestViewsDoNotBlockSyncs(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	putRecords(t, s, "orders", `{"amount": 1}`, `{"amount": 2}`)
	res := config.Resource{Name: "orders", Path: "/o", Records: config.Records{ID: "id"}}
	refresh(t, s, viewConf(res))
	db, _ := s.DBForTests().DB()

	// A sync's page, applied and not yet committed.
	sync, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sync.Rollback()
	if _, err := sync.ExecContext(ctx, `UPDATE records SET payload = '{"amount": 10}', updated_at = now() WHERE external_id = '1';
		INSERT INTO records (source, resource, external_id, payload, content_hash) VALUES ('shop', 'orders', '3', '{"amount": 3}', 'h')`); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	var sum float64
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.QueryRowContext(qctx, `SELECT sum(amount) FROM tidemark_data.shop_orders`).Scan(&sum); err != nil || sum != 3 {
		t.Fatalf("view read during a sync: sum %v, %v (want 3, the committed state)", sum, err)
	}
	t.Logf("view read during an open sync transaction: %v", time.Since(began))

	began = time.Now()
	res.FieldTypes = map[string]string{"amount": "text"}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if _, err := s.RefreshViews(rctx, viewConf(res)); err != nil {
		t.Fatalf("view recreated during an open sync transaction: %v", err)
	}
	t.Logf("view recreated during an open sync transaction: %v", time.Since(began))
	if err := sync.Commit(); err != nil {
		t.Fatal(err)
	}

	// A long reader of the view: the change gives up, the sync goes on.
	reader, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Rollback()
	var n int
	if err := reader.QueryRowContext(ctx, `SELECT count(*) FROM tidemark_data.shop_orders`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	res.FieldTypes = map[string]string{"amount": "numeric"}
	began = time.Now()
	results, err := s.RefreshViews(ctx, viewConf(res))
	waited := time.Since(began)
	if err == nil || byView(results)["shop_orders"].Action != store.ViewFailed || !strings.Contains(err.Error(), "1 of 1") {
		t.Fatalf("view change behind a reader: %v %+v, want a failure", err, results)
	}
	if waited > 10*time.Second {
		t.Errorf("view change waited %v behind a reader, want about the lock timeout", waited)
	}
	t.Logf("view change behind a reader gave up after %v: %v", waited, byView(results)["shop_orders"].Err)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := db.ExecContext(wctx, `UPDATE records SET payload = '{"amount": 11}' WHERE external_id = '1'`); err != nil {
		t.Errorf("sync write while a view change waited: %v", err)
	}
}
