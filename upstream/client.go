// Package upstream is tidemark's HTTP client to external APIs: it builds
// request URLs, authenticates, bounds every request in time and size, retries
// transient transport failures, and walks the pages of a resource in every
// pagination style the config knows.
package upstream

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/metrics"
	"github.com/tidemark/tidemark/ratelimit"
)

// Client calls one source.
type Client struct {
	src    *config.Source
	base   *url.URL
	http   *http.Client
	getenv func(string) string
	// lim and limits gate every request by the fleet-wide limits of the
	// source; lim nil: no limits.
	lim    *ratelimit.Limiter
	limits ratelimit.Limits
	// tokens supplies access tokens (auth type oauth2); nil otherwise.
	tokens Tokens
}

// Options tune a Client; zero values take the defaults noted.
type Options struct {
	// Transport is the HTTP transport. Default: a transport that connects
	// directly (no proxy from the environment, which would bypass the
	// address checks) through the SSRF guard: with the source's
	// allow_private false, loopback, private, link-local, CGNAT,
	// unique-local and cloud metadata addresses (and their IPv4-mapped,
	// NAT64 and 6to4 forms) are refused at connect time; with it true,
	// link-local and metadata addresses still are. A custom Transport is
	// not guarded.
	Transport http.RoundTripper
	// AllowHosts exempts host names, IP addresses and CIDR prefixes from the
	// guard (a metadata endpoint an operator really means to read). Default
	// none.
	AllowHosts []string
	// Getenv reads the environment for credentials. Default os.Getenv.
	Getenv func(string) string
	// Limiter, when set, enforces the source's fleet-wide rate_limit,
	// max_concurrency and upstream back-pressure: every request waits for
	// it (up to MaxWait) and every response is reported to it. A longer
	// wait fails the request with a *ratelimit.DelayError, which Do never
	// retries: the task hands itself back. Default none (no limits).
	Limiter *ratelimit.Limiter
	// MaxWait is how long one request may wait for the limiter in process.
	// Default MaxWaitDefault (2s).
	MaxWait time.Duration
	// Tokens supplies the access tokens of a source with auth type oauth2;
	// required for one, unused otherwise.
	Tokens Tokens
}

// MaxWaitDefault is Options.MaxWait's default.
const MaxWaitDefault = 2 * time.Second

// guardedTransport connects directly (no proxy) and only where g allows,
// resolving names with resolver (nil: the default).
func guardedTransport(g *guard, resolver *net.Resolver) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = g.dialContext(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Resolver: resolver})
	t.MaxIdleConnsPerHost = 16
	return t
}

// maxRedirects is how many redirects one request follows.
const maxRedirects = 5

// New returns a client for src.
func New(src *config.Source, opts Options) (*Client, error) {
	base, err := url.Parse(src.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("source %s: base_url: %w", src.Name, err)
	}
	if base.Scheme != "http" && base.Scheme != "https" {
		return nil, fmt.Errorf("source %s: base_url: %w", src.Name,
			&BlockedError{Target: redact(src.BaseURL), Reason: fmt.Sprintf("scheme %q is not http or https", base.Scheme)})
	}
	transport := opts.Transport
	if transport == nil {
		if transport, err = NewTransport(src, opts.AllowHosts); err != nil {
			return nil, err
		}
	}
	if src.Auth != nil && src.Auth.Type == config.AuthOAuth2 && opts.Tokens == nil {
		return nil, fmt.Errorf("source %s: auth type oauth2 needs a token source (upstream.Options.Tokens)", src.Name)
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	c := &Client{src: src, base: base, getenv: getenv, lim: opts.Limiter, tokens: opts.Tokens,
		limits: ratelimit.LimitsFor(src, cmp.Or(opts.MaxWait, MaxWaitDefault))}
	c.http = &http.Client{Transport: transport, CheckRedirect: c.checkRedirect}
	return c, nil
}

// checkRedirect follows at most maxRedirects redirects, only to http and
// https, and strips credentials when the redirect leaves the origin
// (scheme, host and port) of the first request: Authorization, Cookie and
// the source's own auth header. Referer is never sent: the URL it would
// carry may hold a key in its query string.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("stopped after %d redirects (last to %s)", maxRedirects, redact(req.URL.String()))
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return &BlockedError{Target: redact(req.URL.String()), Reason: fmt.Sprintf("redirect to scheme %q: only http and https are followed", req.URL.Scheme)}
	}
	req.Header.Del("Referer")
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
		req.Header.Del("Authorization")
		req.Header.Del("Proxy-Authorization")
		req.Header.Del("Cookie")
		if a := c.src.Auth; a != nil && a.Header != "" {
			req.Header.Del(a.Header)
		}
		// A key in the query stays with its origin too, even where the
		// Location echoes it.
		req.URL.RawQuery = strings.TrimPrefix(c.StripKey("?"+req.URL.RawQuery), "?")
		return nil
	}
	// Within the origin the key goes along, as with a header: a Location
	// built without it would otherwise be refused.
	return c.addKey(req)
}

