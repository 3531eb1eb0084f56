package main

import (
	"fmt"

	"github.com/tidemark/tidemark/config"
)

// configSchema prints the JSON Schema of the config file (docs/tidemark.schema.json).
func (e env) configSchema(args []string) error {
	if len(args) > 0 {
		return usagef("usage: tidemark config schema (takes no arguments)")
	}
	b, err := config.Schema()
	if err != nil {
		return err
	}
	if _, err := e.stdout.Write(b); err != nil {
		return fmt.Errorf("config schema: %w", err)
	}
	return nil
}
