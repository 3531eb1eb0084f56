package config

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	namePattern = regexp.MustCompile(`^[a-z0-9_]+$`)
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// headerName is an RFC 9110 token.
	headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	// queryParamName is a parameter name that needs no escaping.
	queryParamName = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)
)

// Event types a webhook may subscribe to.
const (
	EventDataUpdated       = "data.updated"
	EventRunFailed         = "run.failed"
	EventResourceStale     = "resource.stale"
	EventResourceRecovered = "resource.recovered"
	EventRunProgress       = "run.progress"
	// EventRecordsQuarantined: records a read set aside, unstorable.
	EventRecordsQuarantined = "records.quarantined"
	// EventDeletesHeld: a full read would have tombstoned more than
	// full_sync.max_delete_fraction of a resource, and tombstoned none.
	EventDeletesHeld = "deletes.held"
	// EventConfigRejected: a changed config file did not load or validate;
	// the config in force stays.
	EventConfigRejected = "config.rejected"
)

// Events lists every event type, in documentation order.
var Events = []string{EventDataUpdated, EventRunFailed, EventResourceStale, EventResourceRecovered, EventRunProgress,
	EventRecordsQuarantined, EventDeletesHeld, EventConfigRejected}

// Auth types.
const (
	AuthBearer = "bearer"
	AuthHeader = "header"
	AuthBasic  = "basic"
	// AuthQuery sends the key in a query parameter (auth.param).
	AuthQuery = "query"
	// AuthOAuth2 sends an access token bought from auth.token_url.
	AuthOAuth2 = "oauth2"
)

// authTypes lists the auth types in documentation order.
var authTypes = []string{AuthBearer, AuthHeader, AuthQuery, AuthBasic, AuthOAuth2}

// OAuth2 grant types and client authentication styles.
const (
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
	AuthStyleBody          = "body"
	AuthStyleBasic         = "basic"
)

var (
	grantTypes = []string{GrantClientCredentials, GrantRefreshToken}
	authStyles = []string{AuthStyleBody, AuthStyleBasic}
	// reservedTokenParams are the token request's own parameters, which
	// token_params may not set.
	reservedTokenParams = []string{"grant_type", "client_id", "client_secret", "refresh_token", "scope"}
)

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }

func choices(allowed ...string) string { return strings.Join(allowed, " | ") }

// validate reports every rule the (defaulted) config breaks.
func (c *checker) validate(cfg *Config) {
	if len(cfg.Sources) == 0 {
		c.report("sources", "at least one source required")
	}
	firstSource := map[string]string{}
	for i := range cfg.Sources {
		s := &cfg.Sources[i]
		sp := index("sources", i)
		c.name(join(sp, "name"), s.Name, "source", firstSource)
		c.source(sp, s)
	}
	for i := range cfg.Webhooks {
		c.webhook(index("webhooks", i), &cfg.Webhooks[i])
	}
	c.views(cfg)
}

// name checks a source or resource name: required, pattern, unique in seen
// (which maps a name to the path of its first use).
func (c *checker) name(path, name, what string, seen map[string]string) {
	switch {
	case name == "":
		c.report(path, "required")
	case !namePattern.MatchString(name):
		c.report(path, "%s name %q must match [a-z0-9_]+", what, name)
	default:
		if first, dup := seen[name]; dup {
			c.report(path, "duplicate %s name %q (first at line %d)", what, name, c.lineOf(first))
			return
		}
		seen[name] = path
	}
}

// positive reports a number or duration that is not > 0, including an
// explicit zero that the defaults would otherwise have papered over.
func (c *checker) positive(path string, v int64) {
	if v <= 0 || c.zeros[path] {
		c.report(path, "must be greater than 0")
	}
}

