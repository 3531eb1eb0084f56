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

	unsigned := filepath.Join(dir, "unsigned.yaml")
	os.WriteFile(unsigned, []byte(`sources:
  - name: shop
    base_url: http://127.0.0.1:9000
    resources:
      - {name: orders, path: /orders, records: {id: id}}
webhooks:
  - {url: http://127.0.0.1:9100/signed, secret_env: HOOK_SECRET}
  - {url: http://127.0.0.1:9100/unsigned}
`), 0o600)

	unsetVar := filepath.Join(dir, "unset.yaml")
	os.WriteFile(unsetVar, []byte(`sources:
  - name: shop
    base_url: ${TIDEMARK_TEST_NOPE_URL}
    resources:
      - {name: orders, path: /orders, records: {id: id}}
`), 0o600)

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		out      string
		errLines []string
	}{
		{name: "an unsigned webhook is valid, with a warning", args: []string{"config", "check", unsigned}, code: 0,
			out: "ok (1 sources, 1 resources)", errLines: []string{unsigned + ": warning: webhooks[1] has no secret_env: its deliveries are not signed"}},
		{name: "demo config is valid", args: []string{"config", "check", "../../examples/demo.yaml"}, code: 0,
			out: "ok (1 sources, 5 resources)"},
		{name: "every problem with its line and field", args: []string{"config", "check", bad}, code: 2, errLines: []string{
			bad + `:4: sources[0].timeout: invalid duration "10 seconds"`,
			bad + `:8: sources[0].resources[0].records.id: required`,
			bad + `:9: sources[0].resources[0].colour: unknown field`,
			bad + `:10: sources[0].resources[1].name: duplicate resource name "orders"`,
		}},
		{name: "an unset variable is named", args: []string{"config", "check", unsetVar}, code: 2, errLines: []string{
			unsetVar + ":3: environment variable TIDEMARK_TEST_NOPE_URL is not set (sources[0].base_url)",
		}},
		{name: "missing file", args: []string{"config", "check", filepath.Join(dir, "nope.yaml")}, code: 2, errLines: []string{"no such file"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, errLines: []string{`unknown command "frobnicate"`}},
		{name: "no command", args: nil, code: 2, errLines: []string{"no command given"}},
		{name: "bad flag", args: []string{"status", "--bogus"}, code: 2, errLines: []string{"flag provided but not defined: -bogus"}},
		{name: "sync wants SOURCE/RESOURCE", args: []string{"sync", "demo"}, code: 2, errLines: []string{`want SOURCE/RESOURCE, got "demo"`}},
		{name: "server refuses the demo token published beyond loopback (compose with TIDEMARK_PUBLISH_ADDR=0.0.0.0)",
			env:  map[string]string{"TIDEMARK_ADDR": "0.0.0.0:0", "TIDEMARK_ADMIN_TOKEN": "tidemark-demo-token", "TIDEMARK_PUBLISH_ADDR": "0.0.0.0"},
			args: []string{"server", "--config", "../../examples/demo.yaml", "--database-url", "postgres://127.0.0.1:1/x?connect_timeout=1"}, code: 2,
			errLines: []string{`refusing to serve the admin API published on 0.0.0.0 with the demo admin token "tidemark-demo-token"`}},
		{name: "TIDEMARK_SECRET_KEY must be 32 bytes, and is not quoted", env: map[string]string{"TIDEMARK_SECRET_KEY": "not-a-key-value"},
			args: []string{"worker", "--config", "../../examples/demo.yaml"}, code: 2,
			errLines: []string{"TIDEMARK_SECRET_KEY: want 32 random bytes as 64 hex digits (openssl rand -hex 32) or base64"}},
		{name: "TIDEMARK_TRUST_PROXY must be a boolean", env: map[string]string{"TIDEMARK_TRUST_PROXY": "maybe"},
			args: []string{"server", "--config", "../../examples/demo.yaml"}, code: 2, errLines: []string{`TIDEMARK_TRUST_PROXY="maybe": want true or false`}},
		{name: "server refuses a public address without a token", args: []string{"server", "--config", "../../examples/demo.yaml", "--addr", "0.0.0.0:0", "--database-url", "postgres://127.0.0.1:1/x?connect_timeout=1"}, code: 2,
			errLines: []string{"refusing to serve the admin API on 0.0.0.0:0 without TIDEMARK_ADMIN_TOKEN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runCmd(t, tt.env, tt.args...)
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
