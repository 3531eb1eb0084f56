package demoapi

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableCompression: true},
	Timeout:       10 * time.Second,
}

// TestFaultModes requests one page under each fault mode, selected per
// request with the _fault parameter, and checks what a client sees.
func TestFaultModes(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 3, Records: 50})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	get := func(path string) (*http.Response, []byte, error) {
		res, err := noRedirect.Get(srv.URL + path)
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
		return res, body, err
	}
	jsonErr := func(body []byte) string {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return err.Error()
		}
		return ""
	}
	tests := []struct {
		mode  string
		path  string
		check func(t *testing.T, res *http.Response, body []byte, err error)
	}{
		{FaultError500, "/v1/ticket_sales", func(t *testing.T, res *http.Response, body []byte, err error) {
			if err != nil || res.StatusCode != 500 {
				t.Errorf("got %v %v", res, err)
			}
		}},
		{FaultReset, "/v1/ticket_sales", func(t *testing.T, res *http.Response, body []byte, err error) {
			if !errors.Is(err, syscall.ECONNRESET) && (err == nil || !strings.Contains(err.Error(), "EOF")) {
				t.Errorf("err = %v, want a reset connection", err)
			}
		}},
		{FaultTruncate, "/settlements", func(t *testing.T, res *http.Response, body []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("err = %v, want unexpected EOF", err)
			}
		}},
		{FaultMalformed, "/v1/ticket_sales", func(t *testing.T, res *http.Response, body []byte, err error) {
			if err != nil || res.StatusCode != 200 || jsonErr(body) == "" {
				t.Errorf("want 200 with broken JSON, got %v %v", err, jsonErr(body))
			}
		}},
		{FaultWrongTypes, "/api/transactions", func(t *testing.T, res *http.Response, body []byte, err error) {
			var v struct{ Transactions map[string]any }
			if err != nil || json.Unmarshal(body, &v) != nil || len(v.Transactions) == 0 {
				t.Errorf("want transactions as an object: %v %s", err, body[:min(len(body), 100)])
			}
		}},
		{FaultMissingID, "/settlements", func(t *testing.T, res *http.Response, body []byte, err error) {
			var v struct {
				Results []struct{ Settlement map[string]any }
			}
			if err != nil || json.Unmarshal(body, &v) != nil || v.Results[0].Settlement["id"] == nil || v.Results[1].Settlement["id"] != nil {
				t.Errorf("want record 1 without settlement.id: %v", err)
			}
		}},
		{FaultNonScalarID, "/v1/inventory_movements", func(t *testing.T, res *http.Response, body []byte, err error) {
			var v []map[string]any
			if err != nil || json.Unmarshal(body, &v) != nil {
				t.Fatal(err)
			}
			if _, ok := v[1]["id"].(map[string]any); !ok {
				t.Errorf("record 1 id = %v, want an object", v[1]["id"])
			}
		}},
		{FaultDuplicateIDs, "/v2/tax/summaries", func(t *testing.T, res *http.Response, body []byte, err error) {
			var v struct {
				Result struct{ Items []map[string]any }
			}
			if err != nil || json.Unmarshal(body, &v) != nil || v.Result.Items[0]["id"] != v.Result.Items[1]["id"] {
				t.Errorf("want records 0 and 1 with the same id: %v", err)
			}
		}},
		{FaultEndless, "/v1/ticket_sales", func(t *testing.T, res *http.Response, body []byte, err error) {
			if err != nil || len(body) != 4<<20 || !bytes.HasPrefix(body, []byte(`{"data":[{"id"`)) {
				t.Errorf("want a body past 4 MiB: %v, %d bytes", err, len(body))
			}
		}},
		{FaultGzipBomb, "/v1/ticket_sales", func(t *testing.T, res *http.Response, body []byte, err error) {
			if err != nil || res.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("got %v %v", res, err)
			}
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, io.LimitReader(zr, 64<<20))
			if n != 64<<20 || len(body) > 2<<20 {
				t.Errorf("%d bytes on the wire decompress to at least %d, want > 64 MiB from < 2 MiB", len(body), n)
			}
		}},
		{FaultRedirectHost, "/v1/ticket_sales?limit=5", func(t *testing.T, res *http.Response, body []byte, err error) {
			if err != nil || res.StatusCode != 302 || !strings.HasPrefix(res.Header.Get("Location"), "http://localhost:") || strings.Contains(res.Header.Get("Location"), "_fault") {
				t.Errorf("got %v %v", res.Header.Get("Location"), err)
			}
		}},
		{FaultRedirectLoopback, "/v1/ticket_sales&_fault_to=http://127.0.0.1:1", func(t *testing.T, res *http.Response, body []byte, err error) {
			if err != nil || res.StatusCode != 302 || res.Header.Get("Location") != "http://127.0.0.1:1/v1/ticket_sales" {
				t.Errorf("got %q %v", res.Header.Get("Location"), err)
			}
		}},
		{FaultRedirectLoop, "/v1/ticket_sales&_hop=4", func(t *testing.T, res *http.Response, body []byte, err error) {
			if err != nil || res.StatusCode != 302 || !strings.Contains(res.Header.Get("Location"), "_hop=5") || !strings.Contains(res.Header.Get("Location"), "_fault=redirect_loop") {
				t.Errorf("got %q %v", res.Header.Get("Location"), err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			path, extra, _ := strings.Cut(tt.path, "&")
			sep := "?"
			if strings.Contains(path, "?") {
				sep = "&"
			}
			url := path + sep + "_fault=" + tt.mode
			if extra != "" {
				url += "&" + extra
			}
			res, body, err := get(url)
			tt.check(t, res, body, err)
		})
	}
}

