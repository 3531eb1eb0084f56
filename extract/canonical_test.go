package extract

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tidemark/tidemark/config"
)

// reference is what Canonical wrote before the fast path: encoding/json
// with HTML escaping off, of the value with the skipped paths removed, and
// with its numbers made canonical.
func reference(t *testing.T, v any, skip [][]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(canonicalNumbers(without(v, skip))); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// canonicalNumbers returns a copy of a decoded value with each number
// replaced by CanonicalNumber's form.
func canonicalNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		return json.Number(CanonicalNumber(string(x)))
	case []any:
		if x == nil {
			return x
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = canonicalNumbers(e)
		}
		return out
	case map[string]any:
		if x == nil {
			return x
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = canonicalNumbers(e)
		}
		return out
	}
	return v
}

// The fast canonical encoder must write exactly what encoding/json writes:
// every stored content hash depends on these bytes.
func TestAppendCanonicalMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	docs := []struct {
		name string
		json string
		skip string
	}{
		{"ticket sale", `{"id":"ts_000001","event_id":"ev_12","status":"paid","price":{"cents":4200,"currency":"EUR"},"buyer":{"name":"Ada Lovelace","email":"ada@example.com"},"seat":"A-12","quantity":2,"created_at":"2025-03-14T09:26:53.000Z","updated_at":"2025-03-14T09:26:53.000Z","meta":{"request_id":"req_0123456789abcdef"}}`, "meta.request_id"},
		{"numbers made canonical", `{"a":1.50,"b":-0,"c":1e10,"d":1E-7,"e":123456789012345678901234567890,"f":-0.0e+0,"g":[0,-1,2.5]}`, ""},
		{"escapes", `{"q":"say \"hi\"","bs":"a\\b","nl":"line\nbreak","tab":"\t","ctl":"\u0001\u001f","html":"<a href='x'>&amp;</a>"}`, ""},
		{"unicode", `{"name":"Zoë Ångström","emoji":"🎟️","sep":"\u2028\u2029","bad":"\ud800","cjk":"票"}`, ""},
		{"unicode keys sorted bytewise", `{"é":1,"e":2,"Z":3,"a":4,"ä":5,"":6}`, ""},
		{"nested arrays and nulls", `{"x":[1,[2,[3,{"b":null,"a":true}]],[],{}],"y":null,"z":false}`, "x.b"},
		{"skip nested, missing and whole", `{"meta":{"request_id":"r","keep":1},"price":{"cents":1},"gone":{"a":1}}`, "meta.request_id,missing.path,gone,price.cents.deeper"},
		{"root array", `[{"b":1,"a":2},"s",3]`, "a"},
	}
	for _, d := range docs {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			v, err := Decode([]byte(d.json))
			if err != nil {
				t.Fatal(err)
			}
			var skip [][]string
			if d.skip != "" {
				for _, p := range strings.Split(d.skip, ",") {
					skip = append(skip, strings.Split(p, "."))
				}
			}
			for _, sk := range [][][]string{nil, skip} {
				got, err := appendCanonical(nil, v, sk)
				if err != nil {
					t.Fatal(err)
				}
				if want := reference(t, v, sk); !bytes.Equal(got, want) {
					t.Errorf("skip %v:\n got %s\nwant %s", sk, got, want)
				}
			}
		})
	}
}

func TestAppendCanonicalOddValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"nil map", map[string]any(nil)},
		{"nil slice", []any(nil)},
		{"empty number", json.Number("")},
		{"other type", map[string]any{"n": 3, "f": 1.5, "s": []string{"a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := appendCanonical(nil, tc.v, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := reference(t, tc.v, nil); !bytes.Equal(got, want) {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

func TestPlainNumber(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"0": true, "-0": true, "12": true, "1.5": true, "1e5": true, "1E+5": true, "-1.25e-3": true,
		"": false, "01": false, "1.": false, ".5": false, "1e": false, "+1": false, "NaN": false, "1x": false,
	} {
		if got := plainNumber(s); got != want {
			t.Errorf("plainNumber(%q) = %v, want %v", s, got, want)
		}
	}
}

// BenchmarkCanonicalPair is what Record encodes per record with the fast
// path: the payload and the hashed form without ignored fields.
func BenchmarkCanonicalPair(b *testing.B) {
	doc, err := Decode([]byte(`{"id":"ts_000001","event_id":"ev_12","status":"paid","price":{"cents":4200,"currency":"EUR"},"buyer":{"name":"Ada Lovelace","email":"ada@example.com"},"seat":"A-12","quantity":2,"created_at":"2025-03-14T09:26:53.000Z","updated_at":"2025-03-14T09:26:53.000Z","meta":{"request_id":"req_0123456789abcdef"}}`))
	if err != nil {
		b.Fatal(err)
	}
	skip := [][]string{{"meta", "request_id"}}
	for b.Loop() {
		if _, err := appendCanonical(nil, doc, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := appendCanonical(nil, doc, skip); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	doc, err := Decode([]byte(`{"id":"ts_000001","event_id":"ev_12","status":"paid","price":{"cents":4200,"currency":"EUR"},"buyer":{"name":"Ada Lovelace","email":"ada@example.com"},"seat":"A-12","quantity":2,"created_at":"2025-03-14T09:26:53.000Z","updated_at":"2025-03-14T09:26:53.000Z","meta":{"request_id":"req_0123456789abcdef"}}`))
	if err != nil {
		b.Fatal(err)
	}
	e := New(&config.Resource{Records: config.Records{ID: "id"}, IgnoreFields: []string{"meta.request_id"}})
	for b.Loop() {
		if _, err := e.Record(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordEncodingJSON is Record's work as it was done through
// encoding/json: the payload, then a copy without ignored fields.
func BenchmarkRecordEncodingJSON(b *testing.B) {
	doc, err := Decode([]byte(`{"id":"ts_000001","event_id":"ev_12","status":"paid","price":{"cents":4200,"currency":"EUR"},"buyer":{"name":"Ada Lovelace","email":"ada@example.com"},"seat":"A-12","quantity":2,"created_at":"2025-03-14T09:26:53.000Z","updated_at":"2025-03-14T09:26:53.000Z","meta":{"request_id":"req_0123456789abcdef"}}`))
	if err != nil {
		b.Fatal(err)
	}
	skip := [][]string{{"meta", "request_id"}}
	for b.Loop() {
		if _, err := appendSlow(nil, doc); err != nil {
			b.Fatal(err)
		}
		if _, err := appendSlow(nil, without(doc, skip)); err != nil {
			b.Fatal(err)
		}
	}
}
