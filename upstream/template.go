package upstream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tidemark/tidemark/config"
)

// Vars are the values of a request template's placeholders, by name
// without braces ("cursor", "since", "limit"): a string, a number, or nil
// for a value there is none of yet (the cursor of a read's first page).
// Callers may add names of their own; a placeholder whose name is not in
// Vars is left as it is written.
type Vars map[string]any

// with returns a copy of vars with name set to value: a Position's vars
// are handed to other goroutines and never changed in place.
func (vars Vars) with(name string, value any) Vars {
	out := make(Vars, len(vars)+1)
	for k, v := range vars {
		out[k] = v
	}
	out[name] = value
	return out
}

// Render fills a body template with vars and encodes it as JSON. A string
// that is exactly one placeholder becomes the value itself (null, a
// number, a string); a placeholder inside a longer string is replaced by
// the value's text ("" for nil). Substitution happens on the decoded
// template and the result is encoded after, so no value, however it is
// quoted, can change the body's structure.
func Render(tmpl config.Body, vars Vars) ([]byte, error) {
	if tmpl == nil {
		return nil, nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // a GraphQL query's > stays readable in previews
	if err := enc.Encode(fill(map[string]any(tmpl), vars)); err != nil {
		return nil, fmt.Errorf("render the request body: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func fill(v any, vars Vars) any {
	switch v := v.(type) {
	case string:
		return fillString(v, vars)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = fill(e, vars)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = fill(e, vars)
		}
		return out
	}
	return v
}

func fillString(s string, vars Vars) any {
	if name, ok := strings.CutPrefix(s, "{"); ok {
		if name, ok = strings.CutSuffix(name, "}"); ok {
			if val, known := vars[name]; known {
				return val
			}
		}
	}
	// One pass, left to right: a value is never scanned for placeholders
	// itself (a cursor may hold "{since}").
	var b strings.Builder
	for {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			break
		}
		val, known := vars[s[open+1:open+end]]
		if !known {
			b.WriteString(s[:open+1])
			s = s[open+1:]
			continue
		}
		b.WriteString(s[:open])
		if val != nil {
			fmt.Fprint(&b, val)
		}
		s = s[open+end+1:]
	}
	b.WriteString(s)
	return b.String()
}
