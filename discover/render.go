package discover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark/tidemark/config"
)

// YAML renders the proposal as a config file, with a comment above each
// choice giving its confidence and evidence. config.Parse accepts it.
func (r *Result) YAML() []byte {
	var b bytes.Buffer
	src := r.Config.Sources[0]
	res := src.Resources[0]
	w := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat(" ", indent))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	comment := func(indent int, key string) {
		n, ok := r.Notes[key]
		if !ok {
			return
		}
		text := fmt.Sprintf("%s (%s): %s", key, n.Confidence, n.Evidence)
		for _, line := range wrap(oneLine(text), 100-indent-2) {
			w(indent, "# %s", line)
		}
	}
	methods := make([]string, 0, len(r.Methods))
	for m, n := range r.Methods {
		methods = append(methods, fmt.Sprintf("%s %d", m, n))
	}
	sort.Strings(methods)
	w(0, "# Proposed by `tidemark discover %s` from %d requests (%s).", oneLine(r.URL), r.Requests, strings.Join(methods, ", "))
	w(0, "# Each choice says how sure discovery is and why. Review, then check with `tidemark config check`.")
	w(0, "sources:")
	w(2, "- name: %s", q(src.Name))
	w(4, "base_url: %s", q(src.BaseURL))
	if src.AllowPrivate {
		comment(4, "allow_private")
		w(4, "allow_private: true")
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
		w(4, "headers: {%s}", strings.Join(pairs, ", "))
	}
	if a := src.Auth; a != nil {
		comment(4, "auth")
		w(4, "auth: {type: %s, token_env: %s}", a.Type, q(a.TokenEnv))
	}
	comment(4, "rate_limit")
	if rl := src.RateLimit; rl != nil {
		w(4, "rate_limit: {requests: %d, per: %s, burst: %d}", rl.Requests, fmtDuration(rl.Per.D()), max(rl.Burst, 1))
	}
	w(4, "resources:")
	w(6, "- name: %s", q(res.Name))
	w(8, "path: %s", q(res.Path))
	comment(8, "records")
	w(8, "records: {path: %s, id: %s}", q(res.Records.Path), q(res.Records.ID))
	comment(8, "ignore_fields")
	if len(res.IgnoreFields) > 0 {
		fs := make([]string, len(res.IgnoreFields))
		for i, f := range res.IgnoreFields {
			fs[i] = q(f)
		}
		w(8, "ignore_fields: [%s]", strings.Join(fs, ", "))
	}
	comment(8, "pagination")
	pg := res.Pagination
	w(8, "pagination:")
	w(10, "style: %s", pg.Style)
	switch pg.Style {
	case config.PaginationCursor:
		w(10, "cursor_param: %s", q(pg.CursorParam))
		w(10, "next_field: %s", q(pg.NextField))
	case config.PaginationNextURL:
		w(10, "next_field: %s", q(pg.NextField))
	case config.PaginationPage:
		w(10, "page_param: %s", q(pg.PageParam))
		if pg.Start != nil {
			w(10, "start: %d", *pg.Start)
		}
	case config.PaginationOffset:
		w(10, "offset_param: %s", q(pg.OffsetParam))
	}
	if pg.LimitParam != "" {
		w(10, "limit_param: %s", q(pg.LimitParam))
	}
	if pg.Limit > 0 {
		w(10, "limit: %d", pg.Limit)
	}
	comment(8, "probe")
	pr := res.Probe
	w(8, "probe: {strategy: %s, method: %s, every: %s}", pr.Strategy, pr.Method, fmtDuration(pr.Every.D()))
	comment(8, "delta")
	if d := res.Delta; d != nil {
		w(8, "delta: {param: %s, field: %s, format: %s, overlap: %s}", q(d.Param), q(d.Field), d.Format, fmtDuration(d.Overlap.D()))
	}
	comment(8, "full_sync")
	w(8, "full_sync: {every: %s, detect_deletes: %t}", fmtDuration(res.FullSync.Every.D()), res.FullSync.DetectDeletes)
	return b.Bytes()
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
