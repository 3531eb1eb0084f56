package extract_test

import (
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

func TestCanonicalNumber(t *testing.T) {
	t.Parallel()
	zeros := strings.Repeat("0", 999)
	tests := []struct{ name, in, want string }{
		{"zero", "0", "0"},
		{"negative zero", "-0", "0"},
		{"negative zero with fraction and exponent", "-0.0e5", "0"},
		{"zero with a huge exponent", "0e99999999999999999999", "0"},
		{"trailing fractional zero", "1.0", "1"},
		{"trailing fractional zeros", "1.50", "1.5"},
		{"exponent moves the point", "1.50e1", "15"},
		{"small fraction", "0.000120", "0.00012"},
		{"exponent", "1e2", "100"},
		{"capital exponent with plus", "1E+2", "100"},
		{"negative exponent", "100e-2", "1"},
		{"negative small", "-1.5e-7", "-0.00000015"},
		{"huge integer stays exact", "12345678901234567890123", "12345678901234567890123"},
		{"2^64+1 stays exact", "18446744073709551617", "18446744073709551617"},
		{"beyond float64 precision", "0.1000000000000000000000000001", "0.1000000000000000000000000001"},
		{"canonical negative fraction", "-0.5", "-0.5"},
		{"plain form of 1000 bytes", "1e999", "1" + zeros},
		{"plain form of 1000 bytes with sign", "-1e998", "-1" + zeros[1:]},
		{"plain form of 1001 bytes", "1e1000", "1e1000"},
		{"plain form of 1001 bytes with sign", "-1e999", "-1e999"},
		{"exponent form of another spelling", "10e999", "1e1000"},
		{"exponent form of a fraction", "-1.25e-2000", "-1.25e-2000"},
		{"tiny fraction of 1000 bytes", "0.1e-997", "0." + zeros[2:] + "1"},
		{"tiny fraction of 1002 bytes", "1e-1000", "1e-1000"},
		{"1001 digits", "1" + zeros + "1", "1." + zeros + "1e1000"},
		{"1001 digits with trailing zeros", "1" + zeros + "0", "1e1000"},
		{"exponent beyond int64", "1e99999999999999999999999", "1e99999999999999999999999"},
		{"exponent beyond int64 with digits", "12.5E+99999999999999999999", "1.25e100000000000000000000"},
		{"negative exponent beyond int64", "-0.00125e-99999999999999999999", "-1.25e-100000000000000000002"},
		{"exponent with leading zeros", "1e0002", "100"},
		{"not a number: empty", "", ""},
		{"not a number: plus", "+1", "+1"},
		{"not a number: leading zero", "01", "01"},
		{"not a number: bare point", "1.", "1."},
		{"not a number: word", "NaN", "NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := extract.CanonicalNumber(tt.in); got != tt.want {
				t.Errorf("CanonicalNumber(%.40q) = %.60q (%d bytes), want %.60q (%d bytes)", tt.in, got, len(got), tt.want, len(tt.want))
			}
			if got := extract.CanonicalNumber(tt.want); got != tt.want {
				t.Errorf("CanonicalNumber is not idempotent on %.40q: %.40q", tt.want, got)
			}
		})
	}
}

// The canonical form keeps the exact value, and equal values, and only
// they, have equal forms.
func TestCanonicalNumberKeepsValue(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	digits := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte("0001123456789"[r.IntN(13)])
		}
		return b.String()
	}
	number := func() string {
		s := ""
		if r.IntN(3) == 0 {
			s = "-"
		}
		if ip := strings.TrimLeft(digits(r.IntN(4)), "0"); ip != "" && r.IntN(4) > 0 {
			s += ip
		} else {
			s += "0"
		}
		if r.IntN(2) == 0 {
			s += "." + digits(1+r.IntN(4))
		}
		if r.IntN(2) == 0 {
			s += []string{"e", "E", "e+", "e-", "E-"}[r.IntN(5)] + digits(1+r.IntN(2))
		}
		return s
	}
	rat := func(s string) *big.Rat {
		x, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("big.Rat cannot read %q", s)
		}
		return x
	}
	var seen []string
	for range 20000 {
		s := number()
		c := extract.CanonicalNumber(s)
		if rat(s).Cmp(rat(c)) != 0 {
			t.Fatalf("CanonicalNumber(%q) = %q, another value", s, c)
		}
		if extract.CanonicalNumber(c) != c {
			t.Fatalf("CanonicalNumber(%q) = %q, not canonical itself", s, c)
		}
		intPart, frac, hasFrac := strings.Cut(strings.TrimPrefix(c, "-"), ".")
		if strings.ContainsAny(c, "eE+") || c == "-0" || len(intPart) > 1 && intPart[0] == '0' || hasFrac && (frac == "" || strings.HasSuffix(frac, "0")) {
			t.Fatalf("CanonicalNumber(%q) = %q, not the plain canonical form", s, c)
		}
		seen = append(seen, s)
		o := seen[r.IntN(len(seen))]
		if equal := rat(s).Cmp(rat(o)) == 0; equal != (c == extract.CanonicalNumber(o)) {
			t.Fatalf("%q and %q: equal values %v, canonical forms %q and %q", s, o, equal, c, extract.CanonicalNumber(o))
		}
	}
}

