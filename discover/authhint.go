package discover

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/tidemark/tidemark/extract"
	"github.com/tidemark/tidemark/upstream"
)

// challenge is one WWW-Authenticate challenge: a scheme and its parameters.
type challenge struct {
	scheme string // lower case
	params map[string]string
}

// parseChallenges reads WWW-Authenticate values (RFC 9110 section 11.6.1),
// several challenges to a value: `Bearer realm="api", error="invalid_token",
// Basic realm="x"`.
func parseChallenges(values []string) []challenge {
	var out []challenge
	for _, v := range values {
		for _, item := range splitQuoted(v) {
			item = strings.TrimSpace(item)
			eq, sp := strings.IndexByte(item, '='), strings.IndexAny(item, " \t")
			if item != "" && (eq < 0 || (sp >= 0 && sp < eq)) {
				scheme, rest, _ := strings.Cut(item, " ")
				out = append(out, challenge{scheme: strings.ToLower(scheme), params: map[string]string{}})
				item = strings.TrimSpace(rest)
			}
			k, val, ok := strings.Cut(item, "=")
			if !ok || len(out) == 0 {
				continue // empty, or a token68 credential
			}
			out[len(out)-1].params[strings.ToLower(strings.TrimSpace(k))] = unquote(strings.TrimSpace(val))
		}
	}
	return out
}

