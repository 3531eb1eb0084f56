package discover

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/ratelimit"
	"github.com/tidemark/tidemark/upstream"
)

// errBudget is returned instead of a request once the budget is spent.
var errBudget = errors.New("request budget spent")

// maxBody bounds one discovery response.
const maxBody = 16 << 20

// response is one fully read answer.
type response struct {
	url    string
	status int
	header http.Header
	body   []byte
}

// prober sends discovery's requests: only GET and HEAD, at most max of them,
// spaced as the upstream's rate-limit headers ask.
type prober struct {
	client  *http.Client
	header  http.Header
	max     int
	sent    int
	methods map[string]int
	sleep   func(context.Context, time.Duration) error
	now     func() time.Time
	maxWait time.Duration

	rate      rateInfo
	interval  time.Duration // spacing derived from limit/window
	last      time.Time
	waitUntil time.Time
	waited    time.Duration
}

// rateInfo is what the rate-limit headers said.
type rateInfo struct {
	headers    []string          // header names seen, in order
	values     map[string]string // the last value of each
	limit      int
	remaining  int
	hasRemain  bool
	quota      bool // the budget is announced as the fleet reads it (ratelimit.ReadQuota)
	reset      time.Duration
	window     time.Duration
	windowFrom string // "policy" or "reset"
	retryAfter time.Duration
	got429     bool
}

// newProber builds the prober for a discovery: opts' transport and headers,
// with the token as a bearer Authorization.
func newProber(opts Options, maxReq int, sleep func(context.Context, time.Duration) error, now func() time.Time) *prober {
	transport := opts.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	header := http.Header{}
	for k, vs := range opts.Header {
		header[http.CanonicalHeaderKey(k)] = vs
	}
	if header.Get("Accept") == "" {
		header.Set("Accept", "application/json")
	}
	header.Set("User-Agent", "tidemark-discover")
	if opts.Token != "" {
		header.Set("Authorization", "Bearer "+opts.Token)
	}
	return &prober{
		client: &http.Client{Transport: transport, Timeout: cmp.Or(opts.Timeout, config.SourceTimeoutDefault.D())},
		header: header, max: maxReq, methods: map[string]int{},
		sleep: sleep, now: now, maxWait: cmp.Or(opts.MaxWait, MaxWaitDefault),
	}
}

func (p *prober) remaining() int { return p.max - p.sent }

// do sends one request with discovery's headers (the token among them) and
// extra. Any method but GET and HEAD is refused here, so no code path of
// discovery can write to the API.
func (p *prober) do(ctx context.Context, method, rawURL string, extra http.Header) (*response, error) {
	h := p.header.Clone()
	for k, vs := range extra {
		h[k] = vs
	}
	return p.send(ctx, method, rawURL, h)
}

// public GETs a document that may live on another host (OAuth metadata):
// without the token, which only the API itself may see.
func (p *prober) public(ctx context.Context, rawURL string) (*response, error) {
	h := p.header.Clone()
	h.Del("Authorization")
	return p.send(ctx, http.MethodGet, rawURL, h)
}

func (p *prober) send(ctx context.Context, method, rawURL string, header http.Header) (*response, error) {
	if method != http.MethodGet && method != http.MethodHead {
		return nil, fmt.Errorf("discover: refusing to send %s: discovery only reads", method)
	}
	for {
		if p.sent >= p.max {
			return nil, errBudget
		}
		if err := p.pace(ctx); err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, upstream.Redact(rawURL), err)
		}
		req.Header = header
		p.sent++
		p.methods[method]++
		p.last = p.now()
		res, err := p.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, upstream.Redact(rawURL), upstream.UnwrapURLError(err))
		}
		body, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
		res.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s %s: read body: %w", method, upstream.Redact(rawURL), err)
		}
		if len(body) > maxBody {
			return nil, fmt.Errorf("%s %s: response larger than %d bytes", method, upstream.Redact(rawURL), maxBody)
		}
		p.observe(res.Header, res.StatusCode)
		if res.StatusCode == http.StatusTooManyRequests && p.sent < p.max {
			wait := max(p.rate.retryAfter, time.Second)
			if wait <= p.maxWait {
				p.waitUntil = p.now().Add(wait)
				continue // the retry counts against the budget like any request
			}
		}
		return &response{url: res.Request.URL.String(), status: res.StatusCode, header: res.Header, body: body}, nil
	}
}

// pace waits until the next request is allowed: after a Retry-After or an
// exhausted window, and at least limit/window after the previous request.
func (p *prober) pace(ctx context.Context) error {
	now := p.now()
	at := p.waitUntil
	if p.interval > 0 && !p.last.IsZero() {
		if t := p.last.Add(p.interval); t.After(at) {
			at = t
		}
	}
	if d := at.Sub(now); d > 0 {
		if d > p.maxWait {
			return fmt.Errorf("the API's rate limit asks to wait %s, longer than discovery waits (%s)", d.Round(time.Second), p.maxWait)
		}
		p.waited += d
		return p.sleep(ctx, d)
	}
	return nil
}

