package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/tidemark/tidemark/config"
)

// Tokens supplies the access tokens of a source with auth type oauth2 (the
// oauth package implements it, with a fleet-wide cache). The client sends
// the token as a bearer token; on a 401 it asks once for a newer one and
// sends the request again, and a second 401 stands.
type Tokens interface {
	// Token returns a current access token. stale, when not "", is a
	// token the upstream has just refused: Token returns a different one,
	// refreshing unless another caller has already done so.
	Token(ctx context.Context, stale string) (string, error)
}

// TokenError is a failed request to an OAuth2 token endpoint. It carries
// only what may be shown anywhere: the endpoint's URL without its query,
// its HTTP status and the OAuth error fields (RFC 6749 section 5.2), never
// the body or a credential.
type TokenError struct {
	Source string
	URL    string // the token endpoint, redacted
	// Status is the endpoint's HTTP status; 0 when it did not answer (Err).
	Status int
	// Code and Description are the answer's error and error_description.
	Code, Description string
	// Err is why no usable answer came (a transport failure, a 2xx without
	// an access token).
	Err error
}

func (e *TokenError) Error() string {
	msg := fmt.Sprintf("source %s: refresh OAuth2 access token at %s", e.Source, e.URL)
	if e.Status != 0 {
		msg += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Description != "" {
		msg += " (" + e.Description + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *TokenError) Unwrap() error { return e.Err }

// Permanent reports whether sending the same token request again cannot
// succeed: the endpoint refused it with a 4xx other than 408 and 429
// (invalid_grant: the refresh token is revoked or already rotated;
// invalid_client: the client's credentials are wrong). A 5xx, a 408 or 429
// or no answer at all may pass later.
func (e *TokenError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 &&
		e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

// bearerSend sends a request with the access token of c.tokens, and once more
// with a newer token when the upstream answers 401: a token revoked or
// expired early is refreshed at once rather than failing the run.
func (c *Client) bearerSend(ctx context.Context, method, rawURL string, header http.Header, body []byte) (*Response, error) {
	tok, err := c.tokens.Token(ctx, "")
	if err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, method, rawURL, withBearer(header, tok), body)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		return resp, err
	}
	spent := Requests(err)
	if tok, err = c.tokens.Token(ctx, tok); err != nil {
		return nil, &RequestError{Err: err, Requests: spent}
	}
	resp, err = c.send(ctx, method, rawURL, withBearer(header, tok), body)
	if resp != nil {
		resp.Requests += spent
	}
	var re *RequestError
	if errors.As(err, &re) {
		re.Requests += spent
	}
	return resp, err
}

// withBearer is header with an Authorization bearer token added.
func withBearer(header http.Header, tok string) http.Header {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Authorization", "Bearer "+tok)
	return h
}

// NewTransport is the transport New gives a client of src by default
// (direct, through the address guard): for other requests a source makes,
// such as to its OAuth2 token endpoint, that must be as guarded.
func NewTransport(src *config.Source, allowHosts []string) (http.RoundTripper, error) {
	g, err := newGuard(src.AllowPrivate, allowHosts)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", src.Name, err)
	}
	return guardedTransport(g, nil), nil
}
