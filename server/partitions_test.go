package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tidemark/tidemark/server"
)

// TestPartitionsEndpoint pages through a resource's partitions by name
// (keyset), with their roll-up.
func TestPartitionsEndpoint(t *testing.T) {
	t.Parallel()
	e := setup(t, server.Config{})
	if err := e.st.DBForTests().Exec(`INSERT INTO sync_partitions (source, resource, partition, last_success_at, last_error, records)
		SELECT 'shop', 'items', 'acct-' || i, CASE WHEN i < 5 THEN now() END, CASE WHEN i = 2 THEN 'HTTP 404' ELSE '' END, i
		FROM generate_series(1, 5) i`).Error; err != nil {
		t.Fatal(err)
	}
	var names []string
	after := ""
	for pages := 0; ; pages++ {
		resp, body := e.do("GET", "/api/resources/shop/items/partitions?limit=2&after="+after, "", nil, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d: %s", resp.StatusCode, body)
		}
		var page server.Partitions
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		if s := page.Summary; s.Partitions != 5 || s.Failing != 1 || s.NeverSynced != 1 || s.OldestSuccess == nil {
			t.Errorf("summary %+v, want 5 partitions, 1 failing, 1 never synced", s)
		}
		for _, p := range page.Partitions {
			names = append(names, p.Partition)
		}
		if page.NextAfter == "" || pages > 5 {
			break
		}
		after = page.NextAfter
	}
	if want := "acct-1,acct-2,acct-3,acct-4,acct-5"; strings.Join(names, ",") != want {
		t.Errorf("partitions %s, want %s", strings.Join(names, ","), want)
	}
	if resp, _ := e.do("GET", "/api/resources/shop/items/partitions?limit=0", "", nil, ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("limit=0: %d, want 400", resp.StatusCode)
	}
	if resp, _ := e.do("GET", "/api/resources/shop/nope/partitions", "", nil, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown resource: %d, want 404", resp.StatusCode)
	}
}
