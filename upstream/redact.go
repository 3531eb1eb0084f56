package upstream

import (
	"errors"
	"net/url"

	"github.com/tidemark/tidemark/config"
)

// Redact is the form of a request URL that may be shown anywhere (logs, run
// rows, errors, events, the dashboard): without its query string, user info
// and fragment, which may carry tokens. Dropping the whole query, rather
// than the parameters known to be secret, keeps a key safe whatever its
// parameter is called.
func Redact(rawURL string) string { return redact(rawURL) }

// redact is Redact, short for the many error messages of this package.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// UnwrapURLError drops *url.Error's copy of the URL, whose query string may
// carry a token, from an error of an HTTP client or of url.Parse: the one
// way tidemark makes such an error fit to show.
func UnwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

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
