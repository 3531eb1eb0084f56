package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The decoder walks the yaml.Node tree itself rather than calling
// yaml.Node.Decode: that is what lets it keep going after the first problem,
// expand ${VAR} in values before converting them, and remember the line of
// every field path for the validation that follows.

// maxDepth bounds nesting, aliases included, so a hostile file cannot make
// the walk recurse without end.
const maxDepth = 64

var (
	durationType = reflect.TypeFor[Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
	bodyType     = reflect.TypeFor[Body]()
)

// checker collects problems for one file, during decoding and validation.
type checker struct {
	file   string
	lookup func(string) (string, bool)
	// lines maps a field path to the line of its key (or of its sequence item).
	lines map[string]int
	// zeros holds the paths explicitly set to a zero number or duration, so
	// validation can tell "limit: 0" (an error) from an absent limit (default).
	zeros map[string]bool
	// bad holds the paths whose value could not be decoded; validation stays
	// quiet about them and everything below, to report each mistake once.
	bad      map[string]bool
	problems []Problem
}

func newChecker(file string, lookup func(string) (string, bool)) *checker {
	return &checker{
		file:   file,
		lookup: lookup,
		lines:  map[string]int{},
		zeros:  map[string]bool{},
		bad:    map[string]bool{},
	}
}

// at records a problem at an explicit line.
func (c *checker) at(line int, path, format string, args ...any) {
	c.problems = append(c.problems, Problem{File: c.file, Line: line, Field: path, Msg: fmt.Sprintf(format, args...)})
}

// fail records a decoding problem and marks path as bad.
func (c *checker) fail(n *yaml.Node, path, format string, args ...any) {
	c.bad[path] = true
	c.at(n.Line, path, format, args...)
}

// report records a validation problem at the line of path, or of its
// nearest ancestor present in the file. Problems below a path that failed to
// decode are dropped: the decoding problem already explains them.
func (c *checker) report(path, format string, args ...any) {
	for p := path; ; p = parent(p) {
		if c.bad[p] {
			return
		}
		if p == "" {
			break
		}
	}
	c.at(c.lineOf(path), path, format, args...)
}

func (c *checker) lineOf(path string) int {
	for p := path; ; p = parent(p) {
		if l, ok := c.lines[p]; ok {
			return l
		}
		if p == "" {
			return 0
		}
	}
}

// set reports whether path was written in the file.
func (c *checker) set(path string) bool {
	_, ok := c.lines[path]
	return ok
}

// parent strips the last segment of a field path: a.b[2].c → a.b[2] → a.b → a → "".
func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// decode stores node n into v, reporting problems under path.
func (c *checker) decode(n *yaml.Node, v reflect.Value, path string, depth int) {
	if depth > maxDepth {
		c.fail(n, path, "nested too deeply")
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			c.fail(n, path, "unknown alias")
			return
		}
		c.decode(n.Alias, v, path, depth+1)
		return
	}
	if isNull(n) {
		v.SetZero()
		return
	}
	switch t := v.Type(); {
	case t == durationType:
		c.decodeDuration(n, v, path)
	case t == byteSizeType:
		c.decodeByteSize(n, v, path)
	case t == bodyType:
		c.decodeBody(n, v, path)
	case t.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		c.decode(n, v.Elem(), path, depth+1)
	case t.Kind() == reflect.Struct:
		c.decodeStruct(n, v, path, depth)
	case t.Kind() == reflect.Slice:
		c.decodeSlice(n, v, path, depth)
	case t.Kind() == reflect.Map:
		c.decodeMap(n, v, path, depth)
	case t.Kind() == reflect.String:
		if s, ok := c.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case t.Kind() == reflect.Bool:
		c.decodeBool(n, v, path)
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		c.decodeInt(n, v, path)
	case t.Kind() == reflect.Float64:
		c.decodeFloat(n, v, path)
	default:
		// Only reached if config.go grows a field of a type this walk does not know.
		panic(fmt.Sprintf("config: no decoder for %s (%s)", t, path))
	}
}

