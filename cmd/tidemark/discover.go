package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/discover"
)

// headerFlags collects repeated --header K:V.
type headerFlags struct{ h http.Header }

func (f *headerFlags) String() string { return "" }

func (f *headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, ":")
	k, val = strings.TrimSpace(k), strings.TrimSpace(val)
	if !ok || k == "" {
		return fmt.Errorf("want K:V, got %q", v)
	}
	if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Proxy-Authorization") {
		return fmt.Errorf("%s carries a secret: pass a bearer token with --auth-env VAR", k)
	}
	f.h.Add(k, val)
	return nil
}

// discover inspects an API endpoint and prints a proposed config for it.
func (e env) discover(args []string) error {
	fs, f, err := e.discoverFlags()
	if err != nil {
		return err
	}
	rawURL, err := parseDiscoverArgs(fs, args)
	if err != nil {
		return err
	}
	opts, err := f.options(e)
	if err != nil {
		return err
	}
	res, err := discover.Discover(e.ctx, rawURL, opts)
	if err != nil {
		if res != nil {
			fmt.Fprintf(e.stderr, "tidemark discover: %d requests sent\n", res.Requests)
			if len(res.Hints) > 0 {
				e.stderr.Write(res.YAML())
			}
		}
		if errors.Is(err, discover.ErrInvalidOptions) {
			return usageError{err}
		}
		return err
	}
	return e.writeProposal(res, f.out)
}

// discoverFlags are discover's settings.
type discoverFlags struct {
	headers                        *headerFlags
	authEnv, source, resource, out string
	maxReq                         int
}

// discoverFlags defines discover's flags, with their defaults from the
// environment; the error is a variable set to something invalid.
func (e env) discoverFlags() (*flag.FlagSet, *discoverFlags, error) {
	fs := flag.NewFlagSet("tidemark discover", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "Usage: tidemark discover URL [--header K:V ...] [--auth-env VAR] [--max-requests N] [--source NAME] [--resource NAME] [--out FILE]")
		fmt.Fprintln(e.stderr, "Inspects a JSON collection endpoint with a few GET/HEAD requests and writes a proposed resource config.")
		fs.PrintDefaults()
	}
	f := &discoverFlags{headers: &headerFlags{h: http.Header{}}}
	fs.Var(f.headers, "header", "header sent with every request, K:V (repeatable; written into the config)")
	fs.StringVar(&f.authEnv, "auth-env", e.getenv("TIDEMARK_DISCOVER_AUTH_ENV"), "environment variable holding a bearer token (TIDEMARK_DISCOVER_AUTH_ENV)")
	fs.IntVar(&f.maxReq, "max-requests", discover.MaxRequestsDefault, "most requests to send (TIDEMARK_DISCOVER_MAX_REQUESTS)")
	if v := e.getenv("TIDEMARK_DISCOVER_MAX_REQUESTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, nil, usagef("TIDEMARK_DISCOVER_MAX_REQUESTS=%q: want a number", v)
		}
		f.maxReq = n
	}
	fs.StringVar(&f.source, "source", e.getenv("TIDEMARK_DISCOVER_SOURCE"), "source name (default: from the host) (TIDEMARK_DISCOVER_SOURCE)")
	fs.StringVar(&f.resource, "resource", e.getenv("TIDEMARK_DISCOVER_RESOURCE"), "resource name (default: from the path) (TIDEMARK_DISCOVER_RESOURCE)")
	fs.StringVar(&f.out, "out", e.getenv("TIDEMARK_DISCOVER_OUT"), "write the config here instead of stdout (TIDEMARK_DISCOVER_OUT)")
	return fs, f, nil
}

// parseDiscoverArgs parses args, whose flags may follow the URL, and
// returns the one URL.
func parseDiscoverArgs(fs *flag.FlagSet, args []string) (string, error) {
	var positional []string
	rest := args
	for {
		if err := parse(fs, rest); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return "", usagef("discover wants exactly one URL, got %d arguments", len(positional))
	}
	return positional[0], nil
}

// options checks the parsed flags and turns them into discover's options,
// the token read from the variable --auth-env names.
func (f *discoverFlags) options(e env) (discover.Options, error) {
	if f.maxReq < 1 {
		return discover.Options{}, usagef("--max-requests must be at least 1, got %d", f.maxReq)
	}
	for _, name := range []struct{ flag, v string }{{"--source", f.source}, {"--resource", f.resource}} {
		if name.v != "" && sanitizedName(name.v) != name.v {
			return discover.Options{}, usagef("%s %q: want [a-z0-9_]+", name.flag, name.v)
		}
	}
	opts := discover.Options{
		Header: f.headers.h, MaxRequests: f.maxReq, Source: f.source, Resource: f.resource,
	}
	if f.authEnv != "" {
		tok := e.getenv(f.authEnv)
		if tok == "" {
			return discover.Options{}, usagef("--auth-env %s: the environment variable is empty or unset", f.authEnv)
		}
		opts.AuthEnv, opts.Token = f.authEnv, tok
	}
	return opts, nil
}

// writeProposal checks the proposed config and writes it to out, or to
// stdout when out is "".
func (e env) writeProposal(res *discover.Result, out string) error {
	yaml := res.YAML()
	// A proposal the config loader rejects is a bug in discover, not a
	// problem of the API: check before anyone sees it.
	if _, err := config.Parse("discover", yaml); err != nil {
		return fmt.Errorf("discover proposed an invalid config (a bug, please report it): %w\n%s", err, yaml)
	}
	if out != "" {
		if err := os.WriteFile(out, yaml, 0o644); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		fmt.Fprintf(e.stderr, "tidemark discover: wrote %s (%d requests)\n", out, res.Requests)
		return nil
	}
	_, err := e.stdout.Write(yaml)
	return err
}

func sanitizedName(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return ""
		}
	}
	return s
}
