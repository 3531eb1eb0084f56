// Package upstream is tidemark's HTTP client to external APIs: it builds
// request URLs, authenticates, bounds every request in time and size, retries
// transient transport failures, and walks the pages of a resource in every
// pagination style the config knows.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/tidemark/tidemark/config"
)

// Client calls one source.
type Client struct {
	src    *config.Source
	base   *url.URL
	http   *http.Client
	getenv func(string) string
}

// Options tune a Client; zero values take the defaults noted.
type Options struct {
	// Transport is the HTTP transport. Default: a clone of http.DefaultTransport.
	Transport http.RoundTripper
	// Getenv reads the environment for credentials. Default os.Getenv.
	Getenv func(string) string
}

// New returns a client for src.
func New(src *config.Source, opts Options) (*Client, error) {
	base, err := url.Parse(src.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("source %s: base_url: %w", src.Name, err)
	}
	transport := opts.Transport
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		transport = t
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	return &Client{
		src:  src,
		base: base,
		http: &http.Client{
			Transport: transport,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 5 {
					return errors.New("stopped after 5 redirects")
				}
				return nil
			},
		},
		getenv: getenv,
	}, nil
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
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.URL, e.Code)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Do sends one request and reads its whole body, within the source's timeout
// and max_body. Transport failures (refused or reset connections) are retried
// with jittered exponential backoff while ctx allows; HTTP statuses are not
// retried here: the task decides.
func (c *Client) Do(ctx context.Context, method, rawURL string, header http.Header) (*Response, error) {
	var resp *Response
	attempts := 0
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(30*time.Second),
	)
	err := backoff.Retry(func() error {
		attempts++
		r, err := c.once(ctx, method, rawURL, header)
		if err != nil {
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

func (c *Client) once(ctx context.Context, method, rawURL string, header http.Header) (*Response, error) {
	timeout := c.src.Timeout.D()
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), err)
	}
	for k, v := range c.src.Headers {
		req.Header.Set(k, v)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", "tidemark")
	if err := c.authenticate(req); err != nil {
		return nil, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(rawURL), unwrapURLError(err))
	}
	defer res.Body.Close()
	limit := int64(c.src.MaxBody)
	if limit <= 0 {
		limit = 64 << 20
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read body: %w", method, redact(rawURL), err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s %s: response body exceeds max_body (%d bytes)", method, redact(rawURL), limit)
	}
	if res.StatusCode >= 300 && res.StatusCode != http.StatusNotModified {
		return nil, &StatusError{
			Method: method, URL: redact(rawURL), Code: res.StatusCode,
			RetryAfter: retryAfter(res.Header.Get("Retry-After"), time.Now()),
			Body:       snippet(body),
		}
	}
	return &Response{URL: res.Request.URL.String(), Status: res.StatusCode, Header: res.Header, Body: body}, nil
}

// authenticate adds the source's credentials, read now from the environment
// or a file so that a rotated token is picked up without a restart.
func (c *Client) authenticate(req *http.Request) error {
	a := c.src.Auth
	if a == nil {
		return nil
	}
	secret := func(env, file string) (string, error) {
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
	switch a.Type {
	case config.AuthBearer:
		tok, err := secret(a.TokenEnv, a.TokenFile)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case config.AuthHeader:
		tok, err := secret(a.TokenEnv, a.TokenFile)
		if err != nil {
			return err
		}
		req.Header.Set(a.Header, tok)
	case config.AuthBasic:
		user, err := secret(a.UsernameEnv, "")
		if err != nil {
			return err
		}
		pass, err := secret(a.PasswordEnv, "")
		if err != nil {
			return err
		}
		req.SetBasicAuth(user, pass)
	}
	return nil
}

// transient reports whether a failed request may succeed if sent again at
// once: connection-level failures, not HTTP answers, not our own deadline.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false // the request had its full timeout; the task retries later
	}
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redact drops the query string: it may carry tokens that must not reach
// logs, run rows or metrics.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// unwrapURLError drops *url.Error's copy of the URL (with its query string).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
