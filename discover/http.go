package discover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
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
	headers    []string // header names seen
	limit      int
	remaining  int
	hasRemain  bool
	reset      time.Duration
	window     time.Duration
	windowFrom string // "policy" or "reset"
	retryAfter time.Duration
	got429     bool
}

func (p *prober) remaining() int { return p.max - p.sent }

// do sends one request. Any method but GET and HEAD is refused here, so no
// code path of discovery can write to the API.
func (p *prober) do(ctx context.Context, method, rawURL string, extra http.Header) (*response, error) {
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
			return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), err)
		}
		for k, vs := range p.header {
			req.Header[k] = vs
		}
		for k, vs := range extra {
			req.Header[k] = vs
		}
		p.sent++
		p.methods[method]++
		p.last = p.now()
		res, err := p.client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // its copy of the URL may carry a token in the query
			}
			return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), err)
		}
		body, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
		res.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s %s: read body: %w", method, redact(rawURL), err)
		}
		if len(body) > maxBody {
			return nil, fmt.Errorf("%s %s: response larger than %d bytes", method, redact(rawURL), maxBody)
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
	limitHeaders     = []string{"RateLimit-Limit", "X-RateLimit-Limit", "X-Rate-Limit-Limit"}
	remainingHeaders = []string{"RateLimit-Remaining", "X-RateLimit-Remaining", "X-Rate-Limit-Remaining"}
	resetHeaders     = []string{"RateLimit-Reset", "X-RateLimit-Reset", "X-Rate-Limit-Reset"}
)

// observe reads the rate-limit headers of a response and updates pacing.
func (p *prober) observe(h http.Header, status int) {
	r := &p.rate
	seen := func(name string) {
		for _, n := range r.headers {
			if n == name {
				return
			}
		}
		r.headers = append(r.headers, name)
	}
	first := func(names []string) (string, string) {
		for _, n := range names {
			if v := h.Get(n); v != "" {
				return n, v
			}
		}
		return "", ""
	}
	if n, v := first(limitHeaders); n != "" {
		seen(n)
		if l, w, ok := parseLimit(v); ok {
			r.limit = l
			if w > 0 {
				r.window, r.windowFrom = w, "policy"
			}
		}
	}
	if v := h.Get("RateLimit-Policy"); v != "" {
		seen("RateLimit-Policy")
		if l, w, ok := parseLimit(v); ok {
			if r.limit == 0 {
				r.limit = l
			}
			if w > 0 {
				r.window, r.windowFrom = w, "policy"
			}
		}
	}
	// The structured field of the newer draft: RateLimit: limit=100, remaining=50, reset=30.
	if v := h.Get("RateLimit"); v != "" && strings.Contains(v, "=") {
		seen("RateLimit")
		for part := range strings.SplitSeq(v, ",") {
			k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`))
			if err != nil {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "limit":
				r.limit = n
			case "remaining", "r":
				r.remaining, r.hasRemain = n, true
			case "reset", "t":
				r.reset = time.Duration(n) * time.Second
			}
		}
	}
	if n, v := first(remainingHeaders); n != "" {
		seen(n)
		if x, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			r.remaining, r.hasRemain = x, true
		}
	}
	if n, v := first(resetHeaders); n != "" {
		seen(n)
		if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && x >= 0 {
			if x > 1e9 { // an epoch time, not a delta
				r.reset = time.Unix(int64(x), 0).Sub(p.now())
			} else {
				r.reset = time.Duration(x * float64(time.Second))
			}
			r.reset = max(r.reset, 0)
		}
	}
	if v := h.Get("Retry-After"); v != "" {
		seen("Retry-After")
		if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
			r.retryAfter = time.Duration(s) * time.Second
		} else if t, err := http.ParseTime(v); err == nil {
			r.retryAfter = max(t.Sub(p.now()), 0)
		}
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
		wait := r.reset
		if wait <= 0 {
			wait = r.retryAfter
		}
		if wait > 0 {
			p.waitUntil = p.now().Add(wait)
		}
	}
}

// parseLimit reads "100", "100;w=60" or "100, 100;w=60".
func parseLimit(v string) (limit int, window time.Duration, ok bool) {
	for part := range strings.SplitSeq(v, ",") {
		fields := strings.Split(strings.TrimSpace(part), ";")
		n, err := strconv.Atoi(strings.TrimSpace(fields[0]))
		if err != nil || n <= 0 {
			continue
		}
		if !ok {
			limit, ok = n, true
		}
		for _, f := range fields[1:] {
			k, val, _ := strings.Cut(strings.TrimSpace(f), "=")
			if strings.TrimSpace(k) == "w" {
				if s, err := strconv.Atoi(strings.TrimSpace(val)); err == nil && s > 0 {
					window = time.Duration(s) * time.Second
				}
			}
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

// redact drops the query string, which may carry tokens.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// withParams returns raw with params set (replacing values of the same name).
func withParams(raw string, params ...string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}
