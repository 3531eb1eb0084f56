// Command demo-upstream serves the demo upstream API (docs/demo-upstream.md):
// five resources in five pagination and change-metadata styles, with
// optional churn, rate limiting, failures and latency.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tidemark/tidemark/internal/demoapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-upstream:", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds the wait for in-flight requests on shutdown.
const shutdownTimeout = 5 * time.Second

// run serves until ctx is done, then shuts down gracefully. It prints
// "demo-upstream listening on http://ADDR" to stdout once it accepts
// connections.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo-upstream", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", "127.0.0.1:9000", "listen address")
	records := fs.Int("records", 1000, "initial records per resource")
	seed := fs.Int64("seed", 1, "seed the data is generated from")
	changeRate := fs.Float64("change-rate", 0, "mutations per second over all resources")
	rate := fs.Float64("rate", 0, "API requests per second allowed (0 = unlimited)")
	failRate := fs.Float64("fail-rate", 0, "fraction of API requests answered 500")
	latency := fs.Duration("latency", 0, "added to every API response")
	var fault demoapi.FaultSpec
	fs.StringVar(&fault.Mode, "fault", "", "break API responses: "+strings.Join(demoapi.FaultModes, ", ")+" (also POST /_faults)")
	fs.StringVar(&fault.Resource, "fault-resource", "", "only this resource gets --fault (default every resource)")
	fs.IntVar(&fault.After, "fault-after", 0, "serve this many matching requests normally before the fault")
	fs.IntVar(&fault.Count, "fault-count", 0, "break this many requests, then serve normally (0 = all)")
	fs.StringVar(&fault.To, "fault-to", "", "redirect target scheme://host:port for the redirect faults")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	case *records < 0:
		return fmt.Errorf("--records must be >= 0, got %d", *records)
	case *changeRate < 0 || *rate < 0 || *latency < 0:
		return errors.New("--change-rate, --rate and --latency must be >= 0")
	case *failRate < 0 || *failRate > 1:
		return fmt.Errorf("--fail-rate must be within 0..1, got %g", *failRate)
	}
	if err := fault.Validate(); err != nil {
		return fmt.Errorf("--fault: %w", err)
	}
	n := *records
	if n == 0 {
		n = -1 // Options.Records: 0 means the default, negative means none
	}

	logger := slog.New(slog.NewTextHandler(stdout, nil))
	api := demoapi.New(demoapi.Options{
		Seed: *seed, Records: n, ChangeRate: *changeRate,
		Rate: *rate, FailRate: *failRate, Latency: *latency, Fault: fault,
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mutatorDone := make(chan struct{})
	go func() { defer close(mutatorDone); api.Run(ctx) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	logger.Info("demo-upstream started", "addr", ln.Addr().String(), "records", *records,
		"seed", *seed, "change_rate", *changeRate, "rate", *rate, "fail_rate", *failRate, "latency", *latency, "fault", fault.Mode)
	fmt.Fprintf(stdout, "demo-upstream listening on http://%s\n", ln.Addr())

	select {
	case err := <-serveErr:
		cancel()
		<-mutatorDone
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	<-mutatorDone
	shutdownCtx, stop := context.WithTimeout(context.Background(), shutdownTimeout)
	defer stop()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("demo-upstream stopped")
	return nil
}
