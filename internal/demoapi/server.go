package demoapi

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Server. The zero value serves 1000 records per
// resource with no churn and no fault injection.
type Options struct {
	// Seed makes the data deterministic: the same seed serves the same
	// records. Default 0.
	Seed int64
	// Records is the number of initial records per resource. Default 1000;
	// a negative value starts every resource empty.
	Records int
	// ChangeRate is the number of mutations per second over all resources
	// that Run applies. Default 0 (no background churn).
	ChangeRate float64
	// Rate is the number of API requests per second allowed (token bucket,
	// burst of one second); beyond it requests get 429. Default 0 (unlimited).
	Rate float64
	// FailRate is the fraction (0..1) of API requests answered 500. Default 0.
	FailRate float64
	// Latency is added before every API response. Default 0.
	Latency time.Duration
	// Fault breaks API responses (docs/demo-upstream.md, "Fault modes");
	// POST /_faults and SetFault change it while the server runs. Default
	// none.
	Fault FaultSpec
	// Now is the clock for updated_at, Last-Modified, the Date header and
	// the rate limit. Default time.Now.
	Now func() time.Time
}

// Server is the demo upstream API. It implements http.Handler and is safe
// for concurrent use: reads, /_mutate and Run may overlap.
type Server struct {
	opts  Options
	now   func() time.Time
	codec codec
	nonce uint64 // distinguishes ETags of two servers with the same seed

	mu     sync.RWMutex
	tables [numResources]*table
	rng    prng // mutation choices; under mu (write)

	requestSeq atomic.Uint64 // meta.request_id and the fail-rate draw
	limiter    limiter
	stats      statsRecorder
	faults     faults
	bufs       sync.Pool
}

var _ http.Handler = (*Server)(nil)

// servers counts the servers built, so that two with the same seed and
// clock still have different ETags.
var servers atomic.Uint64

// defaultRecords is the number of records per resource when Options.Records is 0.
const defaultRecords = 1000

// New builds a Server with its initial records. Building 1,000,000 records
// per resource takes a fraction of a second and about 12 bytes per record.
// An invalid Options.Fault panics: check it with FaultSpec.Validate first.
func New(opts Options) *Server {
	if err := opts.Fault.Validate(); err != nil {
		panic("demoapi: " + err.Error())
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Records == 0 {
		opts.Records = defaultRecords
	}
	records := max(opts.Records, 0)
	start := opts.Now()
	s := &Server{
		opts:  opts,
		now:   opts.Now,
		codec: codec{seed: opts.Seed, width: max(6, len(strconv.Itoa(records))+1)},
		nonce: mix(uint64(start.UnixNano()) ^ uint64(opts.Seed) ^ servers.Add(1)<<40),
		rng:   prng{s: uint64(opts.Seed) ^ 0x5eed},
	}
	s.limiter.init(opts.Rate, start)
	s.faults.spec = opts.Fault
	s.bufs.New = func() any { b := make([]byte, 0, 64<<10); return &b }
	var wg sync.WaitGroup
	for i := range numResources {
		wg.Go(func() { s.tables[i] = newTable(i, opts.Seed, records, start) })
	}
	wg.Wait()
	return s
}

// ServeHTTP serves the resource listings and the test endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_stats":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		writeJSON(w, r, http.StatusOK, s.Stats())
		return
	case "/_stats/reset":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		s.stats.reset()
		w.WriteHeader(http.StatusNoContent)
		return
	case "/_faults":
		s.serveFaults(w, r)
		return
	case "/_mutate":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		s.serveMutate(w, r)
		return
	}
	// The Date header is the API's own clock, the one that stamps its
	// records, as a real server's is (net/http would send the host's).
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	s.serveAPI(w, r)
}

// routes maps API paths to resources.
var routes = map[string]int{
	"/v1/ticket_sales":        resTicketSales,
	"/v1/inventory_movements": resInventory,
	"/api/transactions":       resTransactions,
	"/settlements":            resSettlements,
	"/v2/tax/summaries":       resTaxSummaries,
}

func (s *Server) serveAPI(rw http.ResponseWriter, r *http.Request) {
	if s.opts.Latency > 0 {
		t := time.NewTimer(s.opts.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // nobody is listening; not counted
		}
	}
	res, known := routes[r.URL.Path]
	if !known {
		res = -1
	}
	w := &countingWriter{ResponseWriter: rw}
	defer func() { s.stats.record(res, w.code(), w.n) }()

	if !s.limiter.allow(s.now()) {
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusTooManyRequests, "rate limit exceeded: retry after 1s")
		return
	}
	seq := s.requestSeq.Add(1)
	if s.opts.FailRate > 0 && float64(mix(seq^uint64(s.opts.Seed)^0xfa11)>>11)/(1<<53) < s.opts.FailRate {
		writeError(w, r, http.StatusInternalServerError, "injected failure")
		return
	}
	if !known {
		writeError(w, r, http.StatusNotFound, "no such resource: "+r.URL.Path)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
		return
	}
	f, err := s.pickFault(r, res)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if f.Mode != FaultNone && (r.Method == http.MethodGet || !bodyFault(f.Mode)) {
		s.serveFault(w, r, res, seq, f)
		return
	}
	s.serveList(w, r, res, seq)
}

// bodyFault reports a fault that breaks the body (HEAD requests are served
// normally under it).
func bodyFault(mode string) bool {
	switch mode {
	case FaultError500, FaultReset, FaultRedirectHost, FaultRedirectLoop, FaultRedirectLoopback:
		return false
	}
	return true
}

// countingWriter records the status and the body bytes actually written.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *countingWriter) code() int { return cmp.Or(c.status, http.StatusOK) }

// writeBody writes a complete JSON body with its length; HEAD gets the same
// headers and no body.
func writeBody(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	writeBody(w, r, status, append(body, '\n'))
}

func writeError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	writeJSON(w, r, status, map[string]string{"error": msg})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	_, _ = w.Write([]byte(`{"error":"method not allowed"}` + "\n"))
}

// limiter is a token bucket holding up to one second of requests.
type limiter struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func (l *limiter) init(rate float64, now time.Time) {
	l.rate, l.tokens, l.last = rate, max(rate, 1), now
}

func (l *limiter) allow(now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if elapsed := now.Sub(l.last).Seconds(); elapsed > 0 {
		l.tokens = min(l.tokens+elapsed*l.rate, max(l.rate, 1))
		l.last = now
	}
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// Run applies Options.ChangeRate mutations per second, spread over the
// resources by their churn, until ctx is done. It returns at once when
// ChangeRate is 0.
func (s *Server) Run(ctx context.Context) {
	if s.opts.ChangeRate <= 0 {
		return
	}
	const tick = 50 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	m := newMutator(s.opts.Seed, s.opts.ChangeRate, tick)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, mu := range m.next() {
			_, _ = s.Mutate(mu) // generated mutations are always valid
		}
	}
}
