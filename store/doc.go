// Package store owns tidemark's Postgres state: records and their audit trail,
// run metadata, per-resource sync state and the outbox. It is the only package
// that talks to Postgres. Hot paths (applying a page of records) use
// hand-written, set-based SQL through GORM; everything else uses GORM models.
package store
