package config_test

import (
	"errors"
	"fmt"

	"github.com/tidemark/tidemark/config"
)

func ExampleParse() {
	_, err := config.Parse("tidemark.yaml", []byte(`sources:
  - name: boxoffice
    base_url: http://127.0.0.1:9000
    timeout: 10 seconds
    resources:
      - name: ticket_sales
        path: /v1/ticket_sales
        records: {path: data}
`))
	var cerr *config.Error
	if errors.As(err, &cerr) {
		for _, p := range cerr.Problems {
			fmt.Println(p)
		}
	}
	// Output:
	// tidemark.yaml:4: sources[0].timeout: invalid duration "10 seconds" (want e.g. 10s, 1m30s, 24h)
	// tidemark.yaml:8: sources[0].resources[0].records.id: required
}

func ExampleConfig_Each() {
	cfg, err := config.Load("../examples/demo.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg.Each(func(s *config.Source, r *config.Resource) {
		fmt.Printf("%s/%s %s every %s\n", s.Name, r.Name, r.Probe.Strategy, r.Probe.Every)
	})
	// Output:
	// demo/ticket_sales etag every 5s
	// demo/inventory_movements etag every 5s
	// demo/transactions delta every 5s
	// demo/settlements hash every 30s
	// demo/tax_summaries rolling_hash every 1m0s
}
