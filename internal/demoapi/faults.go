package demoapi

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault modes: how an API response is broken. Each mimics an upstream
// misbehaving in a way a sync client must survive.
const (
	FaultNone             = ""
	FaultError500         = "error_500"      // 500 with a JSON error body
	FaultReset            = "reset"          // the TCP connection is reset (RST) before any response
	FaultTruncate         = "truncate"       // Content-Length of the full body, half of it sent, connection closed
	FaultMalformed        = "malformed_json" // a complete response whose JSON is broken halfway
	FaultWrongTypes       = "wrong_types"    // the records field is an object, not an array
	FaultMissingID        = "missing_ids"    // record 1 of the page has no id field
	FaultNonScalarID      = "non_scalar_id"  // record 1's id is an object
	FaultDuplicateIDs     = "duplicate_ids"  // record 1 carries record 0's id
	FaultEndless          = "endless"        // 200, chunked, records forever
	FaultGzipBomb         = "gzip_bomb"      // Content-Encoding: gzip, 1 GiB of zeros once decompressed (~1 MiB sent)
	FaultTrickle          = "trickle"        // the real body at one byte per second
	FaultRedirectHost     = "redirect_other_host"
	FaultRedirectLoop     = "redirect_loop"     // 302 to itself with a growing _hop parameter, forever
	FaultRedirectLoopback = "redirect_loopback" // 302 to the same path on 127.0.0.1 (or FaultSpec.To)
)

// FaultModes lists every mode, for flags, docs and validation.
var FaultModes = []string{
	FaultError500, FaultReset, FaultTruncate, FaultMalformed, FaultWrongTypes,
	FaultMissingID, FaultNonScalarID, FaultDuplicateIDs, FaultEndless, FaultGzipBomb,
	FaultTrickle, FaultRedirectHost, FaultRedirectLoop, FaultRedirectLoopback,
}

// FaultSpec selects which API requests get a fault. The zero value injects
// nothing.
type FaultSpec struct {
	// Mode is one of FaultModes; "" turns faults off.
	Mode string `json:"mode"`
	// Resource limits the fault to one resource; "" means every resource.
	Resource string `json:"resource,omitempty"`
	// After lets that many matching requests through untouched first (so
	// that a fault hits page 3 of a walk, say). Default 0.
	After int `json:"after,omitempty"`
	// Count is how many requests get the fault; 0 means every one after
	// After, until the fault is changed.
	Count int `json:"count,omitempty"`
	// To is the redirect target's scheme://host[:port] for the redirect
	// modes. Defaults: redirect_other_host swaps 127.0.0.1 and localhost
	// (same server, another host name); redirect_loopback uses
	// http://127.0.0.1 with the request's port.
	To string `json:"to,omitempty"`
}

// Validate reports a mode or resource the server does not know.
func (f FaultSpec) Validate() error {
	if f.Mode != FaultNone && !slices.Contains(FaultModes, f.Mode) {
		return fmt.Errorf("unknown fault mode %q (want one of %s)", f.Mode, strings.Join(FaultModes, ", "))
	}
	if f.Resource != "" && resourceIndex(f.Resource) < 0 {
		return fmt.Errorf("fault resource %q: %w", f.Resource, ErrUnknownResource)
	}
	if f.After < 0 || f.Count < 0 {
		return errors.New("fault after and count must be >= 0")
	}
	if f.To != "" {
		if u, err := url.Parse(f.To); err != nil || u.Host == "" {
			return fmt.Errorf("fault to %q: want scheme://host[:port]", f.To)
		}
	}
	return nil
}

// FaultState is the current fault and how many requests it has seen.
type FaultState struct {
	FaultSpec
	Seen     int `json:"seen"`     // matching requests since it was set
	Injected int `json:"injected"` // of which broken
}

// faults holds the active FaultSpec.
type faults struct {
	mu       sync.Mutex
	spec     FaultSpec
	seen     int
	injected int
}

// SetFault replaces the active fault (FaultSpec{} turns it off) and zeroes
// its counters. Safe while requests are served.
func (s *Server) SetFault(f FaultSpec) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.spec, s.faults.seen, s.faults.injected = f, 0, 0
	return nil
}

