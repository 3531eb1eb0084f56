package discover

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/upstream"
)

// Options tune a discovery; zero values take the defaults noted.
type Options struct {
	// Header is sent with every request and written into the proposal's
	// source headers. It must not carry credentials: use Token.
	Header http.Header
	// AuthEnv names the environment variable the bearer token came from; the
	// proposal references it (auth: {type: bearer, token_env: AuthEnv}).
	AuthEnv string
	// Token is sent as "Authorization: Bearer Token". It never appears in the
	// proposal, the notes or an error.
	Token string
	// MaxRequests is the most requests discovery sends, retries included.
	// Default MaxRequestsDefault (12).
	MaxRequests int
	// Source and Resource name the proposal. Default: from the URL's host and
	// last path segment.
	Source, Resource string
	// Timeout bounds one request. Default config.SourceTimeoutDefault
	// (30s), as a source's requests.
	Timeout time.Duration
	// MaxWait is the longest discovery waits for a rate limit before giving
	// up on further requests. Default MaxWaitDefault (30s).
	MaxWait time.Duration
	// Transport is the HTTP transport. Default http.DefaultTransport.
	Transport http.RoundTripper
	// Sleep waits between requests when rate limits ask; tests inject it.
	// Default: a timer that honours ctx.
	Sleep func(context.Context, time.Duration) error
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Options' defaults, filled in by Discover.
const (
	// MaxRequestsDefault is Options.MaxRequests's default.
	MaxRequestsDefault = 12
	// MaxWaitDefault is Options.MaxWait's default.
	MaxWaitDefault = 30 * time.Second
)

// Note is the evidence behind one choice of the proposal, and how sure
// discovery is of it: high, medium or low.
type Note struct {
	Confidence string
	Evidence   string
}

// Result is a proposed config and what led to it.
type Result struct {
	// URL is the URL discovered, without its query.
	URL string
	// Config holds one source with one resource. Fields discovery did not
	// choose are left zero (the config's defaults apply on load).
	Config *config.Config
	// Notes are keyed by the config field they explain: records, pagination,
	// probe, delta, ignore_fields, rate_limit, allow_private, auth, headers.
	Notes map[string]Note
	// Hints are config discovery saw evidence for but does not propose
	// live; the YAML shows them as commented suggestions. Set on errors too
	// (the auth a 401 asks for).
	Hints []Hint
	// Requests is how many requests were sent; Methods counts them by method.
	Requests int
	Methods  map[string]int
	// Waited is the time spent waiting for the API's rate limit.
	Waited time.Duration
}

// NotUnderstoodError is an API discovery cannot propose a working config
// for: it says what was found and what is needed.
type NotUnderstoodError struct {
	Found string
	Needs string
}

func (e *NotUnderstoodError) Error() string {
	return "cannot propose a config: found " + e.Found + "; needs " + e.Needs
}

// ErrInvalidOptions marks a bad URL or option: a usage error, not the API's fault.
var ErrInvalidOptions = errors.New("invalid discover options")

func notUnderstood(found, needs string) error { return &NotUnderstoodError{Found: found, Needs: needs} }

// session is one discovery's state.
type session struct {
	p        *prober
	url      string
	source   string
	resource string
	page1    *response
	doc      any
	recPath  string
	id       string
	recs1    []map[string]any
	ids1     []string
	res      config.Resource
	notes    map[string]Note
	hints    []Hint
	conn     *connection // the GraphQL connection the records are in

	seen        map[string]map[string]any
	diffs       map[string]int
	reseen      int
	pagingTried []string
}

func (s *session) note(key, confidence, evidence string) {
	s.notes[key] = Note{Confidence: confidence, Evidence: evidence}
}

// Discover inspects the collection at rawURL and proposes its config.
// Errors: *NotUnderstoodError when the API cannot be synced as found; other
// errors for bad options or a failed first request.
func Discover(ctx context.Context, rawURL string, opts Options) (*Result, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q is not an absolute http:// or https:// URL", ErrInvalidOptions, rawURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: credentials in the URL are not allowed: use a token from the environment", ErrInvalidOptions)
	}
	for k := range opts.Header {
		if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Proxy-Authorization") {
			return nil, fmt.Errorf("%w: header %s carries credentials: pass the token by environment variable instead", ErrInvalidOptions, k)
		}
	}
	u.Fragment = ""
	maxReq := cmp.Or(opts.MaxRequests, MaxRequestsDefault)
	if maxReq < 1 {
		return nil, fmt.Errorf("%w: max requests must be at least 1, got %d", ErrInvalidOptions, maxReq)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	s := &session{
		p:     newProber(opts, maxReq, sleep, now),
		url:   u.String(),
		notes: map[string]Note{},
		seen:  map[string]map[string]any{},
		diffs: map[string]int{},
	}
	s.resource = cmp.Or(opts.Resource, resourceName(u.Path))
	s.source = cmp.Or(opts.Source, sourceName(u.Hostname()))
	result := func() *Result {
		return &Result{URL: upstream.Redact(s.url), Requests: s.p.sent, Methods: s.p.methods, Waited: s.p.waited, Notes: s.notes, Hints: s.hints}
	}
	if err := s.first(ctx); err != nil {
		return result(), err
	}
	if err := s.pagination(ctx); err != nil {
		return result(), err
	}
	s.validators(ctx)
	reserve := 0
	if s.res.Probe.Strategy == tidemark.ProbeHash && s.reseen == 0 {
		reserve = 1 // a re-read to find volatile fields before hashing
	}
	s.delta(ctx, reserve)
	s.volatile(ctx)
	s.parentHints()

	r := result()
	r.Config = s.proposal(u, opts)
	return r, nil
}

