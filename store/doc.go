// Package store owns tidemark's Postgres state: records and their audit trail,
// run metadata, per-resource sync state and the outbox. It is the only package
// that talks to Postgres (migrations aside), LISTEN included (Listen).
//
// GORM serves models and simple queries. Hot paths (applying a page of
// records, unchanged probes, every read of sync_state) use hand-written SQL
// with a comment saying what it wins. Each file writes its SQL with one
// placeholder style: $n where statements run on the connection as written
// (exec, database/sql; a slice goes to pgx as one array), GORM's ? where
// they go through GORM (which rewrites ? and expands slices into lists).
package store
