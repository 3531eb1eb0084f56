package discover_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/discover"
)

// parsed checks a proposal is a config the loader accepts (hints commented
// out) and returns its YAML.
func parsed(t *testing.T, res *discover.Result) string {
	t.Helper()
	yaml := res.YAML()
	if _, err := config.Parse("p.yaml", yaml); err != nil {
		t.Fatalf("proposal does not parse: %v\n%s", err, yaml)
	}
	return string(yaml)
}

func wantLines(t *testing.T, yaml string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(yaml, l) {
			t.Errorf("YAML lacks %q:\n%s", l, yaml)
		}
	}
}

// TestAuthHints: a 401's WWW-Authenticate challenge becomes the auth to
// configure, read from RFC 9728 / RFC 8414 metadata where the challenge
// points at it, with the header shown and the token never.
func TestAuthHints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		challenge func(base string) string
		token     string
		want      func(base string) []string
		requests  int // when set, the requests discovery may send
	}{
		{name: "RFC 9728 resource metadata, expired token echoed", token: "s3cret",
			challenge: func(base string) string {
				return `Bearer realm="api", error="invalid_token", error_description="token s3cret expired", resource_metadata="` + base + `/.well-known/oauth-protected-resource"`
			},
			want: func(base string) []string {
				return []string{`# auth hint (high): WWW-Authenticate: Bearer realm="api", error="invalid_token"`,
					`# auth: {type: oauth2, grant_type: client_credentials, token_url: "` + base + `/tenant/token", client_id_env: "API_CLIENT_ID", client_secret_env: "API_CLIENT_SECRET", scopes: ["issues:read", "issues:write"]}`,
					"REDACTED"}
			}},
		{name: "authorization_uri (Azure AD style)",
			challenge: func(string) string {
				return `Bearer authorization_uri="https://login.example.com/tenant1/oauth2/authorize", error="invalid_token", scope="api.read"`
			},
			want: func(string) []string {
				return []string{"# auth hint (medium)", `token_url: "https://login.example.com/tenant1/oauth2/token"`, `scopes: ["api.read"]`}
			}},
		{name: "metadata over plain http on another host is not fetched",
			challenge: func(string) string {
				return `Bearer resource_metadata="http://127.0.0.2:9/.well-known/oauth-protected-resource"`
			},
			want: func(string) []string {
				return []string{"# auth hint (low)", `token_url: "https://TODO/token"`}
			}, requests: 1},
		{name: "plain bearer",
			challenge: func(string) string { return `Bearer realm="api"` },
			want: func(string) []string {
				return []string{`# auth: {type: bearer, token_env: "API_TOKEN"}`, "--auth-env API_TOKEN"}
			}},
		{name: "basic beside another challenge",
			challenge: func(string) string { return `Negotiate, Basic realm="files", charset="UTF-8"` },
			want: func(string) []string {
				return []string{`# auth: {type: basic, username_env: "API_USERNAME", password_env: "API_PASSWORD"}`}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var metaAuth []string
			var base string
			mux := http.NewServeMux()
			mux.HandleFunc("/.well-known/oauth-protected-resource", func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				metaAuth = append(metaAuth, r.Header.Get("Authorization"))
				mu.Unlock()
				json.NewEncoder(w).Encode(map[string]any{"resource": base + "/v1", "authorization_servers": []string{base + "/tenant"},
					"scopes_supported": []string{"issues:read", "issues:write"}, "bearer_methods_supported": []string{"header"}})
			})
			mux.HandleFunc("/.well-known/oauth-authorization-server/tenant", func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				metaAuth = append(metaAuth, r.Header.Get("Authorization"))
				mu.Unlock()
				json.NewEncoder(w).Encode(map[string]any{"issuer": base + "/tenant", "token_endpoint": base + "/tenant/token",
					"grant_types_supported": []string{"authorization_code", "client_credentials", "refresh_token"}})
			})
			mux.HandleFunc("/v1/issues", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("WWW-Authenticate", tt.challenge(base))
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"message":"Bad credentials"}`)
			})
			c, srv := serve(t, mux)
			base = srv
			opts := discover.Options{}
			if tt.token != "" {
				opts.AuthEnv, opts.Token = "API_TOKEN", tt.token
			}
			res, err := discover.Discover(context.Background(), base+"/v1/issues", opts)
			if !discover.IsNotUnderstood(err) {
				t.Fatalf("err = %v, want not understood", err)
			}
			assertReadOnly(t, c, 12, res)
			if tt.requests > 0 && res.Requests != tt.requests {
				t.Errorf("%d requests, want %d", res.Requests, tt.requests)
			}
			yaml := string(res.YAML())
			wantLines(t, yaml, tt.want(base)...)
			if strings.Contains(yaml, "s3cret") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the token leaked:\n%s\n%v", yaml, err)
			}
			if !strings.Contains(err.Error(), "auth hint") {
				t.Errorf("the error does not point at the hint: %v", err)
			}
			for _, a := range metaAuth {
				if a != "" {
					t.Errorf("OAuth metadata was fetched with Authorization %q: it may live on another host", a)
				}
			}
		})
	}
}

// githubIssues serves /repos/octo/hello/issues in GitHub's REST shape and
// rate-limit headers (an hour's window of 5000, reset as an epoch).
func githubIssues(t *testing.T, now time.Time) string {
	t.Helper()
	var base string
	_, srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/repos/octo/hello/issues" {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Remaining", "4987")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(59*time.Minute).Unix(), 10))
		h.Set("X-RateLimit-Used", "13")
		h.Set("X-RateLimit-Resource", "core")
		h.Set("Content-Type", "application/json; charset=utf-8")
		var issues []map[string]any
		for i, n := range []int{1347, 1346, 1345} {
			api := fmt.Sprintf("%s/repos/octo/hello/issues/%d", base, n)
			issues = append(issues, map[string]any{
				"url": api, "repository_url": base + "/repos/octo/hello",
				"labels_url":   api + "/labels{/name}",
				"comments_url": api + "/comments?access_token=leaked",
				"events_url":   api + "/events", "timeline_url": api + "/timeline",
				"html_url": fmt.Sprintf("https://github.com/octo/hello/issues/%d", n),
				"id":       1000 + i, "node_id": fmt.Sprintf("MDU6SXNzdWUx%d", i), "number": n, "title": "Found a bug",
				"user":  map[string]any{"login": "octocat", "id": 1},
				"state": "open", "updated_at": "2011-04-22T13:33:48Z",
			})
		}
		json.NewEncoder(w).Encode(issues)
	}))
	base = srv
	return base
}

// TestGitHubHints: GitHub's REST headers become a rate limit at 90% of the
// announced hour with rate_limit_headers honoured, each header shown; the
// issues' *_url fields become child resources with one partition per issue.
func TestGitHubHints(t *testing.T) {
	t.Parallel()
	now := time.Now()
	base := githubIssues(t, now)
	res, err := discover.Discover(context.Background(), base+"/repos/octo/hello/issues", discover.Options{
		Now: func() time.Time { return now }, Sleep: func(context.Context, time.Duration) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	yaml := parsed(t, res)
	wantLines(t, yaml,
		"rate_limit: {requests: 4500, per: 1h, burst: 1}",
		"rate_limit_headers: honour",
		"X-RateLimit-Limit: 5000",
		"X-RateLimit-Resource: core",
		`#   path: "/repos/octo/hello/issues/{parent.number}/comments"`,
		`#   parent: {resource: "issues", key: "number"}`,
		`# - name: "events"`,
		`#   path: "/repos/octo/hello/issues/{parent.number}/labels"`,
		"more fields link collections: timeline_url",
	)
	for _, not := range []string{"leaked", `name: "repository"`, `name: "html"`, `"/repos/octo/hello/issues/{parent.number}"`} {
		if strings.Contains(yaml, not) {
			t.Errorf("YAML holds %q:\n%s", not, yaml)
		}
	}
	if got := res.Config.Sources[0].RateLimitHeaders; got != config.HeadersHonour {
		t.Errorf("rate_limit_headers = %q, want honour", got)
	}
}

