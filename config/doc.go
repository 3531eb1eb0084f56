// Package config owns tidemark's configuration file: its types, their
// documented defaults, and loading with validation.
//
// Load and Parse read YAML strictly (unknown keys are errors), expand
// ${VAR} and ${VAR:-default} in values (never in keys) from the environment
// before converting them, fill the defaults, and validate. They report every
// problem at once, not just the first, as an *Error whose lines read
//
//	tidemark.yaml:12: sources[0].resources[1].records.id: required
//	tidemark.yaml:7: sources[0].timeout: invalid duration "10 seconds" (want e.g. 10s, 1m30s, 24h)
//
// so that `tidemark config check` and a failing start tell the operator
// exactly which file, line and field to fix. The config never holds secrets:
// Auth and webhooks name environment variables or files to read them from.
package config
