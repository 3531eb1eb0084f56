package worker_test

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// canary is a loopback listener that counts the connections it accepts.
type canary struct {
	l     net.Listener
	conns atomic.Int64
}

func listenCanary(t *testing.T, network, addr string) *canary {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil
	}
	c := &canary{l: l}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			c.conns.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return c
}

// TestSSRFRefusedByWorker is the worker-level end of the SSRF matrix (the
// address forms are covered in upstream/guard_test.go): sources with
// allow_private: false whose base_url is a loopback or metadata address.
// Each fetch ends dead (the guard's error is permanent, not retried) with an
// error naming the refused address and rule, and the canary listeners on
// loopback see zero connections.
func TestSSRFRefusedByWorker(t *testing.T) {
	t.Parallel()
	v4 := listenCanary(t, "tcp4", "127.0.0.1:0")
	if v4 == nil {
		t.Fatal("cannot listen on 127.0.0.1")
	}
	port := v4.l.Addr().(*net.TCPAddr).Port
	cases := []struct{ name, base, reason string }{
		{"ipv4 loopback", fmt.Sprintf("http://127.0.0.1:%d", port), "loopback"},
		{"localhost name", fmt.Sprintf("http://localhost:%d", port), "loopback"},
		{"ipv4-mapped ipv6", fmt.Sprintf("http://[::ffff:127.0.0.1]:%d", port), "loopback"},
		{"cloud metadata", "http://169.254.169.254", "metadata"},
	}
	canaries := []*canary{v4}
	if v6 := listenCanary(t, "tcp6", fmt.Sprintf("[::1]:%d", port)); v6 != nil {
		canaries = append(canaries, v6)
		cases = append(cases, struct{ name, base, reason string }{"ipv6 loopback", fmt.Sprintf("http://[::1]:%d", port), "loopback"})
	}
	var yaml strings.Builder
	yaml.WriteString("sources:\n")
	for i, tc := range cases {
		fmt.Fprintf(&yaml, `  - name: ssrf%02d
    base_url: %s
    allow_private: false
    timeout: 2s
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        records: {path: data, id: id}
        pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor, limit_param: limit, limit: 10}
`, i, tc.base)
	}
	conf, err := config.Parse("ssrf.yaml", []byte(yaml.String()))
	if err != nil {
		t.Fatal(err)
	}
	h := startHostileWorker(t, conf)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf("ssrf%02d", i)
			run := h.fullFetch(t, src)
			if run.Status != store.StatusDead {
				t.Errorf("run %d: %s, want dead (a refused address is not retried)", run.ID, run.Status)
			}
			if !strings.Contains(run.Error, "refused to connect to") || !strings.Contains(run.Error, tc.reason) {
				t.Errorf("run %d error %q: want the guard's refusal naming %q", run.ID, run.Error, tc.reason)
			}
			if ids := h.recordIDs(t, src); len(ids) != 0 {
				t.Errorf("%d records committed", len(ids))
			}
		})
	}
	for _, c := range canaries {
		if n := c.conns.Load(); n != 0 {
			t.Errorf("canary %s accepted %d connections, want 0", c.l.Addr(), n)
		}
	}
}