// TestParentHintTemplates: an RFC 6570 template ({/number}) is dropped to
// leave the collection, a value spanning segments (full_name) is one
// placeholder, and a *_id field several records share names a parent.
func TestParentHintTemplates(t *testing.T) {
	t.Parallel()
	var base string
	mux := http.NewServeMux()
	mux.HandleFunc("/user/repos", func(w http.ResponseWriter, r *http.Request) {
		var repos []map[string]any
		for i, full := range []string{"octo/hello", "octo/spoon-knife", "hub/linguist"} {
			repos = append(repos, map[string]any{"id": 1296269 + i, "name": strings.Split(full, "/")[1], "full_name": full,
				"issues_url": base + "/repos/" + full + "/issues{/number}", "keys_url": base + "/repos/" + full + "/keys{/key_id}",
				"url": base + "/repos/" + full})
		}
		json.NewEncoder(w).Encode(repos)
	})
	mux.HandleFunc("/v1/orders", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"data": []map[string]any{
			{"id": "or_1", "customer_id": "cus_9", "amount": 10}, {"id": "or_2", "customer_id": "cus_9", "amount": 20},
			{"id": "or_3", "customer_id": "cus_4", "amount": 30}}})
	})
	_, base = serve(t, mux)
	res, err := discover.Discover(context.Background(), base+"/user/repos", discover.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, parsed(t, res),
		`# - name: "issues"`, `#   path: "/repos/{parent.full_name}/issues"`, `#   parent: {resource: "repos", key: "full_name"}`,
		`#   path: "/repos/{parent.full_name}/keys"`)
	res, err = discover.Discover(context.Background(), base+"/v1/orders", discover.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, parsed(t, res), `field "customer_id" is shared`, `#   path: "/customers/{parent.id}/orders"`,
		`#   parent: {resource: "customers", key: "id"}`)
}

