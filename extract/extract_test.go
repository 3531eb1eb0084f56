package extract_test

import (
	"strings"
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

func records(t *testing.T, res config.Resource, body string) ([]extract.Record, []extract.Rejected, error) {
	t.Helper()
	doc, err := extract.Decode([]byte(body))
	if err != nil {
		return nil, nil, err
	}
	return extract.New(&res).Records(doc)
}

func TestRecords(t *testing.T) {
	t.Parallel()
	type rejection struct {
		index  int
		id     string
		raw    string
		reason string
	}
	tests := []struct {
		name     string
		res      config.Resource
		body     string
		ids      []string
		payload  string // of the first record
		rejected []rejection
		wantErr  string
	}{
		{name: "root array, integer ids", res: config.Resource{Records: config.Records{ID: "id"}},
			body: `[{"id":7,"b":1,"a":2},{"id":12345678901234567890}]`, ids: []string{"7", "12345678901234567890"}, payload: `{"a":2,"b":1,"id":7}`},
		{name: "nested path and dotted id", res: config.Resource{Records: config.Records{Path: "result.items", ID: "s.id"}},
			body: `{"result":{"items":[{"s":{"id":"x"}}]}}`, ids: []string{"x"}, payload: `{"s":{"id":"x"}}`},
		{name: "projection", res: config.Resource{Records: config.Records{Path: "data", ID: "id"}, Fields: map[string]string{"amount": "price.cents", "gone": "nope"}},
			body: `{"data":[{"id":"a","price":{"cents":5},"x":1}]}`, ids: []string{"a"}, payload: `{"amount":5,"gone":null}`},
		{name: "null array is an empty page", res: config.Resource{Records: config.Records{Path: "data", ID: "id"}}, body: `{"data":null}`},
		{name: "html is not escaped", res: config.Resource{Records: config.Records{ID: "id"}}, body: `[{"id":"<&>"}]`, ids: []string{"<&>"}, payload: `{"id":"<&>"}`},
		{name: "identical duplicate is harmless", res: config.Resource{Records: config.Records{ID: "id"}}, body: `[{"id":1,"a":1},{"id":1,"a":1}]`, ids: []string{"1", "1"}, payload: `{"a":1,"id":1}`},
		{name: "conflicting duplicate rejects every copy", res: config.Resource{Records: config.Records{ID: "id"}},
			body: `[{"id":1,"a":1},{"id":2},{"id":1,"a":2},{"id":1.0,"a":1}]`, ids: []string{"2"}, payload: `{"id":2}`,
			rejected: []rejection{
				{0, "1", `{"a":1,"id":1}`, `record 0: id "1" is repeated by record 2 with different content`},
				{2, "1", `{"a":2,"id":1}`, `record 2: id "1" repeats record 0 with different content`},
				{3, "1", `{"a":1,"id":1}`, `record 3: id "1" repeats record 2 with different content`},
			}},
		{name: "duplicate differing in ignored fields only is harmless", res: config.Resource{Records: config.Records{ID: "id"}, IgnoreFields: []string{"at"}},
			body: `[{"id":1,"at":1},{"id":1,"at":2}]`, ids: []string{"1", "1"}, payload: `{"at":1,"id":1}`},
		{name: "missing id", res: config.Resource{Records: config.Records{ID: "id"}}, body: `[{"id":1},{"x":1}]`, ids: []string{"1"}, payload: `{"id":1}`,
			rejected: []rejection{{1, "", `{"x":1}`, `record 1: id "id" is missing`}}},
		{name: "null, empty and object ids", res: config.Resource{Records: config.Records{ID: "id"}}, body: `[{"id":null},{"id":""},{"id":{"a":1}},{"id":[1]},{"id":true},{"id":"ok"}]`,
			ids: []string{"ok"}, payload: `{"id":"ok"}`,
			rejected: []rejection{
				{0, "", `{"id":null}`, `record 0: id "id" is missing`},
				{1, "", `{"id":""}`, `record 1: id "id" is empty`},
				{2, "", `{"id":{"a":1}}`, `record 2: id "id" is a object, not a string or number`},
				{3, "", `{"id":[1]}`, `record 3: id "id" is a array, not a string or number`},
				{4, "", `{"id":true}`, `record 4: id "id" is a boolean, not a string or number`},
			}},
		{name: "record not an object", res: config.Resource{Records: config.Records{ID: "id"}}, body: `[1.50,"s",{"id":"a"}]`, ids: []string{"a"}, payload: `{"id":"a"}`,
			rejected: []rejection{{0, "", `1.5`, "record 0: is a number, not an object"}, {1, "", `"s"`, "record 1: is a string, not an object"}}},
		{name: "path is not an array", res: config.Resource{Records: config.Records{Path: "data", ID: "id"}}, body: `{"data":{}}`, wantErr: `records path "data" is a object, not an array`},
		{name: "path missing", res: config.Resource{Records: config.Records{Path: "data", ID: "id"}}, body: `{}`, wantErr: `records path "data" not found`},
		{name: "malformed", res: config.Resource{Records: config.Records{ID: "id"}}, body: `[{"id":1}`, wantErr: "malformed JSON"},
		{name: "trailing garbage", res: config.Resource{Records: config.Records{ID: "id"}}, body: `[] []`, wantErr: "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := []byte(tt.body)
			for _, path := range []string{"Records", "DocRecords"} {
				got, rejected, err := pageRecords(t, tt.res, body, path == "DocRecords")
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("%s: err = %v, want it to contain %q", path, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				if len(got) != len(tt.ids) {
					t.Fatalf("%s: got %d records, want %d", path, len(got), len(tt.ids))
				}
				for i, r := range got {
					if r.ID != tt.ids[i] {
						t.Errorf("%s: record %d id = %q, want %q", path, i, r.ID, tt.ids[i])
					}
				}
				if len(got) > 0 && string(got[0].Payload) != tt.payload {
					t.Errorf("%s: payload = %s, want %s", path, got[0].Payload, tt.payload)
				}
				if len(rejected) != len(tt.rejected) {
					t.Fatalf("%s: rejected %+v, want %d", path, rejected, len(tt.rejected))
				}
				for i, r := range rejected {
					want := tt.rejected[i]
					if r.Index != want.index || r.ID != want.id || string(r.Raw) != want.raw || r.Reason != want.reason || r.Truncated {
						t.Errorf("%s: rejected %d = {%d %q %s %v %q}, want %+v", path, i, r.Index, r.ID, r.Raw, r.Truncated, r.Reason, want)
					}
				}
			}
		})
	}
}

// pageRecords extracts a body's records through Decode + Records, or
// through Scan + DocRecords.
func pageRecords(t *testing.T, res config.Resource, body []byte, scan bool) ([]extract.Record, []extract.Rejected, error) {
	t.Helper()
	if !scan {
		return records(t, res, string(body))
	}
	d, err := extract.Scan(body)
	if err != nil {
		return nil, nil, err
	}
	defer d.Release()
	return extract.New(&res).DocRecords(d)
}

func TestIgnoreFieldsLeaveHashAlone(t *testing.T) {
	t.Parallel()
	res := config.Resource{Records: config.Records{Path: "data", ID: "id"}, IgnoreFields: []string{"meta.request_id", "fetched_at"}}
	a, _, err := records(t, res, `{"data":[{"id":1,"v":1,"fetched_at":1,"meta":{"request_id":"r1","keep":1}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := records(t, res, `{"data":[{"id":1,"v":1,"fetched_at":2,"meta":{"request_id":"r2","keep":1}}]}`)
	c, _, _ := records(t, res, `{"data":[{"id":1,"v":1,"fetched_at":2,"meta":{"request_id":"r2","keep":2}}]}`)
	if a[0].Hash != b[0].Hash {
		t.Error("a change in ignored fields changed the hash")
	}
	if b[0].Hash == c[0].Hash {
		t.Error("a change in a kept nested field did not change the hash")
	}
	if !strings.Contains(string(a[0].Payload), "request_id") {
		t.Error("ignored fields must still be stored in the payload")
	}
	// Key order and whitespace are not changes.
	d, _, _ := records(t, res, `{"data":[ {"meta":{"keep":1,"request_id":"zz"}, "v":1, "id":1} ]}`)
	if d[0].Hash != a[0].Hash {
		t.Error("key order changed the hash")
	}
}

func TestHashBody(t *testing.T) {
	t.Parallel()
	res := config.Resource{Records: config.Records{Path: "result.items", ID: "id"}, IgnoreFields: []string{"req"}}
	hash := func(body string) string {
		t.Helper()
		doc, err := extract.Decode([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		h, err := extract.New(&res).HashBody(doc)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	base := hash(`{"count":2,"result":{"items":[{"id":1,"req":"a"}]}}`)
	if hash(`{"result":{"items":[{"req":"b","id":1}]},"count":2}`) != base {
		t.Error("an ignored field or key order changed the hash")
	}
	if hash(`{"count":3,"result":{"items":[{"id":1,"req":"a"}]}}`) == base {
		t.Error("a changed envelope count did not change the hash")
	}
	if hash(`{"count":2,"result":{"items":[{"id":2,"req":"a"}]}}`) == base {
		t.Error("a changed record did not change the hash")
	}
}

// TestRecordsItem: records.item reads each record inside its array
// element (GraphQL edges[].node), by both extraction paths alike; an
// element without it is rejected, the rest taken.
func TestRecordsItem(t *testing.T) {
	t.Parallel()
	res := config.Resource{Records: config.Records{Path: "data.products.edges", Item: "node", ID: "id"}, IgnoreFields: []string{"cost"}}
	body := `{"data":{"products":{"edges":[{"cursor":"a","node":{"id":"gid://shopify/Product/1","title":"x","cost":1}},{"cursor":"b"},{"cursor":"c","node":{"id":2}}]}}}`
	recs, rejected, err := records(t, res, body)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].ID != "gid://shopify/Product/1" || string(recs[0].Payload) != `{"cost":1,"id":"gid://shopify/Product/1","title":"x"}` || recs[1].ID != "2" {
		t.Fatalf("records %+v", recs)
	}
	if len(rejected) != 1 || rejected[0].Index != 1 || !strings.Contains(rejected[0].Reason, `has no "node" (records.item)`) {
		t.Fatalf("rejected %+v", rejected)
	}
	doc, err := extract.Scan([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Release()
	drecs, drejected, err := extract.New(&res).DocRecords(doc)
	if err != nil || len(drecs) != 2 || len(drejected) != 1 {
		t.Fatalf("DocRecords: %+v %+v %v", drecs, drejected, err)
	}
	for i := range recs {
		if drecs[i].ID != recs[i].ID || string(drecs[i].Payload) != string(recs[i].Payload) || drecs[i].Hash != recs[i].Hash {
			t.Errorf("record %d: DocRecords %+v, Records %+v", i, drecs[i], recs[i])
		}
	}
	if drejected[0].Reason != rejected[0].Reason {
		t.Errorf("rejection: DocRecords %q, Records %q", drejected[0].Reason, rejected[0].Reason)
	}
}