// Fault returns the active fault and its counters.
func (s *Server) Fault() FaultState {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return FaultState{FaultSpec: s.faults.spec, Seen: s.faults.seen, Injected: s.faults.injected}
}

// pickFault decides the fault of one API request: the request's own
// _fault query parameter, else the active FaultSpec.
func (s *Server) pickFault(r *http.Request, res int) (FaultSpec, error) {
	if m := r.URL.Query().Get("_fault"); m != "" {
		f := FaultSpec{Mode: m, To: r.URL.Query().Get("_fault_to")}
		return f, f.Validate()
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	f := s.faults.spec
	if f.Mode == FaultNone || (f.Resource != "" && resourceIndex(f.Resource) != res) {
		return FaultSpec{}, nil
	}
	s.faults.seen++
	if s.faults.seen <= f.After || (f.Count > 0 && s.faults.injected >= f.Count) {
		return FaultSpec{}, nil
	}
	s.faults.injected++
	return f, nil
}

func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		writeJSON(w, r, http.StatusOK, s.Fault())
	case http.MethodDelete:
		_ = s.SetFault(FaultSpec{})
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPost, http.MethodPut:
		var f FaultSpec
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			writeError(w, r, http.StatusBadRequest, "fault: "+err.Error())
			return
		}
		if err := s.SetFault(f); err != nil {
			writeError(w, r, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, r, http.StatusOK, s.Fault())
	default:
		methodNotAllowed(w, "GET, HEAD, POST, PUT, DELETE")
	}
}

// serveFault answers one API request with fault f. Faults that break the
// body render the real page first and then break it.
func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, res int, seq uint64, f FaultSpec) {
	switch f.Mode {
	case FaultError500:
		writeError(w, r, http.StatusInternalServerError, "injected failure")
	case FaultReset:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			writeError(w, r, http.StatusInternalServerError, "reset: "+err.Error())
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close sends RST, not FIN
		}
		_ = conn.Close()
	case FaultRedirectHost, FaultRedirectLoopback, FaultRedirectLoop:
		http.Redirect(w, r, redirectTarget(r, f), http.StatusFound)
	case FaultEndless:
		s.serveEndless(w, r, res)
	case FaultGzipBomb:
		bomb := gzipBomb()
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(bomb)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(bomb)
	default:
		body := s.realBody(r, res, seq)
		switch f.Mode {
		case FaultTruncate:
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body[:len(body)/2])
			// Returning with bytes missing makes net/http close the connection.
		case FaultTrickle:
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for i := range body {
				if _, err := w.Write(body[i : i+1]); err != nil {
					return
				}
				_ = rc.Flush()
				select {
				case <-t.C:
				case <-r.Context().Done():
					return
				}
			}
		case FaultMalformed:
			cut := max(len(body)/2, 1)
			writeBody(w, r, http.StatusOK, append(bytes.Clone(body[:cut]), `,,"oops"]`...))
		default:
			broken, err := breakRecords(body, res, f.Mode)
			if err != nil {
				writeError(w, r, http.StatusInternalServerError, "fault "+f.Mode+": "+err.Error())
				return
			}
			writeBody(w, r, http.StatusOK, broken)
		}
	}
}

// realBody renders the response the request would have had.
func (s *Server) realBody(r *http.Request, res int, seq uint64) []byte {
	rec := &bufferWriter{header: http.Header{}}
	s.serveList(rec, r, res, seq)
	return rec.buf.Bytes()
}

// bufferWriter captures a response body.
type bufferWriter struct {
	header http.Header
	buf    bytes.Buffer
}

func (b *bufferWriter) Header() http.Header         { return b.header }
func (b *bufferWriter) Write(p []byte) (int, error) { return b.buf.Write(p) }
func (b *bufferWriter) WriteHeader(int)             {}

