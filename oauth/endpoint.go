package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/upstream"
)

// maxTokenBody bounds a token endpoint's answer.
const maxTokenBody = 1 << 20

// grant is what a token request sends: the form, and the credentials to
// keep out of everything shown (an error description that quotes them).
type grant struct {
	form    url.Values
	user    string // client id for auth_style basic
	pass    string // client secret for auth_style basic
	secrets []string
}

// answer is a token endpoint's successful answer (RFC 6749 section 5.1).
type answer struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// request builds the token request's grant: grant_type, scope, the
// configured token_params and the client's credentials (refresh, for grant
// refresh_token, is added by the caller).
func request(a *config.Auth, getenv func(string) string) (grant, error) {
	g := grant{form: url.Values{"grant_type": {a.GrantType}}}
	for k, v := range a.TokenParams {
		g.form.Set(k, v)
	}
	if len(a.Scopes) > 0 {
		g.form.Set("scope", strings.Join(a.Scopes, " "))
	}
	id := getenv(a.ClientIDEnv)
	if id == "" {
		return g, fmt.Errorf("environment variable %s (auth.client_id_env) is empty", a.ClientIDEnv)
	}
	var secret string
	if a.ClientSecretEnv != "" {
		if secret = getenv(a.ClientSecretEnv); secret == "" {
			return g, fmt.Errorf("environment variable %s (auth.client_secret_env) is empty", a.ClientSecretEnv)
		}
		g.secrets = append(g.secrets, secret, url.QueryEscape(secret))
	}
	if a.AuthStyle == config.AuthStyleBasic {
		// RFC 6749 section 2.3.1: both form-encoded, then Basic.
		g.user, g.pass = url.QueryEscape(id), url.QueryEscape(secret)
		return g, nil
	}
	g.form.Set("client_id", id)
	if secret != "" {
		g.form.Set("client_secret", secret)
	}
	return g, nil
}

// post sends g to the source's token endpoint through client and reads
// its answer. Every failure is a *upstream.TokenError that quotes nothing
// of the body but the OAuth error fields, scrubbed of g's secrets.
func post(ctx context.Context, client *http.Client, src *config.Source, g grant) (answer, error) {
	fail := func(status int, code, desc string, err error) (answer, error) {
		return answer{}, &upstream.TokenError{Source: src.Name, URL: upstream.Redact(src.Auth.TokenURL),
			Status: status, Code: clean(code, g.secrets), Description: clean(desc, g.secrets), Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, src.RequestTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, src.Auth.TokenURL, strings.NewReader(g.form.Encode()))
	if err != nil {
		return fail(0, "", "", errors.New("bad token_url"))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tidemark")
	if g.user != "" {
		req.SetBasicAuth(g.user, g.pass)
	}
	res, err := client.Do(req)
	if err != nil {
		return fail(0, "", "", upstream.UnwrapURLError(err))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxTokenBody))
	if err != nil {
		return fail(res.StatusCode, "", "", fmt.Errorf("read answer: %w", err))
	}
	fields := decodeAnswer(res.Header.Get("Content-Type"), body)
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fail(res.StatusCode, fields["error"], fields["error_description"], nil)
	}
	ans := answer{AccessToken: fields["access_token"], TokenType: fields["token_type"], RefreshToken: fields["refresh_token"]}
	ans.ExpiresIn, _ = strconv.ParseInt(fields["expires_in"], 10, 64)
	switch {
	case ans.AccessToken == "":
		return fail(res.StatusCode, fields["error"], fields["error_description"], errors.New("the answer has no access_token"))
	case ans.TokenType != "" && !strings.EqualFold(ans.TokenType, "bearer"):
		return fail(res.StatusCode, "", "", fmt.Errorf("token_type %q: only bearer tokens are supported", clean(ans.TokenType, nil)))
	}
	return ans, nil
}

// decodeAnswer reads a token endpoint's answer as flat string fields: JSON
// (RFC 6749), or a form, which some endpoints (GitHub's) send. Numbers
// (expires_in) are kept as their decimal text.
func decodeAnswer(contentType string, body []byte) map[string]string {
	out := map[string]string{}
	if mt, _, _ := mime.ParseMediaType(contentType); mt == "application/x-www-form-urlencoded" || mt == "text/plain" {
		if q, err := url.ParseQuery(string(body)); err == nil {
			for k := range q {
				out[k] = q.Get(k)
			}
			return out
		}
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(body, &raw) != nil {
		return out
	}
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
			continue
		}
		var n json.Number
		if json.Unmarshal(v, &n) == nil {
			out[k] = n.String()
		}
	}
	return out
}

// clean makes an OAuth error field fit to show: secrets replaced, one line,
// at most 200 characters.
func clean(s string, secrets []string) string {
	s = string(upstream.ReplaceSecrets([]byte(s), secrets))
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " ")
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}
