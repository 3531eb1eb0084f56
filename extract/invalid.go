package extract

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// InvalidString is how Decode and (*Doc).Lookup give a JSON string whose
// raw text holds invalid UTF-8 or a lone UTF-16 surrogate escape ("\ud800",
// a high surrogate not followed by a low one, a lone low surrogate).
// encoding/json decodes each such byte or escape to U+FFFD, so different
// upstream strings decode to the same text: Raw keeps them apart, so that an
// id holding one is rejected instead of merged with another record's.
// Canonical JSON writes Text, as it writes any other string.
type InvalidString struct {
	Text string // as encoding/json decodes the string
	Raw  string // the raw JSON text between the quotes, byte for byte
}

// String returns Text.
func (s InvalidString) String() string { return s.Text }

// MarshalJSON writes Text as a JSON string: what encoding/json wrote for
// the string before it was told apart.
func (s InvalidString) MarshalJSON() ([]byte, error) { return appendString(nil, s.Text) }

// invalidText reports whether raw, the text of a JSON string between its
// quotes, holds a part that encoding/json decodes to U+FFFD though it is no
// U+FFFD: an invalid UTF-8 byte or a lone surrogate escape.
func invalidText(raw []byte) bool {
	return badText(raw, nil) != ""
}

// mayHoldInvalidText is a quick look at a whole body: false when no string
// in it can be an InvalidString (valid UTF-8, no escape of a surrogate).
func mayHoldInvalidText(body []byte) bool {
	if !utf8.Valid(body) {
		return true
	}
	for i := 0; ; {
		j := bytes.Index(body[i:], []byte(`\u`))
		if j < 0 {
			return false
		}
		i += j + 2
		if i+1 < len(body) && (body[i] == 'd' || body[i] == 'D') && bytes.IndexByte([]byte("89abcdefABCDEF"), body[i+1]) >= 0 {
			return true
		}
	}
}

// badText walks raw, the text of a JSON string between its quotes (valid
// JSON), as encoding/json decodes it, and describes the first part it
// decodes to U+FFFD though the part is no U+FFFD: "is not valid UTF-8" for
// an invalid byte, `holds a lone surrogate \ud800` for a lone surrogate
// escape; "" when there is none. With quoted not nil, it also writes the
// whole string to *quoted Go-quoted, invalid bytes as \xff and lone
// surrogates as \ud800, so that different raw texts read differently
// (strconv.Quote writes \x only below 0x80 and never a surrogate).
func badText(raw []byte, quoted *[]byte) string {
	problem := ""
	var runes []byte // valid text not yet quoted
	keep := func(b ...byte) {
		if quoted != nil {
			runes = append(runes, b...)
		}
	}
	keepRune := func(r rune) {
		if quoted != nil {
			runes = utf8.AppendRune(runes, r)
		}
	}
	// bad notes a bad part; true when that is all the caller wants.
	bad := func(part, what string) bool {
		if problem == "" {
			problem = what
		}
		if quoted == nil {
			return true
		}
		if len(runes) > 0 {
			q := strconv.Quote(string(runes))
			*quoted = append(*quoted, q[1:len(q)-1]...)
			runes = runes[:0]
		}
		*quoted = append(*quoted, part...)
		return false
	}
	for i := 0; i < len(raw); {
		switch c := raw[i]; {
		case c == '\\' && raw[i+1] == 'u':
			r := hex4(raw[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				if pair := utf16.DecodeRune(r, hex4Escape(raw[i:])); pair != utf8.RuneError {
					keepRune(pair)
					i += 6
					continue
				}
				part := fmt.Sprintf(`\u%04x`, r)
				if bad(part, "holds a lone surrogate "+part) {
					return problem
				}
				continue
			}
			keepRune(r)
		case c == '\\':
			keep(unescape[raw[i+1]])
			i += 2
		case c < utf8.RuneSelf:
			keep(c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				if bad(fmt.Sprintf(`\x%02x`, c), "is not valid UTF-8") {
					return problem
				}
			} else {
				keep(raw[i : i+size]...)
			}
			i += size
		}
	}
	if quoted != nil {
		bad("", problem) // quote what is left
	}
	return problem
}

// unescape maps the letter of a one-letter escape to its byte.
var unescape = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// hex4 reads the 4 hex digits of a \u escape.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	r, err := strconv.ParseUint(string(b[:4]), 16, 32)
	if err != nil {
		return -1
	}
	return rune(r)
}

// hex4Escape reads a \uXXXX escape at the start of b; -1 if there is none.
func hex4Escape(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	return hex4(b[2:])
}

// invalidIDError names an id whose raw text is invalid, in a form that
// tells two such ids apart: `id "ab\xff" is not valid UTF-8`,
// `id "\ud800x" holds a lone surrogate \ud800`.
func invalidIDError(raw []byte) error {
	quoted := []byte{'"'}
	problem := badText(raw, &quoted)
	return invalidID(fmt.Sprintf("id %s\" %s", quoted, problem))
}

// invalidID is an ErrInvalidID that says only what is wrong with the id.
type invalidID string

func (e invalidID) Error() string        { return string(e) }
func (e invalidID) Is(target error) bool { return target == ErrInvalidID }

// ErrInvalidID marks an id that is there but cannot be used as a key (not
// valid UTF-8, a lone surrogate): unlike a missing id, it belongs to no
// record tidemark could have stored.
var ErrInvalidID = errors.New("an id tidemark cannot key records by")
