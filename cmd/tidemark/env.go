package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/hibiken/asynq"
	"golang.org/x/term"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// env is what every command gets from the process.
type env struct {
	ctx            context.Context
	getenv         func(string) string
	stdout, stderr io.Writer
}

// settings are the flags shared by commands, each with its variable.
type settings struct {
	configPath  string
	databaseURL string
	redisURL    string
	logLevel    string
}

const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/tidemark?sslmode=disable"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// flags returns a flag set whose defaults come from the environment.
func (e env) flags(name string, s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("tidemark "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&s.configPath, "config", e.or("TIDEMARK_CONFIG", "tidemark.yaml"), "config file (TIDEMARK_CONFIG)")
	fs.StringVar(&s.databaseURL, "database-url", e.or("TIDEMARK_DATABASE_URL", defaultDatabaseURL), "Postgres URL (TIDEMARK_DATABASE_URL)")
	fs.StringVar(&s.redisURL, "redis-url", e.or("TIDEMARK_REDIS_URL", defaultRedisURL), "Redis URL (TIDEMARK_REDIS_URL)")
	fs.StringVar(&s.logLevel, "log-level", e.or("TIDEMARK_LOG_LEVEL", "info"), "debug | info | warn | error (TIDEMARK_LOG_LEVEL)")
	return fs
}

func (e env) or(name, def string) string { return cmp.Or(e.getenv(name), def) }

// parse parses flags, turning -h into errHelp and bad flags into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	return nil
}

// loadConfig loads and validates the config; an invalid one is a usage error.
func (s settings) loadConfig() (*config.Config, error) {
	c, err := config.Load(s.configPath)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// configuredResource finds the resource arg (SOURCE/RESOURCE) names in the
// config; one the config lacks is a usage error.
func (s settings) configuredResource(arg string) (store.Key, *config.Resource, error) {
	srcName, resName, err := splitKey(arg, true)
	if err != nil {
		return store.Key{}, nil, err
	}
	conf, err := s.loadConfig()
	if err != nil {
		return store.Key{}, nil, err
	}
	src := conf.Source(srcName)
	if src == nil || src.Resource(resName) == nil {
		return store.Key{}, nil, usagef("%s/%s is not in %s", srcName, resName, s.configPath)
	}
	return store.Key{Source: srcName, Resource: resName}, src.Resource(resName), nil
}

func (s settings) openStore(ctx context.Context) (*store.Store, error) {
	return store.Open(ctx, s.databaseURL)
}

func (s settings) redisOpt() (asynq.RedisConnOpt, error) {
	opt, err := asynq.ParseRedisURI(s.redisURL)
	if err != nil {
		return nil, usagef("--redis-url: %v", err)
	}
	return opt, nil
}

// logger writes JSON when stderr is not a terminal, text when it is.
func (e env) logger(level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
}

// splitKey parses SOURCE[/RESOURCE].
func splitKey(arg string, needResource bool) (string, string, error) {
	src, res, _ := strings.Cut(arg, "/")
	if src == "" || (needResource && res == "") {
		if needResource {
			return "", "", usagef("want SOURCE/RESOURCE, got %q", arg)
		}
		return "", "", usagef("want SOURCE[/RESOURCE], got %q", arg)
	}
	return src, res, nil
}

func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
