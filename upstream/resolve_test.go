package upstream

import (
	"strings"
	"testing"
)

// A next link that does not parse is refused without quoting it: it may
// hold a key the upstream echoed.
func TestBadNextLinkNotQuoted(t *testing.T) {
	_, err := resolve("https://api.example.com/items", "https://api.example.com/it%zz?page=2&api_key=SECRET")
	if err == nil {
		t.Fatal("a malformed next link was accepted")
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("the error quotes the link: %v", err)
	}
}
