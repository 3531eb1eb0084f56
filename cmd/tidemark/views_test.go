package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"

	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

const viewsConfig = `sources:
  - name: shop
    base_url: http://127.0.0.1:9000
    resources:
      - name: orders
        path: /orders
        records: {id: id}
        fields: {amount: price.cents, state: status}
        field_types: {amount: numeric}
      - name: refunds
        path: /refunds
        records: {id: id}
`

// tidemark views and tidemark migrate make the views the config asks for,
// print what they did, and follow a config change.
func TestViewsCommand(t *testing.T) {
	t.Parallel()
	dbURL := testenv.Database(t)
	st, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.DBForTests().Exec(`INSERT INTO records (source, resource, external_id, payload, content_hash) VALUES
		('shop', 'orders', '1', '{"amount": 5, "state": "open"}', 'h'),
		('shop', 'orders', '2', '{"amount": "n/a", "state": "closed"}', 'h')`).Error; err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "tidemark.yaml")
	os.WriteFile(file, []byte(viewsConfig), 0o600)
	env := map[string]string{"TIDEMARK_DATABASE_URL": dbURL, "TIDEMARK_CONFIG": file}

	code, out, errOut := runCmd(t, env, "migrate")
	for _, want := range []string{
		"migrations applied\n",
		"tidemark_data.shop_orders  created  (shop/orders)\n",
		"  columns: external_id text, synced_at timestamptz, deleted boolean, payload jsonb, amount numeric (declared), state text (inferred)\n",
		"  values that do not cast (NULL in the view): amount 1\n",
		"tidemark_data.shop_refunds  created  (shop/refunds)\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("migrate: exit %d, want %q in\n%s%s", code, want, out, errOut)
		}
	}
	var state string
	st.DBForTests().Raw(`SELECT state FROM tidemark_data.shop_orders WHERE amount = 5`).Scan(&state)
	if state != "open" {
		t.Errorf("state = %q, want open", state)
	}

	// The refunds resource goes; orders gains a field.
	os.WriteFile(file, []byte(strings.Replace(viewsConfig[:strings.Index(viewsConfig, "      - name: refunds")],
		"state: status}", "state: status, zone: zone}", 1)), 0o600)
	code, out, errOut = runCmd(t, env, "views")
	for _, want := range []string{"tidemark_data.shop_orders  replaced  (shop/orders)\n", "zone text (inferred)", "tidemark_data.shop_refunds  dropped  (shop/refunds)\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("views: exit %d, want %q in\n%s%s", code, want, out, errOut)
		}
	}

	// Without a config file, migrate still migrates.
	env["TIDEMARK_CONFIG"] = filepath.Join(dir, "missing.yaml")
	if code, out, errOut := runCmd(t, env, "migrate"); code != 0 || !strings.Contains(out, "views: no config file") {
		t.Errorf("migrate without a config: exit %d\n%s%s", code, out, errOut)
	}
	// A view name Postgres cannot hold is a config error, exit 2.
	long := strings.Replace(viewsConfig, "name: refunds", "name: "+strings.Repeat("r", 60), 1)
	os.WriteFile(file, []byte(long), 0o600)
	env["TIDEMARK_CONFIG"] = file
	if code, _, errOut := runCmd(t, env, "views"); code != 2 || !strings.Contains(errOut, "Postgres names hold 63") {
		t.Errorf("views with too long a name: exit %d\n%s", code, errOut)
	}
}

// The scheduler's follower refreshes the views when a reload changes a
// resource's fields, without a tidemark views.
func TestFollowViewsAfterReload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	first, err := config.Parse("t.yaml", []byte(viewsConfig))
	if err != nil {
		t.Fatal(err)
	}
	results, err := st.RefreshViews(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if r := results[1]; r.View != "shop_refunds" || !r.Awaiting {
		t.Fatalf("shop_refunds before any record: %+v, want awaiting", r)
	}
	live := config.NewLive(first)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- followViews(live, st, slog.New(slog.NewTextHandler(tWriter{t}, nil)), 10*time.Millisecond)(fctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("followViews: %v", err)
		}
	}()

	if err := st.DBForTests().Exec(`UPDATE view_cast_failures SET failures = 7 WHERE field = 'amount'`).Error; err != nil {
		t.Fatal(err)
	}
	second, err := config.Parse("t.yaml", []byte(strings.Replace(strings.Replace(viewsConfig, "state: status}", "state: status, zone: zone}", 1),
		"field_types: {amount: numeric}", "field_types: {amount: boolean}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	live.Store(second)
	// waitColumn waits up to 10 s for the view table to have column.
	waitColumn := func(table, column, after string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			var n int64
			st.DBForTests().Raw(`SELECT count(*) FROM information_schema.columns
				WHERE table_schema = 'tidemark_data' AND table_name = ? AND column_name = ?`, table, column).Scan(&n)
			if n == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has no %s column 10s after %s", table, column, after)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitColumn("shop_orders", "zone", "the reload")
	// shop/refunds (raw records) had none when its view was made: its
	// first records give it columns, without a reload or tidemark views.
	if err := st.DBForTests().Exec(`INSERT INTO records (source, resource, external_id, payload, content_hash)
		VALUES ('shop', 'refunds', 'r1', '{"reason": "damaged"}', 'h')`).Error; err != nil {
		t.Fatal(err)
	}
	waitColumn("shop_refunds", "reason", "its first record")

	// The count of amount as a number says nothing of amount as a boolean.
	for deadline := time.Now().Add(10 * time.Second); ; {
		counts, err := st.CastFailures(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(counts) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts 10s after the type changed: %+v; want none", counts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// A migrate without the config file (the Kubernetes base's init containers)
// makes no views; the scheduler's follower makes them.
func TestFollowViewsMakesMissingViews(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	conf, err := config.Parse("t.yaml", []byte(viewsConfig))
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- followViews(conf, st, slog.New(slog.NewTextHandler(tWriter{t}, nil)), 10*time.Millisecond)(fctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int64
		st.DBForTests().Raw(`SELECT count(*) FROM information_schema.views WHERE table_schema = 'tidemark_data'`).Scan(&n)
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d views 10s after the follower started, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