func TestCanonicalNumberFastPathDoesNotAllocate(t *testing.T) {
	for _, s := range []string{"0", "-1", "4200", "12.5", "-0.00012", "12345678901234567890123"} {
		if n := testing.AllocsPerRun(100, func() { _ = extract.CanonicalNumber(s) }); n != 0 {
			t.Errorf("CanonicalNumber(%q) allocates %v times", s, n)
		}
	}
}

// extractBoth extracts a page through both paths, failing the test if
// they differ, and returns what Decode + Records give.
func extractBoth(t *testing.T, res config.Resource, body string) ([]extract.Record, []extract.Rejected) {
	t.Helper()
	if err := compare([]byte(body), &res); err != nil {
		t.Fatalf("the paths differ: %v", err)
	}
	recs, rejected, err := records(t, res, body)
	if err != nil {
		t.Fatal(err)
	}
	return recs, rejected
}

func TestNumberSpellingsAreNoChange(t *testing.T) {
	t.Parallel()
	res := config.Resource{Records: config.Records{Path: "data", ID: "id"}, IgnoreFields: []string{"meta.at"}}
	projected := res
	projected.Fields = map[string]string{"n": "n", "m": "meta"}
	tests := []struct {
		name string
		a, b string // the values of "n" in two versions of a record
		same bool
	}{
		{"zero and negative zero", "0", "-0", true},
		{"zero and a zero with fraction and exponent", "0", "-0.0e5", true},
		{"integer and trailing fractional zero", "1", "1.0", true},
		{"integer and exponent", "100", "1e2", true},
		{"trailing fractional zero dropped", "1.50", "1.5", true},
		{"fraction and exponent", "15", "1.50e1", true},
		{"small fraction and exponent", "0.00012", "1.20e-4", true},
		{"huge integer and exponent", "12345678901234567890123", "1.2345678901234567890123e22", true},
		{"huge exponent spellings", "1e999999", "10e999998", true},
		{"nested in arrays", "[1.0,{\"x\":-0}]", "[1,{\"x\":0}]", true},
		{"different integers", "1", "2", false},
		{"different fractions", "1.5", "1.05", false},
		{"beyond float64 precision", "12345678901234567890123", "12345678901234567890124", false},
		{"negative and positive", "-1", "1", false},
		{"tiny and zero", "1e-400", "0", false},
		{"number and string", "1", `"1"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, res := range []config.Resource{res, projected} {
				page := func(n string) extract.Record {
					recs, rejected := extractBoth(t, res, `{"data":[{"id":7,"n":`+n+`,"meta":{"at":`+n+`,"v":1.0}}]}`)
					if len(recs) != 1 || len(rejected) != 0 {
						t.Fatalf("records %v, rejected %v", recs, rejected)
					}
					return recs[0]
				}
				a, b := page(tt.a), page(tt.b)
				if (a.Hash == b.Hash) != tt.same || (string(a.Payload) == string(b.Payload)) != tt.same {
					t.Errorf("fields %v: same %v, but\n%s %s\n%s %s", res.Fields != nil, tt.same, a.Hash, a.Payload, b.Hash, b.Payload)
				}
			}
			hash := func(n string) string {
				doc, err := extract.Decode([]byte(`{"total":` + n + `,"data":[{"id":1,"n":` + n + `}]}`))
				if err != nil {
					t.Fatal(err)
				}
				h, err := extract.New(&res).HashBody(doc)
				if err != nil {
					t.Fatal(err)
				}
				return h
			}
			if (hash(tt.a) == hash(tt.b)) != tt.same {
				t.Errorf("HashBody: same %v, hashes %s and %s", tt.same, hash(tt.a), hash(tt.b))
			}
		})
	}
}

func TestIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		id      string // raw JSON of the id
		want    string
		wantErr string
	}{
		{"integer", `10`, "10", ""},
		{"trailing fractional zero", `10.0`, "10", ""},
		{"exponent", `1e1`, "10", ""},
		{"string of the same digits", `"10"`, "10", ""},
		{"string kept byte for byte", `"10.0"`, "10.0", ""},
		{"negative zero", `-0`, "0", ""},
		{"2^64+1 exact", `18446744073709551617`, "18446744073709551617", ""},
		{"huge exponent", `1e999999`, "1e999999", ""},
		{"escaped string", `"a\u00e9\n"`, "a\u00e9\n", ""},
		{"U+FFFD written literally", `"` + "\ufffd" + `"`, "\ufffd", ""},
		{"U+FFFD escaped", `"\ufffd"`, "\ufffd", ""},
		{"surrogate pair", `"\ud83c\udf9f"`, "\U0001f39f", ""},
		{"escaped NUL", `"a\u0000b"`, "a\x00b", ""},
		{"lone high surrogate", `"\ud800"`, "", `id "\ud800" holds a lone surrogate \ud800`},
		{"high surrogate then a letter", `"\ud800x"`, "", `id "\ud800x" holds a lone surrogate \ud800`},
		{"high surrogate then a high one", `"\uD800\ud800\udc00"`, "", `id "\ud800𐀀" holds a lone surrogate \ud800`},
		{"lone low surrogate", `"a\udc00"`, "", `id "a\udc00" holds a lone surrogate \udc00`},
		{"invalid byte", "\"ab\xff\"", "", `id "ab\xff" is not valid UTF-8`},
		{"another invalid byte", "\"ab\xfe\"", "", `id "ab\xfe" is not valid UTF-8`},
		{"UTF-8 of a surrogate", "\"\xed\xa0\x80\"", "", `id "\xed\xa0\x80" is not valid UTF-8`},
		{"invalid byte after escapes", "\"\\\"\\u00e9\\n\xc3\"", "", `id "\"é\n\xc3" is not valid UTF-8`},
		{"empty string", `""`, "", `id "id" is empty`},
		{"null", `null`, "", `id "id" is missing`},
		{"boolean", `true`, "", `id "id" is a boolean, not a string or number`},
	}
	res := config.Resource{Records: config.Records{Path: "data", ID: "id"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc, err := extract.Decode([]byte(`{"id":` + tt.id + `}`))
			if err != nil {
				t.Fatal(err)
			}
			id, err := extract.ID(doc.(map[string]any), "id")
			if id != tt.want || fmt.Sprint(err) != fmt.Sprint(errOrNil(tt.wantErr)) {
				t.Fatalf("ID = %q, %v; want %q, %v", id, err, tt.want, errOrNil(tt.wantErr))
			}
			// In a page, through both paths: the other records survive.
			recs, rejected := extractBoth(t, res, `{"data":[{"id":"before"},{"id":`+tt.id+`,"v":1},{"id":"after"}]}`)
			var ids []string
			for _, r := range recs {
				ids = append(ids, r.ID)
			}
			if tt.wantErr == "" {
				if want := []string{"before", tt.want, "after"}; !reflect.DeepEqual(ids, want) || len(rejected) != 0 {
					t.Errorf("ids %q, rejected %+v; want %q", ids, rejected, want)
				}
				return
			}
			if want := []string{"before", "after"}; !reflect.DeepEqual(ids, want) {
				t.Errorf("ids %q, want %q", ids, want)
			}
			if len(rejected) != 1 || rejected[0].Index != 1 || rejected[0].ID != "" || rejected[0].Reason != "record 1: "+tt.wantErr || !utf8.Valid(rejected[0].Raw) {
				t.Errorf("rejected %+v, want record 1: %s", rejected, tt.wantErr)
			}
		})
	}
}

func errOrNil(s string) error {
	if s == "" {
		return nil
	}
	return fmt.Errorf("%s", s)
}

// Ids that encoding/json decodes to the same text are told apart, and
// every one of them is rejected for its own reason.
func TestInvalidIDsDoNotCollapse(t *testing.T) {
	t.Parallel()
	res := config.Resource{Records: config.Records{ID: "id"}}
	recs, rejected := extractBoth(t, res, "[{\"id\":\"a\\ud800\"},{\"id\":\"a\\udc00\"},{\"id\":\"a\xff\"},{\"id\":\"a\xfe\"},{\"id\":\"a\\ufffd\"},{\"id\":\"a\ufffd\",\"v\":2}]")
	if len(recs) != 0 {
		t.Errorf("records %+v, want none: the last two are one id with different content", recs)
	}
	reasons := map[string]bool{}
	for _, r := range rejected {
		reasons[r.Reason] = true
	}
	for _, want := range []string{
		`record 0: id "a\ud800" holds a lone surrogate \ud800`,
		`record 1: id "a\udc00" holds a lone surrogate \udc00`,
		`record 2: id "a\xff" is not valid UTF-8`,
		`record 3: id "a\xfe" is not valid UTF-8`,
		`record 4: id "a�" is repeated by record 5 with different content`,
		`record 5: id "a�" repeats record 4 with different content`,
	} {
		if !reasons[want] {
			t.Errorf("no rejection %s in %+v", want, rejected)
		}
	}
	if len(rejected) != 6 {
		t.Errorf("%d rejections, want 6", len(rejected))
	}
}

// A NUL is text like any other: whether it can be stored is the store's
// business. The payload keeps it escaped.
func TestNULIsNotRejected(t *testing.T) {
	t.Parallel()
	res := config.Resource{Records: config.Records{ID: "id"}}
	recs, rejected := extractBoth(t, res, `[{"id":"n\u0000","s":"a\u0000b","\u0000":1}]`)
	if len(rejected) != 0 || len(recs) != 1 {
		t.Fatalf("records %+v, rejected %+v", recs, rejected)
	}
	if recs[0].ID != "n\x00" {
		t.Errorf("id %q", recs[0].ID)
	}
	if want := `{"\u0000":1,"id":"n\u0000","s":"a\u0000b"}`; string(recs[0].Payload) != want {
		t.Errorf("payload %s, want %s", recs[0].Payload, want)
	}
}

func TestRejectedRawIsCapped(t *testing.T) {
	t.Parallel()
	res := config.Resource{Records: config.Records{ID: "id"}}
	long := strings.Repeat("é", extract.MaxRejectedRaw) // 2 bytes each
	recs, rejected := extractBoth(t, res, `[{"x":"`+long+`"},{"id":"ok","x":"é"}]`)
	if len(recs) != 1 || len(rejected) != 1 {
		t.Fatalf("records %d, rejected %d", len(recs), len(rejected))
	}
	r := rejected[0]
	if !r.Truncated || len(r.Raw) > extract.MaxRejectedRaw || len(r.Raw) < extract.MaxRejectedRaw-3 || !utf8.Valid(r.Raw) || !strings.HasPrefix(string(r.Raw), `{"x":"éé`) {
		t.Errorf("raw of %d bytes, truncated %v, valid UTF-8 %v", len(r.Raw), r.Truncated, utf8.Valid(r.Raw))
	}
	if r.Reason != `record 0: id "id" is missing` {
		t.Errorf("reason %q", r.Reason)
	}
}

// Decode and Doc.Lookup give a string with invalid text as an
// InvalidString, which encodes as the string encoding/json decoded.
func TestInvalidString(t *testing.T) {
	t.Parallel()
	body := []byte(`{"a":"x\ud800","b":["ok","\udc00"],"c":"\ufffd"}`)
	doc, err := extract.Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": extract.InvalidString{Text: "x\ufffd", Raw: `x\ud800`},
		"b": []any{"ok", extract.InvalidString{Text: "\ufffd", Raw: `\udc00`}},
		"c": "\ufffd",
	}
	if !reflect.DeepEqual(doc, want) {
		t.Errorf("Decode = %#v, want %#v", doc, want)
	}
	d, err := extract.Scan(body)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Release()
	if v, _ := d.Lookup(""); !reflect.DeepEqual(v, want) {
		t.Errorf("Lookup = %#v, want %#v", v, want)
	}
	if b, err := json.Marshal(doc); err != nil || string(b) != `{"a":"x`+"\ufffd"+`","b":["ok","`+"\ufffd"+`"],"c":"`+"\ufffd"+`"}` {
		t.Errorf("json.Marshal = %s, %v", b, err)
	}
	if k := extract.Kind(want["a"]); k != "string" {
		t.Errorf("Kind = %s", k)
	}
}