// decodeDuration stores a Go duration (10s, 1m30s, 24h).
func (c *checker) decodeDuration(n *yaml.Node, v reflect.Value, path string) {
	s, ok := c.scalar(n, path, "a duration")
	if !ok {
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.fail(n, path, "invalid duration %q (want e.g. 10s, 1m30s, 24h)", s)
		return
	}
	v.SetInt(int64(d))
	c.noteZero(path, d == 0)
}

// decodeByteSize stores a byte size (ParseByteSize).
func (c *checker) decodeByteSize(n *yaml.Node, v reflect.Value, path string) {
	s, ok := c.scalar(n, path, "a byte size")
	if !ok {
		return
	}
	b, err := ParseByteSize(s)
	if err != nil {
		c.fail(n, path, "%v", err)
		return
	}
	v.SetInt(int64(b))
	c.noteZero(path, b == 0)
}

// decodeSlice stores a list, noting each item's line under path[i].
func (c *checker) decodeSlice(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.SequenceNode {
		c.fail(n, path, "expected a list, found %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		ip := index(path, i)
		c.lines[ip] = item.Line
		c.decode(item, s.Index(i), ip, depth+1)
	}
	v.Set(s)
}

// decodeMap stores a mapping with keys of any string type, noting each
// entry's line under path.key.
func (c *checker) decodeMap(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		c.fail(n, path, "expected a mapping, found %s", kindName(n))
		return
	}
	t := v.Type()
	m := reflect.MakeMap(t)
	for _, p := range c.pairs(n, path, depth) {
		kp := join(path, p.key)
		c.lines[kp] = p.line
		ev := reflect.New(t.Elem()).Elem()
		c.decode(p.val, ev, kp, depth+1)
		m.SetMapIndex(reflect.ValueOf(p.key).Convert(t.Key()), ev)
	}
	v.Set(m)
}

// decodeBool stores true/yes/on or false/no/off, in any case.
func (c *checker) decodeBool(n *yaml.Node, v reflect.Value, path string) {
	s, ok := c.scalar(n, path, "true or false")
	if !ok {
		return
	}
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		v.SetBool(true)
	case "false", "no", "off":
		v.SetBool(false)
	default:
		c.fail(n, path, "invalid boolean %q (want true or false)", s)
	}
}

// decodeInt stores a whole number that fits v; underscores may group its
// digits.
func (c *checker) decodeInt(n *yaml.Node, v reflect.Value, path string) {
	s, ok := c.scalar(n, path, "a whole number")
	if !ok {
		return
	}
	i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil || v.OverflowInt(i) {
		c.fail(n, path, "invalid whole number %q", s)
		return
	}
	v.SetInt(i)
	c.noteZero(path, i == 0)
}

// decodeFloat stores a finite number; underscores may group its digits.
func (c *checker) decodeFloat(n *yaml.Node, v reflect.Value, path string) {
	s, ok := c.scalar(n, path, "a number")
	if !ok {
		return
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		c.fail(n, path, "invalid number %q", s)
		return
	}
	v.SetFloat(f)
	c.noteZero(path, f == 0)
}

// decodeBody stores a request body template: any JSON object, taken as
// written (no ${VAR} expansion: a body is no place for secrets).
func (c *checker) decodeBody(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		c.fail(n, path, "expected a mapping (the JSON object to send), found %s", kindName(n))
		return
	}
	var b Body
	if err := n.Decode(&b); err != nil {
		c.fail(n, path, "%v", err)
		return
	}
	raw, err := json.Marshal(b)
	if err != nil {
		c.fail(n, path, "not expressible as JSON (keys must be strings): %v", err)
		return
	}
	// Through JSON, so that the template holds what JSON decodes to
	// (objects as map[string]any, exact numbers), not YAML's types.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil {
		c.fail(n, path, "%v", err)
		return
	}
	v.Set(reflect.ValueOf(Body(body)))
}

func (c *checker) noteZero(path string, zero bool) {
	if zero {
		c.zeros[path] = true
	}
}