func (c *checker) httpURL(path, raw string) {
	if raw == "" {
		c.report(path, "required")
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		c.report(path, "invalid URL %q", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		c.report(path, "%q must be an absolute http:// or https:// URL", raw)
	case u.Host == "":
		c.report(path, "%q has no host", raw)
	case u.User != nil:
		c.report(path, "credentials in a URL are not allowed: reference them by env or file")
	case u.Fragment != "":
		c.report(path, "%q must not have a #fragment", raw)
	}
}

func (c *checker) dotted(path, p string) {
	if p != "" && slices.Contains(strings.Split(p, "."), "") {
		c.report(path, "invalid dotted path %q", p)
	}
}

func (c *checker) env(path, name string) {
	if name != "" && !envName.MatchString(name) {
		c.report(path, "%q is not an environment variable name (the config holds references to secrets, never secrets)", name)
	}
}

func (c *checker) source(sp string, s *Source) {
	c.httpURL(join(sp, "base_url"), s.BaseURL)
	if u, err := url.Parse(s.BaseURL); err == nil && u.RawQuery != "" {
		c.report(join(sp, "base_url"), "must not carry a query: put fixed query parameters in the resource path")
	}
	for _, k := range sortedKeys(s.Headers) {
		hp := join(join(sp, "headers"), k)
		switch {
		case strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Proxy-Authorization"):
			c.report(hp, "credentials do not belong in headers: use auth (type bearer, header, query or basic)")
		case !headerName.MatchString(k):
			c.report(hp, "invalid header name %q", k)
		case strings.ContainsAny(s.Headers[k], "\r\n\x00"):
			c.report(hp, "header value must not contain line breaks")
		}
	}
	if s.Auth != nil {
		c.auth(join(sp, "auth"), s.Auth)
	}
	if rl := s.RateLimit; rl != nil {
		rp := join(sp, "rate_limit")
		c.positive(join(rp, "requests"), int64(rl.Requests))
		c.positive(join(rp, "per"), int64(rl.Per))
		c.positive(join(rp, "burst"), int64(rl.Burst))
	}
	if !oneOf(s.RateLimitHeaders, HeadersHonour, HeadersIgnore) {
		c.report(join(sp, "rate_limit_headers"), "unknown value %q (want %s)", s.RateLimitHeaders, choices(HeadersHonour, HeadersIgnore))
	}
	for i, h := range s.AllowHosts {
		if !validHost(h) {
			c.report(index(join(sp, "allow_hosts"), i), "%q is not a host name, IP address or CIDR prefix", h)
		}
	}
	c.positive(join(sp, "max_concurrency"), int64(s.MaxConcurrency))
	c.positive(join(sp, "timeout"), int64(s.Timeout))
	c.positive(join(sp, "max_body"), int64(s.MaxBody))

	if len(s.Resources) == 0 {
		c.report(join(sp, "resources"), "at least one resource required")
	}
	first := map[string]string{}
	for j := range s.Resources {
		r := &s.Resources[j]
		rp := index(join(sp, "resources"), j)
		c.name(join(rp, "name"), r.Name, "resource", first)
		c.resource(rp, r)
		c.partitioning(rp, s, r)
		if a := s.Auth; a != nil && a.Type == AuthQuery && a.Param != "" {
			c.keyNotInPath(join(rp, "path"), r.Path, a.Param)
			c.keyNotInPath(join(join(rp, "probe"), "path"), r.Probe.Path, a.Param)
		}
	}
}

// keyNotInPath reports a path whose query carries the auth key parameter:
// auth adds it to every request from the environment, and a key written
// into the config would be a secret in the file.
func (c *checker) keyNotInPath(path, p, param string) {
	if u, err := url.Parse(p); err == nil && u.Query().Has(param) {
		c.report(path, "must not carry %s: auth (type query) adds it to every request", param)
	}
}

func (c *checker) auth(ap string, a *Auth) {
	notFor := func(field, value string) {
		if value != "" {
			c.report(join(ap, field), "not used by auth type %s", a.Type)
		}
	}
	c.env(join(ap, "token_env"), a.TokenEnv)
	c.env(join(ap, "username_env"), a.UsernameEnv)
	c.env(join(ap, "password_env"), a.PasswordEnv)
	if a.Type != AuthOAuth2 {
		c.notOAuth2(ap, a)
	}
	switch a.Type {
	case AuthBearer, AuthHeader, AuthQuery:
		switch {
		case a.TokenEnv == "" && a.TokenFile == "":
			c.report(ap, "auth type %s needs token_env or token_file", a.Type)
		case a.TokenEnv != "" && a.TokenFile != "":
			c.report(join(ap, "token_file"), "set token_env or token_file, not both")
		}
		if a.Type == AuthHeader {
			c.keyName(join(ap, "header"), a.Type, a.Header, headerName, "header name")
		} else {
			notFor("header", a.Header)
		}
		if a.Type == AuthQuery {
			c.keyName(join(ap, "param"), a.Type, a.Param, queryParamName, "query parameter name")
		} else {
			notFor("param", a.Param)
		}
		notFor("username_env", a.UsernameEnv)
		notFor("password_env", a.PasswordEnv)
	case AuthBasic:
		if a.UsernameEnv == "" {
			c.report(join(ap, "username_env"), "required for auth type basic")
		}
		if a.PasswordEnv == "" {
			c.report(join(ap, "password_env"), "required for auth type basic")
		}
		notFor("token_env", a.TokenEnv)
		notFor("token_file", a.TokenFile)
		notFor("header", a.Header)
		notFor("param", a.Param)
	case AuthOAuth2:
		c.oauth2(ap, a)
		notFor("token_env", a.TokenEnv)
		notFor("token_file", a.TokenFile)
		notFor("header", a.Header)
		notFor("param", a.Param)
		notFor("username_env", a.UsernameEnv)
		notFor("password_env", a.PasswordEnv)
	case "":
		c.report(join(ap, "type"), "required (%s)", choices(authTypes...))
	default:
		c.report(join(ap, "type"), "unknown auth type %q (want %s)", a.Type, choices(authTypes...))
	}
}

// oauth2 checks the keys of auth type oauth2.
func (c *checker) oauth2(ap string, a *Auth) {
	c.env(join(ap, "client_id_env"), a.ClientIDEnv)
	c.env(join(ap, "client_secret_env"), a.ClientSecretEnv)
	c.env(join(ap, "refresh_token_env"), a.RefreshTokenEnv)
	if a.TokenURL == "" {
		c.report(join(ap, "token_url"), "required for auth type oauth2")
	} else {
		c.httpURL(join(ap, "token_url"), a.TokenURL)
	}
	if a.ClientIDEnv == "" {
		c.report(join(ap, "client_id_env"), "required for auth type oauth2")
	}
	switch a.GrantType {
	case GrantClientCredentials:
		if a.ClientSecretEnv == "" {
			c.report(join(ap, "client_secret_env"), "required for grant_type client_credentials")
		}
		if a.RefreshTokenEnv != "" {
			c.report(join(ap, "refresh_token_env"), "not used by grant_type client_credentials")
		}
	case GrantRefreshToken:
		if a.RefreshTokenEnv == "" {
			c.report(join(ap, "refresh_token_env"), "required for grant_type refresh_token")
		}
	case "":
		c.report(join(ap, "grant_type"), "required for auth type oauth2 (%s)", choices(grantTypes...))
	default:
		c.report(join(ap, "grant_type"), "unknown grant type %q (want %s)", a.GrantType, choices(grantTypes...))
	}
	if !oneOf(a.AuthStyle, authStyles...) {
		c.report(join(ap, "auth_style"), "unknown value %q (want %s)", a.AuthStyle, choices(authStyles...))
	}
	for i, s := range a.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			c.report(index(join(ap, "scopes"), i), "invalid scope %q (no spaces, quotes or backslashes)", s)
		}
	}
	for _, k := range sortedKeys(a.TokenParams) {
		switch {
		case slices.Contains(reservedTokenParams, k):
			c.report(join(join(ap, "token_params"), k), "set by tidemark itself: use %s", oauth2KeyFor(k))
		case !queryParamName.MatchString(k):
			c.report(join(join(ap, "token_params"), k), "invalid parameter name %q", k)
		}
	}
}

