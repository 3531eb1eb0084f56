// Package events tells the world that data changed. The store writes each
// event to the outbox table in the same transaction as the change; a Relay
// (any number of replicas) claims committed events, hands each to a Sink
// (webhook delivery tasks) and publishes it on Redis pub/sub; a Hub in each
// server process fans events out to subscribers (the SSE stream) in outbox
// id order, reading them from the table so that no event is skipped or
// repeated whatever order pub/sub delivers in.
package events
