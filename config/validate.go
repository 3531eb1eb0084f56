package config

import (
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
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
)

// authTypes lists the auth types in documentation order.
var authTypes = []string{AuthBearer, AuthHeader, AuthQuery, AuthBasic}

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
	switch a.Type {
	case AuthBearer, AuthHeader, AuthQuery:
		switch {
		case a.TokenEnv == "" && a.TokenFile == "":
			c.report(ap, "auth type %s needs token_env or token_file", a.Type)
		case a.TokenEnv != "" && a.TokenFile != "":
			c.report(join(ap, "token_file"), "set token_env or token_file, not both")
		}
		if a.Type == AuthHeader {
			switch {
			case a.Header == "":
				c.report(join(ap, "header"), "required for auth type header")
			case !headerName.MatchString(a.Header):
				c.report(join(ap, "header"), "invalid header name %q", a.Header)
			}
		} else {
			notFor("header", a.Header)
		}
		if a.Type == AuthQuery {
			switch {
			case a.Param == "":
				c.report(join(ap, "param"), "required for auth type query")
			case !queryParamName.MatchString(a.Param):
				c.report(join(ap, "param"), "invalid query parameter name %q", a.Param)
			}
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
	case "":
		c.report(join(ap, "type"), "required (%s)", choices(authTypes...))
	default:
		c.report(join(ap, "type"), "unknown auth type %q (want %s)", a.Type, choices(authTypes...))
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

	c.pagination(join(rp, "pagination"), &r.Pagination)
	c.probe(join(rp, "probe"), &r.Probe, &r.Pagination)

	if d := r.Delta; d != nil {
		dp := join(rp, "delta")
		if d.Param == "" {
			c.report(join(dp, "param"), "required")
		}
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
	c.onStatus(join(rp, "on_status"), r.OnStatus)
	fp := join(rp, "full_sync")
	c.positive(join(fp, "every"), int64(r.FullSync.Every))
	if f := r.FullSync.MaxDeleteFraction; f <= 0 || f > 1 || c.zeros[join(fp, "max_delete_fraction")] {
		c.report(join(fp, "max_delete_fraction"), "must be greater than 0 and at most 1 (1 turns the brake off)")
	}
	if n := r.FullSync.DeleteAfterReads; n != 1 && n != 2 || c.zeros[join(fp, "delete_after_reads")] {
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
	if p.Style == PaginationCursor {
		if p.CursorParam == "" {
			c.report(join(pp, "cursor_param"), "required for style cursor")
		}
		if p.NextField == "" {
			c.report(join(pp, "next_field"), "required for style cursor")
		}
	}
	c.dotted(join(pp, "next_field"), p.NextField)
	c.dotted(join(pp, "total_field"), p.TotalField)
	c.dotted(join(pp, "has_more_field"), p.HasMoreField)
	for _, key := range []string{"total_field", "has_more_field"} {
		if c.set(join(pp, key)) && !oneOf(p.Style, PaginationPage, PaginationOffset) {
			c.report(join(pp, key), "not used by style %s (used by %s)", p.Style, choices(PaginationPage, PaginationOffset))
		}
	}
	c.positive(join(pp, "limit"), int64(p.Limit))
	c.positive(join(pp, "max_pages"), int64(p.MaxPages))
	c.positive(join(pp, "resume_within"), int64(p.ResumeWithin))
	if p.Start != nil && *p.Start < 0 {
		c.report(join(pp, "start"), "must not be negative")
	}
}

func (c *checker) probe(pp string, p *Probe, pg *Pagination) {
	strategies := []string{ProbeETag, ProbeLastModified, ProbeHash, ProbeNone}
	if !oneOf(p.Strategy, strategies...) {
		c.report(join(pp, "strategy"), "unknown strategy %q (want %s)", p.Strategy, choices(strategies...))
	}
	switch {
	case !oneOf(p.Method, "HEAD", "GET"):
		c.report(join(pp, "method"), "unknown method %q (want HEAD | GET)", p.Method)
	case p.Strategy == ProbeHash && p.Method == "HEAD":
		c.report(join(pp, "method"), "strategy hash reads the body: use GET")
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
