package extract

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// invalidText must say "invalid" exactly when encoding/json decodes some
// part of a string to U+FFFD that was no U+FFFD: when the decoded text
// holds more U+FFFD than the raw text wrote, literally or escaped.
func TestInvalidTextMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	type piece struct {
		raw   string
		fffds int // the U+FFFD it writes itself
	}
	pieces := []piece{{`a`, 0}, {`é`, 0}, {`\u00e9`, 0}, {`\n`, 0}, {`\\`, 0}, {`\"`, 0}, {`\u0000`, 0},
		{`\ud800`, 0}, {`\uDBFF`, 0}, {`\udc00`, 0}, {`\uDFFF`, 0}, {`\ud83c\udf9f`, 0},
		{`\ufffd`, 1}, {"\ufffd", 1}, {"\xff", 0}, {"\xc3", 0}, {"\xed\xa0\x80", 0}, {"\xf0\x9f", 0}, {"\xe2\x80\xa8", 0}}
	r := rand.New(rand.NewPCG(9, 10))
	for range 50000 {
		var raw strings.Builder
		fffds := 0
		for range r.IntN(5) {
			p := pieces[r.IntN(len(pieces))]
			raw.WriteString(p.raw)
			fffds += p.fffds
		}
		var text string
		if err := json.Unmarshal([]byte(`"`+raw.String()+`"`), &text); err != nil {
			t.Fatalf("%q: %v", raw.String(), err)
		}
		want := strings.Count(text, "\ufffd") > fffds
		if got := invalidText([]byte(raw.String())); got != want {
			t.Fatalf("invalidText(%q) = %v; encoding/json decodes it to %q", raw.String(), got, text)
		}
		if quoted := []byte{'"'}; (badText([]byte(raw.String()), &quoted) != "") != want {
			t.Fatalf("badText(%q) with quoting disagrees", raw.String())
		}
	}
}