// oauth2KeyFor names the auth key that sets a reserved token parameter.
func oauth2KeyFor(param string) string {
	if param == "scope" {
		return "scopes"
	}
	if param == "grant_type" {
		return "grant_type"
	}
	return param + "_env"
}

// notOAuth2 reports oauth2 keys set on another auth type.
func (c *checker) notOAuth2(ap string, a *Auth) {
	if a.Type == "" {
		return // the missing type is the error
	}
	for _, f := range []struct {
		key string
		set bool
	}{
		{"grant_type", a.GrantType != ""}, {"token_url", a.TokenURL != ""},
		{"client_id_env", a.ClientIDEnv != ""}, {"client_secret_env", a.ClientSecretEnv != ""},
		{"refresh_token_env", a.RefreshTokenEnv != ""}, {"scopes", len(a.Scopes) > 0},
		{"token_params", len(a.TokenParams) > 0}, {"auth_style", a.AuthStyle != ""},
	} {
		if f.set {
			c.report(join(ap, f.key), "not used by auth type %s", a.Type)
		}
	}
}

// keyName checks the name an auth type sends its key under (a header or a
// query parameter): required, and a valid what.
func (c *checker) keyName(path, authType, name string, valid *regexp.Regexp, what string) {
	switch {
	case name == "":
		c.report(path, "required for auth type %s", authType)
	case !valid.MatchString(name):
		c.report(path, "invalid %s %q", what, name)
	}
}

