package metrics_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/metrics"
)

func TestObserveUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		source string
		res    *http.Response
		err    error
		code   string
	}{
		{"ok", "mt_ok", &http.Response{StatusCode: 200}, nil, "200"},
		{"server error", "mt_5xx", &http.Response{StatusCode: 503}, nil, "503"},
		{"no response", "mt_err", nil, errors.New("connection refused"), "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			metrics.ObserveUpstream(tt.source, tt.res, tt.err, 20*time.Millisecond)
			rec := httptest.NewRecorder()
			metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			want := `tidemark_upstream_requests_total{code="` + tt.code + `",source="` + tt.source + `"} 1`
			if !strings.Contains(rec.Body.String(), want) {
				t.Errorf("want %s in /metrics", want)
			}
		})
	}
}

// TestServe serves a worker's /metrics and /healthz, and stops with ctx.
func TestServe(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.Serve(ctx, addr) }()
	metrics.ObserveRun("mt_serve", "things", "full", "succeeded")
	for _, tc := range []struct{ path, want string }{
		{"/metrics", `tidemark_runs_total{kind="full",resource="things",source="mt_serve",status="succeeded"} 1`},
		{"/healthz", `"ok"`},
	} {
		var body string
		deadline := time.Now().Add(5 * time.Second)
		for {
			res, err := http.Get("http://" + addr + tc.path)
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				body = string(b)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", tc.path, err)
			}
			time.Sleep(20 * time.Millisecond) // polling for the listener
		}
		if !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: want %s in\n%s", tc.path, tc.want, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Serve still running 5s after ctx was done")
	}
}