var (
	limitHeaders = []string{"RateLimit-Limit", "X-RateLimit-Limit", "X-Rate-Limit-Limit"}
	resetHeaders = []string{"RateLimit-Reset", "X-RateLimit-Reset", "X-Rate-Limit-Reset"}
	// rateHeaders are all the headers shown as evidence for the rate limit.
	rateHeaders = []string{"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy", "RateLimit",
		"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Used", "X-RateLimit-Resource",
		"X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset", "Retry-After"}
)

// observe reads the rate-limit headers of a response and updates pacing.
// The budget (remaining, reset, limit) is read as the fleet reads it, by
// ratelimit.ReadQuota, so what discovery says is honoured is what tidemark
// honours; only the window a limit counts over is read here.
func (p *prober) observe(h http.Header, status int) {
	r := &p.rate
	r.record(h)
	now := p.now()
	if v := firstHeader(h, limitHeaders); v != "" {
		if l, w, ok := parseLimit(v); ok {
			r.limit = l
			if w > 0 {
				r.window, r.windowFrom = w, "policy"
			}
		}
	}
	if l, w, ok := parseLimit(h.Get("RateLimit-Policy")); ok {
		r.limit = cmp.Or(r.limit, l)
		if w > 0 {
			r.window, r.windowFrom = w, "policy"
		}
	}
	q, err := ratelimit.ReadQuota(h, now, ratelimit.MaxResetDefault)
	if q.Remaining >= 0 {
		r.remaining, r.hasRemain = q.Remaining, true
		r.quota = r.quota || err == nil
		r.limit = cmp.Or(r.limit, q.Limit)
	}
	if v := firstHeader(h, resetHeaders); err == nil && q.Remaining >= 0 {
		r.reset = q.Reset
	} else if d, ok := ratelimit.ParseReset(v, now); ok {
		r.reset = d
	}
	if d, ok := ratelimit.ParseRetryAfter(h.Get("Retry-After"), now); ok {
		r.retryAfter = d
	}
	if status == http.StatusTooManyRequests {
		r.got429 = true
	}
	if r.window == 0 && r.reset > 0 {
		// The window is at least as long as the time left in it.
		r.window, r.windowFrom = roundUpWindow(r.reset), "reset"
	}
	if r.limit > 0 && r.window > 0 {
		p.interval = r.window / time.Duration(r.limit)
	}
	if r.hasRemain && r.remaining <= 0 {
		if wait := cmp.Or(r.reset, r.retryAfter); wait > 0 {
			p.waitUntil = now.Add(wait)
		}
	}
}

// record keeps the rate-limit headers present, to show as evidence.
func (r *rateInfo) record(h http.Header) {
	for _, name := range rateHeaders {
		v := h.Get(name)
		if v == "" {
			continue
		}
		if r.values == nil {
			r.values = map[string]string{}
		}
		if _, ok := r.values[name]; !ok {
			r.headers = append(r.headers, name)
		}
		r.values[name] = snippet([]byte(v), 60)
	}
}

// evidence lists the headers seen with their last values.
func (r *rateInfo) evidence() string {
	parts := make([]string, len(r.headers))
	for i, n := range r.headers {
		parts[i] = n + ": " + r.values[n]
	}
	return strings.Join(parts, ", ")
}

// quotaHeaders names the headers that announce the remaining budget.
func (r *rateInfo) quotaHeaders() string {
	var names []string
	for _, n := range r.headers {
		if strings.HasSuffix(n, "Remaining") || strings.HasSuffix(n, "Reset") || n == "RateLimit" {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// firstHeader is the value of the first of names that h has.
func firstHeader(h http.Header, names []string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// parseLimit reads "100", "100;w=60", "100, 100;w=60" or the newer
// draft's policy list `"default";q=100;w=60`: the first limit, and the first window.
func parseLimit(v string) (limit int, window time.Duration, ok bool) {
	for part := range strings.SplitSeq(v, ",") {
		fields := strings.Split(strings.TrimSpace(part), ";")
		n, err := strconv.Atoi(strings.TrimSpace(fields[0]))
		var w time.Duration
		for _, f := range fields[1:] {
			k, val, _ := strings.Cut(strings.TrimSpace(f), "=")
			x, perr := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`))
			switch {
			case perr != nil || x <= 0:
			case strings.TrimSpace(k) == "w":
				w = time.Duration(x) * time.Second
			case strings.TrimSpace(k) == "q" && err != nil:
				n, err = x, nil
			}
		}
		if err == nil && n > 0 && !ok {
			limit, ok = n, true
		}
		if window == 0 {
			window = w
		}
	}
	return limit, window, ok
}

// roundUpWindow rounds a time-to-reset up to the common window it fits in.
func roundUpWindow(d time.Duration) time.Duration {
	for _, w := range []time.Duration{time.Second, time.Minute, time.Hour, 24 * time.Hour} {
		if d <= w {
			return w
		}
	}
	return time.Duration(math.Ceil(d.Hours()/24)) * 24 * time.Hour
}

// withParams returns raw with params set (upstream.SetParams), or raw
// itself when it does not parse: the request then fails and says why.
func withParams(raw string, params ...string) string {
	u, err := upstream.SetParams(raw, params...)
	if err != nil {
		return raw
	}
	return u
}
