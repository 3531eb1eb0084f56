package discover

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

// validators picks the probe strategy from ETag / Last-Modified, HEAD and
// conditional GET.
func (s *session) validators(ctx context.Context) {
	etag := s.page1.header.Get("ETag")
	lm := s.page1.header.Get("Last-Modified")
	pr := &s.res.Probe
	pr.Every = config.Duration(time.Minute)
	if etag == "" && lm == "" {
		pr.Strategy, pr.Method = tidemark.ProbeHash, http.MethodGet
		s.note("probe", "high", "no ETag or Last-Modified on GET: hashing the first page is the only way to notice a change")
		return
	}
	var ev []string
	kind := "strong"
	if strings.HasPrefix(etag, "W/") {
		kind = "weak"
	}
	if etag != "" {
		ev = append(ev, fmt.Sprintf("GET returns a %s ETag", kind))
	}
	if lm != "" {
		ev = append(ev, "GET returns Last-Modified")
	}
	headETag, headLM, headEv := s.headValidators(ctx, etag, lm)
	ev = append(ev, headEv)
	if etag != "" {
		ok304, condEv := s.conditionalGet(ctx, "If-None-Match", etag)
		ev = append(ev, condEv)
		if headETag || ok304 {
			s.proposeValidator(tidemark.ProbeETag, headETag, ok304, strings.Join(ev, "; "))
			return
		}
	}
	if lm != "" {
		ok304 := false
		if !headLM || etag == "" {
			var condEv string
			ok304, condEv = s.conditionalGet(ctx, "If-Modified-Since", lm)
			ev = append(ev, condEv)
		}
		if headLM || ok304 {
			s.proposeValidator(tidemark.ProbeLastModified, headLM, ok304, strings.Join(ev, "; ")+"; Last-Modified has one-second precision")
			return
		}
	}
	pr.Strategy, pr.Method = tidemark.ProbeHash, http.MethodGet
	s.note("probe", "medium", strings.Join(ev, "; ")+": the validators could not be confirmed, so the safe choice is hashing the first page")
}

// headValidators asks whether HEAD is supported and returns the first
// page's validators (etag, lm): whether it returns the same ETag and the
// same Last-Modified, and the evidence.
func (s *session) headValidators(ctx context.Context, etag, lm string) (sameETag, sameLM bool, evidence string) {
	if s.p.remaining() <= 0 {
		return false, false, "HEAD not tried: request budget spent"
	}
	resp, err := s.p.do(ctx, http.MethodHead, s.url, nil)
	switch {
	case err != nil:
		return false, false, "HEAD " + why(err)
	case resp.status >= 200 && resp.status < 300:
		sameETag = etag != "" && resp.header.Get("ETag") == etag
		sameLM = lm != "" && resp.header.Get("Last-Modified") == lm
		if sameETag || sameLM {
			return sameETag, sameLM, "HEAD returns the same validator"
		}
		return false, false, "HEAD returns other validators"
	default:
		return false, false, fmt.Sprintf("HEAD answers %d", resp.status)
	}
}

// conditionalGet sends a GET with the conditional header name: value and
// reports whether the API answers 304 Not Modified, and the evidence.
func (s *session) conditionalGet(ctx context.Context, name, value string) (notModified bool, evidence string) {
	if s.p.remaining() < 1 {
		return false, "conditional GET not tried: request budget spent"
	}
	resp, err := s.p.do(ctx, http.MethodGet, s.url, http.Header{name: {value}})
	switch {
	case err != nil:
		return false, "conditional GET: " + why(err)
	case resp.status == http.StatusNotModified:
		return true, name + " gets 304 Not Modified"
	default:
		s.rememberBody(resp)
		return false, fmt.Sprintf("%s gets %d, not 304", name, resp.status)
	}
}

// proposeValidator proposes probing by a validator: by HEAD when HEAD
// returns it, else by conditional GET; sure of it when both were confirmed.
func (s *session) proposeValidator(strategy tidemark.ProbeStrategy, head, ok304 bool, evidence string) {
	pr := &s.res.Probe
	pr.Strategy, pr.Method = strategy, http.MethodGet
	if head {
		pr.Method = http.MethodHead
	}
	conf := "medium"
	if head && ok304 {
		conf = "high"
	}
	s.note("probe", conf, evidence)
}

// tsField is a timestamp-like record field.
type tsField struct {
	path   string
	format string
	rank   int
}

// updateNames are field names that move on every change, best first.
var updateNames = []string{"updated_at", "updatedat", "modified_at", "modifiedat", "last_modified", "lastmodified",
	"date_modified", "updated", "modified", "update_time", "updatetime", "last_updated", "lastupdated", "changed_at"}