// splitQuoted splits on commas outside quoted strings.
func splitQuoted(v string) []string {
	var out []string
	quoted, escaped, start := false, false, 0
	for i, c := range v {
		switch {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`)
	}
	return v
}

// oauthServer is what OAuth metadata says about the token endpoint.
type oauthServer struct {
	tokenURL string
	grants   []string
	scopes   []string
	from     string // where tokenURL came from, for the evidence
}

// authHint proposes the source's auth from the challenges of a 401 or 403:
// oauth2 where the challenge points at OAuth (RFC 9728 resource_metadata,
// an authorization_uri, a scope), bearer or basic otherwise.
func (s *session) authHint(ctx context.Context, resp *response) {
	values := resp.header.Values("WWW-Authenticate")
	if len(values) == 0 {
		return
	}
	seen := "WWW-Authenticate: " + s.redactToken(snippet([]byte(strings.Join(values, ", ")), 300))
	for _, c := range parseChallenges(values) {
		switch c.scheme {
		case "bearer":
			s.bearerHint(ctx, c, seen)
			return
		case "basic":
			s.hint(hintAuth, "high", seen+": the API asks for HTTP basic credentials",
				"auth: "+flow("type", "basic", "username_env", q(envName(s.source, "username")), "password_env", q(envName(s.source, "password"))))
			return
		}
	}
}

func (s *session) bearerHint(ctx context.Context, c challenge, seen string) {
	var scopes []string
	if sc := c.params["scope"]; sc != "" {
		scopes = strings.Fields(sc)
	}
	srv := s.oauthMetadata(ctx, c.params["resource_metadata"])
	if srv.tokenURL == "" {
		if au := c.params["authorization_uri"]; au != "" {
			srv.tokenURL, srv.from = tokenFromAuthorize(au), "authorization_uri, with its last segment authorize read as token (a guess: check the API's docs)"
		}
	}
	if len(scopes) == 0 {
		scopes = srv.scopes
	}
	if srv.tokenURL == "" && len(scopes) == 0 && c.params["resource_metadata"] == "" {
		s.hint(hintAuth, "medium", seen+": the API takes a bearer token; rerun discover with --auth-env "+envName(s.source, "token")+
			" to read the collection. If its tokens expire, oauth2 (a token URL and client credentials) keeps them fresh",
			"auth: "+flow("type", "bearer", "token_env", q(envName(s.source, "token"))))
		return
	}
	conf, tokenURL := "high", srv.tokenURL
	if srv.from != "RFC 8414 authorization server metadata" {
		conf = "medium"
	}
	if tokenURL == "" {
		conf, tokenURL, srv.from = "low", "https://TODO/token", "nowhere: look up the token endpoint in the API's docs"
	}
	grant := "client_credentials"
	if len(srv.grants) > 0 && !slices.Contains(srv.grants, grant) {
		grant = "refresh_token"
	}
	pairs := []string{"type", "oauth2", "grant_type", grant, "token_url", q(tokenURL),
		"client_id_env", q(envName(s.source, "client_id")), "client_secret_env", q(envName(s.source, "client_secret"))}
	if grant == "refresh_token" {
		pairs = append(pairs, "refresh_token_env", q(envName(s.source, "refresh_token")))
	}
	if len(scopes) > 0 {
		pairs = append(pairs, "scopes", qList(scopes))
	}
	s.hint(hintAuth, conf, fmt.Sprintf("%s: the API takes OAuth 2 bearer tokens; token URL from %s; grant %s (grants offered: %s)",
		seen, srv.from, grant, cmp.Or(strings.Join(srv.grants, ", "), "not stated")), "auth: "+flow(pairs...))
}

// oauthMetadata reads the RFC 9728 protected-resource metadata at metaURL
// and the RFC 8414 metadata of the first authorization server it names.
// Both are public documents, fetched without the token. What cannot be
// read is left empty.
func (s *session) oauthMetadata(ctx context.Context, metaURL string) oauthServer {
	var srv oauthServer
	if metaURL == "" {
		return srv
	}
	meta, ok := s.publicJSON(ctx, metaURL)
	if !ok {
		return srv
	}
	srv.scopes = stringList(meta["scopes_supported"])
	servers := stringList(meta["authorization_servers"])
	if len(servers) == 0 {
		return srv
	}
	as, ok := s.publicJSON(ctx, wellKnown(servers[0], "oauth-authorization-server"))
	if !ok {
		return srv
	}
	if t, ok := as["token_endpoint"].(string); ok && t != "" {
		srv.tokenURL, srv.from = t, "RFC 8414 authorization server metadata"
	}
	srv.grants = stringList(as["grant_types_supported"])
	if len(srv.scopes) == 0 {
		srv.scopes = stringList(as["scopes_supported"])
	}
	return srv
}

// publicJSON GETs a JSON object without the token: only over https (RFC
// 9728 and 8414 require it), or on the API's own host, so that an API
// cannot point discovery at a plain-http address of the operator's network.
func (s *session) publicJSON(ctx context.Context, rawURL string) (map[string]any, bool) {
	u, err := url.Parse(rawURL)
	api, _ := url.Parse(s.url)
	if _, rerr := upstream.ResolveLink(s.url, rawURL); err != nil || rerr != nil || !u.IsAbs() || (u.Scheme != "https" && u.Host != api.Host) {
		return nil, false
	}
	resp, err := s.p.public(ctx, rawURL)
	if err != nil || resp.status != 200 {
		return nil, false
	}
	doc, err := extract.Decode(resp.body)
	m, ok := doc.(map[string]any)
	return m, err == nil && ok
}

// wellKnown is the RFC 8414 metadata URL of an issuer: the well-known
// segment goes between the host and the issuer's path.
func wellKnown(issuer, name string) string {
	u, err := url.Parse(issuer)
	if err != nil {
		return issuer
	}
	u.Path = "/.well-known/" + name + strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// tokenFromAuthorize guesses the token endpoint beside an authorization
// endpoint (…/oauth2/authorize → …/oauth2/token, as Azure AD and many others).
func tokenFromAuthorize(au string) string {
	u, err := url.Parse(au)
	if err != nil {
		return ""
	}
	dir, last := u.Path[:strings.LastIndex(u.Path, "/")+1], u.Path[strings.LastIndex(u.Path, "/")+1:]
	if last != "authorize" && last != "authorization" {
		return ""
	}
	u.Path, u.RawQuery = dir+"token", ""
	return u.String()
}

func stringList(v any) []string {
	arr, _ := v.([]any)
	var out []string
	for _, x := range arr {
		if s, ok := x.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// redactToken hides the token discovery was given, should the API echo it.
func (s *session) redactToken(v string) string {
	if t := s.p.header.Get("Authorization"); t != "" {
		v = strings.ReplaceAll(v, strings.TrimPrefix(t, "Bearer "), "REDACTED")
	}
	return v
}
