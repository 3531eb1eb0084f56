// Command tidemark is the one binary of every tidemark role: the scheduler,
// the workers, the server, and the operator's commands. main only wires.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes of the contract.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a bad command line or an invalid config: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

const usage = `tidemark keeps Postgres in step with external HTTP APIs.

Usage: tidemark <command> [flags]

Roles:
  scheduler                   enqueue due fetches (any number of replicas)
  worker                      run fetch tasks
  server                      admin API and health endpoints
  run                         all roles in one process

Operations:
  migrate [--create-db]       apply pending database migrations, then make the typed views
  views                       create, replace or drop the typed views of the resources
  status [--wait D] [SOURCE[/RESOURCE]]   resources: state, last run, freshness
  runs [--source S --resource R --status S --limit N]   recent runs, with their task ids
  sync SOURCE/RESOURCE [--full [--confirm-deletes] [--resume]]   enqueue a fetch now
  reset SOURCE/RESOURCE --checkpoint|--watermark|--validators   forget a piece of sync state
  retry [--all | TASK_ID|RUN_ID...]   re-enqueue dead tasks with a fresh retry budget
  pause SOURCE[/RESOURCE]     stop scheduling (survives restarts)
  resume SOURCE[/RESOURCE]    start scheduling again
  config check [FILE]         validate a config file
  preview SOURCE/RESOURCE [--pages N --delta --records N --json]   read the first pages, write nothing: records, ids, cursors, what would change
  discover URL [--header K:V --auth-env VAR --max-requests N --out FILE]   propose a config for an API

Every flag also reads an environment variable (see 'tidemark <command> -h').
Durations take a unit: 30s, 5m, 1h30m.
`

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, getenv, stdout, stderr)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintln(stderr, "tidemark:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "tidemark:", err)
		return exitFailure
	}
}

var errHelp = errors.New("help shown")

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	e := env{ctx: ctx, getenv: getenv, stdout: stdout, stderr: stderr}
	switch cmd {
	case "migrate":
		return e.migrate(rest)
	case "scheduler", "worker", "server", "run":
		return e.roles(cmd, rest)
	case "status":
		return e.status(rest)
	case "runs":
		return e.runs(rest)
	case "sync":
		return e.sync(rest)
	case "reset":
		return e.reset(rest)
	case "retry":
		return e.retry(rest)
	case "pause", "resume":
		return e.pause(cmd, rest)
	case "discover":
		return e.discover(rest)
	case "preview":
		return e.preview(rest)
	case "views":
		return e.views(rest)
	case "config":
		if len(rest) > 0 && rest[0] == "schema" {
			return e.configSchema(rest[1:])
		}
		if len(rest) == 0 || rest[0] != "check" {
			return usagef("usage: tidemark config check [FILE]")
		}
		return e.configCheck(rest[1:])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", cmd)
	}
}