func (c *checker) resource(rp string, r *Resource) {
	switch {
	case r.Path == "":
		c.report(join(rp, "path"), "required")
	case !strings.HasPrefix(r.Path, "/") && !wholeURL(r):
		c.report(join(rp, "path"), "%q must start with /", r.Path)
	}
	if !oneOf(r.Priority, PriorityCritical, PriorityDefault, PriorityLow) {
		c.report(join(rp, "priority"), "unknown priority %q (want %s)", r.Priority, choices(PriorityCritical, PriorityDefault, PriorityLow))
	}
	c.positive(join(rp, "freshness"), int64(r.Freshness))
	c.recordPaths(rp, r)
	c.request(rp, r)
	c.pagination(join(rp, "pagination"), &r.Pagination)
	c.cursor(join(rp, "pagination"), r)
	c.probe(join(rp, "probe"), &r.Probe, &r.Pagination)
	if r.Post() {
		c.postProbe(join(rp, "probe"), &r.Probe)
	}
	c.readingProbe(join(rp, "probe"), r)
	if r.Delta != nil {
		c.delta(join(rp, "delta"), r)
	}
	c.onStatus(join(rp, "on_status"), r.OnStatus)
	c.fullSync(join(rp, "full_sync"), &r.FullSync)
	if il := r.Audit.InitialLoad; !oneOf(il, InitialLoadSummary, InitialLoadRecords) {
		c.report(join(join(rp, "audit"), "initial_load"), "unknown value %q (want %s)", il, choices(InitialLoadSummary, InitialLoadRecords))
	}
}

// recordPaths checks the dotted paths into a page and its records:
// records.path, .id (required) and .item, fields and ignore_fields.
func (c *checker) recordPaths(rp string, r *Resource) {
	recp := join(rp, "records")
	c.dotted(join(recp, "path"), r.Records.Path)
	if r.Records.ID == "" {
		c.report(join(recp, "id"), "required")
	} else {
		c.dotted(join(recp, "id"), r.Records.ID)
	}
	for _, k := range sortedKeys(r.Fields) {
		fp := join(join(rp, "fields"), k)
		if r.Fields[k] == "" {
			c.report(fp, "required: the dotted path to store in %s", k)
		}
		c.dotted(fp, r.Fields[k])
	}
	for i, f := range r.IgnoreFields {
		fp := index(join(rp, "ignore_fields"), i)
		if f == "" {
			c.report(fp, "empty path")
		}
		c.dotted(fp, f)
	}
	c.dotted(join(recp, "item"), r.Records.Item)
}