// recordsAt says where each resource keeps its records and id.
var recordsAt = [numResources]struct{ path, id []string }{
	resTicketSales:  {[]string{"data"}, []string{"id"}},
	resInventory:    {nil, []string{"id"}},
	resTransactions: {[]string{"transactions"}, []string{"txn_id"}},
	resSettlements:  {[]string{"results"}, []string{"settlement", "id"}},
	resTaxSummaries: {[]string{"result", "items"}, []string{"id"}},
}

// breakRecords applies a record-level fault to a rendered page.
func breakRecords(body []byte, res int, mode string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	at := recordsAt[res]
	parent, key := any(nil), ""
	cur := doc
	for _, k := range at.path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("records path %v not found", at.path)
		}
		parent, key, cur = m, k, m[k]
	}
	records, _ := cur.([]any)
	if mode == FaultWrongTypes {
		obj := map[string]any{}
		for i, rec := range records {
			obj[strconv.Itoa(i)] = rec
		}
		if parent == nil {
			doc = obj
		} else {
			parent.(map[string]any)[key] = obj
		}
		return json.Marshal(doc)
	}
	if len(records) == 0 {
		return body, nil // nothing to break on an empty page
	}
	i := min(1, len(records)-1)
	rec, _ := records[i].(map[string]any)
	holder, last := rec, at.id[len(at.id)-1]
	for _, k := range at.id[:len(at.id)-1] {
		holder, _ = holder[k].(map[string]any)
	}
	if holder == nil {
		return nil, errors.New("record has no id holder")
	}
	switch mode {
	case FaultMissingID:
		delete(holder, last)
	case FaultNonScalarID:
		holder[last] = map[string]any{"value": holder[last]}
	case FaultDuplicateIDs:
		if len(records) < 2 {
			return body, nil
		}
		first, _ := records[0].(map[string]any)
		for _, k := range at.id[:len(at.id)-1] {
			first, _ = first[k].(map[string]any)
		}
		holder[last] = first[last]
	}
	out, err := json.Marshal(doc)
	return append(out, '\n'), err
}

func redirectTarget(r *http.Request, f FaultSpec) string {
	u := *r.URL
	u.Scheme = "http"
	if r.TLS != nil {
		u.Scheme = "https"
	}
	u.Host = r.Host
	q := u.Query()
	q.Del("_fault")
	q.Del("_fault_to")
	if f.To != "" {
		to, _ := url.Parse(f.To)
		u.Scheme, u.Host = to.Scheme, to.Host
	}
	switch {
	case f.Mode == FaultRedirectLoop:
		hop, _ := strconv.Atoi(q.Get("_hop"))
		q.Set("_hop", strconv.Itoa(hop+1))
		if r.URL.Query().Get("_fault") != "" {
			q.Set("_fault", FaultRedirectLoop) // a per-request loop keeps looping
		}
	case f.To != "":
	case f.Mode == FaultRedirectLoopback:
		_, port, _ := net.SplitHostPort(r.Host)
		u.Host = "127.0.0.1"
		if port != "" {
			u.Host += ":" + port
		}
	case f.Mode == FaultRedirectHost:
		host, port, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if host == "localhost" {
			host = "127.0.0.1"
		} else {
			host = "localhost"
		}
		u.Host = host
		if port != "" {
			u.Host = net.JoinHostPort(host, port)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// serveEndless streams a never-ending record array until the client goes.
func (s *Server) serveEndless(w http.ResponseWriter, r *http.Request, res int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	at := recordsAt[res]
	var open bytes.Buffer
	for _, k := range at.path {
		open.WriteString(`{"` + k + `":`)
	}
	open.WriteByte('[')
	if _, err := w.Write(open.Bytes()); err != nil {
		return
	}
	chunk := bytes.Repeat([]byte(`{"id":"endless","note":"this body never ends"},`), 256)
	for r.Context().Err() == nil {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

var (
	bombOnce sync.Once
	bomb     []byte
)

// gzipBomb is 1 GiB of zeros as 1024 gzip members of 1 MiB each (a gzip
// stream may hold many members): about 1 MiB on the wire.
func gzipBomb() []byte {
	bombOnce.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(make([]byte, 1<<20))
		_ = zw.Close()
		bomb = bytes.Repeat(buf.Bytes(), 1<<10)
	})
	return bomb
}
