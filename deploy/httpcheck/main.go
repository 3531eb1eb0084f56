// Command httpcheck is the container healthcheck: it exits 0 when a GET of its
// URL answers 2xx within the timeout, 1 otherwise.
//
// The runtime image is distroless (no shell, curl or wget), so the compose
// healthchecks of the server and demo-upstream run this binary instead:
//
//	httpcheck [-timeout 3s] http://127.0.0.1:8080/healthz
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("httpcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: httpcheck [-timeout 3s] URL")
		return 2
	}
	if err := check(ctx, fs.Arg(0), *timeout); err != nil {
		fmt.Fprintln(stderr, "httpcheck:", err)
		return 1
	}
	return 0
}

func check(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
