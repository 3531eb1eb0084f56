package config

import (
	"strings"
	"testing"
)

func TestViewsConfig(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("r", 62) // s_ + 62 bytes: 64, one too many
	tests := []struct {
		name string
		yaml string
		want string // "" for valid; else "line: field: message" part
	}{
		{"default schema", minimalWith(0, ""), ""},
		{"declared types", minimalWith(8, "fields: {amount: price.cents, state: status}\nfield_types: {amount: numeric, state: text}"), ""},
		{"types without fields", minimalWith(8, "field_types: {created: timestamptz}"), ""},
		{"schema named", "views: {schema: mirror}\n" + minimalWith(0, ""), ""},
		{"bad schema", "views: {schema: Mirror}\n" + minimalWith(0, ""), `t.yaml:1: views.schema: schema name "Mirror" must match [a-z0-9_]+`},
		{"system schema", "views: {schema: pg_catalog}\n" + minimalWith(0, ""), `t.yaml:1: views.schema: "pg_catalog" is a Postgres system schema`},
		{"unknown type", minimalWith(8, "field_types: {amount: money}"),
			`t.yaml:8: sources[0].resources[0].field_types.amount: unknown type "money": want boolean | numeric | timestamptz | text | jsonb`},
		{"type of no field", minimalWith(8, "fields: {amount: price.cents}\nfield_types: {amont: numeric}"),
			`t.yaml:9: sources[0].resources[0].field_types.amont: "amont" is not a name in fields (did you mean amount?)`},
		{"type of a view column", minimalWith(8, "field_types: {deleted: boolean}"),
			`t.yaml:8: sources[0].resources[0].field_types.deleted: "deleted" is a column every view has`},
		{"field name too long", minimalWith(8, "fields: {"+strings.Repeat("f", 64)+": a}"),
			`t.yaml:8: sources[0].resources[0].fields.` + strings.Repeat("f", 64) + `: field name is 64 bytes; a view column name holds 63`},
		{"view name too long", strings.Replace(minimalWith(0, ""), "name: r", "name: "+long, 1),
			`t.yaml:5: sources[0].resources[0].name: its view name s_` + long + ` is 64 bytes; Postgres names hold 63: shorten the source or resource name`},
		{"view names collide", minimalWith(0, "") + "  - name: s_r\n    base_url: http://127.0.0.1:9000\n    resources:\n      - name: x\n        path: /x\n        records: {id: id}\n" +
			"  - name: s\n    base_url: http://127.0.0.1:9001\n    resources:\n      - {name: r_x, path: /y, records: {id: id}}\n",
			`sources[2].resources[0].name: its view name s_r_x is also that of s_r/x at line 11`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse("t.yaml", []byte(tt.yaml), env(nil))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v\nwant a problem containing %q\n--- config:\n%s", err, tt.want, tt.yaml)
			}
		})
	}
}
