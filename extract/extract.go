// Package extract turns an upstream response body into records ready to
// store: it finds the record array, reads each record's id in one
// canonical form, applies the resource's field projection, and hashes a
// canonical form of the content (numbers by their exact value, see
// CanonicalNumber) with volatile fields left out, so that only real
// changes count as changes. A record it cannot take (no usable id, an id
// the page repeats with other content) is rejected on its own: the rest of
// the page's records are taken all the same.
//
// Decode + Records is the plain path; Scan + DocRecords (scan.go) the fast
// one, which gives exactly the same records and rejections.
package extract

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tidemark/tidemark/config"
)

// Record is one extracted record.
type Record struct {
	ID      string // canonical, as ID reads it; never ""
	Payload []byte // canonical JSON of what is stored (the projection, if any)
	Hash    string // sha256 of the canonical JSON without ignore_fields
	// Cursor is the value of the resource's delta field (nil without
	// delta), as Decode gives it: a number as received, not canonical.
	Cursor any
}

// Decode parses a JSON body as encoding/json does, keeping numbers exact
// (json.Number, as received) and telling apart the strings encoding/json
// would decode to the same text: a string whose raw text holds invalid
// UTF-8 or a lone surrogate escape is an InvalidString.
func Decode(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, decodeError(body, err)
	}
	end := dec.InputOffset()
	if dec.More() {
		at := int(end) + len(body[end:]) - len(bytes.TrimLeft(body[end:], " \t\r\n"))
		return nil, fmt.Errorf("malformed JSON: trailing data after the document at offset %d", at)
	}
	if mayHoldInvalidText(body[:end]) {
		// Seldom: decode again, looking at each string's raw text.
		return decodeRaw(body[:end]), nil
	}
	return v, nil
}

// decodeError says where and what Decode met, in Scan's words: an operator
// reading a failed probe learns what the upstream sent ("invalid character
// '<' looking for beginning of value at offset 0": an HTML page), not only
// that it was not JSON.
func decodeError(body []byte, err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		// Offset counts the bytes read, the offending one included.
		return fmt.Errorf("malformed JSON: %s at offset %d", se.Error(), max(se.Offset-1, 0))
	case errors.Is(err, io.EOF):
		return errors.New("malformed JSON: empty body")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("malformed JSON: unexpected end of JSON input at offset %d", len(body))
	}
	return fmt.Errorf("malformed JSON: %w", err)
}

// decodeRaw decodes a valid JSON document as Decode does, token by token,
// so that each string's raw text can be seen: a string is an InvalidString
// when its raw text holds invalid UTF-8 or a lone surrogate escape.
func decodeRaw(body []byte) any {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type open struct {
		obj     map[string]any // or
		arr     []any
		key     string // of the next member's value
		haveKey bool   // key is read, its value is next
	}
	var stack []open
	var root any
	// set places a finished value in its container, or makes it the root.
	set := func(v any) {
		if len(stack) == 0 {
			root = v
			return
		}
		top := &stack[len(stack)-1]
		if top.obj != nil {
			top.obj[top.key] = v
			top.haveKey = false
		} else {
			top.arr = append(top.arr, v)
		}
	}
	for {
		from := dec.InputOffset()
		tok, err := dec.Token()
		if err == io.EOF {
			return root
		}
		if err != nil {
			panic(fmt.Sprintf("extract: decode a valid document: %v", err))
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, open{obj: map[string]any{}})
			case '[':
				stack = append(stack, open{arr: []any{}})
			default:
				top := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if top.obj != nil {
					set(top.obj)
				} else {
					set(top.arr)
				}
			}
			continue
		case string:
			// Between tokens there are only spaces, commas and colons: the
			// string's opening quote is the first one after the last token.
			quote := int(from) + bytes.IndexByte(body[from:], '"')
			raw := body[quote+1 : dec.InputOffset()-1]
			if top := len(stack) - 1; top >= 0 && stack[top].obj != nil && !stack[top].haveKey {
				stack[top].key, stack[top].haveKey = t, true
				continue
			}
			if invalidText(raw) {
				set(InvalidString{Text: t, Raw: string(raw)})
				continue
			}
		}
		set(tok)
	}
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
	recordsPath, itemPath, idPath, deltaPath []string
	fieldNames                               []string // sorted, as a map's keys are encoded
	fieldPaths                               map[string][]string
}

