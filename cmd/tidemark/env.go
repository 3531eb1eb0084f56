package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

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

// The shared flags' defaults (DESIGN.md §4.1).
const (
	defaultConfigPath  = "tidemark.yaml"
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/tidemark?sslmode=disable"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultLogLevel    = "info"
)

// flags returns a flag set whose defaults come from the environment.
func (e env) flags(name string, s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("tidemark "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&s.configPath, "config", e.or("TIDEMARK_CONFIG", defaultConfigPath), "config file (TIDEMARK_CONFIG)")
	fs.StringVar(&s.databaseURL, "database-url", e.or("TIDEMARK_DATABASE_URL", defaultDatabaseURL), "Postgres URL (TIDEMARK_DATABASE_URL)")
	fs.StringVar(&s.redisURL, "redis-url", e.or("TIDEMARK_REDIS_URL", defaultRedisURL), "Redis URL (TIDEMARK_REDIS_URL)")
	fs.StringVar(&s.logLevel, "log-level", e.or("TIDEMARK_LOG_LEVEL", defaultLogLevel), "debug | info | warn | error (TIDEMARK_LOG_LEVEL)")
	return fs
}

func (e env) or(name, def string) string { return cmp.Or(e.getenv(name), def) }

// parse parses flags, turning -h into errHelp and bad flags into usage
// errors. The flag package's own words are kept out of the way (it prints
// them before the usage): for a duration without a unit they are "parse
// error", which does not say what a good value looks like.
func parse(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if err == nil {
		return nil
	}
	if fs.Usage != nil {
		fs.Usage()
	} else {
		fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
	}
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	return usageError{explainFlagError(fs, err)}
}

// flagParseError is how the flag package reports a value it cannot parse.
var flagParseError = regexp.MustCompile(`^invalid value (".*") for flag -(\S+): parse error$`)

// explainFlagError rewrites the flag package's "parse error" for a
// duration flag into what is wrong and what would do.
func explainFlagError(fs *flag.FlagSet, err error) error {
	m := flagParseError.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	value, qerr := strconv.Unquote(m[1])
	f := fs.Lookup(m[2])
	if qerr != nil || f == nil {
		return err
	}
	if !isDurationFlag(f) {
		return err
	}
	if _, derr := parseDuration(value); derr != nil {
		return fmt.Errorf("--%s %q: %w", f.Name, value, derr)
	}
	return err
}

func isDurationFlag(f *flag.Flag) bool {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(time.Duration)
	return ok
}

// parseDuration parses a Go duration; its error says what is wrong in an
// operator's words: Go calls "5", which lacks a unit, a parse error.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, nil
	}
	if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
		return 0, errors.New("a duration needs a unit: want e.g. 5m, 30s or 1h30m")
	}
	return 0, errors.New("not a duration: want e.g. 5m, 30s or 1h30m")
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
		return store.Key{}, nil, notConfigured(conf, s.configPath, srcName, resName)
	}
	return store.Key{Source: srcName, Resource: resName}, src.Resource(resName), nil
}

// configuredKeys are the resources SOURCE[/RESOURCE] names in conf; none is
// a usage error listing what is configured.
func (s settings) configuredKeys(conf *config.Config, arg string) ([]store.Key, error) {
	srcName, resName, err := splitKey(arg, false)
	if err != nil {
		return nil, err
	}
	var keys []store.Key
	conf.Each(func(src *config.Source, res *config.Resource) {
		if src.Name == srcName && (resName == "" || res.Name == resName) {
			keys = append(keys, store.Key{Source: src.Name, Resource: res.Name})
		}
	})
	if len(keys) == 0 {
		return nil, notConfigured(conf, s.configPath, srcName, resName)
	}
	return keys, nil
}

// fewResources is how many resources a "not configured" error lists in
// full; beyond it, it lists the sources and the named source's resources.
const fewResources = 12

// notConfigured says that SOURCE[/RESOURCE] is not in the config file and
// what is: every resource when there are few, else the named source's
// resources if it exists, else the sources.
func notConfigured(conf *config.Config, path, srcName, resName string) error {
	name := srcName
	if resName != "" {
		name += "/" + resName
	}
	total := 0
	conf.Each(func(*config.Source, *config.Resource) { total++ })
	sources := make([]string, len(conf.Sources))
	for i, sc := range conf.Sources {
		sources[i] = sc.Name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s is not configured in %s", name, path)
	switch src := conf.Source(srcName); {
	case src != nil:
		names := make([]string, len(src.Resources))
		for i, r := range src.Resources {
			names[i] = r.Name
		}
		fmt.Fprintf(&b, ": source %s has no resource %q%s; its %s:", src.Name, resName, didYouMean(resName, names), plural(len(src.Resources), "resource"))
		writeWrapped(&b, names)
	case total <= fewResources:
		fmt.Fprintf(&b, ": there is no source %q%s; the configured resources:", srcName, didYouMean(srcName, sources))
		for _, sc := range conf.Sources {
			var names []string
			for _, r := range sc.Resources {
				names = append(names, sc.Name+"/"+r.Name)
			}
			writeWrapped(&b, names)
		}
	default:
		fmt.Fprintf(&b, ": there is no source %q%s; the %s, with their number of resources (`tidemark status` lists all %d):",
			srcName, didYouMean(srcName, sources), plural(len(conf.Sources), "source"), total)
		names := make([]string, len(conf.Sources))
		for i, sc := range conf.Sources {
			names[i] = fmt.Sprintf("%s (%d)", sc.Name, len(sc.Resources))
		}
		writeWrapped(&b, names)
	}
	return usageError{errors.New(b.String())}
}

func didYouMean(name string, known []string) string {
	if s := config.Suggest(name, known); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// writeWrapped writes names comma-separated on indented lines of at most
// about 80 columns, so that a long list stays readable in a terminal.
func writeWrapped(b *strings.Builder, names []string) {
	const indent, width = "  ", 80
	line := indent
	for i, n := range names {
		if i < len(names)-1 {
			n += ","
		}
		if len(line) > len(indent) && len(line)+1+len(n) > width {
			b.WriteString("\n" + line)
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += n
	}
	b.WriteString("\n" + line)
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

// parseNoArgs parses the flags of a command that takes no arguments.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