// first reads the first page and finds the records and their id.
func (s *session) first(ctx context.Context) error {
	resp, err := s.p.do(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	s.page1 = resp
	ct, _, _ := mime.ParseMediaType(resp.header.Get("Content-Type"))
	body := bytes.TrimSpace(resp.body)
	isHTML := ct == "text/html" || bytes.HasPrefix(body, []byte("<"))
	switch {
	case resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden:
		found := fmt.Sprintf("HTTP %d %s", resp.status, http.StatusText(resp.status))
		if wa := resp.header.Get("WWW-Authenticate"); wa != "" {
			found += fmt.Sprintf(" (WWW-Authenticate: %s)", s.redactToken(snippet([]byte(wa), 100)))
		}
		s.authHint(ctx, resp)
		hinted := ""
		if len(s.hints) > 0 {
			hinted = " (the auth hint shows what the challenge asks for)"
		}
		if s.p.header.Get("Authorization") != "" {
			return notUnderstood(found+" with the token given", "credentials the API accepts for this resource"+hinted)
		}
		return notUnderstood(found, "credentials: pass a bearer token with --auth-env VAR, or the API's key header with --header"+hinted)
	case resp.status == http.StatusTooManyRequests:
		return notUnderstood("HTTP 429 Too Many Requests, still after waiting", "a later try, or a larger rate limit")
	case resp.status < 200 || resp.status > 299:
		found := fmt.Sprintf("HTTP %d %s", resp.status, http.StatusText(resp.status))
		if isHTML {
			found += " with an HTML page" + htmlTitle(body)
		} else if len(body) > 0 {
			found += ": " + snippet(body, 200)
		}
		return notUnderstood(found, "a URL that answers 200 with a JSON list of records")
	case isHTML:
		return notUnderstood("an HTML page"+htmlTitle(body)+" (Content-Type "+cmp.Or(ct, "unset")+"), not JSON", "the URL of a JSON API endpoint, not a web page")
	}
	doc, err := extract.Decode(resp.body)
	if err != nil {
		return notUnderstood(fmt.Sprintf("a body that is not JSON (Content-Type %s): %s", cmp.Or(ct, "unset"), snippet(body, 80)), "a JSON response")
	}
	s.doc = doc
	path, ev, err := findArray(doc, s.resource)
	if err != nil {
		return err
	}
	s.recPath = path
	recs, _, err := recordsAt(doc, path, "")
	if err != nil {
		return notUnderstood(err.Error(), "a JSON array of record objects")
	}
	id, idEv, idConf, err := findID(recs, firstKey(resp.body, path), s.resource)
	if err != nil {
		return err
	}
	s.id = id
	_, ids, err := recordsAt(doc, path, id)
	if err != nil {
		return notUnderstood(err.Error(), "an id in every record")
	}
	s.recs1, s.ids1 = recs, ids
	if c, ok := graphQLConnection(doc, path); ok {
		s.conn = &c
		s.graphQLHint(c)
	}
	s.remember(recs, ids)
	s.res.Records = config.Records{Path: path, ID: id}
	conf := "high"
	if idConf != "high" {
		conf = idConf
	}
	s.note("records", conf, ev+"; id: "+idEv)
	return nil
}

// proposal assembles the config from what the session found.
func (s *session) proposal(u *url.URL, opts Options) *config.Config {
	base := url.URL{Scheme: u.Scheme, Host: u.Host}
	path := u.Path
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	src := config.Source{
		BaseURL: base.String(),
	}
	headers := map[string]string{}
	for k, vs := range s.p.header {
		if k == "Authorization" || k == "User-Agent" || len(vs) == 0 {
			continue
		}
		headers[k] = vs[0]
	}
	src.Headers = headers
	src.Name = s.source
	if opts.Token != "" && opts.AuthEnv != "" {
		src.Auth = &config.Auth{Type: config.AuthBearer, TokenEnv: opts.AuthEnv}
		s.note("auth", "high", "the token discovery used, read at request time from "+opts.AuthEnv)
	}
	if private(u.Hostname()) {
		src.AllowPrivate = true
		s.note("allow_private", "high", u.Hostname()+" is a loopback or private address")
	}
	src.RateLimit = s.rateLimit()
	if s.p.rate.quota {
		src.RateLimitHeaders = config.HeadersHonour
		s.note("rate_limit_headers", "high", "the responses announce their remaining budget and its reset ("+s.p.rate.quotaHeaders()+
			"): with honour (the default) the fleet slows as the budget runs low, before a 429")
	}

	res := s.res
	res.Name = s.resource
	res.Path = path
	res.FullSync = config.FullSync{Every: config.Duration(24 * time.Hour)}
	if n := s.notes["pagination"]; n.Confidence == "high" {
		res.FullSync.DetectDeletes = true
		s.note("full_sync", "high", "pagination is confirmed, so a full read sees every live record: records it does not see are tombstoned")
	} else {
		s.note("full_sync", "medium", "pagination is not confirmed: deletions are not detected until it is (set detect_deletes once a full sync is seen to be complete)")
	}
	src.Resources = []config.Resource{res}
	return &config.Config{Sources: []config.Source{src}}
}

// rateLimit proposes the source's rate limit from the headers seen.
func (s *session) rateLimit() *config.RateLimit {
	r := s.p.rate
	switch {
	case r.limit > 0:
		window, conf := r.window, "high"
		how := "window from " + r.windowFrom
		if r.windowFrom == "reset" {
			conf = "medium"
			how = fmt.Sprintf("window inferred from the time to reset (%s), rounded up", r.reset.Round(time.Second))
		}
		if window == 0 {
			window, conf, how = time.Minute, "low", "the window is not stated: assumed one minute, check the API's docs"
		}
		req := max(r.limit*9/10, 1)
		s.note("rate_limit", conf, fmt.Sprintf("%s: %d requests per %s (%s); proposing 90%% of it for headroom",
			r.evidence(), r.limit, fmtDuration(window), how))
		return &config.RateLimit{Requests: req, Per: config.Duration(window), Burst: 1}
	case r.got429:
		s.note("rate_limit", "low", "the API answered 429 during discovery without saying its limit: one request per second is a cautious guess")
		return &config.RateLimit{Requests: 1, Per: config.Duration(time.Second), Burst: 1}
	case r.quota:
		s.note("rate_limit", "medium", r.evidence()+": the remaining budget is announced but not the limit: none proposed (rate_limit_headers paces by what remains)")
		return nil
	default:
		s.note("rate_limit", "medium", "no rate-limit headers (RateLimit-*, X-RateLimit-*, Retry-After) seen: none proposed; add one if the API documents a limit")
		return nil
	}
}

var nonName = regexp.MustCompile(`[^a-z0-9_]+`)

func sanitize(s string) string {
	return strings.Trim(nonName.ReplaceAllString(strings.ToLower(s), "_"), "_")
}

func resourceName(path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(segs) - 1; i >= 0; i-- {
		if n := sanitize(segs[i]); n != "" && !regexp.MustCompile(`^v\d+$|^\d+$|^api$`).MatchString(n) {
			return n
		}
	}
	return "items"
}

func sourceName(host string) string {
	if net.ParseIP(host) != nil || host == "localhost" {
		return "api"
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l != "api" && l != "www" {
			if n := sanitize(l); n != "" {
				return n
			}
		}
	}
	return "api"
}

// private reports a loopback, private or link-local host, by literal or by
// resolving it.
func private(host string) bool {
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		if host == "localhost" {
			return true
		}
		addrs, err := net.LookupIP(host)
		if err != nil {
			return false
		}
		ips = addrs
	}
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

var titleRE = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)

func htmlTitle(body []byte) string {
	if m := titleRE.FindSubmatch(body); m != nil {
		return fmt.Sprintf(" titled %q", strings.TrimSpace(snippet(m[1], 80)))
	}
	return ""
}

func snippet(b []byte, n int) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

var _ error = (*NotUnderstoodError)(nil)

// IsNotUnderstood reports whether err says the API could not be understood.
func IsNotUnderstood(err error) bool {
	var e *NotUnderstoodError
	return errors.As(err, &e)
}
