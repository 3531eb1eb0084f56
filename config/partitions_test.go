package config

import (
	"strings"
	"testing"
)

// child appends a resource c to minimalWith's source (resource r), its keys
// given as YAML lines under it.
func child(keys string) string {
	var b strings.Builder
	b.WriteString(minimalWith(0, ""))
	b.WriteString("      - name: c\n        records: {id: id}\n")
	for line := range strings.Lines(keys) {
		b.WriteString("        " + line)
	}
	return b.String() + "\n"
}

func TestPartitionValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []string // "line: field: message", one per problem
	}{
		{"parent", child("path: /r/{parent.id}/c\nparent: {resource: r}"), nil},
		{"parent with key and whole URL", child("path: \"{parent.links.self}\"\nparent: {resource: r, key: name, changed_only: true, delete_with_parent: false}"), nil},
		{"static partitions", child("path: /accounts/{partition}/c?region={partition}\npartitions: [eu, us]"), nil},
		{"parent and partitions", child("path: /c/{partition}\nparent: {resource: r}\npartitions: [a]"),
			[]string{"sources[0].resources[1].partitions: not with parent"}},
		{"parent required", child("path: /c/{partition}\nparent: {key: id}"),
			[]string{"sources[0].resources[1].parent.resource: required"}},
		{"parent unknown", child("path: /c/{partition}\nparent: {resource: nope}"),
			[]string{`sources[0].resources[1].parent.resource: no resource "nope" in source "s" (a parent is in the same source)`}},
		{"parent itself", child("path: /c/{partition}\nparent: {resource: c}"),
			[]string{`sources[0].resources[1].parent.resource: "c" is this resource: a resource cannot be its own parent`}},
		{"cycle", strings.Replace(child("path: /c/{partition}\nparent: {resource: r}"), "        path: /r\n",
			"        path: /r/{partition}\n        parent: {resource: c}\n", 1),
			[]string{"sources[0].resources[0].parent.resource: parents form a cycle: r → c → r",
				"sources[0].resources[1].parent.resource: parents form a cycle: c → r → c"}},
		{"placeholder without parent", child("path: /c/{parent.id}"),
			[]string{"sources[0].resources[1].path: {parent.id} needs a parent (parent.resource)"}},
		{"partition without partitions", child("path: /c/{partition}"),
			[]string{"sources[0].resources[1].path: {partition} needs parent or partitions"}},
		{"unknown placeholder", child("path: /c/{partition}/{cursor}\npartitions: [a]"),
			[]string{"sources[0].resources[1].path: unknown placeholder {cursor} (want {partition} or {parent.FIELD})"}},
		{"unclosed brace", child("path: /c/{partition\npartitions: [a]"),
			[]string{`sources[0].resources[1].path: "/c/{partition" has a { without a }`}},
		{"no placeholder", child("path: /c\npartitions: [a]"),
			[]string{`sources[0].resources[1].path: "/c" names no {partition} or {parent.FIELD}`}},
		{"partition in a POST body", child("path: /search\nmethod: POST\nbody: {account: \"{parent.id}\", query: \"{ items { id } }\"}\nparent: {resource: r}"), nil},
		{"parent field in a body without parent", child("path: /search/{partition}\npartitions: [a]\nmethod: POST\nbody: {q: \"{parent.id}\"}"),
			[]string{"sources[0].resources[1].body: {parent.id} needs a parent (parent.resource)"}},
		{"partition in a body without partitions", child("path: /search\nmethod: POST\nbody: {q: \"{partition}\"}"),
			[]string{"sources[0].resources[1].body: {partition} needs parent or partitions"}},
		{"duplicate partition", child("path: /c/{partition}\npartitions: [a, a, \"\"]"),
			[]string{`sources[0].resources[1].partitions[1]: duplicate partition "a"`, "sources[0].resources[1].partitions[2]: empty partition"}},
		{"probe", child("path: /c/{partition}\npartitions: [a]\nprobe: {strategy: etag}"),
			[]string{"sources[0].resources[1].probe.strategy: must be none for a partitioned resource"}},
		{"whole URL without parent", child("path: \"{partition}\"\npartitions: [a]"),
			[]string{`sources[0].resources[1].path: "{partition}" must start with /`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse("t.yaml", []byte(tt.doc), env(nil))
			got := problems(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v\n--- config:\n%s", len(got), len(tt.want), err, tt.doc)
			}
			for i, w := range tt.want {
				if s := got[i].String(); !strings.Contains(s, ": "+w) {
					t.Errorf("problem %d = %q, want %q", i, s, w)
				}
			}
		})
	}
}

func TestPartitionDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := parse("t.yaml", []byte(child("path: /r/{parent.id}/c\nparent: {resource: r}")), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	pa := cfg.Sources[0].Resources[1].Parent
	if pa.Key != "id" || pa.DeleteWithParent == nil || !*pa.DeleteWithParent || pa.ChangedOnly {
		t.Errorf("parent defaults: key %q, delete_with_parent %v, changed_only %v; want id, true, false", pa.Key, pa.DeleteWithParent, pa.ChangedOnly)
	}
}

func TestPlaceholders(t *testing.T) {
	t.Parallel()
	got, err := Placeholders("/repos/{parent.owner.login}/{parent.name}/issues?x={partition}")
	if err != nil || strings.Join(got, ",") != "parent.owner.login,parent.name,partition" {
		t.Errorf("Placeholders = %v, %v", got, err)
	}
	for _, bad := range []string{"/a/{", "/a/}", "/a/{}", "/a/{b c}", "/a/{b{c}"} {
		if _, err := Placeholders(bad); err == nil {
			t.Errorf("Placeholders(%q): no error", bad)
		}
	}
}