// TestFaultTrickle: one byte per second.
func TestFaultTrickle(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(New(Options{Records: 5}))
	t.Cleanup(srv.Close)
	res, err := noRedirect.Get(srv.URL + "/settlements?_fault=trickle")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	began := time.Now()
	buf := make([]byte, 3)
	n, err := io.ReadFull(res.Body, buf)
	if err != nil || n != 3 {
		t.Fatal(n, err)
	}
	if d := time.Since(began); d < 1500*time.Millisecond {
		t.Errorf("3 bytes in %s: faster than one byte per second", d)
	}
	if res.ContentLength < 100 {
		t.Errorf("Content-Length %d: want the whole page announced", res.ContentLength)
	}
}

// TestFaultEndpoint switches faults on and off at run time: after, count
// and resource select the requests; DELETE turns it off.
func TestFaultEndpoint(t *testing.T) {
	t.Parallel()
	s := New(Options{Records: 20})
	post := func(body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/_faults", strings.NewReader(body)))
		return rec
	}
	status := func(path string) int {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if rec := post(`{"mode":"bogus"}`); rec.Code != 400 || !strings.Contains(rec.Body.String(), "unknown fault mode") {
		t.Errorf("bogus mode: %d %s", rec.Code, rec.Body)
	}
	if rec := post(`{"mode":"error_500","resource":"nope"}`); rec.Code != 400 {
		t.Errorf("bogus resource: %d", rec.Code)
	}
	if rec := post(`{"mode":"error_500","resource":"settlements","after":2,"count":2}`); rec.Code != 200 {
		t.Fatalf("set: %d %s", rec.Code, rec.Body)
	}
	var got []int
	for range 6 {
		got = append(got, status("/settlements"))
	}
	if want := []int{200, 200, 500, 500, 200, 200}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if c := status("/v1/ticket_sales"); c != 200 {
		t.Errorf("another resource: %d", c)
	}
	if st := s.Fault(); st.Seen != 6 || st.Injected != 2 {
		t.Errorf("state %+v", st)
	}
	post(`{"mode":"error_500"}`)
	if c := status("/v1/ticket_sales"); c != 500 {
		t.Errorf("every resource: %d", c)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, "/_faults", nil))
	if rec.Code != 204 || status("/v1/ticket_sales") != 200 {
		t.Errorf("DELETE: %d, then %d", rec.Code, status("/v1/ticket_sales"))
	}
	if c := status("/v1/ticket_sales?_fault=nope"); c != 400 {
		t.Errorf("bad _fault: %d", c)
	}
}
