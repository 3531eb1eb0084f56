package extract

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// This file is the fast path of a page: Scan validates a body in one pass
// and keeps a light tree of byte spans, and (*Extractor).DocRecords writes
// each record's canonical JSON straight from those spans, once (the hashed
// form is the payload with the ignored spans cut). On a 1000-record
// ticket_sales page Decode into map[string]any plus Records take about
// 15 µs per record, Scan plus DocRecords under 3 µs (BenchmarkPage): no
// maps, no interface boxing, few string copies, arenas reused by Release.
//
// Everything it produces must be exactly what Decode + Records produce —
// stored hashes depend on it — so it follows encoding/json's rules: the same
// inputs accepted and rejected, the last of duplicate keys wins, keys sorted
// by their decoded text, strings decoded and re-encoded as the Encoder
// (SetEscapeHTML(false)) writes them. Like Decode it tells apart the strings
// whose raw text holds invalid UTF-8 or a lone surrogate escape
// (InvalidString), and like appendCanonical it writes numbers as
// CanonicalNumber does: a number already canonical, as nearly all are, is
// marked while it is scanned and copied from the body. The same records
// are rejected for the same reasons. The fuzz test FuzzPage compares both
// paths.

// maxDepth is encoding/json's nesting limit: deeper documents are rejected.
const maxDepth = 10000

type kind uint8

const (
	kindNull kind = iota
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindArray
	kindObject
)

// String names the kind as Kind names decoded values, for error messages.
func (k kind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindFalse, kindTrue:
		return "boolean"
	case kindNumber:
		return "number"
	case kindString:
		return "string"
	case kindArray:
		return "array"
	}
	return "object"
}

// node is one value of a scanned document.
//
// Numbers: lo:hi is their text in the body. Strings: lo:hi is their decoded
// text, in the body when it is the same as the raw text (no escapes, valid
// UTF-8), else in Doc.dec. Arrays: kids[lo:hi] are the elements. Objects:
// kids[lo:hi] are key, value pairs sorted by key, duplicates dropped (the
// last one wins, as in a map).
type node struct {
	lo, hi int32
	kind   kind
	// decoded: a string's text is in Doc.dec. verbatim: a string the
	// Encoder writes back unchanged between quotes, or a number in
	// canonical form. invalid: a string whose raw text holds invalid UTF-8
	// or a lone surrogate escape (an InvalidString; its raw text is in
	// Doc.raws).
	decoded, verbatim, invalid bool
}

// rawSpan is where the raw text of an invalid string node is in the body.
type rawSpan struct{ node, lo, hi int32 }

// Doc is a scanned JSON document.
type Doc struct {
	body  []byte
	nodes []node
	kids  []int32
	dec   []byte    // decoded text of strings with escapes or invalid UTF-8
	raws  []rawSpan // of invalid strings, by node
	stack []int32
	keys  [][]byte // scratch of sortMembers
	root  int32
}

// docs keeps the arenas of released Docs: a page's tree is a few hundred
// kilobytes, allocated and cleared for every page otherwise.
var docs = sync.Pool{New: func() any { return new(Doc) }}

