// Package extract turns an upstream response body into records ready to
// store: it finds the record array, reads each record's id, applies the
// resource's field projection, and hashes a canonical form of the content
// with volatile fields left out, so that only real changes count as changes.
package extract

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/tidemark/tidemark/config"
)

// Record is one extracted record.
type Record struct {
	ID      string
	Payload []byte // canonical JSON of what is stored (the projection, if any)
	Hash    string // sha256 of the canonical JSON without ignore_fields
	// Cursor is the value of the resource's delta field (nil without delta).
	Cursor any
}

// Decode parses a JSON body, keeping numbers exact.
func Decode(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("malformed JSON: trailing data after the document")
	}
	return v, nil
}

// Lookup follows a dotted path ("price.cents") through nested objects. An
// empty path is v itself.
func Lookup(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for part := range strings.SplitSeq(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

// Array returns the record array at path in a decoded body.
func Array(doc any, path string) ([]any, error) {
	v, ok := Lookup(doc, path)
	if !ok {
		return nil, fmt.Errorf("records path %q not found in response", path)
	}
	if v == nil {
		return nil, nil // "data": null is an empty page
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("records path %q is a %s, not an array", path, Kind(v))
	}
	return arr, nil
}

// Extractor prepares the records of one resource.
type Extractor struct {
	res    *config.Resource
	ignore [][]string
	// The resource's paths split once, for DocRecords.
	recordsPath, idPath, deltaPath []string
	fieldNames                     []string // sorted, as a map's keys are encoded
	fieldPaths                     map[string][]string
}

// New returns the extractor of a resource.
func New(res *config.Resource) *Extractor {
	e := &Extractor{res: res}
	for _, f := range res.IgnoreFields {
		e.ignore = append(e.ignore, strings.Split(f, "."))
	}
	e.recordsPath, e.idPath = splitPath(res.Records.Path), splitPath(res.Records.ID)
	if res.Delta != nil {
		e.deltaPath = splitPath(res.Delta.Field)
	}
	e.fieldPaths = make(map[string][]string, len(res.Fields))
	for name, path := range res.Fields {
		e.fieldNames = append(e.fieldNames, name)
		e.fieldPaths[name] = splitPath(path)
	}
	slices.Sort(e.fieldNames)
	return e
}

// Records extracts every record of a response body. A record without a
// usable id fails the whole page, naming the record's index.
func (e *Extractor) Records(doc any) ([]Record, error) {
	arr, err := Array(doc, e.res.Records.Path)
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(arr))
	first := make(map[string]int, len(arr))
	for i, v := range arr {
		r, err := e.Record(v)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		// The same id twice with different content: no way to tell which
		// is current. An identical copy is harmless.
		if j, dup := first[r.ID]; dup && out[j].Hash != r.Hash {
			return nil, fmt.Errorf("record %d: id %q repeats record %d with different content", i, r.ID, j)
		}
		first[r.ID] = i
		out[i] = r
	}
	return out, nil
}

// Record prepares one decoded record.
func (e *Extractor) Record(v any) (Record, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Record{}, fmt.Errorf("is a %s, not an object", Kind(v))
	}
	id, err := ID(obj, e.res.Records.ID)
	if err != nil {
		return Record{}, err
	}
	stored := any(obj)
	if len(e.res.Fields) > 0 {
		proj := make(map[string]any, len(e.res.Fields))
		for name, path := range e.res.Fields {
			val, _ := Lookup(obj, path) // a missing field is stored as null
			proj[name] = val
		}
		stored = proj
	}
	payload, err := appendCanonical(nil, stored, nil)
	if err != nil {
		return Record{}, err
	}
	hashed := payload
	if len(e.ignore) > 0 {
		if hashed, err = appendCanonical(make([]byte, 0, len(payload)), stored, e.ignore); err != nil {
			return Record{}, err
		}
	}
	sum := sha256.Sum256(hashed)
	r := Record{ID: id, Payload: payload, Hash: hex.EncodeToString(sum[:])}
	if e.res.Delta != nil {
		r.Cursor, _ = Lookup(obj, e.res.Delta.Field)
	}
	return r, nil
}

// ID reads a record's id at a dotted path: a string, or a number kept as its
// exact JSON text. Anything else is an error.
func ID(obj map[string]any, path string) (string, error) {
	v, ok := Lookup(obj, path)
	if !ok || v == nil {
		return "", fmt.Errorf("id %q is missing", path)
	}
	switch id := v.(type) {
	case string:
		if id == "" {
			return "", fmt.Errorf("id %q is empty", path)
		}
		return id, nil
	case json.Number:
		return id.String(), nil
	default:
		return "", fmt.Errorf("id %q is a %s, not a string or number", path, Kind(v))
	}
}

// Canonical encodes v as canonical JSON: object keys sorted (encoding/json
// sorts map keys), numbers as received, no HTML escaping.
func Canonical(v any) ([]byte, error) {
	return appendCanonical(nil, v, nil)
}

// HashBody hashes a whole response body canonically, with volatile fields
// removed from every record (for hash probes of APIs without validators).
// Envelope fields such as a total count stay in: they change with creates
// and deletes beyond the first page.
func (e *Extractor) HashBody(doc any) (string, error) {
	if arr, err := Array(doc, e.res.Records.Path); err == nil && len(e.ignore) > 0 {
		stripped := make([]any, len(arr))
		for i, v := range arr {
			stripped[i] = without(v, e.ignore)
		}
		doc = replaceAt(doc, strings.Split(e.res.Records.Path, "."), stripped)
	}
	b, err := Canonical(doc)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// replaceAt returns doc with the value at path replaced, copying the objects
// on the way so doc itself is not changed.
func replaceAt(doc any, path []string, val any) any {
	if len(path) == 0 || path[0] == "" {
		return val
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return doc
	}
	out := make(map[string]any, len(obj))
	for k, v := range obj {
		out[k] = v
	}
	out[path[0]] = replaceAt(obj[path[0]], path[1:], val)
	return out
}

// without returns a copy of v with the dotted paths removed; v is not changed.
func without(v any, paths [][]string) any {
	if len(paths) == 0 {
		return v
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := make(map[string]any, len(obj))
	for k, val := range obj {
		sub, drop := below(paths, k)
		if drop {
			continue
		}
		if len(sub) > 0 {
			val = without(val, sub)
		}
		out[k] = val
	}
	return out
}

// Kind names the JSON type of a decoded value, for error messages.
func Kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

// below splits dotted paths (as parts) at an object key: drop when a path
// ends at key, else the remainders of the paths that go on beneath it.
func below(paths [][]string, key string) (sub [][]string, drop bool) {
	for _, p := range paths {
		if p[0] != key {
			continue
		}
		if len(p) == 1 {
			return nil, true
		}
		sub = append(sub, p[1:])
	}
	return sub, false
}