// URL resolves a resource path (which may carry its own query) against the
// source's base URL and sets params on it.
func (c *Client) URL(path string, params url.Values) string {
	ref, err := url.Parse(path)
	if err != nil {
		ref = &url.URL{Path: path}
	}
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + ref.Path
	if ref.RawPath != "" {
		// Keep the path's own escaping: a partition's value escaped into one
		// segment ("a%2Fb") must not become two.
		u.RawPath = strings.TrimSuffix(c.base.EscapedPath(), "/") + ref.RawPath
	}
	q := ref.Query()
	for k, vs := range params {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Response is a fully read upstream response.
type Response struct {
	URL      string
	Status   int
	Header   http.Header
	Body     []byte
	Requests int // HTTP requests it took, retries included
}

// StatusError is an upstream answer other than 2xx or 304.
type StatusError struct {
	Method     string
	URL        string // without its query string
	Code       int
	RetryAfter time.Duration // from Retry-After, when present
	Body       string        // the start of the body, for the run's error
	// Header is the response's header (an on_status empty answer's Date
	// dates the read).
	Header http.Header
	// Action is the resource's on_status action for Code (fail or retry),
	// set by the Pager and the probe; "" when none is configured, and the
	// usual classification applies.
	Action string
	// RateLimited marks a 403 or 429 whose rate-limit headers say the budget
	// is spent (remaining 0): GitHub answers its primary limit with a 403.
	// The source is cooling down until the reset; a retry then succeeds.
	RateLimited bool
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.URL, e.Code)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	if e.Action != "" {
		msg += fmt.Sprintf(" (on_status %d: %s)", e.Code, e.Action)
	}
	return msg
}

// Do sends one request and reads its whole body, within the source's timeout
// and max_body. Transport failures (refused or reset connections) are retried
// with jittered exponential backoff while ctx allows; HTTP statuses are not
// retried here (the task decides), but for a 401 to a source with auth type
// oauth2, sent once more with a refreshed access token.
func (c *Client) Do(ctx context.Context, method, rawURL string, header http.Header) (*Response, error) {
	return c.Send(ctx, method, rawURL, header, nil)
}

// Send is Do with a request body: a non-nil body is sent as
// application/json, and sent again whole with each retry.
func (c *Client) Send(ctx context.Context, method, rawURL string, header http.Header, body []byte) (*Response, error) {
	if c.tokens != nil {
		return c.bearerSend(ctx, method, rawURL, header, body)
	}
	return c.send(ctx, method, rawURL, header, body)
}

// send is Send with the request's credentials, if any, in header already
// or added by authenticate.
func (c *Client) send(ctx context.Context, method, rawURL string, header http.Header, body []byte) (*Response, error) {
	var resp *Response
	attempts := 0
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(30*time.Second),
	)
	err := backoff.Retry(func() error {
		attempts++
		r, err := c.once(ctx, method, rawURL, header, body)
		if err != nil {
			if _, refused := ratelimit.AsDelay(err); refused {
				// The limiter turned it away: no request was sent, and
				// a run handed back over and over must not count one
				// per hand-back.
				attempts--
				return backoff.Permanent(err)
			}
			if transient(ctx, err) && attempts < 4 {
				return err
			}
			return backoff.Permanent(err)
		}
		resp = r
		return nil
	}, backoff.WithContext(bo, ctx))
	if resp != nil {
		resp.Requests = attempts
	}
	if err != nil {
		return nil, &RequestError{Err: err, Requests: attempts}
	}
	return resp, nil
}