// Scan parses a JSON body as Decode does, rejecting exactly what Decode
// rejects, into a Doc for DocRecords and Lookup. The Doc refers to body,
// which must not change while the Doc is in use; Release hands its memory
// to the next Scan.
func Scan(body []byte) (*Doc, error) {
	if len(body) >= 1<<31-1 {
		return nil, fmt.Errorf("malformed JSON: body of %d bytes is too large", len(body))
	}
	d := docs.Get().(*Doc)
	d.body, d.nodes, d.kids, d.dec, d.stack, d.raws = body, d.nodes[:0], d.kids[:0], d.dec[:0], d.stack[:0], d.raws[:0]
	if cap(d.nodes) == 0 {
		d.nodes = make([]node, 0, len(body)/10+8)
		d.kids = make([]int32, 0, len(body)/12+8)
	}
	if err := d.scan(); err != nil {
		d.Release()
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	return d, nil
}

// Release lets a later Scan reuse d's memory. Neither d nor anything
// DocRecords returned from it needs d after: d must not be used again.
func (d *Doc) Release() {
	d.body = nil
	clear(d.keys[:cap(d.keys)]) // they point into the body
	docs.Put(d)
}

func (d *Doc) scan() error {
	s := scanner{d: d, stack: d.stack}
	defer func() { d.stack = s.stack[:0] }()
	s.skipSpace()
	if s.i == len(d.body) {
		return fmt.Errorf("empty body")
	}
	root, err := s.value(0)
	if err != nil {
		return err
	}
	s.skipSpace()
	// Decode's Decoder.More stops at a closing bracket: what follows one
	// after the document is not looked at, so it is accepted too.
	if s.i < len(d.body) && d.body[s.i] != ']' && d.body[s.i] != '}' {
		return fmt.Errorf("trailing data after the document at offset %d", s.i)
	}
	d.root = root
	return nil
}

type scanner struct {
	d     *Doc
	i     int
	stack []int32 // children of the containers being read
}

func (s *scanner) skipSpace() {
	b := s.d.body
	for s.i < len(b) {
		switch b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) errAt(what string) error {
	if s.i >= len(s.d.body) {
		return fmt.Errorf("unexpected end of JSON input %s", what)
	}
	return fmt.Errorf("invalid character %q %s at offset %d", s.d.body[s.i], what, s.i)
}

func (s *scanner) add(n node) int32 {
	s.d.nodes = append(s.d.nodes, n)
	return int32(len(s.d.nodes) - 1)
}

// value reads the value at s.i (spaces skipped) at nesting depth.
func (s *scanner) value(depth int) (int32, error) {
	b := s.d.body
	if s.i >= len(b) {
		return 0, s.errAt("looking for beginning of value")
	}
	switch c := b[s.i]; {
	case c == '{':
		return s.object(depth + 1)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		return s.str()
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true", kindTrue)
	case c == 'f':
		return s.literal("false", kindFalse)
	case c == 'n':
		return s.literal("null", kindNull)
	}
	return 0, s.errAt("looking for beginning of value")
}

func (s *scanner) literal(word string, k kind) (int32, error) {
	b := s.d.body
	for j := 0; j < len(word); j++ {
		if s.i >= len(b) || b[s.i] != word[j] {
			return 0, s.errAt("in literal " + word)
		}
		s.i++
	}
	return s.add(node{kind: k}), nil
}

func (s *scanner) digits() int {
	b := s.d.body
	n := 0
	for s.i < len(b) && b[s.i] >= '0' && b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, noting
// whether it is canonical as canonicalNumber does: no "-0", no fraction
// ending in 0, no exponent, at most MaxPlainNumber bytes.
func (s *scanner) number() (int32, error) {
	b := s.d.body
	lo := s.i
	neg := b[s.i] == '-'
	if neg {
		s.i++
	}
	zero := s.i < len(b) && b[s.i] == '0'
	if zero {
		s.i++
	} else if s.digits() == 0 {
		return 0, s.errAt("in numeric literal")
	}
	canonical := !(neg && zero)
	if s.i < len(b) && b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return 0, s.errAt("after decimal point in numeric literal")
		}
		canonical = b[s.i-1] != '0'
	}
	if s.i < len(b) && (b[s.i] == 'e' || b[s.i] == 'E') {
		canonical = false
		s.i++
		if s.i < len(b) && (b[s.i] == '+' || b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return 0, s.errAt("in exponent of numeric literal")
		}
	}
	canonical = canonical && s.i-lo <= MaxPlainNumber
	return s.add(node{kind: kindNumber, lo: int32(lo), hi: int32(s.i), verbatim: canonical}), nil
}

// str reads a string; only strings with escapes or invalid UTF-8 are
// decoded (by encoding/json itself, so that every rule is its own), and
// only those can be invalid (an InvalidString).
func (s *scanner) str() (int32, error) {
	b := s.d.body
	open := s.i
	s.i++
	lo := s.i
	escaped, ascii := false, true
	for {
		i := s.i
		for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plainASCII[b[i]] {
			i++
		}
		s.i = i
		if s.i >= len(b) {
			return 0, s.errAt("in string literal")
		}
		c := b[s.i]
		switch {
		case c == '"':
			n := node{kind: kindString, lo: int32(lo), hi: int32(s.i)}
			s.i++
			raw := b[lo:n.hi]
			if escaped || !ascii && !utf8.Valid(raw) {
				var text string
				if err := json.Unmarshal(b[open:s.i], &text); err != nil {
					return 0, fmt.Errorf("string at offset %d: %w", open, err)
				}
				n.decoded = true
				n.invalid = invalidText(raw)
				n.lo = int32(len(s.d.dec))
				s.d.dec = append(s.d.dec, text...)
				n.hi = int32(len(s.d.dec))
				if n.invalid {
					i := s.add(n)
					s.d.raws = append(s.d.raws, rawSpan{i, int32(lo), int32(lo + len(raw))})
					return i, nil
				}
			} else {
				// The Encoder escapes these two line separators.
				n.verbatim = ascii || !bytes.Contains(raw, []byte("\u2028")) && !bytes.Contains(raw, []byte("\u2029"))
			}
			return s.add(n), nil
		case c == '\\':
			escaped = true
			s.i++
			if s.i >= len(b) {
				return 0, s.errAt("in string escape code")
			}
			switch b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for range 4 {
					if s.i >= len(b) || !isHex(b[s.i]) {
						return 0, s.errAt("in \\u hexadecimal character escape")
					}
					s.i++
				}
			default:
				return 0, s.errAt("in string escape code")
			}
		case c < 0x20:
			return 0, s.errAt("in string literal")
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			s.i++
		}
	}
}

