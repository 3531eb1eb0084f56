package discover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark/tidemark/config"
)

// YAML renders the proposal as a config file, with a comment above each
// choice giving its confidence and evidence. config.Parse accepts it.
//
// Hints are commented out, under what was seen. Without a Config (discovery
// stopped at an error) it holds the hints alone.
func (r *Result) YAML() []byte {
	y := &yamlWriter{r: r}
	if r.Config == nil {
		y.w(0, "# `tidemark discover %s` stopped before it could propose a config; what it saw suggests:", oneLine(r.URL))
		y.hints(0, hintAuth, hintGraphQL, hintParent)
		return y.b.Bytes()
	}
	methods := make([]string, 0, len(r.Methods))
	for m, n := range r.Methods {
		methods = append(methods, fmt.Sprintf("%s %d", m, n))
	}
	sort.Strings(methods)
	y.w(0, "# Proposed by `tidemark discover %s` from %d requests (%s).", oneLine(r.URL), r.Requests, strings.Join(methods, ", "))
	y.w(0, "# Each choice says how sure discovery is and why. Review, then check with `tidemark config check`.")
	if len(r.Hints) > 0 {
		y.w(0, "# Hints are commented out: keys to confirm, some of which this build may not accept yet.")
	}
	src := r.Config.Sources[0]
	y.source(&src)
	y.w(4, "resources:")
	y.resource(&src.Resources[0])
	y.hints(6, hintGraphQL, hintParent)
	return y.b.Bytes()
}

// yamlWriter writes a proposal's YAML.
type yamlWriter struct {
	b bytes.Buffer
	r *Result
}

func (y *yamlWriter) w(indent int, format string, args ...any) {
	y.b.WriteString(strings.Repeat(" ", indent))
	fmt.Fprintf(&y.b, format, args...)
	y.b.WriteByte('\n')
}

func (y *yamlWriter) commentText(indent int, text string) {
	for _, line := range wrap(oneLine(text), 100-indent-2) {
		y.w(indent, "# %s", line)
	}
}

// comment writes the note on key, if any.
func (y *yamlWriter) comment(indent int, key string) {
	if n, ok := y.r.Notes[key]; ok {
		y.commentText(indent, fmt.Sprintf("%s (%s): %s", key, n.Confidence, n.Evidence))
	}
}

// hints writes the hints of the kinds given, commented out.
func (y *yamlWriter) hints(indent int, keys ...string) {
	for _, h := range y.r.Hints {
		if slices.Contains(keys, h.Key) {
			y.commentText(indent, fmt.Sprintf("%s hint (%s): %s", h.Key, h.Confidence, h.Seen))
			for _, l := range h.Lines {
				y.w(indent, "# %s", l)
			}
		}
	}
}

func (y *yamlWriter) source(src *config.Source) {
	y.w(0, "sources:")
	y.w(2, "- name: %s", q(src.Name))
	y.w(4, "base_url: %s", q(src.BaseURL))
	if src.AllowPrivate {
		y.comment(4, "allow_private")
		y.w(4, "allow_private: true")
	}
	if len(src.Headers) > 0 {
		keys := make([]string, 0, len(src.Headers))
		for k := range src.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		pairs := make([]string, len(keys))
		for i, k := range keys {
			pairs[i] = q(k) + ": " + q(src.Headers[k])
		}
		y.w(4, "headers: {%s}", strings.Join(pairs, ", "))
	}
	if a := src.Auth; a != nil {
		y.comment(4, "auth")
		y.w(4, "auth: {type: %s, token_env: %s}", a.Type, q(a.TokenEnv))
	}
	y.hints(4, hintAuth)
	y.comment(4, "rate_limit")
	if rl := src.RateLimit; rl != nil {
		y.w(4, "rate_limit: {requests: %d, per: %s, burst: %d}", rl.Requests, fmtDuration(rl.Per.D()), max(rl.Burst, 1))
	}
	if src.RateLimitHeaders != "" {
		y.comment(4, "rate_limit_headers")
		y.w(4, "rate_limit_headers: %s", src.RateLimitHeaders)
	}
}

func (y *yamlWriter) resource(res *config.Resource) {
	y.w(6, "- name: %s", q(res.Name))
	y.w(8, "path: %s", q(res.Path))
	y.comment(8, "records")
	y.w(8, "records: {path: %s, id: %s}", q(res.Records.Path), q(res.Records.ID))
	y.comment(8, "ignore_fields")
	if len(res.IgnoreFields) > 0 {
		y.w(8, "ignore_fields: %s", qList(res.IgnoreFields))
	}
	y.comment(8, "pagination")
	y.pagination(res.Pagination)
	y.comment(8, "probe")
	pr := res.Probe
	y.w(8, "probe: {strategy: %s, method: %s, every: %s}", pr.Strategy, pr.Method, fmtDuration(pr.Every.D()))
	y.comment(8, "delta")
	if d := res.Delta; d != nil {
		y.w(8, "delta: {param: %s, field: %s, format: %s, overlap: %s}", q(d.Param), q(d.Field), d.Format, fmtDuration(d.Overlap.D()))
	}
	y.comment(8, "full_sync")
	y.w(8, "full_sync: {every: %s, detect_deletes: %t}", fmtDuration(res.FullSync.Every.D()), res.FullSync.DetectDeletes)
}

func (y *yamlWriter) pagination(pg config.Pagination) {
	y.w(8, "pagination:")
	y.w(10, "style: %s", pg.Style)
	switch pg.Style {
	case config.PaginationCursor:
		y.w(10, "cursor_param: %s", q(pg.CursorParam))
		y.w(10, "next_field: %s", q(pg.NextField))
	case config.PaginationNextURL:
		y.w(10, "next_field: %s", q(pg.NextField))
	case config.PaginationPage:
		y.w(10, "page_param: %s", q(pg.PageParam))
		if pg.Start != nil {
			y.w(10, "start: %d", *pg.Start)
		}
	case config.PaginationOffset:
		y.w(10, "offset_param: %s", q(pg.OffsetParam))
	}
	if pg.LimitParam != "" {
		y.w(10, "limit_param: %s", q(pg.LimitParam))
	}
	if pg.Limit > 0 {
		y.w(10, "limit: %d", pg.Limit)
	}
}

// q quotes a YAML scalar: JSON strings are YAML double-quoted scalars. A
// literal "${" is written "$${" so that loading does not expand it.
func q(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	out := strings.TrimSpace(b.String())
	return strings.ReplaceAll(out, "${", "$${")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func wrap(s string, width int) []string {
	var lines []string
	for len(s) > width {
		cut := strings.LastIndex(s[:width], " ")
		if cut <= 0 {
			cut = width
		}
		lines = append(lines, s[:cut])
		s = strings.TrimLeft(s[cut:], " ")
		s = "  " + s
	}
	return append(lines, s)
}

// fmtDuration writes 30s, 5m, 24h rather than 24h0m0s.
func fmtDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}
