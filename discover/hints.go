package discover

import (
	"fmt"
	"strings"
)

// Hint is config discovery saw evidence for but does not propose live: keys
// this build may not accept yet (oauth2 auth, parent resources, POST
// bodies) or a guess to confirm. The YAML shows each as a commented block
// under what was seen, so an operator can check the evidence before
// uncommenting it.
type Hint struct {
	// Key is the config the hint proposes: auth, graphql or parent.
	Key string
	// Confidence is high, medium or low, as for a Note.
	Confidence string
	// Seen is what discovery saw: a header and its value (credentials
	// redacted), a field path and its value.
	Seen string
	// Lines are the proposed YAML, indented relative to each other.
	Lines []string
}

// Hint kinds: where a hint goes in the YAML.
const (
	hintAuth    = "auth"    // under the source
	hintGraphQL = "graphql" // a resource beside the one discovered
	hintParent  = "parent"  // a child resource beside the one discovered
)

func (s *session) hint(key, confidence, seen string, lines ...string) {
	s.hints = append(s.hints, Hint{Key: key, Confidence: confidence, Seen: seen, Lines: lines})
}

// envName is the environment variable a proposal names for a secret of the
// source: GITHUB_CLIENT_ID.
func envName(source, what string) string {
	return strings.ToUpper(source + "_" + what)
}

// flow writes a YAML flow mapping from ordered key/value pairs; values are
// written as given (quote them with q).
func flow(pairs ...string) string {
	parts := make([]string, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		parts = append(parts, pairs[i]+": "+pairs[i+1])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// qList writes a YAML flow sequence of quoted strings.
func qList(items []string) string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = q(it)
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// shown is a value as evidence: one line, bounded, quoted.
func shown(v any) string {
	if t, ok := scalarText(v); ok {
		return fmt.Sprintf("%q", snippet([]byte(t), 60))
	}
	return fmt.Sprintf("%v", v)
}
