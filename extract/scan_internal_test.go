package extract

import (
	"encoding/binary"
	"math/rand/v2"
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
