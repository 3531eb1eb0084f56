package events

import (
	"encoding/json"
	"fmt"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/store"
)

// Channel is the Redis pub/sub channel events are published on.
const Channel = "tidemark:events"

// Event is one committed change event.
type Event struct {
	// ID is the outbox id: increasing in commit order.
	ID       int64
	Type     tidemark.EventType
	Source   string
	Resource string
	// Data is the event as delivered (SSE data, webhook body): the outbox
	// payload with "id" and "event" added.
	Data json.RawMessage
}

// FromOutbox turns an outbox row into an Event.
func FromOutbox(row store.OutboxEvent) (Event, error) {
	fields := map[string]json.RawMessage{}
	if len(row.Payload) > 0 {
		if err := json.Unmarshal(row.Payload, &fields); err != nil {
			return Event{}, fmt.Errorf("outbox event %d: payload is not a JSON object: %w", row.ID, err)
		}
	}
	fields["id"] = json.RawMessage(fmt.Sprint(row.ID))
	ev, _ := json.Marshal(row.Event)
	fields["event"] = ev
	for k, v := range map[string]string{"source": row.Source, "resource": row.Resource} {
		if _, ok := fields[k]; !ok {
			fields[k], _ = json.Marshal(v)
		}
	}
	data, err := json.Marshal(fields)
	if err != nil {
		return Event{}, fmt.Errorf("outbox event %d: %w", row.ID, err)
	}
	return Event{ID: row.ID, Type: row.Event, Source: row.Source, Resource: row.Resource, Data: data}, nil
}

// Filter selects events by source and resource; empty fields match all.
type Filter struct {
	Source, Resource string
}

// Match reports whether ev passes f.
func (f Filter) Match(ev Event) bool {
	return (f.Source == "" || f.Source == ev.Source) && (f.Resource == "" || f.Resource == ev.Resource)
}
