package extract_test

import (
	"fmt"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

func ExampleCanonicalNumber() {
	for _, n := range []string{"-0", "1.0", "1e2", "1.50", "0.000120", "12345678901234567890123", "1e999999"} {
		fmt.Println(n, "→", extract.CanonicalNumber(n))
	}
	// Output:
	// -0 → 0
	// 1.0 → 1
	// 1e2 → 100
	// 1.50 → 1.5
	// 0.000120 → 0.00012
	// 12345678901234567890123 → 12345678901234567890123
	// 1e999999 → 1e999999
}

// A page with bad records: the good ones are taken, each bad one is
// rejected with its reason.
func ExampleExtractor_DocRecords() {
	body := []byte(`{"data":[
		{"id":10.0,"price":1.50},
		{"name":"no id"},
		{"id":"\ud800"},
		{"id":7,"v":1},
		{"id":7,"v":2}
	]}`)
	ex := extract.New(&config.Resource{Records: config.Records{Path: "data", ID: "id"}})
	doc, err := extract.Scan(body)
	if err != nil {
		panic(err)
	}
	defer doc.Release()
	records, rejected, err := ex.DocRecords(doc)
	if err != nil {
		panic(err)
	}
	for _, r := range records {
		fmt.Printf("%s %s\n", r.ID, r.Payload)
	}
	for _, r := range rejected {
		fmt.Println(r.Reason)
	}
	// Output:
	// 10 {"id":10,"price":1.5}
	// record 1: id "id" is missing
	// record 2: id "\ud800" holds a lone surrogate \ud800
	// record 3: id "7" is repeated by record 4 with different content
	// record 4: id "7" repeats record 3 with different content
}
