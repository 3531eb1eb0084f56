package config

import (
	"cmp"
	"slices"
	"strings"
)

// MaxIdentifier is the longest Postgres identifier in bytes (NAMEDATALEN-1):
// a longer one is silently cut short, which could make two views or
// columns one.
const MaxIdentifier = 63

// ViewColumns are the columns every view has besides its fields, in order;
// a field or record key of the same name gets no column of its own.
var ViewColumns = []string{"external_id", "synced_at", "deleted", "payload"}

// SchemaName is the schema of the views: Schema, or its default.
func (v Views) SchemaName() string { return cmp.Or(v.Schema, defaultViewsSchema) }

// views checks the views section and what each resource's view will be
// called: views are made for every resource, so a name Postgres cannot
// hold is a config error rather than a failed migrate.
func (c *checker) views(cfg *Config) {
	sp := "views.schema"
	switch s := cfg.Views.Schema; {
	case s == "": // the default, for a config built in code without SetDefaults
	case !namePattern.MatchString(s):
		c.report(sp, "schema name %q must match [a-z0-9_]+", s)
	case len(s) > MaxIdentifier:
		c.report(sp, "schema name %q is %d bytes; Postgres names hold %d", s, len(s), MaxIdentifier)
	case strings.HasPrefix(s, "pg_") || s == "information_schema":
		c.report(sp, "%q is a Postgres system schema: name one of your own", s)
	}
	// first maps a view name to where it was first used and by what
	// source/resource: the same pair twice is a duplicate name, reported as such.
	type use struct{ path, key string }
	first := map[string]use{}
	for i := range cfg.Sources {
		src := &cfg.Sources[i]
		for j := range src.Resources {
			res := &src.Resources[j]
			rp := index(join(index("sources", i), "resources"), j)
			if src.Name == "" || res.Name == "" {
				continue // reported as required
			}
			view := ViewName(src.Name, res.Name)
			np := join(rp, "name")
			if len(view) > MaxIdentifier {
				c.report(np, "its view name %s is %d bytes; Postgres names hold %d: shorten the source or resource name", view, len(view), MaxIdentifier)
			} else if at, dup := first[view]; !dup {
				first[view] = use{np, src.Name + "/" + res.Name}
			} else if at.key != src.Name+"/"+res.Name {
				c.report(np, "its view name %s is also that of %s at line %d ({source}_{resource}): rename one", view, at.key, c.lineOf(at.path))
			}
			c.viewFields(rp, res)
		}
	}
}

// viewFields checks the names of fields and field_types as view columns.
func (c *checker) viewFields(rp string, res *Resource) {
	for _, k := range sortedKeys(res.Fields) {
		if len(k) > MaxIdentifier {
			c.report(join(join(rp, "fields"), k), "field name is %d bytes; a view column name holds %d", len(k), MaxIdentifier)
		}
	}
	for _, k := range sortedKeys(res.FieldTypes) {
		fp := join(join(rp, "field_types"), k)
		switch t := res.FieldTypes[k]; {
		case !slices.Contains(ViewTypes, t):
			c.report(fp, "unknown type %q: want %s", t, choices(ViewTypes...))
		case len(res.Fields) > 0 && !hasKey(res.Fields, k):
			c.report(fp, "%q is not a name in fields%s", k, suggestion(k, sortedKeys(res.Fields)))
		case slices.Contains(ViewColumns, k):
			c.report(fp, "%q is a column every view has (%s): it takes no type", k, strings.Join(ViewColumns, ", "))
		case len(k) > MaxIdentifier:
			c.report(fp, "name is %d bytes; a view column name holds %d", len(k), MaxIdentifier)
		}
	}
}

func suggestion(name string, known []string) string {
	if s := Suggest(name, known); s != "" {
		return " (did you mean " + s + "?)"
	}
	return ""
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