// New returns the extractor of a resource.
func New(res *config.Resource) *Extractor {
	e := &Extractor{res: res}
	for _, f := range res.IgnoreFields {
		e.ignore = append(e.ignore, strings.Split(f, "."))
	}
	e.recordsPath, e.idPath = splitPath(res.Records.Path), splitPath(res.Records.ID)
	e.itemPath = splitPath(res.Records.Item)
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

// Rejected is a record of a page that cannot be taken. The rest of the
// page's records are taken all the same: one bad record never fails a
// page.
type Rejected struct {
	Index int    // the record's position in the page's record array
	ID    string // its canonical id; "" when it could not be read or is invalid
	// Raw is the record's canonical JSON (the whole record, not the
	// projection), for an operator to look at: at most MaxRejectedRaw
	// bytes, cut at a character boundary.
	Raw       []byte
	Truncated bool   // Raw was cut
	Reason    string // `record 1: id "id" is missing`
	// Unidentified: the record has no id at all (missing, null, empty, not a
	// string or number) or is not an object: it might be any stored record.
	// An id that is there but invalid (ErrInvalidID) is not unidentified.
	Unidentified bool
}

// MaxRejectedRaw is the most of a rejected record's JSON kept in Raw.
const MaxRejectedRaw = 64 << 10

// reject makes the Rejected of record i of a page, with its canonical JSON.
func reject(i int, id string, raw []byte, reason string) Rejected {
	r := Rejected{Index: i, ID: id, Raw: raw, Reason: reason}
	if len(raw) > MaxRejectedRaw {
		cut := MaxRejectedRaw
		for cut > 0 && !utf8.RuneStart(raw[cut]) {
			cut--
		}
		r.Raw, r.Truncated = raw[:cut:cut], true
	}
	return r
}

// rejectBad rejects record i, which has no usable id.
func rejectBad(i int, raw []byte, err error) Rejected {
	r := reject(i, "", raw, fmt.Sprintf("record %d: %v", i, err))
	r.Unidentified = !errors.Is(err, ErrInvalidID)
	return r
}

// Records extracts every record of a decoded response body. err is only
// for the page as a whole: the records path missing or not an array. A
// record that cannot be taken (not an object; its id missing, null, empty,
// not a string or number, or invalid; its id repeated in the page with
// different content) is rejected, and the rest are returned in page order.
func (e *Extractor) Records(doc any) (records []Record, rejected []Rejected, err error) {
	arr, err := Array(doc, e.res.Records.Path)
	if err != nil {
		return nil, nil, err
	}
	raw := func(i int) []byte {
		b, _ := appendCanonical(nil, arr[i], nil) // cannot fail on decoded values
		return b
	}
	records, rejected = collect(len(arr), func(i int) (Record, error) { return e.Record(e.item(arr[i])) }, raw)
	return records, rejected, nil
}

// collect takes the count records of a page, record(i) making the i-th: the
// ones it cannot make are rejected with their canonical JSON raw(i), and
// settle resolves repeated ids. Records and DocRecords share it.
func collect(count int, record func(i int) (Record, error), raw func(i int) []byte) ([]Record, []Rejected) {
	out := make([]Record, count)
	var rejected []Rejected
	for i := range count {
		r, err := record(i)
		if err != nil {
			rejected = append(rejected, rejectBad(i, raw(i), err))
			continue
		}
		out[i] = r
	}
	return settle(out, rejected, raw)
}

// settle finishes a page's records. out holds them by index, rejected
// ones with ID "", and rejected what has been rejected so far, in index
// order. The same id twice with different content leaves no way to tell
// which copy is current: every copy of that id is rejected, each naming
// a copy with other content. Identical copies are harmless and all kept.
// settle returns the records left, in order, and all rejections, in order.
func settle(out []Record, rejected []Rejected, raw func(i int) []byte) ([]Record, []Rejected) {
	first := make(map[string]int, len(out))
	var conflicting map[string][]int // id → its copies, by index
	for i := range out {
		id := out[i].ID
		if id == "" {
			continue
		}
		j, dup := first[id]
		if !dup {
			first[id] = i
			continue
		}
		if out[j].Hash != out[i].Hash && conflicting[id] == nil {
			if conflicting == nil {
				conflicting = make(map[string][]int)
			}
			conflicting[id] = []int{}
		}
	}
	if conflicting != nil {
		var dups []Rejected
		for i := range out {
			if copies, ok := conflicting[out[i].ID]; ok {
				conflicting[out[i].ID] = append(copies, i)
			}
		}
		for id, copies := range conflicting {
			for _, i := range copies {
				// The first copy with content other than this one's.
				other := 0
				for _, j := range copies {
					if out[j].Hash != out[i].Hash {
						other = j
						break
					}
				}
				reason := fmt.Sprintf("record %d: id %q repeats record %d with different content", i, id, other)
				if other > i {
					reason = fmt.Sprintf("record %d: id %q is repeated by record %d with different content", i, id, other)
				}
				dups = append(dups, reject(i, id, raw(i), reason))
			}
		}
		for _, r := range dups {
			out[r.Index] = Record{}
		}
		rejected = append(rejected, dups...)
		slices.SortFunc(rejected, func(a, b Rejected) int { return a.Index - b.Index })
	}
	if len(rejected) > 0 {
		out = slices.DeleteFunc(out, func(r Record) bool { return r.ID == "" })
	}
	return out, rejected
}

// item is the record inside array element v (records.item); a missing
// one is a missingItem, which Record rejects.
func (e *Extractor) item(v any) any {
	if e.res.Records.Item == "" {
		return v
	}
	if r, ok := Lookup(v, e.res.Records.Item); ok {
		return r
	}
	return missingItem{}
}

// missingItem stands for the record of an array element without one.
type missingItem struct{}

// Record prepares one decoded record. Its error is why the record cannot
// be taken (Records rejects it).
func (e *Extractor) Record(v any) (Record, error) {
	if _, missing := v.(missingItem); missing {
		return Record{}, fmt.Errorf("has no %q (records.item)", e.res.Records.Item)
	}
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

// ID reads a record's id at a dotted path, in its one canonical form: a
// string kept byte for byte, or a number as CanonicalNumber writes it (10,
// 10.0 and 1e1 are one id, "10", as is the string "10"). A string whose raw
// text holds invalid UTF-8 or a lone surrogate escape is an error naming the
// problem and the id as Go quotes it (`id "ab\xff" is not valid UTF-8`,
// `id "\ud800x" holds a lone surrogate \ud800`): encoding/json would turn
// both into U+FFFD, and two upstream records into one. A missing, null or
// empty id, or one of another type, is an error too.
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
	case InvalidString:
		return "", invalidIDError([]byte(id.Raw))
	case json.Number:
		return CanonicalNumber(id.String()), nil
	default:
		return "", fmt.Errorf("id %q is a %s, not a string or number", path, Kind(v))
	}
}

// Canonical encodes v as canonical JSON: object keys sorted (encoding/json
// sorts map keys), numbers as CanonicalNumber writes them, no HTML
// escaping.
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

// HashRecords hashes the records of a decoded body alone (each its
// records.item, less ignore_fields), not the envelope: for bodies whose
// envelope moves with every answer (GraphQL's extensions.cost).
func (e *Extractor) HashRecords(doc any) (string, error) {
	arr, err := Array(doc, e.res.Records.Path)
	if err != nil {
		return "", err
	}
	out := make([]any, len(arr))
	for i, v := range arr {
		if v = e.item(v); v != (missingItem{}) {
			out[i] = without(v, e.ignore)
		}
	}
	b, err := Canonical(out)
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
	case string, InvalidString:
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
