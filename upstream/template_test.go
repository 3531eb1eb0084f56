package upstream_test

import (
	"encoding/json"
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/upstream"
)

func TestRender(t *testing.T) {
	t.Parallel()
	tmpl := config.Body{
		"query": "{ products(query: \"updated_at:>'{since}'\") { nodes { id } } }",
		"variables": map[string]any{
			"after": "{cursor}", "first": "{limit}", "list": []any{"{cursor}", "x{cursor}y"},
			"other": "{unknown}", "n": json.Number("7"),
		},
	}
	tests := []struct {
		name string
		vars upstream.Vars
		want string
	}{
		{"first page: cursor null, limit a number", upstream.Vars{"cursor": nil, "limit": 50, "since": "2024-01-01T00:00:00Z"},
			`{"query":"{ products(query: \"updated_at:>'2024-01-01T00:00:00Z'\") { nodes { id } } }","variables":{"after":null,"first":50,"list":[null,"xy"],"n":7,"other":"{unknown}"}}`},
		{"a cursor", upstream.Vars{"cursor": "abc", "limit": 50, "since": ""},
			`{"query":"{ products(query: \"updated_at:>''\") { nodes { id } } }","variables":{"after":"abc","first":50,"list":["abc","xabcy"],"n":7,"other":"{unknown}"}}`},
		{"a hostile cursor stays one string", upstream.Vars{"cursor": `"},"x":{"y":"` + "\n\\", "limit": 1, "since": "{cursor}"},
			`{"query":"{ products(query: \"updated_at:>'{cursor}'\") { nodes { id } } }","variables":{"after":"\"},\"x\":{\"y\":\"\n\\","first":1,"list":["\"},\"x\":{\"y\":\"\n\\","x\"},\"x\":{\"y\":\"\n\\y"],"n":7,"other":"{unknown}"}}`},
		{"limit from a checkpoint (a float after JSON)", upstream.Vars{"cursor": nil, "limit": float64(100)},
			`{"query":"{ products(query: \"updated_at:>'{since}'\") { nodes { id } } }","variables":{"after":null,"first":100,"list":[null,"xy"],"n":7,"other":"{unknown}"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := upstream.Render(tmpl, tt.vars)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Render:\n got %s\nwant %s", got, tt.want)
			}
			var v map[string]any
			if err := json.Unmarshal(got, &v); err != nil || len(v) != 2 {
				t.Errorf("not one JSON object of two members: %v %v", v, err)
			}
		})
	}
}

// TestRenderAbsent: a value there is none of is null as a whole value and
// its stand-in inside text, and stays so through a checkpoint's JSON.
func TestRenderAbsent(t *testing.T) {
	t.Parallel()
	tmpl := config.Body{"since": "{since}", "q": "updated_at:>'{since}'"}
	vars := upstream.Vars{"since": upstream.Absent("1970-01-01T00:00:00Z")}
	b, _ := json.Marshal(vars)
	var back upstream.Vars
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]upstream.Vars{"fresh": vars, "from a checkpoint": back} {
		got, err := upstream.Render(tmpl, v)
		if want := `{"q":"updated_at:>'1970-01-01T00:00:00Z'","since":null}`; err != nil || string(got) != want {
			t.Errorf("%s: Render = %s, %v; want %s", name, got, err, want)
		}
	}
}