// plainASCII marks the bytes a string can hold that need no second look:
// printable ASCII but the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// special8 reports whether any of 8 bytes is not plainASCII (a byte below
// 0x20, a quote, a backslash or a byte from 0x80): the bit tricks find
// whether one exists, never missing one.
func special8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	zero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	return (x-0x20*ones)&^x&highs|zero(x^'"'*ones)|zero(x^'\\'*ones)|x&highs != 0
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// array reads [v, ...]; its elements' indexes go to kids in order.
func (s *scanner) array(depth int) (int32, error) {
	if depth > maxDepth {
		return 0, s.errAt("exceeded max depth")
	}
	s.i++
	base := len(s.stack)
	s.skipSpace()
	if s.i < len(s.d.body) && s.d.body[s.i] == ']' {
		s.i++
		return s.close(kindArray, base), nil
	}
	for {
		s.skipSpace()
		v, err := s.value(depth)
		if err != nil {
			return 0, err
		}
		s.stack = append(s.stack, v)
		s.skipSpace()
		if s.i >= len(s.d.body) {
			return 0, s.errAt("after array element")
		}
		switch s.d.body[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return s.close(kindArray, base), nil
		default:
			return 0, s.errAt("after array element")
		}
	}
}

// object reads {"k": v, ...}; its key, value pairs go to kids sorted by
// key with duplicates dropped.
func (s *scanner) object(depth int) (int32, error) {
	if depth > maxDepth {
		return 0, s.errAt("exceeded max depth")
	}
	s.i++
	base := len(s.stack)
	s.skipSpace()
	if s.i < len(s.d.body) && s.d.body[s.i] == '}' {
		s.i++
		return s.close(kindObject, base), nil
	}
	for {
		s.skipSpace()
		if s.i >= len(s.d.body) || s.d.body[s.i] != '"' {
			return 0, s.errAt("looking for beginning of object key string")
		}
		k, err := s.str()
		if err != nil {
			return 0, err
		}
		s.skipSpace()
		if s.i >= len(s.d.body) || s.d.body[s.i] != ':' {
			return 0, s.errAt("after object key")
		}
		s.i++
		s.skipSpace()
		v, err := s.value(depth)
		if err != nil {
			return 0, err
		}
		s.stack = append(s.stack, k, v)
		s.skipSpace()
		if s.i >= len(s.d.body) {
			return 0, s.errAt("after object key:value pair")
		}
		switch s.d.body[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.sortMembers(base)
			return s.close(kindObject, base), nil
		default:
			return 0, s.errAt("after object key:value pair")
		}
	}
}

// close moves the children read since base from the stack to kids.
func (s *scanner) close(k kind, base int) int32 {
	lo := len(s.d.kids)
	s.d.kids = append(s.d.kids, s.stack[base:]...)
	s.stack = s.stack[:base]
	return s.add(node{kind: k, lo: int32(lo), hi: int32(len(s.d.kids))})
}

