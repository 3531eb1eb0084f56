package upstream

import (
	"net/url"
	"slices"
	"strings"

	"github.com/tidemark/tidemark/config"
)

// Redact is the form of a request URL that may be shown anywhere (logs, run
// rows, errors, events, the dashboard): without its query string, user info
// and fragment, which may carry tokens. Dropping the whole query, rather
// than the parameters known to be secret, keeps a key safe whatever its
// parameter is called.
func Redact(rawURL string) string { return redact(rawURL) }

// SecretParams are query parameter names whose values RedactQuery masks in
// every URL, besides a source's own auth.param: the names APIs commonly
// carry keys, tokens and signatures in. Compared without regard to case.
var SecretParams = []string{
	"api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "auth_token",
	"client_secret", "password", "secret", "sig", "signature", "code",
	"refresh_token", "id_token", "session", "sessionid", "x-amz-signature", "x-amz-credential",
	"x-amz-security-token",
}

// RedactQuery is a URL to show with its query parameters (a preview, the
// next-page decision) but not its secrets: the values of SecretParams and of
// the extra parameter names (a source's auth.param) read REDACTED, and user
// info and fragment are dropped. Where the parameters do not matter, use
// Redact, which drops the whole query.
func RedactQuery(rawURL string, extra ...string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable URL)"
	}
	u.User, u.Fragment = nil, ""
	q := u.Query()
	for name := range q {
		if secretParam(name, extra) {
			q[name] = []string{"REDACTED"}
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func secretParam(name string, extra []string) bool {
	lower := strings.ToLower(name)
	return slices.Contains(SecretParams, lower) || slices.ContainsFunc(extra, func(e string) bool { return strings.EqualFold(e, name) })
}

// RedactQuery is RedactQuery with the source's own auth.param.
func (c *Client) RedactQuery(rawURL string) string { return RedactQuery(rawURL, c.keyParam()) }

// keyParam is the query parameter the source's key travels in; "" when the
// source sends none.
func (c *Client) keyParam() string {
	if a := c.src.Auth; a != nil && a.Type == config.AuthQuery {
		return a.Param
	}
	return ""
}

// StripKey is rawURL without the source's key parameter: the form of a URL
// tidemark keeps (a checkpoint's next URL, a page's URL). An upstream that
// echoes the key in its next links would otherwise have it stored; the key
// is added back to every request when it is sent.
func (c *Client) StripKey(rawURL string) string {
	p := c.keyParam()
	if p == "" {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	q := u.Query()
	if !q.Has(p) {
		return rawURL
	}
	q.Del(p)
	u.RawQuery = q.Encode()
	return u.String()
}
