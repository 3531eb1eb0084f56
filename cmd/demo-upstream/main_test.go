package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--records", "25", "--change-rate", "5"}, pw)
		pw.Close()
	}()

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var base string
	deadline := time.After(10 * time.Second)
	for base == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("run ended early: %v", <-done)
			}
			t.Log(line)
			if u, ok := strings.CutPrefix(line, "demo-upstream listening on "); ok {
				base = u
			}
		case <-deadline:
			t.Fatal("not ready")
		}
	}
	drained := make(chan struct{})
	go func() { // keep draining logs
		defer close(drained)
		for line := range lines {
			t.Log(line)
		}
	}()

	resp, err := http.Get(base + "/settlements?limit=5")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Results []json.RawMessage `json:"results"`
		Count   int               `json:"count"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(body.Results) != 5 || body.Count < 20 {
		t.Fatalf("status %d, %d results, count %d, err %v", resp.StatusCode, len(body.Results), body.Count, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown")
	}
	<-drained // no t.Log after the test returns
}

func TestRunBadFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{name: "negative records", args: []string{"--records", "-1"}},
		{name: "fail rate above one", args: []string{"--fail-rate", "2"}},
		{name: "unknown flag", args: []string{"--nope"}},
		{name: "unknown fault", args: []string{"--fault", "bogus"}},
		{name: "fault on unknown resource", args: []string{"--fault", "reset", "--fault-resource", "nope"}},
		{name: "bad address", args: []string{"--addr", "256.0.0.1:-3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := run(context.Background(), tt.args, io.Discard); err == nil {
				t.Fatal("no error")
			}
		})
	}
}