// sortMembers sorts the key, value pairs on the stack from base by key,
// stably, and drops all but the last of equal keys.
func (s *scanner) sortMembers(base int) {
	m := s.stack[base:]
	n := len(m) / 2
	keys := s.d.keys[:0]
	for i := range n {
		keys = append(keys, s.d.text(m[2*i]))
	}
	s.d.keys = keys
	if n <= 24 {
		// Insertion sort of pairs: objects are small and often sorted.
		for i := 1; i < n; i++ {
			for j := i; j > 0 && bytes.Compare(keys[j], keys[j-1]) < 0; j-- {
				keys[j], keys[j-1] = keys[j-1], keys[j]
				m[2*j], m[2*j-2] = m[2*j-2], m[2*j]
				m[2*j+1], m[2*j-1] = m[2*j-1], m[2*j+1]
			}
		}
	} else {
		type member struct {
			key  []byte
			k, v int32
		}
		ms := make([]member, n)
		for i := range ms {
			ms[i] = member{keys[i], m[2*i], m[2*i+1]}
		}
		slices.SortStableFunc(ms, func(a, b member) int { return bytes.Compare(a.key, b.key) })
		for i, x := range ms {
			keys[i], m[2*i], m[2*i+1] = x.key, x.k, x.v
		}
	}
	// Keep the last of each run of equal keys (stable: the latest in the body).
	out := 0
	for i := range n {
		if i+1 < n && bytes.Equal(keys[i], keys[i+1]) {
			continue
		}
		m[2*out], m[2*out+1] = m[2*i], m[2*i+1]
		out++
	}
	s.stack = s.stack[:base+2*out]
}

// text is the decoded text of a string node (or a number's text).
func (d *Doc) text(i int32) []byte {
	n := &d.nodes[i]
	if n.decoded {
		return d.dec[n.lo:n.hi]
	}
	return d.body[n.lo:n.hi]
}

// raw is the raw text (between the quotes) of an invalid string node.
func (d *Doc) raw(i int32) []byte {
	j, _ := slices.BinarySearchFunc(d.raws, i, func(r rawSpan, i int32) int { return int(r.node - i) })
	return d.body[d.raws[j].lo:d.raws[j].hi]
}

// lookup follows path parts through nested objects from node i.
func (d *Doc) lookup(i int32, parts []string) (int32, bool) {
	for _, part := range parts {
		var ok bool
		if i, ok = d.member(i, part); !ok {
			return 0, false
		}
	}
	return i, true
}

// member is the value of key in object node i.
func (d *Doc) member(i int32, key string) (int32, bool) {
	n := d.nodes[i]
	if n.kind != kindObject {
		return 0, false
	}
	for j := n.lo; j < n.hi; j += 2 {
		if string(d.text(d.kids[j])) == key {
			return d.kids[j+1], true
		}
	}
	return 0, false
}

// Lookup is extract.Lookup on the decoded document: the value at a dotted
// path, as Decode would have given it.
func (d *Doc) Lookup(path string) (any, bool) {
	i, ok := d.lookup(d.root, splitPath(path))
	if !ok {
		return nil, false
	}
	return d.value(i), true
}

// splitPath splits a dotted path into its parts; "" (the value itself)
// has none, as in Lookup.
func splitPath(path string) []string {
	if path == "" {
		return nil
	}
	return strings.Split(path, ".")
}

// value builds the decoded form of node i: what Decode gives for it.
func (d *Doc) value(i int32) any {
	n := d.nodes[i]
	switch n.kind {
	case kindNull:
		return nil
	case kindFalse:
		return false
	case kindTrue:
		return true
	case kindNumber:
		return json.Number(d.text(i))
	case kindString:
		if n.invalid {
			return InvalidString{Text: string(d.text(i)), Raw: string(d.raw(i))}
		}
		return string(d.text(i))
	case kindArray:
		arr := make([]any, n.hi-n.lo)
		for j := range arr {
			arr[j] = d.value(d.kids[n.lo+int32(j)])
		}
		return arr
	}
	obj := make(map[string]any, (n.hi-n.lo)/2)
	for j := n.lo; j < n.hi; j += 2 {
		obj[string(d.text(d.kids[j]))] = d.value(d.kids[j+1])
	}
	return obj
}

// encoder writes the canonical JSON of the records of a page. It encodes
// each record once: while writing the payload it notes the spans that
// ignore_fields leave out, and the hashed form is the payload with those
// spans cut (the same bytes as encoding it again without them).
type encoder struct {
	d      *Doc
	buf    []byte // the page's payloads, one after the other
	cuts   []span // of the record being written, in buf, in order
	hashed []byte // scratch for the hashed form
}

type span struct{ lo, hi int }

