package extract_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/internal/demoapi"
)

// scanResources are the resources both paths are compared on: the demo's
// shapes plus projections, nested and odd paths.
var scanResources = []config.Resource{
	{Records: config.Records{Path: "data", ID: "id"}, IgnoreFields: []string{"meta.request_id"},
		Delta: &config.Delta{Field: "updated_at"}},
	{Records: config.Records{ID: "id"}, Delta: &config.Delta{Field: "id"}},
	{Records: config.Records{Path: "data", ID: "id"}, Fields: map[string]string{"amount": "price.cents", "buyer": "buyer", "gone": "nope", "all": "", "é": "a.\u2028"},
		IgnoreFields: []string{"buyer.name", "amount", "all.meta"}},
	{Records: config.Records{Path: "a.b", ID: "x.y"}, IgnoreFields: []string{"k", "x.z", "", "x.y.q"}, Delta: &config.Delta{Field: "x"}},
	{Records: config.Records{Path: "results", ID: "settlement.id"}, Delta: &config.Delta{Field: ""}},
	{Records: config.Records{Path: "result.items", ID: ""}},
	{Records: config.Records{Path: "transactions", ID: "txn_id"}, IgnoreFields: []string{"a", "b.c", "\u00e9"}},
}

// lookupPaths are envelope paths compared through Lookup.
var lookupPaths = []string{"", "next_cursor", "next_url", "data", "a", "a.b", "k.\u00e9", "x..y", "\ufffd", "\ufffd.x"}

// compare runs body through Decode + Records and Scan + DocRecords and
// reports any difference: acceptance, records, rejections, errors, lookups.
func compare(body []byte, res *config.Resource) error {
	doc, slowErr := extract.Decode(body)
	d, fastErr := extract.Scan(body)
	if (slowErr == nil) != (fastErr == nil) {
		return fmt.Errorf("decode: slow err %v, fast err %v", slowErr, fastErr)
	}
	if slowErr != nil {
		return nil
	}
	defer d.Release() // and the next Scan reuses its memory: test that too
	for _, p := range lookupPaths {
		sv, sok := extract.Lookup(doc, p)
		fv, fok := d.Lookup(p)
		if sok != fok || !reflect.DeepEqual(sv, fv) {
			return fmt.Errorf("lookup %q: slow %#v %v, fast %#v %v", p, sv, sok, fv, fok)
		}
	}
	ex := extract.New(res)
	slow, slowRej, slowErr := ex.Records(doc)
	fast, fastRej, fastErr := ex.DocRecords(d)
	if fmt.Sprint(slowErr) != fmt.Sprint(fastErr) {
		return fmt.Errorf("records: slow err %v, fast err %v", slowErr, fastErr)
	}
	if len(slow) != len(fast) || (slow == nil) != (fast == nil) {
		return fmt.Errorf("records: slow %d (nil %v), fast %d (nil %v)", len(slow), slow == nil, len(fast), fast == nil)
	}
	for i := range slow {
		s, f := slow[i], fast[i]
		if s.ID != f.ID || s.Hash != f.Hash || !bytes.Equal(s.Payload, f.Payload) || !reflect.DeepEqual(s.Cursor, f.Cursor) {
			return fmt.Errorf("record %d:\nslow %q %s %s %#v\nfast %q %s %s %#v", i, s.ID, s.Hash, s.Payload, s.Cursor, f.ID, f.Hash, f.Payload, f.Cursor)
		}
	}
	if len(slowRej) != len(fastRej) || (slowRej == nil) != (fastRej == nil) {
		return fmt.Errorf("rejected: slow %+v, fast %+v", slowRej, fastRej)
	}
	for i := range slowRej {
		s, f := slowRej[i], fastRej[i]
		if s.Index != f.Index || s.ID != f.ID || !bytes.Equal(s.Raw, f.Raw) || s.Truncated != f.Truncated || s.Reason != f.Reason {
			return fmt.Errorf("rejection %d:\nslow %d %q %q %v %s\nfast %d %q %q %v %s", i, s.Index, s.ID, s.Raw, s.Truncated, s.Reason, f.Index, f.ID, f.Raw, f.Truncated, f.Reason)
		}
	}
	// Every record of the page is either taken or rejected, once.
	if n := arrayLen(doc, res.Records.Path); len(slow)+len(slowRej) != n {
		return fmt.Errorf("%d records and %d rejections of a page of %d", len(slow), len(slowRej), n)
	}
	return nil
}

// arrayLen is the length of the record array at path; 0 if there is none.
func arrayLen(doc any, path string) int {
	arr, _ := extract.Array(doc, path)
	return len(arr)
}

