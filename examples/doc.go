// Package examples holds example tidemark configs (the YAML files in this
// directory) and their tests: each real-API example is synced through the
// real worker path from fixtures shaped after that API's documented
// responses (testdata/), served by a fake that pages, filters and answers
// conditional requests the way the API does.
package examples