// appendNode writes node i as appendCanonical writes its decoded value,
// noting in cuts what the paths of skip leave out.
func (w *encoder) appendNode(i int32, skip [][]string) error {
	d := w.d
	n := &d.nodes[i]
	switch n.kind {
	case kindNull:
		w.buf = append(w.buf, "null"...)
	case kindFalse:
		w.buf = append(w.buf, "false"...)
	case kindTrue:
		w.buf = append(w.buf, "true"...)
	case kindNumber:
		if n.verbatim { // as nearly every number is
			w.buf = append(w.buf, d.body[n.lo:n.hi]...)
		} else {
			w.buf = append(w.buf, CanonicalNumber(string(d.body[n.lo:n.hi]))...)
		}
	case kindString:
		return w.appendString(i)
	case kindArray:
		w.buf = append(w.buf, '[')
		for j := n.lo; j < n.hi; j++ {
			if j > n.lo {
				w.buf = append(w.buf, ',')
			}
			if err := w.appendNode(d.kids[j], nil); err != nil {
				return err
			}
		}
		w.buf = append(w.buf, ']')
	default:
		w.buf = append(w.buf, '{')
		m := members{w: w}
		for j := n.lo; j < n.hi; j += 2 {
			var sub [][]string
			drop := false
			if len(skip) > 0 {
				sub, drop = below(skip, string(d.text(d.kids[j])))
			}
			pos := m.start(drop)
			if err := w.appendString(d.kids[j]); err != nil {
				return err
			}
			w.buf = append(w.buf, ':')
			if err := w.appendNode(d.kids[j+1], sub); err != nil {
				return err
			}
			m.end(pos, drop)
		}
		w.buf = append(w.buf, '}')
	}
	return nil
}

// members writes the separators of an object's members and notes the cuts
// of the hashed form: a dropped member with its comma, and the comma of
// the first member kept after dropped ones.
type members struct {
	w       *encoder
	n, kept int
}

// start writes the comma of the next member and returns where it begins.
func (m *members) start(drop bool) int {
	pos := len(m.w.buf)
	if m.n > 0 {
		m.w.buf = append(m.w.buf, ',')
		if !drop && m.kept == 0 {
			m.w.cuts = append(m.w.cuts, span{pos, pos + 1})
		}
	}
	m.n++
	if !drop {
		m.kept++
	}
	return pos
}

func (m *members) end(pos int, drop bool) {
	if drop {
		m.w.cuts = append(m.w.cuts, span{pos, len(m.w.buf)})
	}
}

func (w *encoder) appendString(i int32) error {
	n := &w.d.nodes[i]
	if n.verbatim {
		w.buf = append(w.buf, '"')
		w.buf = append(w.buf, w.d.body[n.lo:n.hi]...)
		w.buf = append(w.buf, '"')
		return nil
	}
	var err error
	w.buf, err = appendString(w.buf, string(w.d.text(i)))
	return err
}

// DocRecords is Records on a scanned document: the same records, payloads,
// hashes, cursors, rejections and errors.
func (e *Extractor) DocRecords(d *Doc) (records []Record, rejected []Rejected, err error) {
	arr, ok := d.lookup(d.root, e.recordsPath)
	if !ok {
		return nil, nil, fmt.Errorf("records path %q not found in response", e.res.Records.Path)
	}
	n := d.nodes[arr]
	count := 0
	switch n.kind {
	case kindNull: // "data": null is an empty page
	case kindArray:
		count = int(n.hi - n.lo)
	default:
		return nil, nil, fmt.Errorf("records path %q is a %s, not an array", e.res.Records.Path, n.kind)
	}
	// The whole record's canonical JSON, for a rejection (seldom).
	raw := func(i int) []byte {
		w := &encoder{d: d}
		_ = w.appendNode(d.kids[n.lo+int32(i)], nil) // cannot fail, as in Records
		return w.buf
	}
	// One buffer for all payloads of the page: a few allocations instead of
	// one per record. Canonical JSON is about as long as the body.
	w := &encoder{d: d, buf: make([]byte, 0, len(d.body)+count*8)}
	records, rejected = collect(count, func(i int) (Record, error) { return e.docRecord(w, e.docItem(d, d.kids[n.lo+int32(i)])) }, raw)
	return records, rejected, nil
}

// docItem is the record inside array element v (records.item), or -1
// when the element has none.
func (e *Extractor) docItem(d *Doc, v int32) int32 {
	if len(e.itemPath) == 0 {
		return v
	}
	if i, ok := d.lookup(v, e.itemPath); ok {
		return i
	}
	return -1
}