// RequestError wraps a failed request with how many attempts it took.
type RequestError struct {
	Err      error
	Requests int
}

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// Requests reports how many HTTP requests a Do error cost (0 if unknown).
func Requests(err error) int {
	var re *RequestError
	if errors.As(err, &re) {
		return re.Requests
	}
	return 0
}

// once sends one request, within the source's timeout and its limits, and
// reads the response.
func (c *Client) once(ctx context.Context, method, rawURL string, header http.Header, reqBody []byte) (*Response, error) {
	timeout := c.src.RequestTimeout()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := c.newRequest(ctx, method, rawURL, header, reqBody)
	if err != nil {
		return nil, err
	}
	timedOut := func(err error) error {
		if parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("no complete response within the source's timeout (%s): %w", timeout, err)
		}
		return err
	}
	if c.lim != nil {
		permit, err := c.lim.Wait(ctx, c.src.Name, c.limits)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), err)
		}
		// Released once the body is read (deferred calls run last first).
		defer permit.Release()
	}
	sent := time.Now()
	res, err := c.http.Do(req)
	metrics.ObserveUpstream(c.src.Name, res, err, time.Since(sent))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), timedOut(UnwrapURLError(err)))
	}
	defer res.Body.Close()
	if c.lim != nil {
		// Before the body: a 429's cooldown reaches the fleet at once.
		if err := c.lim.Observe(context.WithoutCancel(ctx), c.src.Name, c.limits, res.StatusCode, res.Header); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), err)
		}
	}
	if method == http.MethodHead || res.StatusCode == http.StatusNotModified || res.StatusCode == http.StatusNoContent {
		// No body, whatever Content-Length says (a HEAD's is the GET's).
		if res.StatusCode >= 300 && res.StatusCode != http.StatusNotModified {
			return nil, &StatusError{Method: method, URL: redact(rawURL), Code: res.StatusCode, Header: res.Header,
				RetryAfter: retryAfter(res.Header.Get("Retry-After"), time.Now()), RateLimited: c.budgetSpent(res)}
		}
		return &Response{URL: c.StripKey(res.Request.URL.String()), Status: res.StatusCode, Header: res.Header}, nil
	}
	return c.readBody(method, rawURL, req, res, timedOut)
}

// newRequest builds the request once sends: the source's headers, then
// header's, tidemark's own, and the source's credentials.
func (c *Client) newRequest(ctx context.Context, method, rawURL string, header http.Header, reqBody []byte) (*http.Request, error) {
	var payload io.Reader // nil, not a nil *bytes.Reader: a GET keeps no body
	if reqBody != nil {
		payload = bytes.NewReader(reqBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, payload)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), err)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return nil, fmt.Errorf("%s: %w", method, &BlockedError{Target: redact(rawURL), Reason: fmt.Sprintf("scheme %q is not http or https", req.URL.Scheme)})
	}
	for k, v := range c.src.Headers {
		req.Header.Set(k, v)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", "tidemark")
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// Asked for and decoded here, not by the transport, so that max_body
	// counts decoded bytes for every encoding we accept.
	req.Header.Set("Accept-Encoding", "gzip, deflate")
	if err := c.authenticate(req); err != nil {
		return nil, err
	}
	return req, nil
}

// readBody reads and decodes res's body, up to the source's max_body, and
// turns a status of 300 or more (but 304) into a *StatusError; timedOut
// says so of an error the source's timeout caused.
func (c *Client) readBody(method, rawURL string, req *http.Request, res *http.Response, timedOut func(error) error) (*Response, error) {
	limit := int64(c.src.MaxBody)
	if limit <= 0 {
		limit = int64(config.SourceMaxBodyDefault)
	}
	decoded, err := decode(res)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %w", method, redact(rawURL), ErrBadResponse, err)
	}
	defer decoded.Close()
	body, err := readLimited(decoded, limit, res.ContentLength, res.Header.Get("Content-Encoding") == "")
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return nil, fmt.Errorf("%s %s: %w: response body exceeds max_body (%d bytes%s)", method, redact(rawURL), ErrBadResponse, limit, encodingNote(res))
		}
		return nil, fmt.Errorf("%s %s: read body: %w", method, redact(rawURL), timedOut(err))
	}
	hdr := res.Header.Clone()
	if hdr.Get("Content-Encoding") != "" {
		hdr.Del("Content-Encoding")
		hdr.Del("Content-Length")
	}
	if res.StatusCode >= 300 && res.StatusCode != http.StatusNotModified {
		return nil, &StatusError{
			Method: method, URL: redact(rawURL), Code: res.StatusCode, Header: hdr,
			RetryAfter:  retryAfter(res.Header.Get("Retry-After"), time.Now()),
			Body:        snippet(c.scrubCredentials(body, req)),
			RateLimited: c.budgetSpent(res),
		}
	}
	return &Response{URL: c.StripKey(res.Request.URL.String()), Status: res.StatusCode, Header: hdr, Body: c.scrubKey(body, req)}, nil
}