// TestGraphQLHint: a GraphQL connection (GitHub's shape, nodes or edges)
// read by GET is proposed as a POST resource paging by pageInfo, and the
// live proposal reads one page and says so rather than guessing page
// parameters.
func TestGraphQLHint(t *testing.T) {
	t.Parallel()
	const query = `query { repository(owner: "octo", name: "hello") { issues(first: 3) { nodes { id number title } pageInfo { endCursor hasNextPage } } } }`
	for _, shape := range []string{"nodes", "edges"} {
		t.Run(shape, func(t *testing.T) {
			t.Parallel()
			c, base := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("query") != query {
					w.WriteHeader(http.StatusBadRequest)
					fmt.Fprint(w, `{"errors":[{"message":"A query attribute must be specified"}]}`)
					return
				}
				var recs []map[string]any
				for i := range 3 {
					node := map[string]any{"id": fmt.Sprintf("I_kwDOAB%d", i), "number": 10 + i, "title": "t"}
					if shape == "edges" {
						node = map[string]any{"cursor": fmt.Sprintf("Y3Vyc29yOnYyOpHO%d", i), "node": node}
					}
					recs = append(recs, node)
				}
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"repository": map[string]any{"issues": map[string]any{
					"totalCount": 42, shape: recs,
					"pageInfo": map[string]any{"endCursor": "Y3Vyc29yOnYyOpHO2", "hasNextPage": true}}}}})
			}))
			res, err := discover.Discover(context.Background(), base+"/graphql?query="+url.QueryEscape(query), discover.Options{})
			if err != nil {
				t.Fatal(err)
			}
			yaml := parsed(t, res)
			records := `id: "id"`
			if shape == "edges" {
				records = `item: node, id: "id"`
			}
			wantLines(t, yaml,
				`# graphql hint (medium): data.repository.issues.pageInfo is a GraphQL connection's page info:`,
				`endCursor "Y3Vyc29yOnYyOpHO2", hasNextPage true`, `# - name: "issues"`,
				`#   path: "/graphql"`, `#   method: POST`, `variables: {cursor: "{cursor}"}`, `repository(owner: \"octo\"`,
				`#   records: {path: "data.repository.issues.`+shape+`", `+records+`}`,
				`#   pagination: {style: cursor, next_field: "data.repository.issues.pageInfo.endCursor", has_more_field: "data.repository.issues.pageInfo.hasNextPage"}`,
				"only the first page is read")
			if r := res.Config.Sources[0].Resources[0]; r.Pagination.Style != config.PaginationNone || r.FullSync.DetectDeletes {
				t.Errorf("pagination %q detect_deletes %t, want none without deletes", r.Pagination.Style, r.FullSync.DetectDeletes)
			}
			if total, _ := c.snapshot(); total > 4 {
				t.Errorf("%d requests: page parameters were probed on a GraphQL connection", total)
			}
		})
	}
}

// TestRateLimitField: the newer draft's RateLimit and RateLimit-Policy
// structured fields give the limit and its window.
func TestRateLimitField(t *testing.T) {
	t.Parallel()
	_, base := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Policy", `"default";q=100;w=60`)
		w.Header().Set("RateLimit", `"default";r=50;t=30`)
		json.NewEncoder(w).Encode(map[string]any{"items": []map[string]any{{"id": 1}, {"id": 2}}, "total": 2})
	}))
	res, err := discover.Discover(context.Background(), base+"/things", discover.Options{Sleep: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, parsed(t, res), "rate_limit: {requests: 90, per: 1m, burst: 1}", "rate_limit_headers: honour", `RateLimit: "default";r=50;t=30`)
}
