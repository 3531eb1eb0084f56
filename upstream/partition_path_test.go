package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tidemark/tidemark/config"
)

// TestPartitionPathEscapesHostileValues: a parent's value lands in one path
// segment or one query value whatever it holds; it can neither change the
// host nor add or climb segments, nor start the query or a fragment.
func TestPartitionPathEscapesHostileValues(t *testing.T) {
	t.Parallel()
	c, err := New(&config.Source{Name: "s", BaseURL: "https://api.example.com/v1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const tmpl = "/repos/{parent.owner}/{parent.name}/issues?state=all&account={partition}"
	for _, v := range []string{
		"../../admin", "a/../b", "x?admin=1", "x#frag", "with space", "ünïcødé/ø", "%2e%2e", "@evil.com", "//evil.com/x",
		"https://evil.com/", "a\\b", "a;b=c", "a&account=other", "100%", "tab\there",
	} {
		path, err := PartitionPath(c, tmpl, map[string]string{"parent.owner": v, "parent.name": "n", "partition": v})
		if err != nil {
			t.Errorf("%q: %v", v, err)
			continue
		}
		u, err := url.Parse(c.URL(path, nil))
		if err != nil {
			t.Fatalf("%q: the URL does not parse: %v", v, err)
		}
		segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
		switch {
		case u.Host != "api.example.com" || u.Scheme != "https" || u.User != nil || u.Fragment != "":
			t.Errorf("%q: URL %s leaves the base", v, u)
		case len(segs) != 5 || segs[0] != "v1" || segs[1] != "repos" || segs[3] != "n" || segs[4] != "issues":
			t.Errorf("%q: path %s: want /v1/repos/<value>/n/issues", v, u.EscapedPath())
		case unescapeSeg(t, segs[2]) != v:
			t.Errorf("%q: the segment %s decodes to %q", v, segs[2], unescapeSeg(t, segs[2]))
		case u.Query().Get("account") != v || len(u.Query()) != 2 || u.Query().Get("state") != "all":
			t.Errorf("%q: query %v", v, u.Query())
		}
	}
}

func unescapeSeg(t *testing.T, s string) string {
	v, err := url.PathUnescape(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPartitionPathRefuses(t *testing.T) {
	t.Parallel()
	c, err := New(&config.Source{Name: "s", BaseURL: "https://api.example.com/v1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, tmpl, value, want string
	}{
		{"a whole segment ..", "/r/{partition}/x", "..", "would climb out of the path"},
		{"a whole segment .", "/r/{partition}/x", ".", "would climb out of the path"},
		{"empty", "/r/{partition}/x", "", "no value for {partition}"},
		{"a URL elsewhere", "{parent.url}", "https://evil.com/v1/x", "not a URL on the source's base_url"},
		{"a URL on another base path", "{parent.url}", "https://api.example.com/v2/x", "not a URL on the source's base_url"},
		{"a look-alike host", "{parent.url}", "https://api.example.com.evil.com/v1/x", "not a URL on the source's base_url"},
		{"a URL that climbs", "{parent.url}", "https://api.example.com/v1/../admin", "would climb out of the path"},
		{"not a URL", "{parent.url}", "just-text", "not a URL on the source's base_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := PartitionPath(c, tt.tmpl, map[string]string{"partition": tt.value, "parent.url": tt.value})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
	path, err := PartitionPath(c, "{parent.url}", map[string]string{"parent.url": "https://api.example.com/v1/repos/a/b/issues/7/comments?x=1"})
	if err != nil || c.URL(path, nil) != "https://api.example.com/v1/repos/a/b/issues/7/comments?x=1" {
		t.Errorf("a URL on the base: %q, %v", c.URL(path, nil), err)
	}
}

// TestPartitionPathOnTheWire: the server sees the value in one segment.
func TestPartitionPathOnTheWire(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.EscapedPath()
		w.Write([]byte("[]"))
	}))
	t.Cleanup(srv.Close)
	c, err := New(&config.Source{Name: "s", BaseURL: srv.URL, AllowPrivate: true}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	path, err := PartitionPath(c, "/r/{partition}/x", map[string]string{"partition": "a/../../b c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(context.Background(), http.MethodGet, c.URL(path, nil), nil); err != nil {
		t.Fatal(err)
	}
	if p := <-got; p != "/r/a%2F..%2F..%2Fb%20c/x" {
		t.Errorf("the server saw %s", p)
	}
}
