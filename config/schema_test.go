package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// compileSchema compiles the committed docs/tidemark.schema.json, the file
// editors use (TestGenerated proves it equals Schema()).
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(mustSchema(t)))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return s
}

func mustSchema(t *testing.T) []byte {
	t.Helper()
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// yamlToJSON converts a YAML document to the JSON value the schema sees.
func yamlToJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestSchemaValidatesExamples(t *testing.T) {
	t.Parallel()
	s := compileSchema(t)
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			if _, err := Load(f); err != nil {
				t.Fatalf("config check: %v", err)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(yamlToJSON(t, data)); err != nil {
				t.Errorf("schema rejects %s: %v", f, err)
			}
		})
	}
}

const schemaBase = `
sources:
  - name: shop
    base_url: https://api.example.com
    resources:
      - name: orders
        path: /orders
        records: {path: data, id: id}
`

func TestSchemaRejects(t *testing.T) {
	t.Parallel()
	s := compileSchema(t)
	if err := s.Validate(yamlToJSON(t, []byte(schemaBase))); err != nil {
		t.Fatalf("base config rejected: %v", err)
	}
	tests := []struct {
		name string
		from string
		to   string
		want string // in the validation error
	}{
		{"unknown top-level key", "sources:", "source:\n  - x\nsources:", "source"},
		{"unknown resource key", "path: /orders", "path: /orders\n        pagnation: {style: page}", "pagnation"},
		{"unknown style", "records: {path: data, id: id}", "records: {path: data, id: id}\n        pagination: {style: pages}", "pagination/style"},
		{"bad duration", "records: {path: data, id: id}", "records: {path: data, id: id}\n        freshness: 5 minutes", "5 minutes"},
		{"bad byte size", "base_url: https://api.example.com", "base_url: https://api.example.com\n    max_body: 64 megs", "64 megs"},
		{"zero concurrency", "base_url: https://api.example.com", "base_url: https://api.example.com\n    max_concurrency: 0", "max_concurrency"},
		{"missing id", "{path: data, id: id}", "{path: data}", "id"},
		{"bad name", "name: shop", "name: Shop", "Shop"},
		{"relative path", "path: /orders", "path: orders", "orders"},
		{"unknown auth type", "base_url: https://api.example.com", "base_url: https://api.example.com\n    auth: {type: oauth, token_env: T}", "auth/type"},
		{"unknown event", "sources:", "webhooks: [{url: https://h.example.com, events: [data.changed]}]\nsources:", "events/0"},
		{"secret in auth", "base_url: https://api.example.com", "base_url: https://api.example.com\n    auth: {type: bearer, token: abc}", "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bad := strings.Replace(schemaBase, tt.from, tt.to, 1)
			if bad == schemaBase {
				t.Fatalf("%q not in the base config", tt.from)
			}
			err := s.Validate(yamlToJSON(t, []byte(bad)))
			if err == nil {
				t.Fatalf("schema accepts:\n%s", bad)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not mention %q:\n%v", tt.want, err)
			}
			// The loader must reject it too: the schema is no stricter here.
			if _, err := parse("t.yaml", []byte(bad), env(nil)); err == nil {
				t.Errorf("loader accepts what the schema rejects:\n%s", bad)
			}
		})
	}
}

// TestSchemaAcceptsWhatLoadAccepts covers the values the loader takes that a
// naive schema would refuse.
func TestSchemaAcceptsWhatLoadAccepts(t *testing.T) {
	t.Parallel()
	s := compileSchema(t)
	tests := []struct{ name, from, to string }{
		{"env reference in a number", "base_url: https://api.example.com", "base_url: https://api.example.com\n    max_concurrency: ${CONC:-4}"},
		{"plain byte count", "base_url: https://api.example.com", "base_url: https://api.example.com\n    max_body: 1048576"},
		{"zero overlap", "records: {path: data, id: id}", "records: {path: data, id: id}\n        delta: {param: since, field: updated_at, overlap: 0}"},
		{"lower-case method", "records: {path: data, id: id}", "records: {path: data, id: id}\n        probe: {strategy: etag, method: head}"},
		{"compound duration", "records: {path: data, id: id}", "records: {path: data, id: id}\n        freshness: 1h30m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			good := strings.Replace(schemaBase, tt.from, tt.to, 1)
			if _, err := parse("t.yaml", []byte(good), env(map[string]string{})); err != nil {
				t.Fatalf("loader rejects:\n%v", err)
			}
			if err := s.Validate(yamlToJSON(t, []byte(good))); err != nil {
				t.Errorf("schema rejects what the loader accepts: %v", err)
			}
		})
	}
}

// TestSchemaEnums proves the enumerations of reference.go (and so of the
// schema and docs/config.md) are exactly what validation accepts.
func TestSchemaEnums(t *testing.T) {
	t.Parallel()
	at := map[string]struct{ key, tmpl string }{
		"Auth.Type":             {"auth.type", "    auth: {type: %s, token_env: T, username_env: U, password_env: P, header: X-Key}\n"},
		"Auth.GrantType":        {"auth.grant_type", "    auth: {type: oauth2, grant_type: %s, token_url: https://a.example/t, client_id_env: I}\n"},
		"Auth.AuthStyle":        {"auth.auth_style", "    auth: {type: oauth2, auth_style: %s, token_url: https://a.example/t, client_id_env: I}\n"},
		"Resource.Priority":     {"priority", "        priority: %s\n"},
		"Pagination.Style":      {"pagination.style", "        pagination: {style: %s}\n"},
		"Probe.Strategy":        {"probe.strategy", "        probe: {strategy: %s}\n"},
		"Probe.Method":          {"probe.method", "        probe: {method: %s}\n"},
		"Resource.Method":       {"method", "        method: %s\n"},
		"Pagination.CursorFrom": {"pagination.cursor_from", "        pagination: {style: cursor, cursor_from: %s}\n"},
		"Delta.Format":          {"delta.format", "        delta: {param: p, field: f, format: %s}\n"},
		"Webhook.Events":        {"events[0]", "webhooks: [{url: https://h.example.com, events: [%s]}]\n"},

		"Source.RateLimitHeaders": {"rate_limit_headers", "    rate_limit_headers: %s\n"},
		"Resource.FieldTypes":     {"field_types.a", "        field_types: {a: %s}\n"},
		"Audit.InitialLoad":       {"audit.initial_load", "        audit: {initial_load: %s}\n"},
	}
	for id, values := range enums {
		where, ok := at[id]
		if !ok {
			t.Errorf("no case for enum %s", id)
			continue
		}
		for _, v := range append(slices.Clone(values), "bogus") {
			cfg := schemaBase
			line := strings.ReplaceAll(where.tmpl, "%s", v)
			switch {
			case strings.HasPrefix(line, "webhooks"):
				cfg = line + cfg
			case strings.HasPrefix(line, "    auth"), strings.HasPrefix(line, "    rate_limit_headers"):
				cfg = strings.Replace(cfg, "    resources:\n", line+"    resources:\n", 1)
			default:
				cfg += line
			}
			_, err := parse("t.yaml", []byte(cfg), env(nil))
			hit := false
			for _, p := range problems(t, err) {
				if strings.HasSuffix(p.Field, where.key) && strings.Contains(p.Msg, "unknown") {
					hit = true
				}
			}
			if hit != (v == "bogus") {
				t.Errorf("%s = %q: validation says unknown=%v, enums says %v", id, v, hit, v == "bogus")
			}
		}
	}
}