func encodingNote(res *http.Response) string {
	if ce := res.Header.Get("Content-Encoding"); ce != "" {
		return ", after " + strings.ToLower(ce) + " decompression"
	}
	return ""
}

// decode returns the body with its Content-Encoding undone.
func decode(res *http.Response) (io.ReadCloser, error) {
	switch ce := strings.ToLower(strings.TrimSpace(res.Header.Get("Content-Encoding"))); ce {
	case "", "identity":
		return io.NopCloser(res.Body), nil
	case "gzip", "x-gzip":
		if res.Request.Method == http.MethodHead || res.StatusCode == http.StatusNotModified || res.StatusCode == http.StatusNoContent {
			return io.NopCloser(res.Body), nil
		}
		zr, err := gzip.NewReader(res.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip body: %w", err)
		}
		return zr, nil
	case "deflate":
		if res.Request.Method == http.MethodHead || res.StatusCode == http.StatusNotModified || res.StatusCode == http.StatusNoContent {
			return io.NopCloser(res.Body), nil
		}
		// RFC 9110 deflate is zlib-wrapped; some servers send raw deflate.
		br := bufio.NewReader(res.Body)
		if hdr, err := br.Peek(2); err == nil && (uint16(hdr[0])<<8|uint16(hdr[1]))%31 == 0 && hdr[0]&0x0f == 8 {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("deflate body: %w", err)
			}
			return zr, nil
		}
		return flate.NewReader(br), nil
	default:
		return nil, fmt.Errorf("unsupported Content-Encoding %q", ce)
	}
}

var errTooLarge = errors.New("body too large")

// readLimited reads r whole, failing with errTooLarge past limit bytes.
// Memory stays near the body's size: a known length (identity encoding) is
// one allocation; otherwise the body is read in chunks of up to 1 MiB and
// joined once, so an endless or decompression-bomb body costs about limit
// bytes before it fails, not the doubling of a growing buffer.
func readLimited(r io.Reader, limit, length int64, identity bool) ([]byte, error) {
	if identity && length > limit {
		return nil, errTooLarge
	}
	if identity && length >= 0 {
		buf := make([]byte, length)
		if _, err := io.ReadFull(r, buf); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return buf, nil
	}
	var (
		chunks [][]byte
		total  int64
		size   = int64(32 << 10)
	)
	for done := false; !done; size = min(size*2, 1<<20) {
		chunk := make([]byte, min(size, limit+1-total))
		n := 0
		for n < len(chunk) {
			m, err := r.Read(chunk[n:])
			n += m
			if errors.Is(err, io.EOF) {
				done = true
				break
			}
			if err != nil {
				return nil, err
			}
		}
		chunks = append(chunks, chunk[:n])
		total += int64(n)
		if total > limit {
			return nil, errTooLarge
		}
	}
	if len(chunks) == 1 {
		return chunks[0], nil
	}
	out := make([]byte, 0, total)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out, nil
}

