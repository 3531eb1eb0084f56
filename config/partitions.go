package config

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/tidemark/tidemark"
)

// Placeholders in a partitioned resource's path.
const (
	// PlaceholderPartition is the partition's name: a value of partitions,
	// or the parent's parent.key.
	PlaceholderPartition = "partition"
	// PlaceholderParent prefixes a dotted field of the parent record.
	PlaceholderParent = "parent."
)

// Placeholders lists the {name}s of a template in order, or an error naming
// a brace that does not close or a name that is empty.
func Placeholders(tmpl string) ([]string, error) {
	var names []string
	for rest := tmpl; ; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			if strings.IndexByte(rest, '}') >= 0 {
				return nil, fmt.Errorf("%q has a } without a {", tmpl)
			}
			return names, nil
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%q has a { without a }", tmpl)
		}
		name := rest[open+1 : open+end]
		if name == "" || strings.ContainsAny(name, "{ ") {
			return nil, fmt.Errorf("%q has an invalid placeholder {%s}", tmpl, name)
		}
		names = append(names, name)
		rest = rest[open+end+1:]
	}
}

// partitioning checks a resource's parent or partitions against its source:
// the parent exists, is not the resource itself or one of its descendants,
// and the path names only what the partition provides.
func (c *checker) partitioning(rp string, s *Source, r *Resource) {
	names, err := Placeholders(r.Path)
	if err != nil {
		c.report(join(rp, "path"), "%v", err)
	}
	bodyNames := BodyPartitionPlaceholders(r.Body)
	switch {
	case r.Parent != nil && len(r.Partitions) > 0:
		c.report(join(rp, "partitions"), "not with parent: a resource is read per parent record or per listed partition, not both")
	case r.Parent != nil:
		c.parent(join(rp, "parent"), s, r)
	case len(r.Partitions) > 0:
		seen := map[string]bool{}
		for i, p := range r.Partitions {
			switch {
			case p == "":
				c.report(index(join(rp, "partitions"), i), "empty partition")
			case seen[p]:
				c.report(index(join(rp, "partitions"), i), "duplicate partition %q", p)
			}
			seen[p] = true
		}
	}
	for _, n := range names {
		c.placeholder(join(rp, "path"), r, n)
	}
	for _, n := range bodyNames {
		c.placeholder(join(rp, "body"), r, n)
	}
	if r.Partitioned() && len(names)+len(bodyNames) == 0 && err == nil {
		c.report(join(rp, "path"), "%q names no {partition} or {parent.FIELD}, nor does the body: every partition would read the same collection", r.Path)
	}
	if r.Partitioned() && r.Probe.Strategy != tidemark.ProbeNone {
		c.report(join(join(rp, "probe"), "strategy"), "must be none for a partitioned resource: one probe cannot watch every partition (the parent's changes start the child's reads)")
	}
}

// placeholder checks a {name} of a partitioned request's path or body:
// what the partition provides.
func (c *checker) placeholder(at string, r *Resource, n string) {
	switch {
	case strings.HasPrefix(n, PlaceholderParent) && r.Parent == nil:
		c.report(at, "{%s} needs a parent (parent.resource)", n)
	case strings.HasPrefix(n, PlaceholderParent):
		c.dotted(at, strings.TrimPrefix(n, PlaceholderParent))
	case n == PlaceholderPartition && !r.Partitioned():
		c.report(at, "{partition} needs parent or partitions")
	case n != PlaceholderPartition:
		c.report(at, "unknown placeholder {%s} (want {partition} or {parent.FIELD})", n)
	}
}

// parent checks parent: in the same source, not a cycle.
func (c *checker) parent(pp string, s *Source, r *Resource) {
	pa := r.Parent
	if pa.Resource == "" {
		c.report(join(pp, "resource"), "required")
		return
	}
	if pa.Resource == r.Name {
		c.report(join(pp, "resource"), "%q is this resource: a resource cannot be its own parent", pa.Resource)
		return
	}
	if s.Resource(pa.Resource) == nil {
		c.report(join(pp, "resource"), "no resource %q in source %q (a parent is in the same source)", pa.Resource, s.Name)
		return
	}
	c.dotted(join(pp, "key"), pa.Key)
	chain := []string{r.Name}
	for up := s.Resource(pa.Resource); up != nil; {
		chain = append(chain, up.Name)
		if up.Name == r.Name {
			c.report(join(pp, "resource"), "parents form a cycle: %s", strings.Join(chain, " → "))
			return
		}
		if up.Parent == nil || len(chain) > len(s.Resources) {
			return
		}
		up = s.Resource(up.Parent.Resource)
	}
}

// wholeURL reports a child's path that is one {parent.FIELD} alone: the
// parent's field holds the URL to read, on the source's base_url.
func wholeURL(r *Resource) bool {
	names, err := Placeholders(r.Path)
	return err == nil && r.Parent != nil && len(names) == 1 && r.Path == "{"+names[0]+"}" && strings.HasPrefix(names[0], PlaceholderParent)
}

// bodyPlaceholder matches the partition's placeholders in a POST body's
// strings. Not Placeholders: a GraphQL query's own braces are no
// placeholders, so only these two forms are looked for.
var bodyPlaceholder = regexp.MustCompile(`\{(partition|parent\.[^{}\s]+)\}`)

// BodyPartitionPlaceholders lists the {partition} and {parent.FIELD}
// placeholders in a body template's strings, each once.
func BodyPartitionPlaceholders(b Body) []string {
	seen := map[string]bool{}
	var names []string
	b.eachString(func(s string) {
		for _, m := range bodyPlaceholder.FindAllStringSubmatch(s, -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				names = append(names, m[1])
			}
		}
	})
	return names
}