// demoPage is a page of a demo API resource as its server renders it.
func demoPage(tb testing.TB, path string, limit int) []byte {
	tb.Helper()
	s := demoapi.New(demoapi.Options{Records: 2 * limit})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, fmt.Sprintf("%s?limit=%d&per_page=%d", path, limit, limit), nil))
	if rec.Code != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

var demoPaths = []string{"/v1/ticket_sales", "/v1/inventory_movements", "/api/transactions", "/settlements", "/v2/tax/summaries"}

// nastyBodies are the cases the fast path most easily gets wrong.
var nastyBodies = []string{
	`{"data":[{"id":"a\"b\\c\/d\b\f\n\r\t\u0001\u001f\u007f","s":"<&>\u2028\u2029 ` + "\u2028 é 票 🎟\x7f" + `"}]}`,
	`{"data":[{"id":"\ud83c\udf9f","lone":"\ud800","low":"\udc00x","pair":"\ud800\u0041","mixed":"\uD83C\uDF9F"}]}`,
	"{\"data\":[{\"id\":\"bad\xff\xfe utf8\",\"k\xc3\":\"\xe2\x80\",\"\xed\xa0\x80\":1}]}",
	`{"data":[{"id":1,"a":1,"a":2,"b":{"x":1},"b":[2],"id":3}],"data":[{"id":"last","b":1,"b":{"z":1,"z":null}}]}`,
	`{"data":[{"id":1e400,"n":[-0,1.0E+2,0.5e-7,123456789012345678901234567890,-0.0e+0,1E1]}]}`,
	`{"data":[{"id":"x","é":1,"e":2,"Z":3,"a":4,"ä":5,"":6,"\u00e9":7}]}`,
	`{"data":[{"id":1,"a":1},{"id":1,"a":2}]}`,
	`{"data":[{"id":1,"a":1},{"id":1,"a":1}]}`,
	`{"data":[{"id":""}]}`, `{"data":[{"id":null}]}`, `{"data":[{"id":true}]}`, `{"data":[1]}`, `{"data":{}}`, `{"data":null}`, `{}`,
	`{"a":{"b":[{"x":{"y":"1","z":2,"q":3},"k":1}]},"k":{"é":"v"}}`,
	`{"result":{"items":[{"id":1}]},"next_url":"\u0068ttp://x"}`,
	`[{"id":7,"b":1,"a":2},{"id":12345678901234567890}]`,
	` [ ] `, `[]]`, `{}}`, `1]`, `"a"}`, `1 x`, `[] []`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{1:2}`, `[01]`, `[1.]`, `[.5]`, `[1e]`, `[-]`, `[+1]`,
	`[nul]`, `[truex]`, `tru`, ``, `   `, "\ufeff[]", `["\x"]`, `["\u12g4"]`, "[\"\x01\"]", `"abc`, `[`, `{`, `{"a":`, `{"a"`, "[1]\n", `[1]x`, `{"a":[}`,
	// Ids: lone surrogates, invalid UTF-8, U+FFFD itself, NUL, spellings of
	// one number, huge and long ones; rejections and duplicates among them.
	`{"data":[{"id":"\ud800"},{"id":"\ud800x"},{"id":"\uDC00"},{"id":"\ud800\ud800"},{"id":"\ud83c\udf9f"},{"id":"\ufffd"},{"id":"` + "\ufffd" + `"},{"id":"ok","v":"\udfff"}]}`,
	"{\"data\":[{\"id\":\"ab\xff\"},{\"id\":\"ab\xfe\"},{\"id\":\"\xed\xa0\x80\"},{\"id\":\"\\u00e9\xc3\"},{\"id\":\"\\ud800\xff\"},{\"id\":1}]}",
	`{"data":[{"id":"nul\u0000","s":"\u0000"},{"id":"x","s":"a\u0000b","\u0000":0}]}`,
	`{"data":[{"id":10},{"id":10.0},{"id":1e1},{"id":"10"},{"id":-0},{"id":0},{"id":-0.0e5},{"id":18446744073709551617},{"id":1E+2,"v":100},{"id":100,"v":1e2}]}`,
	`{"data":[{"id":1,"n":[-0,1.0,1e2,1.50,0.000120,12345678901234567890123,1e999,-1e998,1e1000,-1e999,10e999,-1.5e-2000,1e-7,0e99999999999999999999,1e-99999999999999999999,-12.5E+99999999999999999999]}]}`,
	`{"data":[{"id":1e99999999999999999999999},{"id":10e99999999999999999999998,"a":1},{"id":1e1000},{"id":10e999},{"id":1e-1000},{"id":0.1e-999,"a":1}]}`,
	`{"data":[{"id":"` + strings.Repeat("long", 70) + `","a":1},{"id":"` + strings.Repeat("long", 70) + `","a":2},{"id":"` + strings.Repeat("long", 70) + `","a":1}]}`,
	`{"data":[{"id":"\u0000"},{"id":"\u0000\u0000","\u0000":"\u0000"}]}`, "{\"data\":[{\"id\":\"\x00\"}]}", "[1\x00]", "\x00",
	`{"data":[{"id":"k","\ud800":1,"\udc00":2,"` + "\ufffd" + `":3}],"\ud800":{"x":"\ud800"}}`,
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"data":[{"id":"d","x":` + strings.Repeat(`{"a":`, 9998) + `1` + strings.Repeat(`}`, 9998) + `}]}`,
	`{"data":[{"id":"d","x":` + strings.Repeat(`{"a":`, 9999) + `1` + strings.Repeat(`}`, 9999) + `}]}`,
}

func TestScanMatchesDecode(t *testing.T) {
	t.Parallel()
	var bodies [][]byte
	for _, p := range demoPaths {
		bodies = append(bodies, demoPage(t, p, 50))
	}
	for _, b := range nastyBodies {
		bodies = append(bodies, []byte(b))
	}
	// A big object (sorted with the slow sort) with duplicates.
	var big strings.Builder
	big.WriteString(`{"data":[{"id":"big"`)
	for i := range 100 {
		fmt.Fprintf(&big, `,"k%d":%d,"k%d":"v"`, (i*37)%60, i, (i*11)%60)
	}
	big.WriteString(`}]}`)
	bodies = append(bodies, []byte(big.String()))
	// Rejected records whose JSON is cut (built here, not kept in
	// nastyBodies: live test data slows BenchmarkPage's garbage collection).
	long := strings.Repeat("x", 70000)
	bodies = append(bodies, []byte(`{"data":[{"id":"`+long+`","a":1},{"id":"`+long+`","a":2},[`+strings.Repeat(`"é",`, 40000)+`1]]}`))
	for i, b := range bodies {
		for j := range scanResources {
			if err := compare(b, &scanResources[j]); err != nil {
				t.Errorf("body %d, resource %d: %v\nbody: %.300q", i, j, err, b)
			}
		}
	}
}

// TestDecodeErrors: Decode (the probes' parser) says where a body stops
// being JSON, in the words Scan (the fetches') uses.
func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		`{"a":1 x}`:  `malformed JSON: invalid character 'x' after object key:value pair at offset 7`,
		`[1] x`:      `malformed JSON: trailing data after the document at offset 4`,
		`[1,`:        `malformed JSON: unexpected end of JSON input at offset 3`,
		``:           `malformed JSON: empty body`,
		"[\"\x01\"]": `malformed JSON: invalid character '\x01' in string literal at offset 2`,
		`<html>oops`: `malformed JSON: invalid character '<' looking for beginning of value at offset 0`,
	} {
		if _, err := extract.Decode([]byte(body)); err == nil || err.Error() != want {
			t.Errorf("Decode(%.40q) = %v, want %s", body, err, want)
		}
	}
}

func TestScanErrors(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		`{"a":1 x}`:                `malformed JSON: invalid character 'x' after object key:value pair at offset 7`,
		`[1] x`:                    `malformed JSON: trailing data after the document at offset 4`,
		`[1,`:                      `malformed JSON: unexpected end of JSON input looking for beginning of value`,
		``:                         `malformed JSON: empty body`,
		"[\"\x01\"]":               `malformed JSON: invalid character '\x01' in string literal at offset 2`,
		strings.Repeat("[", 10001): `malformed JSON: invalid character '[' exceeded max depth at offset 10000`,
	} {
		if _, err := extract.Scan([]byte(body)); err == nil || err.Error() != want {
			t.Errorf("Scan(%.40q) = %v, want %s", body, err, want)
		}
	}
}

// FuzzPage checks that the fast path accepts, rejects and extracts exactly
// as Decode + Records do, on every resource shape.
func FuzzPage(f *testing.F) {
	for _, p := range demoPaths {
		f.Add(demoPage(f, p, 3))
	}
	for _, b := range nastyBodies {
		if len(b) < 1000 {
			f.Add([]byte(b))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for j := range scanResources {
			if err := compare(body, &scanResources[j]); err != nil {
				t.Fatalf("resource %d: %v", j, err)
			}
		}
	})
}

// The old and the new path on a real 1000-record ticket_sales page.
func BenchmarkPage(b *testing.B) {
	body := demoPage(b, "/v1/ticket_sales", 1000)
	ex := extract.New(&scanResources[0])
	// The machine is shared: besides wall time per record, report the
	// process's CPU time per record (GC included), which load inflates less.
	var cpu0 time.Duration
	perRecord := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/record")
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*1000), "cpu-ns/record")
	}
	b.Run("DecodeRecords", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		cpu0 = cpuTime()
		for b.Loop() {
			doc, err := extract.Decode(body)
			if err != nil {
				b.Fatal(err)
			}
			if recs, rej, err := ex.Records(doc); err != nil || len(recs) != 1000 || len(rej) != 0 {
				b.Fatal(len(recs), rej, err)
			}
		}
		perRecord(b)
	})
	b.Run("ScanDocRecords", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		cpu0 = cpuTime()
		for b.Loop() {
			d, err := extract.Scan(body)
			if err != nil {
				b.Fatal(err)
			}
			if recs, rej, err := ex.DocRecords(d); err != nil || len(recs) != 1000 || len(rej) != 0 {
				b.Fatal(len(recs), rej, err)
			}
			d.Release()
		}
		perRecord(b)
	})
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestScanRandomDocs compares both paths on generated documents whose keys
// are those the resources' paths, projections and ignore_fields name, so
// that every kind of cut, duplicate and projection is met (random bytes
// from the fuzzer seldom form such records).
func TestScanRandomDocs(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 8))
	keys := []string{"id", "data", "meta", "request_id", "a", "b", "c", "k", "x", "y", "z", "q", "é", "\\u00e9", "buyer", "name", "price", "cents",
		"\\u2028", "", "settlement", "results", "result", "items", "transactions", "txn_id", "updated_at", "next_cursor", "a\\\"b", "amount", "all"}
	strs := []string{`"x"`, `""`, `"1"`, `"é"`, `"\u2028"`, `"\ud800"`, `"a\nb"`, `"<&>"`, `"票"`, "\"\xff\"", `"\u00e9"`, `"2025-03-14T09:26:53Z"`}
	nums := []string{"0", "-0", "1", "1.0E+2", "1e400", "123456789012345678901234567890", "-1.5e-7", "100", "1.50", "0.000120"}
	// Spellings of a few ids, valid or not, so that pages repeat ids.
	ids := []string{"0", "1", "2", "3", "1.0", "1e0", "10e-1", "-0", `"1"`, `"2"`, `"\ud800"`, "\"\xff\"", `"\ufffd"`, `"\u0000"`, `""`, "null", "[1]"}
	var value func(b *strings.Builder, depth int)
	value = func(b *strings.Builder, depth int) {
		switch n := r.IntN(10); {
		case n < 3 && depth < 5:
			b.WriteByte('{')
			for i := range r.IntN(6) {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(b, `"%s":`, keys[r.IntN(len(keys))])
				value(b, depth+1)
			}
			b.WriteByte('}')
		case n < 4 && depth < 5:
			b.WriteByte('[')
			for i := range r.IntN(4) {
				if i > 0 {
					b.WriteString(" , ")
				}
				value(b, depth+1)
			}
			b.WriteByte(']')
		case n < 6:
			b.WriteString(strs[r.IntN(len(strs))])
		case n < 8:
			b.WriteString(nums[r.IntN(len(nums))])
		default:
			b.WriteString([]string{"true", "false", "null"}[r.IntN(3)])
		}
	}
	record := func(b *strings.Builder) {
		b.WriteByte('{')
		fmt.Fprintf(b, `"id":%s,"txn_id":"t%d","settlement":{"id":%s},"x":{"y":%d}`, ids[r.IntN(len(ids))], r.IntN(8), ids[r.IntN(len(ids))], r.IntN(8))
		for range r.IntN(8) {
			fmt.Fprintf(b, `,"%s":`, keys[r.IntN(len(keys))])
			value(b, 1)
		}
		b.WriteByte('}')
	}
	for range 1000 {
		var b strings.Builder
		recs := func() {
			b.WriteByte('[')
			for i := range r.IntN(4) {
				if i > 0 {
					b.WriteByte(',')
				}
				record(&b)
			}
			b.WriteByte(']')
		}
		b.WriteString(`{"data":`)
		recs()
		b.WriteString(`,"a":{"b":`)
		recs()
		b.WriteString(`},"results":`)
		recs()
		b.WriteString(`,"result":{"items":`)
		recs()
		b.WriteString(`},"transactions":`)
		recs()
		b.WriteString(`,"next_cursor":`)
		value(&b, 4)
		b.WriteByte('}')
		for j := range scanResources {
			if err := compare([]byte(b.String()), &scanResources[j]); err != nil {
				t.Fatalf("resource %d: %v\nbody: %s", j, err, b.String())
			}
		}
	}
}
