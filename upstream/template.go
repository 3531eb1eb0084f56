package upstream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/tidemark/tidemark/config"
)

// Vars are the values of a request template's placeholders, by name
// without braces ("cursor", "since", "limit"): a string, a number, nil for
// a value there is none of yet (the cursor of a read's first page), or an
// Absent. Callers may add names of their own; a placeholder whose name is
// not in Vars is left as it is written.
type Vars map[string]any

// Absent is a value there is none of, which has a stand-in where text must
// be written: a placeholder that is a whole string becomes null, one
// inside a longer string becomes the stand-in. A read without a lower
// bound has {since} Absent("1970-01-01T00:00:00Z"): a GraphQL variable
// since: null filters nothing, and a search string "updated_at:>'{since}'"
// asks for everything since the start of time.
type Absent string

// absentKey marks an Absent in JSON (a checkpoint's vars): a plain string
// would come back as a value.
const absentKey = "$absent"

// UnmarshalJSON reads vars as MarshalJSON wrote them, Absent values
// included.
func (vars *Vars) UnmarshalJSON(b []byte) error {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for k, v := range raw {
		if m, ok := v.(map[string]any); ok && len(m) == 1 {
			if text, ok := m[absentKey].(string); ok {
				raw[k] = Absent(text)
			}
		}
	}
	*vars = raw
	return nil
}

// MarshalJSON writes vars, each Absent as {"$absent": stand-in}.
func (vars Vars) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, len(vars))
	for k, v := range vars {
		if a, ok := v.(Absent); ok {
			v = map[string]string{absentKey: string(a)}
		}
		out[k] = v
	}
	return json.Marshal(out)
}

// with returns a copy of vars with name set to value: a Position's vars
// are handed to other goroutines and never changed in place.
func (vars Vars) with(name string, value any) Vars {
	out := make(Vars, len(vars)+1)
	maps.Copy(out, vars)
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
				if _, absent := val.(Absent); absent {
					return nil
				}
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
