package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	t.Parallel()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "healthy", args: []string{srv.URL + "/healthz"}, want: 0},
		{name: "unhealthy status", args: []string{srv.URL + "/broken"}, want: 1},
		{name: "not found", args: []string{srv.URL + "/missing"}, want: 1},
		{name: "timeout", args: []string{"-timeout", "50ms", srv.URL + "/slow"}, want: 1},
		{name: "nothing listening", args: []string{"http://127.0.0.1:1/healthz"}, want: 1},
		{name: "no url", args: nil, want: 2},
		{name: "bad flag", args: []string{"-nope", srv.URL}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := run(context.Background(), tt.args, io.Discard); got != tt.want {
				t.Errorf("run(%q) = %d, want %d", tt.args, got, tt.want)
			}
		})
	}
}
