package store

import "testing"

// The same problem on several records is one reason in the quarantine
// event, however the reason names its record.
func TestReasonOnly(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"page 3, record 7: the id holds U+0000", "the id holds U+0000"},
		{"record 12: no id at id", "no id at id"},
		{"page 1, record 0: id \"a\" repeats record 4 with different content", "id \"a\" repeats record 4 with different content"},
		{"a number beyond numeric's range", "a number beyond numeric's range"},
		{"recorded twice: kept", "recorded twice: kept"},
	} {
		if got := reasonOnly(c.in); got != c.want {
			t.Errorf("reasonOnly(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