// scalar returns the env-expanded text of a scalar node.
func (c *checker) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		c.fail(n, path, "expected %s, found %s", want, kindName(n))
		return "", false
	}
	s, unset, err := expand(n.Value, c.lookup)
	if err != nil {
		c.fail(n, path, "%v", err)
		return "", false
	}
	if len(unset) > 0 {
		// Said as it is: the value left empty would be reported as a
		// missing or invalid field, which sends the reader to the file.
		c.bad[path] = true
		for _, name := range unset {
			c.at(n.Line, "", "environment variable %s is not set (%s); set it, or give a default: ${%s:-...}", name, path, name)
		}
		return "", false
	}
	return s, true
}

type pair struct {
	key  string
	line int
	val  *yaml.Node
}

// pairs returns the key/value pairs of a mapping, with YAML merge keys (<<)
// resolved: explicit keys win over merged ones, earlier merges over later.
// Duplicate explicit keys are problems.
func (c *checker) pairs(n *yaml.Node, path string, depth int) []pair {
	var explicit, merged []pair
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merged = append(merged, c.merge(val, path, depth+1)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			c.fail(k, path, "mapping keys must be plain names, found %s", kindName(k))
			continue
		}
		if l, dup := first[k.Value]; dup {
			c.at(k.Line, join(path, k.Value), "duplicate key (first at line %d)", l)
			continue
		}
		first[k.Value] = k.Line
		explicit = append(explicit, pair{key: k.Value, line: k.Line, val: val})
	}
	for _, p := range merged {
		if _, ok := first[p.key]; !ok {
			first[p.key] = p.line
			explicit = append(explicit, p)
		}
	}
	return explicit
}

func (c *checker) merge(n *yaml.Node, path string, depth int) []pair {
	if depth > maxDepth {
		c.fail(n, path, "nested too deeply")
		return nil
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		return c.pairs(n, path, depth)
	case yaml.SequenceNode:
		var out []pair
		for _, item := range n.Content {
			out = append(out, c.merge(item, path, depth+1)...)
		}
		return out
	}
	c.fail(n, path, "<< must merge a mapping, found %s", kindName(n))
	return nil
}

func (c *checker) decodeStruct(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind != yaml.MappingNode {
		c.fail(n, path, "expected a mapping, found %s", kindName(n))
		return
	}
	t := v.Type()
	for _, p := range c.pairs(n, path, depth) {
		fp := join(path, p.key)
		f, ok := fieldByTag(t, p.key)
		if !ok {
			msg := "unknown field"
			if s := suggest(p.key, yamlNames(t)); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			c.at(p.line, fp, "%s", msg)
			continue
		}
		c.lines[fp] = p.line
		c.decode(p.val, v.FieldByIndex(f.Index), fp, depth+1)
	}
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && yamlName(f) == key && key != "" && key != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" && n != "-" {
			names = append(names, n)
		}
	}
	return names
}

// Suggest returns the known name closest to name if name is a likely typo
// of it (at most two edits apart), else "": for "did you mean" hints.
func Suggest(name string, known []string) string { return suggest(name, known) }

// suggest returns the known name closest to key, if it is a likely typo.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// expand replaces ${VAR} and ${VAR:-default} in s, and lists the variables
// that are unset without a default: a config that names a variable means
// it (write ${VAR:-} for an optional one). The default applies when VAR is
// unset or empty, as in the shell; a variable set to "" without a default
// expands to "". "$${" stands for a literal "${"; any other "$" is kept as is.
func expand(s string, lookup func(string) (string, bool)) (_ string, unset []string, _ error) {
	if !strings.Contains(s, "$") {
		return s, nil, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String(), unset, nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			b.WriteString("${")
			s = s[3:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", nil, fmt.Errorf("unterminated ${ in %q", s)
			}
			expr := s[2:end]
			name, def, hasDef := strings.Cut(expr, ":-")
			if !envName.MatchString(name) {
				return "", nil, fmt.Errorf("invalid variable reference ${%s} (want ${NAME} or ${NAME:-default}; $${ for a literal ${)", expr)
			}
			val, ok := lookup(name)
			if hasDef && (!ok || val == "") {
				val = def
			}
			if !ok && !hasDef {
				unset = append(unset, name)
			}
			b.WriteString(val)
			s = s[end+1:]
		default:
			b.WriteByte('$')
			s = s[1:]
		}
	}
}
