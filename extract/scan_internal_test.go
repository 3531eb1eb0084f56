package extract

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

// special8 may only speed up the string loop: it must see every byte
// plainASCII rejects, wherever it is in the word and whatever is around it.
func TestSpecial8(t *testing.T) {
	t.Parallel()
	want := func(w []byte) bool {
		for _, c := range w {
			if !plainASCII[c] {
				return true
			}
		}
		return false
	}
	check := func(w []byte) {
		if got := special8(binary.LittleEndian.Uint64(w)); got != want(w) {
			t.Fatalf("special8(%q) = %v", w, got)
		}
	}
	for _, fill := range []byte{'a', ' ', '~', 0x21, '!', '#', '[', ']'} {
		for c := range 256 {
			for p := range 8 {
				w := []byte{fill, fill, fill, fill, fill, fill, fill, fill}
				w[p] = byte(c)
				check(w)
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]byte, 8)
	for range 200000 {
		for i := range w {
			w[i] = byte(0x1c + r.IntN(0x70)) // mostly plain, some special
		}
		check(w)
	}
}

// The fast paths of numbers: canonicalNumber, and the mark scanner.number
// leaves on a node, say "canonical" exactly for the numbers CanonicalNumber
// leaves as they are in plain form.
func TestCanonicalNumberFastPath(t *testing.T) {
	t.Parallel()
	nums := []string{"0", "-0", "1", "-1", "10", "1.0", "1.5", "-0.5", "-0.50", "0.0", "0.01", "1e2", "1E2", "1e+2", "0e0",
		"12345678901234567890123", "1" + strings.Repeat("0", MaxPlainNumber-1), "1" + strings.Repeat("0", MaxPlainNumber),
		"-1" + strings.Repeat("0", MaxPlainNumber-2), "-1" + strings.Repeat("0", MaxPlainNumber-1), "0." + strings.Repeat("1", MaxPlainNumber-2)}
	r := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		var b strings.Builder
		if r.IntN(2) == 0 {
			b.WriteByte('-')
		}
		b.WriteString([]string{"0", "1", "10", "205"}[r.IntN(4)])
		if r.IntN(2) == 0 {
			b.WriteString([]string{".0", ".5", ".50", ".05", ".000"}[r.IntN(5)])
		}
		if r.IntN(4) == 0 {
			b.WriteString([]string{"e0", "e-1", "E+3"}[r.IntN(3)])
		}
		nums = append(nums, b.String())
	}
	body := "[" + strings.Join(nums, ",") + "]"
	d, err := Scan([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Release()
	root := d.nodes[d.root]
	for j, s := range nums {
		c := CanonicalNumber(s)
		want := c == s && !strings.Contains(c, "e")
		if got := canonicalNumber(s); got != want {
			t.Errorf("canonicalNumber(%.40q) = %v, CanonicalNumber gives %.40q", s, got, c)
		}
		if got := d.nodes[d.kids[root.lo+int32(j)]].verbatim; got != want {
			t.Errorf("scanned %.40q: verbatim %v, CanonicalNumber gives %.40q", s, got, c)
		}
	}
}
