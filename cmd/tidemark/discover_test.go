package main

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/demoapi"
)

func TestDiscoverCommand(t *testing.T) {
	t.Parallel()
	demo := httptest.NewServer(demoapi.New(demoapi.Options{Seed: 5, Records: 150}))
	t.Cleanup(demo.Close)
	locked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer supersecret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`[{"id":1},{"id":2}]`))
	}))
	t.Cleanup(locked.Close)
	challenged := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="things"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(challenged.Close)
	out := filepath.Join(t.TempDir(), "proposal.yaml")

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		out      []string
		errLines []string
	}{
		{name: "proposes a config, flags after the URL", args: []string{"discover", demo.URL + "/v1/ticket_sales", "--source", "box", "--max-requests", "8"},
			code: 0, out: []string{`name: "box"`, "style: cursor", "strategy: etag", `param: "updated_since"`}},
		{name: "writes --out", args: []string{"discover", "--out", out, demo.URL + "/settlements"}, code: 0, errLines: []string{"wrote " + out}},
		{name: "token from --auth-env, never printed", env: map[string]string{"TOK": "supersecret"},
			args: []string{"discover", "--auth-env", "TOK", locked.URL + "/things"}, code: 0, out: []string{`token_env: "TOK"`}},
		{name: "401 without a token", args: []string{"discover", locked.URL + "/things"}, code: 1,
			errLines: []string{"HTTP 401 Unauthorized", "--auth-env"}},
		{name: "401 with a challenge prints the auth hint", args: []string{"discover", challenged.URL + "/things"}, code: 1,
			errLines: []string{`WWW-Authenticate: Bearer realm="things"`, `# auth: {type: bearer, token_env: "API_TOKEN"}`}},
		{name: "no URL", args: []string{"discover"}, code: 2, errLines: []string{"exactly one URL"}},
		{name: "two URLs", args: []string{"discover", demo.URL, demo.URL}, code: 2, errLines: []string{"exactly one URL"}},
		{name: "not http", args: []string{"discover", "ftp://example.com/x"}, code: 2, errLines: []string{"not an absolute http"}},
		{name: "bad budget", args: []string{"discover", "--max-requests", "0", demo.URL}, code: 2, errLines: []string{"at least 1"}},
		{name: "Authorization header refused", args: []string{"discover", "--header", "Authorization: Bearer x", demo.URL}, code: 2, errLines: []string{"--auth-env"}},
		{name: "bad header", args: []string{"discover", "--header", "novalue", demo.URL}, code: 2, errLines: []string{"want K:V"}},
		{name: "empty auth env", args: []string{"discover", "--auth-env", "NOPE", demo.URL}, code: 2, errLines: []string{"NOPE", "empty or unset"}},
		{name: "bad resource name", args: []string{"discover", "--resource", "Bad-Name", demo.URL}, code: 2, errLines: []string{"[a-z0-9_]+"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(t, tt.env, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.out {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.errLines {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stdout+stderr, "supersecret") {
				t.Errorf("the token was printed")
			}
			if strings.Contains(strings.Join(tt.args, " "), "--out") {
				if _, err := config.Load(out); err != nil {
					t.Errorf("--out file: %v", err)
				}
			}
			if code == 0 && stdout != "" {
				if _, err := config.Parse("stdout", []byte(stdout)); err != nil {
					t.Errorf("stdout does not parse: %v", err)
				}
			}
		})
	}
}
