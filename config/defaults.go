package config

import (
	"cmp"
	"strings"
	"time"

	"github.com/tidemark/tidemark"
)

// Defaults that code outside config applies too: to a source built without
// SetDefaults, and to discovery's requests.
const (
	// SourceTimeoutDefault is Source.Timeout's default.
	SourceTimeoutDefault = Duration(30 * time.Second)
	// SourceMaxBodyDefault is Source.MaxBody's default.
	SourceMaxBodyDefault = 64 * MiB
)

// RequestTimeout bounds one request to the source: Timeout, or
// SourceTimeoutDefault for a source built in code without SetDefaults.
func (s *Source) RequestTimeout() time.Duration {
	if s.Timeout <= 0 {
		return SourceTimeoutDefault.D()
	}
	return s.Timeout.D()
}

// Defaults, as documented on the fields in config.go.
const (
	defaultMaxConcurrency = 4
	defaultBurst          = 1
	defaultFreshness      = Duration(5 * time.Minute)
	defaultLimit          = 100
	defaultPageParam      = "page"
	defaultStart          = 1
	defaultOffsetParam    = "offset"
	defaultNextURLField   = "next_url"
	defaultMethod         = MethodGet
	defaultProbeMethod    = "GET"
	defaultProbeEvery     = Duration(time.Minute)
	defaultFullSyncEvery  = Duration(24 * time.Hour)
	defaultMaxPages       = 100000
	defaultResumeWithin   = Duration(time.Hour)
	defaultClockSkew      = Duration(5 * time.Second)
	defaultMaxDelete      = 0.2
	defaultViewsSchema    = "tidemark_data"
)

// defaultDeleteWithParent is Parent.DeleteWithParent's default.
const defaultDeleteWithParent = true

// SetDefaults fills every unset field that has a default (see the field
// comments) and normalises case where it does not matter (probe method).
// Load and Parse call it; a config built in code should call it before
// Validate.
func (c *Config) SetDefaults() {
	c.Views.Schema = cmp.Or(c.Views.Schema, defaultViewsSchema)
	for i := range c.Sources {
		s := &c.Sources[i]
		s.MaxConcurrency = cmp.Or(s.MaxConcurrency, defaultMaxConcurrency)
		s.RateLimitHeaders = cmp.Or(s.RateLimitHeaders, HeadersHonour)
		s.Timeout = cmp.Or(s.Timeout, SourceTimeoutDefault)
		s.MaxBody = cmp.Or(s.MaxBody, SourceMaxBodyDefault)
		if s.Auth != nil && s.Auth.Type == AuthOAuth2 {
			s.Auth.AuthStyle = cmp.Or(s.Auth.AuthStyle, AuthStyleBody)
		}
		if s.RateLimit != nil {
			s.RateLimit.Burst = cmp.Or(s.RateLimit.Burst, defaultBurst)
		}
		for j := range s.Resources {
			s.Resources[j].setDefaults()
		}
		for j := range s.Resources {
			// A partition is named by the parent's id unless parent.key says.
			if pa := s.Resources[j].Parent; pa != nil && pa.Key == "" {
				if parent := s.Resource(pa.Resource); parent != nil {
					pa.Key = parent.Records.ID
				}
			}
		}
	}
}

func (r *Resource) setDefaults() {
	r.Priority = cmp.Or(r.Priority, PriorityDefault)
	r.Freshness = cmp.Or(r.Freshness, defaultFreshness)
	r.Method = strings.ToUpper(cmp.Or(r.Method, defaultMethod))

	p := &r.Pagination
	p.Style = cmp.Or(p.Style, PaginationNone)
	p.Limit = cmp.Or(p.Limit, defaultLimit)
	p.PageParam = cmp.Or(p.PageParam, defaultPageParam)
	if p.Start == nil {
		start := defaultStart
		p.Start = &start
	}
	p.OffsetParam = cmp.Or(p.OffsetParam, defaultOffsetParam)
	if p.Style == PaginationCursor {
		p.CursorFrom = cmp.Or(p.CursorFrom, CursorFromResponse)
	}
	if p.Style == PaginationNextURL {
		p.NextField = cmp.Or(p.NextField, defaultNextURLField)
	}
	p.MaxPages = cmp.Or(p.MaxPages, defaultMaxPages)
	p.ResumeWithin = cmp.Or(p.ResumeWithin, defaultResumeWithin)

	pr := &r.Probe
	pr.Strategy = cmp.Or(pr.Strategy, tidemark.ProbeNone)
	pr.Method = strings.ToUpper(cmp.Or(pr.Method, defaultProbeMethod))
	pr.Every = cmp.Or(pr.Every, defaultProbeEvery)
	pr.MaxEvery = cmp.Or(pr.MaxEvery, pr.Every)

	if r.Delta != nil {
		r.Delta.Format = cmp.Or(r.Delta.Format, FormatRFC3339)
		r.Delta.ClockSkew = cmp.Or(r.Delta.ClockSkew, defaultClockSkew)
	}
	if pa := r.Parent; pa != nil && pa.DeleteWithParent == nil {
		v := defaultDeleteWithParent
		pa.DeleteWithParent = &v
	}
	r.Audit.InitialLoad = cmp.Or(r.Audit.InitialLoad, InitialLoadSummary)
	fs := &r.FullSync
	fs.Every = cmp.Or(fs.Every, defaultFullSyncEvery)
	fs.MaxDeleteFraction = cmp.Or(fs.MaxDeleteFraction, defaultMaxDelete)
	if fs.DeleteAfterReads == 0 {
		fs.DeleteAfterReads = 1
		if oneOf(p.Style, PaginationPage, PaginationOffset, PaginationLink, PaginationNextURL) {
			// Positions shift under deletes; see DeleteAfterReads.
			fs.DeleteAfterReads = 2
		}
	}
}