// timestampFields finds timestamp-like fields present in every record.
func timestampFields(recs []map[string]any) (update []tsField, other []string) {
	flat, paths := flatten(recs)
	for _, p := range paths {
		format := ""
		for _, f := range flat {
			ff := tsFormat(p, f[p])
			if ff == "" || (format != "" && ff != format) {
				format = ""
				break
			}
			format = ff
		}
		if format == "" {
			continue
		}
		name := strings.ToLower(p[strings.LastIndex(p, ".")+1:])
		rank := -1
		for i, u := range updateNames {
			if name == u {
				rank = i
			}
		}
		if rank < 0 && (strings.Contains(name, "updated") || strings.Contains(name, "modified") || strings.Contains(name, "changed")) {
			rank = len(updateNames)
		}
		if rank < 0 {
			other = append(other, p)
			continue
		}
		update = append(update, tsField{path: p, format: format, rank: rank})
	}
	sort.SliceStable(update, func(i, j int) bool { return update[i].rank < update[j].rank })
	return update, other
}

// tsFormat says which watermark format a value is in, or "".
func tsFormat(path string, v any) string {
	switch x := v.(type) {
	case string:
		if _, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return config.FormatRFC3339
		}
	case interface{ Float64() (float64, error) }:
		name := strings.ToLower(path)
		if !(strings.HasSuffix(name, "_at") || strings.Contains(name, "time") || strings.Contains(name, "updated") || strings.Contains(name, "modified")) {
			return ""
		}
		f, err := x.Float64()
		switch {
		case err != nil:
		case f > 1e9 && f < 1e10:
			return config.FormatUnix
		case f > 1e12 && f < 1e13:
			return config.FormatUnixMS
		}
	}
	return ""
}

func tsValue(format string, v any) (time.Time, bool) {
	switch format {
	case config.FormatRFC3339:
		s, _ := v.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		return t, err == nil
	default:
		n, ok := v.(interface{ Float64() (float64, error) })
		if !ok {
			return time.Time{}, false
		}
		f, err := n.Float64()
		if err != nil {
			return time.Time{}, false
		}
		if format == config.FormatUnixMS {
			return time.UnixMilli(int64(f)), true
		}
		return time.Unix(int64(f), 0), true
	}
}

// deltaParams are the filter parameters tried for a field, most common first.
func deltaParams(field string) []string {
	f := field[strings.LastIndex(field, ".")+1:]
	cands := []string{"updated_since", "since", f + "_gte", f + "[gte]", f + "_min", "modified_since",
		"updated_after", f + "_from", "filter[" + f + "][gte]", "changed_since", "updated[gte]"}
	var out []string
	seen := map[string]bool{}
	for _, c := range cands {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// maxDeltaTries bounds the filter parameters tried, so that a resource
// without one does not spend the whole budget.
const maxDeltaTries = 6

// delta looks for a filter parameter that returns only records changed
// since a threshold, and reserve requests are kept for later steps.
func (s *session) delta(ctx context.Context, reserve int) {
	fields, other := timestampFields(s.recs1)
	if len(fields) == 0 {
		ev := "no update timestamp (updated_at, modified_at, …) in the records"
		if len(other) > 0 {
			ev += fmt.Sprintf("; other time fields (%s) do not move on updates", strings.Join(other, ", "))
		}
		s.note("delta", "high", ev+": no delta; a change the probe sees triggers a full read")
		return
	}
	f := fields[0]
	type tv struct {
		id  string
		t   time.Time
		raw any
	}
	vals := make([]tv, len(s.recs1))
	for i, r := range s.recs1 {
		raw, _ := extract.Lookup(r, f.path)
		t, _ := tsValue(f.format, raw)
		vals[i] = tv{s.ids1[i], t, raw}
	}
	sorted := append([]tv(nil), vals...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].t.Before(sorted[j].t) })
	mid := sorted[len(sorted)/2]
	if !sorted[0].t.Before(mid.t) {
		s.note("delta", "high", fmt.Sprintf("%q has the same value in every record of the first page: a filter on it cannot be tested, so no delta (full reads)", f.path))
		return
	}
	threshold, _ := scalarText(mid.raw)
	older := map[string]bool{}
	for _, v := range vals {
		if v.t.Before(mid.t) {
			older[v.id] = true
		}
	}
	var tried []string
	for i, param := range deltaParams(f.path) {
		if i >= maxDeltaTries || s.p.remaining() <= reserve {
			break
		}
		p, err := s.get(ctx, withParams(s.url, param, threshold))
		if err != nil {
			tried = append(tried, param+": "+why(err))
			continue
		}
		ok, why := subset(p, f, mid.t, older, s.ids1)
		if !ok {
			tried = append(tried, param+": "+why)
			continue
		}
		inclusive := false
		for _, id := range p.ids {
			if id == mid.id {
				inclusive = true
			}
		}
		op := ">"
		if inclusive {
			op = ">="
		}
		s.res.Delta = &config.Delta{Param: param, Field: f.path, Format: f.format, Overlap: config.Duration(5 * time.Second)}
		ev := fmt.Sprintf("%s=%s returned %d records, all with %s %s it, leaving out the %d older ones of the first page", param, threshold, len(p.ids), f.path, op, len(older))
		if len(tried) > 0 {
			ev += "; rejected first: " + compact(tried)
		}
		s.note("delta", "high", ev+"; overlap 5s re-reads records written in the same instant as the watermark")
		return
	}
	ev := fmt.Sprintf("%q looks like an update timestamp, but no filter parameter was confirmed", f.path)
	if len(tried) > 0 {
		ev += " (" + compact(tried) + ")"
	}
	s.note("delta", "medium", ev+": no delta, a change the probe sees triggers a full read (the safe choice)")
}

