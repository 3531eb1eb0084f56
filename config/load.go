package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	// File is the name the config was loaded under ("" for a config built in code).
	File string
	// Line is 1-based; 0 when unknown.
	Line int
	// Field is the path of the offending field, for example
	// "sources[0].resources[1].records.id"; "" for the file as a whole.
	Field string
	// Msg says what is wrong.
	Msg string
}

// String formats p as "file:line: field: msg", leaving out the parts p lacks.
func (p Problem) String() string {
	var b strings.Builder
	switch {
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", p.File, p.Line)
	case p.File != "":
		b.WriteString(p.File + ": ")
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error is every problem found in a config, ordered by line. Load, Parse and
// Validate return it as *Error; get at it with errors.As.
type Error struct {
	Problems []Problem
}

// Error returns one problem per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads and parses the config file at path; see Parse. Problems name
// the file as path was given.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a YAML config (strictly: unknown keys are errors), expands
// ${VAR} and ${VAR:-default} in values from the environment (a ${VAR}
// whose variable is unset is a problem naming it; ${VAR:-} may be left
// unset), fills the defaults and validates the result. name is used in
// problems only. On any
// problem it returns a nil *Config and an *Error listing all of them.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, os.LookupEnv)
}

func parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	c := newChecker(name, lookup)
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// An empty file: validation says what is missing.
		c.lines[""] = 1
	case err != nil:
		return nil, &Error{Problems: []Problem{syntaxProblem(name, err)}}
	default:
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			return nil, &Error{Problems: []Problem{syntaxProblem(name, err)}}
		default:
			c.at(extra.Line, "", "more than one YAML document; a config is a single document")
		}
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
			root = root.Content[0]
		}
		c.lines[""] = root.Line
		c.decode(root, reflect.ValueOf(&cfg).Elem(), "", 0)
	}
	cfg.SetDefaults()
	c.validate(&cfg)
	if len(c.problems) > 0 {
		return nil, c.err()
	}
	return &cfg, nil
}

func (c *checker) err() *Error {
	ps := slices.Clone(c.problems)
	slices.SortStableFunc(ps, func(a, b Problem) int { return a.Line - b.Line })
	return &Error{Problems: ps}
}

var yamlErrLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxProblem(file string, err error) Problem {
	msg := err.Error()
	if m := yamlErrLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{File: file, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return Problem{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// Validate checks a config built in code, after SetDefaults; Load and Parse
// already do both. It returns nil or an *Error whose problems carry field
// paths but no file or line.
func (c *Config) Validate() error {
	ch := newChecker("", nil)
	ch.validate(c)
	if len(ch.problems) > 0 {
		return ch.err()
	}
	return nil
}

// Each calls fn for every resource of every source, in file order.
func (c *Config) Each(fn func(*Source, *Resource)) {
	for i := range c.Sources {
		s := &c.Sources[i]
		for j := range s.Resources {
			fn(s, &s.Resources[j])
		}
	}
}
