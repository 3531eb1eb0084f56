package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/invopop/jsonschema"
)

// SchemaID is the $id of the config's JSON Schema.
const SchemaID = "https://github.com/tidemark/tidemark/docs/tidemark.schema.json"

// Patterns of the schema. They are RE2 and ECMA-262 alike, so both Go
// validators and editors read them the same way.
const (
	// envRef is a ${VAR} or ${VAR:-default} reference, expanded on load.
	envRef            = `\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}`
	durationPattern   = `^(?:0|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+|.*` + envRef + `.*)$`
	byteSizePattern   = `^(?: *[0-9][0-9_]* *(?:B|KB|kB|MB|GB|TB|KiB|MiB|GiB|TiB)? *|.*` + envRef + `.*)$`
	schemaNamePattern = `^(?:[a-z0-9_]+|.*` + envRef + `.*)$`
)

// Schema returns the JSON Schema (draft 2020-12) of the config file, indented,
// as `tidemark config schema` prints it and docs/tidemark.schema.json holds
// it. It is reflected from the same types Load decodes into: unknown keys
// are rejected (additionalProperties false), enumerated keys list their
// values, durations and byte sizes are strings with patterns, and every
// property carries its field's doc comment as description.
func Schema() ([]byte, error) { return schema(fieldDocs) }

func schema(docs map[string]string) ([]byte, error) {
	r := &jsonschema.Reflector{
		FieldNameTag:               "yaml",
		RequiredFromJSONSchemaTags: true, // required comes from meta below
		ExpandedStruct:             true,
		Mapper:                     mapType,
		LookupComment: func(t reflect.Type, field string) string {
			if field == "" {
				return docs[t.Name()]
			}
			return docs[t.Name()+"."+field]
		},
	}
	s := r.Reflect(&Config{})
	s.ID = SchemaID
	s.Title = "tidemark configuration (tidemark.yaml)"
	s.Description = docs["Config"] + " Reference: docs/config.md."

	def := func(typ string) (*jsonschema.Schema, error) {
		if typ == "Config" {
			return s, nil
		}
		d, ok := s.Definitions[typ]
		if !ok {
			return nil, fmt.Errorf("config schema: no definition for %s", typ)
		}
		return d, nil
	}
	for _, k := range keys(docs) {
		typ, _, _ := strings.Cut(k.Field, ".")
		d, err := def(typ)
		if err != nil {
			return nil, err
		}
		name := lastKey(k.Path)
		p, ok := d.Properties.Get(name)
		if !ok {
			return nil, fmt.Errorf("config schema: no property %s in %s", name, typ)
		}
		if strings.HasPrefix(k.Required, "yes") {
			d.Required = append(d.Required, name)
		}
		d.Properties.Set(name, refine(k, p))
	}
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("config schema: %w", err)
	}
	return append(out, '\n'), nil
}

// refine adds to a reflected property what validation knows and reflection
// does not: allowed values, patterns and lower bounds.
func refine(k Key, p *jsonschema.Schema) *jsonschema.Schema {
	switch k.Field {
	case "Probe.Method":
		// Load upper-cases the method.
		p.Enum = []any{"GET", "HEAD", "get", "head"}
	case "Resource.Method":
		p.Enum = []any{"GET", "POST", "get", "post"}
	case "Resource.FieldTypes":
		p.AdditionalProperties.Enum = strs(k.Allowed)
	case "Webhook.Events":
		p.Items.Enum = strs(k.Allowed)
		p.UniqueItems = true
	case "Source.Name", "Resource.Name":
		p.Pattern = schemaNamePattern
	case "Source.BaseURL", "Webhook.URL":
		p.Pattern = `^(?:https?://|.*` + envRef + `)`
	case "Resource.Path", "Probe.Path":
		// A child's path may be one {parent.FIELD} holding a URL (wholeURL).
		p.Pattern = `^(?:/|\{parent\.[^{}]+\}$|.*` + envRef + `)`
	case "FullSync.DeleteAfterReads":
		p.Enum = []any{1, 2}
	case "Config.Sources", "Source.Resources":
		one := uint64(1)
		p.MinItems = &one
	default:
		if len(k.Allowed) > 0 {
			p.Enum = strs(k.Allowed)
		}
	}
	switch p.Type {
	case "integer":
		if strings.HasPrefix(k.Rule, positive) {
			p.Minimum = "1"
		} else if strings.HasPrefix(k.Rule, ">= 0") {
			p.Minimum = "0"
		}
		return withEnvRef(p)
	case "number":
		if strings.HasPrefix(k.Rule, "> 0 and <= 1") {
			p.ExclusiveMinimum = "0"
			p.Maximum = "1"
		}
		return withEnvRef(p)
	case "boolean":
		return withEnvRef(p)
	}
	return p
}

// withEnvRef lets a number or boolean be written as a ${VAR} reference.
func withEnvRef(p *jsonschema.Schema) *jsonschema.Schema {
	desc := p.Description
	p.Description = ""
	return &jsonschema.Schema{
		Description: desc,
		AnyOf:       []*jsonschema.Schema{p, {Type: "string", Pattern: "^.*" + envRef + ".*$"}},
	}
}

func strs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func mapType(t reflect.Type) *jsonschema.Schema {
	switch t {
	case durationType:
		return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{
			{Type: "string", Pattern: durationPattern, Examples: []any{"10s", "1m30s", "24h"}},
			{Type: "integer", Const: 0},
		}}
	case bodyType:
		return &jsonschema.Schema{Type: "object"}
	case byteSizeType:
		return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{
			{Type: "string", Pattern: byteSizePattern, Examples: []any{"64MiB", "512KB"}},
			{Type: "integer", Minimum: "0"},
		}}
	}
	return nil
}
