package discover

import (
	"cmp"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/tidemark/tidemark/upstream"
)

// maxParentHints bounds the child resources proposed: an API like GitHub's
// links thirty collections from each repository.
const maxParentHints = 3

// uriTemplate matches an RFC 6570 expression ({/number}, {?since}): with no
// value it expands to nothing, leaving the collection's URL.
var uriTemplate = regexp.MustCompile(`\{[^{}]*\}`)

// keyNames are fields other than ids whose values commonly name a parent in
// a URL (GitHub's issue number, a user's login).
var keyNames = []string{"number", "login", "name", "full_name", "slug", "key", "username", "handle", "code"}

// childLink is a collection a record links to.
type childLink struct {
	field, name, path, key, example string
}

// parentHints proposes child resources from the links in the records:
// fields holding URLs of collections on this API's host (GitHub's
// comments_url, issues_url with a {/number} template), and *_id fields that
// several records share, naming their parent.
func (s *session) parentHints() {
	links := s.childLinks()
	for i, l := range links {
		if i == maxParentHints {
			var rest []string
			for _, o := range links[i:] {
				rest = append(rest, o.field)
			}
			s.hint(hintParent, "low", "more fields link collections: "+strings.Join(rest, ", "))
			break
		}
		s.hint(hintParent, "medium", fmt.Sprintf("field %q of each record links a collection on this API's host (%s in the first record; %q is the record's %q): "+
			"a child resource with one partition per %s. For its records and pagination, run tidemark discover on that URL",
			l.field, l.example, "{parent."+l.key+"}", l.key, singular(s.resource)),
			"- name: "+q(l.name),
			"  path: "+q(l.path),
			"  parent: "+flow("resource", q(s.resource), "key", q(l.key)))
	}
	for _, f := range s.sharedIDFields(2) {
		parent := plural(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(f, "_id"), "Id"), "ID"))
		s.hint(hintParent, "low", fmt.Sprintf("field %q is shared by several records on the first page: it may name their parent. "+
			"If the API lists %s per %s, sync them as a child of a %s resource, one partition per parent", f, s.resource, singular(parent), parent),
			"- name: "+q(s.resource),
			"  path: "+q("/"+parent+"/{parent.id}/"+s.resource),
			"  parent: "+flow("resource", q(parent), "key", q("id")))
	}
}

// childLinks lists the record fields that link a collection on this host
// with a path the same for every record once its values are placeholders.
func (s *session) childLinks() []childLink {
	base, err := url.Parse(s.url)
	if err != nil || len(s.recs1) == 0 {
		return nil
	}
	var out []childLink
	fields := make([]string, 0, len(s.recs1[0]))
	for f := range s.recs1[0] {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for _, f := range fields {
		name, ok := linkName(f)
		if !ok {
			continue
		}
		if l, ok := s.childLink(base, f, name); ok {
			out = append(out, l)
		}
	}
	return out
}

// childLink reads field f as a collection link in the first few records.
func (s *session) childLink(base *url.URL, f, name string) (childLink, bool) {
	var l childLink
	for i, rec := range s.recs1[:min(len(s.recs1), 3)] {
		raw, _ := rec[f].(string)
		u, err := url.Parse(uriTemplate.ReplaceAllString(raw, ""))
		if err != nil || u.Host != base.Host || u.Scheme != base.Scheme {
			return l, false
		}
		dir := strings.TrimSuffix(u.Path, "/")
		if last := strings.ToLower(dir[strings.LastIndex(dir, "/")+1:]); last != name && !strings.HasSuffix(name, "_"+last) {
			return l, false // the record's own URL, or one of its parent, not a collection
		}
		path, key, ok := templatePath(u.EscapedPath(), rec, s.id)
		if !ok || (i > 0 && (path != l.path || key != l.key)) {
			return l, false
		}
		if i == 0 {
			l = childLink{field: f, name: sanitize(name), path: path, key: key, example: upstream.Redact(u.String())}
		}
	}
	return l, l.path != ""
}

// linkName is the collection a link field names (comments_url: comments).
func linkName(field string) (string, bool) {
	lower := strings.ToLower(field)
	for _, suffix := range []string{"_url", "_href", "_link", "url", "href"} {
		if n := strings.TrimSuffix(lower, suffix); n != lower && n != "" && n != "html" && n != "self" {
			return strings.TrimSuffix(n, "_"), true
		}
	}
	return "", false
}

// templatePath replaces the segments of path that hold one of rec's values
// by {parent.field}. ok is false when none does: nothing varies per parent.
func templatePath(path string, rec map[string]any, idField string) (string, string, bool) {
	fields := keyFields(rec, idField)
	key := ""
	for _, f := range fields { // a value spanning segments first: GitHub's full_name "octo/hello"
		if t, ok := scalarText(rec[f]); ok && strings.Contains(t, "/") && strings.Contains(path+"/", "/"+t+"/") {
			path = strings.TrimSuffix(strings.Replace(path+"/", "/"+t+"/", "/{parent."+f+"}/", 1), "/")
			key = f
		}
	}
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		val, err := url.PathUnescape(seg)
		if err != nil || val == "" {
			continue
		}
		for _, f := range fields {
			if t, ok := scalarText(rec[f]); ok && t == val {
				segs[i] = "{parent." + f + "}"
				key = cmp.Or(key, f)
				break
			}
		}
	}
	return strings.Join(segs, "/"), key, key != ""
}

// keyFields are rec's top-level fields that may name it in a URL, its id first.
func keyFields(rec map[string]any, idField string) []string {
	var out []string
	for f := range rec {
		if _, idLike := idScore(f, ""); (idLike || slices.Contains(keyNames, strings.ToLower(f))) && f != idField {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	if _, ok := rec[idField]; ok {
		out = append([]string{idField}, out...)
	}
	return out
}

// sharedIDFields are top-level *_id fields (not the record id) whose value
// repeats across the first page: many records to one parent.
func (s *session) sharedIDFields(n int) []string {
	if len(s.recs1) < 2 {
		return nil
	}
	var out []string
	for _, f := range keyFields(s.recs1[0], s.id) {
		lower := strings.ToLower(f)
		if !strings.HasSuffix(lower, "_id") && !strings.HasSuffix(f, "Id") || f == s.id || len(out) == n {
			continue
		}
		vals := make([]string, 0, len(s.recs1))
		for _, r := range s.recs1 {
			if t, ok := scalarText(r[f]); ok {
				vals = append(vals, t)
			}
		}
		if len(vals) == len(s.recs1) && !distinct(vals) {
			out = append(out, f)
		}
	}
	return out
}

func plural(s string) string {
	switch {
	case strings.HasSuffix(s, "y") && !strings.HasSuffix(s, "ey"):
		return strings.TrimSuffix(s, "y") + "ies"
	case strings.HasSuffix(s, "s"):
		return s + "es"
	}
	return s + "s"
}