// delta checks r's delta read, under dp.
func (c *checker) delta(dp string, r *Resource) {
	d := r.Delta
	if d.Param == "" && !r.Post() {
		c.report(join(dp, "param"), "required (with method POST the body's {since} carries it instead)")
	}
	c.deltaStart(dp, r)
	if d.Field == "" {
		c.report(join(dp, "field"), "required")
	} else {
		c.dotted(join(dp, "field"), d.Field)
	}
	if !oneOf(d.Format, FormatRFC3339, FormatUnix, FormatUnixMS, FormatNumber) {
		c.report(join(dp, "format"), "unknown format %q (want %s)", d.Format, choices(FormatRFC3339, FormatUnix, FormatUnixMS, FormatNumber))
	}
	if d.Overlap < 0 {
		c.report(join(dp, "overlap"), "must not be negative")
	}
	if d.Format == FormatNumber && d.Overlap != 0 {
		c.report(join(dp, "overlap"), "must be 0 with format number (an overlap is a duration)")
	}
	if d.ClockSkew < 0 {
		c.report(join(dp, "clock_skew"), "must not be negative")
	}
}

// fullSync checks the full read's interval and its delete brake, under fp.
func (c *checker) fullSync(fp string, f *FullSync) {
	c.positive(join(fp, "every"), int64(f.Every))
	if x := f.MaxDeleteFraction; x <= 0 || x > 1 || c.zeros[join(fp, "max_delete_fraction")] {
		c.report(join(fp, "max_delete_fraction"), "must be greater than 0 and at most 1 (1 turns the brake off)")
	}
	if n := f.DeleteAfterReads; n != 1 && n != 2 || c.zeros[join(fp, "delete_after_reads")] {
		c.report(join(fp, "delete_after_reads"), "must be 1 or 2")
	}
}

func (c *checker) pagination(pp string, p *Pagination) {
	styles := []string{PaginationNone, PaginationPage, PaginationOffset, PaginationCursor, PaginationLink, PaginationNextURL}
	if !oneOf(p.Style, styles...) {
		c.report(join(pp, "style"), "unknown style %q (want %s)", p.Style, choices(styles...))
		return
	}
	// Keys a style does not read are mistakes (often a wrong style), not noise.
	usedBy := map[string][]string{
		"cursor_param": {PaginationCursor},
		"cursor_from":  {PaginationCursor},
		"next_field":   {PaginationCursor, PaginationNextURL},
		"page_param":   {PaginationPage},
		"start":        {PaginationPage},
		"offset_param": {PaginationOffset},
	}
	for _, key := range sortedKeys(usedBy) {
		if c.set(join(pp, key)) && !oneOf(p.Style, usedBy[key]...) {
			c.report(join(pp, key), "not used by style %s (used by %s)", p.Style, choices(usedBy[key]...))
		}
	}
	c.dotted(join(pp, "next_field"), p.NextField)
	c.dotted(join(pp, "total_field"), p.TotalField)
	c.dotted(join(pp, "has_more_field"), p.HasMoreField)
	if c.set(join(pp, "total_field")) && !oneOf(p.Style, PaginationPage, PaginationOffset) {
		c.report(join(pp, "total_field"), "not used by style %s (used by %s)", p.Style, choices(PaginationPage, PaginationOffset))
	}
	if c.set(join(pp, "has_more_field")) && !oneOf(p.Style, PaginationPage, PaginationOffset, PaginationCursor) {
		c.report(join(pp, "has_more_field"), "not used by style %s (used by %s)", p.Style, choices(PaginationPage, PaginationOffset, PaginationCursor))
	}
	c.positive(join(pp, "limit"), int64(p.Limit))
	c.positive(join(pp, "max_pages"), int64(p.MaxPages))
	c.positive(join(pp, "resume_within"), int64(p.ResumeWithin))
	if p.Start != nil && *p.Start < 0 {
		c.report(join(pp, "start"), "must not be negative")
	}
}