// subset checks that a filtered page is a strict, consistent subset: every
// record at or after the threshold, some older records of the first page
// left out, none returned more than once.
func subset(p *page, f tsField, threshold time.Time, older map[string]bool, first []string) (bool, string) {
	if len(p.ids) == 0 {
		return false, "empty response"
	}
	if equalIDs(p.ids, first) {
		return false, "ignored (same records as without it)"
	}
	if !distinct(p.ids) {
		return false, "records repeated"
	}
	for i, r := range p.recs {
		raw, _ := extract.Lookup(r, f.path)
		t, ok := tsValue(f.format, raw)
		if !ok || t.Before(threshold) {
			return false, fmt.Sprintf("record %s has %s before the threshold", p.ids[i], f.path)
		}
		if older[p.ids[i]] {
			return false, fmt.Sprintf("record %s is older than the threshold", p.ids[i])
		}
	}
	return true, ""
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// remember keeps the records read, to find fields that differ between two
// reads of the same record (volatile fields).
func (s *session) remember(recs []map[string]any, ids []string) {
	if len(ids) != len(recs) {
		return
	}
	batch := map[string]bool{}
	for i, r := range recs {
		id := ids[i]
		if batch[id] {
			continue
		}
		batch[id] = true
		l := leaves(r)
		if prev, ok := s.seen[id]; ok {
			s.reseen++
			for path, v := range l {
				if pv, ok := prev[path]; ok && !reflect.DeepEqual(pv, v) {
					s.diffs[path]++
				}
			}
		}
		s.seen[id] = l
	}
}

func (s *session) rememberBody(resp *response) {
	if doc, err := extract.Decode(resp.body); err == nil {
		if recs, ids, err := recordsAt(doc, s.recPath, s.id); err == nil {
			s.remember(recs, ids)
		}
	}
}

// volatile re-reads the first page if no record has been read twice yet,
// and proposes ignore_fields for fields that changed in every re-read record.
func (s *session) volatile(ctx context.Context) {
	if s.reseen == 0 && s.p.remaining() > 0 {
		if _, err := s.get(ctx, s.url); err != nil {
			s.note("ignore_fields", "low", "could not re-read the first page to look for volatile fields: "+why(err))
		}
	}
	if s.reseen == 0 {
		if _, ok := s.notes["ignore_fields"]; !ok {
			s.note("ignore_fields", "low", "no record was read twice (request budget): volatile fields not checked")
		}
		return
	}
	var paths []string
	for p, n := range s.diffs {
		if n*10 >= s.reseen*8 && n >= 2 && p != s.id {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	s.res.IgnoreFields = paths
	if len(paths) == 0 {
		s.note("ignore_fields", "high", fmt.Sprintf("%d records read twice were identical: no volatile fields", s.reseen))
		return
	}
	s.note("ignore_fields", "high", fmt.Sprintf("changed between two reads moments apart in %s of %d records read twice: volatile, left out of change detection",
		countsText(paths, s.diffs), s.reseen))
}

func countsText(paths []string, n map[string]int) string {
	parts := make([]string, len(paths))
	for i, p := range paths {
		parts[i] = p + " " + strconv.Itoa(n[p])
	}
	return strings.Join(parts, ", ")
}

// compact groups "param: reason" entries by reason.
func compact(tried []string) string {
	var order []string
	by := map[string][]string{}
	for _, t := range tried {
		param, reason, _ := strings.Cut(t, ": ")
		if _, ok := by[reason]; !ok {
			order = append(order, reason)
		}
		by[reason] = append(by[reason], param)
	}
	parts := make([]string, len(order))
	for i, r := range order {
		parts[i] = strings.Join(by[r], ", ") + ": " + r
	}
	return strings.Join(parts, "; ")
}
