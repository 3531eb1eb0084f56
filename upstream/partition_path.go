package upstream

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/tidemark/tidemark/config"
)

// PartitionPath expands the {name}s of a partitioned resource's path with
// values (name → text: "partition", "parent.FIELD"). A value is escaped
// for where it lands, a path segment (url.PathEscape: a "/" stays inside
// its segment) or a query value (url.QueryEscape), so that no value can
// change the host, add a segment, start the query or a fragment; one that
// would make a segment "." or ".." (climbing out of the path) or an empty
// one is refused.
//
// A path that is one {parent.FIELD} alone takes an absolute URL on the
// source's own base_url, as the upstream hands them out (GitHub's
// comments_url), and uses it as it is; any other value there is refused.
func PartitionPath(c *Client, tmpl string, values map[string]string) (string, error) {
	names, err := config.Placeholders(tmpl)
	if err != nil {
		return "", err
	}
	if len(names) == 1 && tmpl == "{"+names[0]+"}" {
		return ownURL(c, names[0], values[names[0]])
	}
	pathTmpl, queryTmpl, hasQuery := strings.Cut(tmpl, "?")
	path, err := expand(pathTmpl, values, url.PathEscape)
	if err != nil {
		return "", err
	}
	if err := climbs(path); err != nil {
		return "", fmt.Errorf("path %q: a partition's value: %w", tmpl, err)
	}
	if !hasQuery {
		return path, nil
	}
	query, err := expand(queryTmpl, values, url.QueryEscape)
	return path + "?" + query, err
}

// expand replaces each {name} in tmpl by escape(values[name]).
func expand(tmpl string, values map[string]string, escape func(string) string) (string, error) {
	var b strings.Builder
	for rest := tmpl; ; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		end := open + strings.IndexByte(rest[open:], '}')
		name := rest[open+1 : end]
		v, ok := values[name]
		if !ok || v == "" {
			return "", fmt.Errorf("path %q: no value for {%s}", tmpl, name)
		}
		b.WriteString(rest[:open])
		b.WriteString(escape(v))
		rest = rest[end+1:]
	}
}

// ownURL is a path that is one value alone: an absolute URL on the
// source's base_url, which becomes the path (and query) after it.
func ownURL(c *Client, name, v string) (string, error) {
	base := strings.TrimSuffix(c.base.String(), "/")
	rest, ok := strings.CutPrefix(v, base+"/")
	if !ok {
		return "", fmt.Errorf("{%s}: %q is not a URL on the source's base_url", name, redact(v))
	}
	u, err := url.Parse("/" + rest)
	if err != nil || u.Host != "" || u.Fragment != "" {
		return "", fmt.Errorf("{%s}: %q is not a URL on the source's base_url", name, redact(v))
	}
	if err := climbs(u.EscapedPath()); err != nil {
		return "", fmt.Errorf("{%s}: %q: %w", name, redact(v), err)
	}
	return "/" + rest, nil
}

// climbs refuses a path with a segment "." or ".." (escaped or not).
func climbs(path string) error {
	for seg := range strings.SplitSeq(path, "/") {
		if s, err := url.PathUnescape(seg); err == nil && (s == "." || s == "..") || seg == "." || seg == ".." {
			return fmt.Errorf("the segment %q would climb out of the path", seg)
		}
	}
	return nil
}