func (c *checker) probe(pp string, p *Probe, pg *Pagination) {
	strategies := []string{ProbeETag, ProbeLastModified, ProbeHash, ProbeDelta, ProbeRollingHash, ProbeNone}
	if !oneOf(p.Strategy, strategies...) {
		c.report(join(pp, "strategy"), "unknown strategy %q (want %s)", p.Strategy, choices(strategies...))
	}
	switch {
	case !oneOf(p.Method, "HEAD", "GET"):
		c.report(join(pp, "method"), "unknown method %q (want HEAD | GET)", p.Method)
	case oneOf(p.Strategy, ProbeHash, ProbeDelta, ProbeRollingHash) && p.Method == "HEAD":
		c.report(join(pp, "method"), "strategy %s reads the body: use GET", p.Strategy)
	}
	c.positive(join(pp, "every"), int64(p.Every))
	if c.zeros[join(pp, "max_every")] {
		c.report(join(pp, "max_every"), "must be greater than 0")
	} else if p.MaxEvery < p.Every {
		c.report(join(pp, "max_every"), "%s must not be shorter than every (%s)", p.MaxEvery, p.Every)
	}
	if p.Path != "" && !strings.HasPrefix(p.Path, "/") {
		c.report(join(pp, "path"), "%q must start with /", p.Path)
	}
	if p.Limit == 0 && !c.zeros[join(pp, "limit")] {
		return // unset: the probe asks for the full read's page size
	}
	lp := join(pp, "limit")
	switch {
	case p.Limit <= 0 || c.zeros[lp]:
		c.report(lp, "must be greater than 0")
	case p.Path != "":
		c.report(lp, "not with probe.path: put the page size in the path's query")
	case pg.LimitParam == "":
		c.report(lp, "needs pagination.limit_param to send the page size in")
	}
}

// onStatus checks on_status: statuses 400-599 written as plain numbers,
// not 429 (a rate limit: the source's cooldown) and known actions. 304 and
// other non-error statuses have fixed meanings and are refused too.
func (c *checker) onStatus(op string, m map[string]string) {
	actions := []string{OnStatusEmpty, OnStatusFail, OnStatusRetry}
	for _, k := range sortedKeys(m) {
		kp := join(op, k)
		code, err := strconv.Atoi(k)
		switch {
		case err != nil || strconv.Itoa(code) != k:
			c.report(kp, "%q is not an HTTP status code (want a number from 400 to 599)", k)
		case code == http.StatusTooManyRequests:
			c.report(kp, "429 cannot be mapped: it always pauses the source for its Retry-After (a rate limit)")
		case code < 400 || code > 599:
			c.report(kp, "status %d cannot be mapped: only error statuses 400 to 599 can (2xx, 3xx and 304 have fixed meanings)", code)
		}
		if !oneOf(m[k], actions...) {
			c.report(kp, "unknown action %q (want %s)", m[k], choices(actions...))
		}
	}
}