// docRecord prepares record node v, its payload appended to w.buf (with
// its capacity cut, so that appending to one cannot overwrite the next).
func (e *Extractor) docRecord(w *encoder, v int32) (Record, error) {
	d := w.d
	if v < 0 {
		return Record{}, fmt.Errorf("has no %q (records.item)", e.res.Records.Item)
	}
	if k := d.nodes[v].kind; k != kindObject {
		return Record{}, fmt.Errorf("is a %s, not an object", k)
	}
	id, err := e.docID(d, v)
	if err != nil {
		return Record{}, err
	}
	start := len(w.buf)
	w.cuts = w.cuts[:0]
	if err := e.appendStored(w, v); err != nil {
		return Record{}, err
	}
	payload := w.buf[start:len(w.buf):len(w.buf)]
	hashed := payload
	if len(w.cuts) > 0 {
		w.hashed = w.hashed[:0]
		last := start
		for _, c := range w.cuts {
			w.hashed = append(w.hashed, w.buf[last:c.lo]...)
			last = c.hi
		}
		w.hashed = append(w.hashed, w.buf[last:]...)
		hashed = w.hashed
	}
	sum := sha256.Sum256(hashed)
	r := Record{ID: id, Payload: payload, Hash: hex.EncodeToString(sum[:])}
	if e.res.Delta != nil {
		if c, ok := d.lookup(v, e.deltaPath); ok {
			r.Cursor = d.value(c)
		}
	}
	return r, nil
}

// appendStored writes what is stored of record v, the record or its
// projection, noting what ignore_fields leave out of the hash.
func (e *Extractor) appendStored(w *encoder, v int32) error {
	if len(e.res.Fields) == 0 {
		return w.appendNode(v, e.ignore)
	}
	w.buf = append(w.buf, '{')
	m := members{w: w}
	for _, name := range e.fieldNames {
		sub, drop := below(e.ignore, name)
		pos := m.start(drop)
		var err error
		if w.buf, err = appendString(w.buf, name); err != nil {
			return err
		}
		w.buf = append(w.buf, ':')
		if val, ok := w.d.lookup(v, e.fieldPaths[name]); ok {
			if err := w.appendNode(val, sub); err != nil {
				return err
			}
		} else {
			w.buf = append(w.buf, "null"...) // a missing field is stored as null
		}
		m.end(pos, drop)
	}
	w.buf = append(w.buf, '}')
	return nil
}

// docID is ID on a scanned record.
func (e *Extractor) docID(d *Doc, v int32) (string, error) {
	path := e.res.Records.ID
	i, ok := d.lookup(v, e.idPath)
	if !ok || d.nodes[i].kind == kindNull {
		return "", fmt.Errorf("id %q is missing", path)
	}
	switch k := d.nodes[i].kind; k {
	case kindString:
		if d.nodes[i].invalid {
			return "", invalidIDError(d.raw(i))
		}
		if d.nodes[i].lo == d.nodes[i].hi {
			return "", fmt.Errorf("id %q is empty", path)
		}
		return string(d.text(i)), nil
	case kindNumber:
		if d.nodes[i].verbatim {
			return string(d.text(i)), nil
		}
		return CanonicalNumber(string(d.text(i))), nil
	default:
		return "", fmt.Errorf("id %q is a %s, not a string or number", path, k)
	}
}

// LastID is the id of the last record of a page that has one, as the
// upstream wrote it: for continuing after it (pagination.cursor_from
// last_record). Unlike a record's id it may be one tidemark refuses to
// store (invalid text, as encoding/json decodes it): the read must still
// get past that record. False when no record of the page has an id.
func (e *Extractor) LastID(d *Doc) (string, bool) {
	arr, ok := d.lookup(d.root, e.recordsPath)
	if !ok || d.nodes[arr].kind != kindArray {
		return "", false
	}
	n := d.nodes[arr]
	for i := n.hi - 1; i >= n.lo; i-- {
		v := e.docItem(d, d.kids[i])
		if v < 0 {
			continue
		}
		id, ok := d.lookup(v, e.idPath)
		if !ok {
			continue
		}
		switch d.nodes[id].kind {
		case kindString, kindNumber:
			if s, err := e.docID(d, v); err == nil {
				return s, true
			}
			if d.nodes[id].kind == kindString && d.nodes[id].lo < d.nodes[id].hi {
				return string(d.text(id)), true
			}
		}
	}
	return "", false
}
