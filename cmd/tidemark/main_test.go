package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code = run(context.Background(), args, getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`sources:
  - name: shop
    base_url: http://127.0.0.1:9000
    timeout: 10 seconds
    resources:
      - name: orders
        path: /orders
        records: {path: data}
        colour: blue
      - name: orders
        path: /orders2
        records: {id: id}
`), 0o600)

	tests := []struct {
		name     string
		args     []string
		code     int
		out      string
		errLines []string
	}{
		{name: "demo config is valid", args: []string{"config", "check", "../../examples/demo.yaml"}, code: 0,
			out: "ok (1 sources, 5 resources)"},
		{name: "every problem with its line and field", args: []string{"config", "check", bad}, code: 2, errLines: []string{
			bad + `:4: sources[0].timeout: invalid duration "10 seconds"`,
			bad + `:8: sources[0].resources[0].records.id: required`,
			bad + `:9: sources[0].resources[0].colour: unknown field`,
			bad + `:10: sources[0].resources[1].name: duplicate resource name "orders"`,
		}},
		{name: "missing file", args: []string{"config", "check", filepath.Join(dir, "nope.yaml")}, code: 2, errLines: []string{"no such file"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, errLines: []string{`unknown command "frobnicate"`}},
		{name: "no command", args: nil, code: 2, errLines: []string{"no command given"}},
		{name: "bad flag", args: []string{"status", "--bogus"}, code: 2, errLines: []string{"flag provided but not defined: -bogus"}},
		{name: "sync wants SOURCE/RESOURCE", args: []string{"sync", "demo"}, code: 2, errLines: []string{`want SOURCE/RESOURCE, got "demo"`}},
		{name: "server refuses a public address without a token", args: []string{"server", "--config", "../../examples/demo.yaml", "--addr", "0.0.0.0:0", "--database-url", "postgres://127.0.0.1:1/x?connect_timeout=1"}, code: 2,
			errLines: []string{"refusing to serve the admin API on 0.0.0.0:0 without TIDEMARK_ADMIN_TOKEN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(t, nil, tt.args...)
			if code != tt.code {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			if !strings.Contains(out, tt.out) {
				t.Errorf("stdout %q, want it to contain %q", out, tt.out)
			}
			for _, l := range tt.errLines {
				if !strings.Contains(errOut, l) {
					t.Errorf("stderr lacks %q:\n%s", l, errOut)
				}
			}
		})
	}
}