// secret reads a credential from file, or else from the environment
// variable env.
func (c *Client) secret(env, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("source %s: read token_file: %w", c.src.Name, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	v := c.getenv(env)
	if v == "" {
		return "", fmt.Errorf("source %s: environment variable %s is empty", c.src.Name, env)
	}
	return v, nil
}

// authenticate adds the source's credentials, read now from the environment
// or a file so that a rotated token is picked up without a restart.
func (c *Client) authenticate(req *http.Request) error {
	a := c.src.Auth
	if a == nil {
		return nil
	}
	switch a.Type {
	case config.AuthBearer:
		tok, err := c.secret(a.TokenEnv, a.TokenFile)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case config.AuthHeader:
		tok, err := c.secret(a.TokenEnv, a.TokenFile)
		if err != nil {
			return err
		}
		req.Header.Set(a.Header, tok)
	case config.AuthQuery:
		return c.addKey(req)
	case config.AuthBasic:
		user, err := c.secret(a.UsernameEnv, "")
		if err != nil {
			return err
		}
		pass, err := c.secret(a.PasswordEnv, "")
		if err != nil {
			return err
		}
		req.SetBasicAuth(user, pass)
	}
	return nil
}

// addKey sets the source's key parameter (auth type query) on req's URL,
// replacing any value it had there: the key is read now, like every
// credential, and never taken from a URL the upstream sent.
func (c *Client) addKey(req *http.Request) error {
	p := c.keyParam()
	if p == "" {
		return nil
	}
	tok, err := c.secret(c.src.Auth.TokenEnv, c.src.Auth.TokenFile)
	if err != nil {
		return err
	}
	q := req.URL.Query()
	q.Set(p, tok)
	req.URL.RawQuery = q.Encode()
	return nil
}

// transient reports whether a failed request may succeed if sent again at
// once: connection-level failures, not HTTP answers, not our own deadline.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) || errors.Is(err, ErrBlocked) || errors.Is(err, ErrBadResponse) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false // the request had its full timeout; the task retries later
	}
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// budgetSpent reports whether a refusal says the source's rate-limit budget
// is spent (unless the source ignores its rate-limit headers).
func (c *Client) budgetSpent(res *http.Response) bool {
	if c.limits.IgnoreHeaders || (res.StatusCode != http.StatusForbidden && res.StatusCode != http.StatusTooManyRequests) {
		return false
	}
	q, _ := ratelimit.ReadQuota(res.Header, time.Now(), ratelimit.MaxResetDefault)
	return q.Remaining == 0
}

// retryAfter is a response's Retry-After delay, 0 when it gives none
// usable: the one parser the limiter uses too, with its overflow guard.
func retryAfter(v string, now time.Time) time.Duration {
	d, _ := ratelimit.ParseRetryAfter(v, now)
	return d
}

func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// scrubKey replaces the query key (auth type query) with [REDACTED] in a
// response body: APIs that take the key in the query often echo it in the
// URLs they return (next links, each record's self link), and neither the
// records, their hashes nor the checkpoint may hold it. A next URL
// scrubbed so still works: the key parameter is dropped and sent anew.
func (c *Client) scrubKey(body []byte, req *http.Request) []byte {
	p := c.keyParam()
	if p == "" {
		return body
	}
	return ReplaceSecrets(body, keyForms(req.URL.Query().Get(p)))
}

// keyForms are the ways a query key may be quoted back: as sent, and
// escaped for a query or a path.
func keyForms(v string) []string { return []string{v, url.QueryEscape(v), url.PathEscape(v)} }

// ReplaceSecrets replaces each of secrets (of 4 bytes or more) in body
// with [REDACTED], longest first so that a token is not half replaced by a
// shorter one.
func ReplaceSecrets(body []byte, secrets []string) []byte {
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		if len(s) >= 4 && bytes.Contains(body, []byte(s)) {
			body = bytes.ReplaceAll(body, []byte(s), []byte("[REDACTED]"))
		}
	}
	return body
}

// scrubCredentials replaces the credentials the request carried with
// [REDACTED] in an upstream's body: an error body may quote the request back
// (echo services, verbose gateways), and its start becomes part of the run's
// error, the task's error in Redis and the logs.
func (c *Client) scrubCredentials(body []byte, req *http.Request) []byte {
	names := []string{"Authorization", "Proxy-Authorization"}
	if c.src.Auth != nil && c.src.Auth.Header != "" {
		names = append(names, c.src.Auth.Header)
	}
	var secrets []string
	for _, name := range names {
		v := req.Header.Get(name)
		secrets = append(secrets, v)
		if _, cred, ok := strings.Cut(v, " "); ok {
			secrets = append(secrets, cred) // the token without its scheme
		}
	}
	if user, pass, ok := req.BasicAuth(); ok {
		secrets = append(secrets, user+":"+pass, pass)
	}
	if p := c.keyParam(); p != "" {
		secrets = append(secrets, keyForms(req.URL.Query().Get(p))...)
	}
	return ReplaceSecrets(body, secrets)
}