func (c *checker) webhook(wp string, w *Webhook) {
	c.httpURL(join(wp, "url"), w.URL)
	c.env(join(wp, "secret_env"), w.SecretEnv)
	seen := map[string]bool{}
	for i, e := range w.Events {
		ep := index(join(wp, "events"), i)
		switch {
		case !oneOf(e, Events...):
			c.report(ep, "unknown event %q (want %s)", e, choices(Events...))
		case seen[e]:
			c.report(ep, "duplicate event %q", e)
		}
		seen[e] = true
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var hostName = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func validHost(h string) bool {
	if _, err := netip.ParsePrefix(h); err == nil {
		return true
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return hostName.MatchString(h)
}

// request checks method and body: a body only with POST, and each
// placeholder it uses backed by the config that gives it a value.
func (c *checker) request(rp string, r *Resource) {
	mp, bp := join(rp, "method"), join(rp, "body")
	if !oneOf(r.Method, MethodGet, MethodPost) {
		c.report(mp, "unknown method %q (want %s)", r.Method, choices(MethodGet, MethodPost))
		return
	}
	switch {
	case r.Post() && r.Body == nil:
		c.report(bp, "required with method POST: the JSON object to send")
	case !r.Post() && r.Body != nil:
		c.report(bp, "only with method POST (a GET sends no body)")
	}
	for _, p := range []struct {
		ph, needs string
		missing   bool
	}{
		{"{cursor}", "pagination.style cursor", r.Pagination.Style != PaginationCursor},
		{"{since}", "delta (the watermark it carries)", r.Delta == nil},
		{"{until}", "delta.window (the window end it carries)", r.Delta == nil || r.Delta.Window == nil},
	} {
		if p.missing && BodyUses(r.Body, p.ph) {
			c.report(bp, "uses %s, which needs %s", p.ph, p.needs)
		}
	}
}

// BodyUses reports whether a body template holds placeholder anywhere in
// its strings.
func BodyUses(b Body, placeholder string) bool {
	used := false
	b.eachString(func(s string) { used = used || strings.Contains(s, placeholder) })
	return used
}

// eachString calls fn with every string of the template, map values in key
// order.
func (b Body) eachString(fn func(string)) {
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			fn(v)
		case map[string]any:
			for _, k := range sortedKeys(v) {
				walk(v[k])
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(map[string]any(b))
}

// cursor checks where the cursor style's cursor comes from and goes to.
func (c *checker) cursor(pp string, r *Resource) {
	p := &r.Pagination
	if p.Style != PaginationCursor {
		return
	}
	if p.CursorParam == "" && !(r.Post() && BodyUses(r.Body, "{cursor}")) {
		c.report(join(pp, "cursor_param"), "required for style cursor (or, with method POST, {cursor} in the body)")
	}
	switch p.CursorFrom {
	case CursorFromResponse:
		if p.NextField == "" {
			c.report(join(pp, "next_field"), "required for style cursor (or cursor_from: last_record)")
		}
	case CursorFromLastRecord:
		if c.set(join(pp, "next_field")) {
			c.report(join(pp, "next_field"), "not used with cursor_from last_record (the cursor is the last record's id)")
		}
	default:
		c.report(join(pp, "cursor_from"), "unknown value %q (want %s)", p.CursorFrom, choices(CursorFromResponse, CursorFromLastRecord))
	}
}

// postProbe refuses probes a POST read cannot have: validators belong to
// GET responses (HTTP caches neither a POST's ETag nor answers a
// conditional POST with 304), and the hash probe posts the first page's
// body to the resource's own path.
func (c *checker) postProbe(pp string, p *Probe) {
	if oneOf(p.Strategy, ProbeETag, ProbeLastModified) {
		c.report(join(pp, "strategy"), "%s is not available with method POST: a POST is not answered conditionally (use hash: it posts the first page's body)", p.Strategy)
	}
	if p.Method == http.MethodHead {
		c.report(join(pp, "method"), "HEAD is not available with method POST: the probe posts the first page's body")
	}
	if p.Path != "" {
		c.report(join(pp, "path"), "not with method POST: the probe posts the first page's body to the resource's path")
	}
}

// deltaStart checks delta.start and delta.window.
func (c *checker) deltaStart(dp string, r *Resource) {
	d := r.Delta
	timed := d.Format != FormatNumber
	if d.Start != "" {
		sp := join(dp, "start")
		_, err := d.StartAt(time.Now())
		switch {
		case err != nil:
			c.report(sp, "%v", err)
		case !timed:
			c.report(sp, "not with format number: start is a time")
		case d.StartRelative() && d.Window != nil && r.FullSync.DetectDeletes:
			c.report(sp, "must be a timestamp with window and full_sync.detect_deletes: full reads walk windows from start, and a start that moves would leave older records unread, and deleted")
		}
	}
	w := d.Window
	if w == nil {
		return
	}
	wp := join(dp, "window")
	c.positive(join(wp, "size"), int64(w.Size))
	switch {
	case !timed:
		c.report(wp, "not with format number: windows are time ranges")
	case d.Start == "":
		c.report(join(dp, "start"), "required with window: the first window begins there")
	}
	if w.EndParam == "" && !r.Post() {
		c.report(join(wp, "end_param"), "required (with method POST the body's {until} carries it instead)")
	}
}

// StartAt is delta.start as an instant, for a read that begins at now: a
// timestamp (RFC 3339) as it is, a duration that long before now.
func (d *Delta) StartAt(now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, d.Start); err == nil {
		return t, nil
	}
	ago, err := time.ParseDuration(d.Start)
	if err != nil || ago <= 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 timestamp (2024-01-01T00:00:00Z) nor a positive duration back from now (720h)", d.Start)
	}
	return now.Add(-ago), nil
}

// StartRelative reports whether delta.start is a duration back from now.
func (d *Delta) StartRelative() bool {
	_, err := time.Parse(time.RFC3339, d.Start)
	return d.Start != "" && err != nil
}
