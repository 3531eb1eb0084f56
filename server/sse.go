package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tidemark/tidemark/events"
	"github.com/tidemark/tidemark/store"
)

// events streams change events as Server-Sent Events. Each has id: = its
// outbox id. A client that reconnects with Last-Event-ID (or
// ?last_event_id=) first gets every event after it from the outbox table,
// then the live stream, each event once and in order: outbox ids are
// handed out in commit order, and the live events are skipped up to the
// last id the replay sent. ?source= and ?resource= filter.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	f := events.Filter{Source: r.URL.Query().Get("source"), Resource: r.URL.Query().Get("resource")}
	last := int64(-1)
	if v := r.Header.Get("Last-Event-ID"); v != "" || r.URL.Query().Has("last_event_id") {
		if v == "" {
			v = r.URL.Query().Get("last_event_id")
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Last-Event-ID %q: want an event id", v))
			return
		}
		last = n
	}
	ctx := r.Context()
	sub, err := s.subscribe(ctx, f)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	if last < 0 { // a new client: live events only
		if last, err = s.store.LastOutboxID(ctx); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 2000\n\n")
	flusher.Flush()

	send := func(ev events.Event) error {
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.ID, ev.Type, ev.Data); err != nil {
			return err
		}
		last = ev.ID
		return nil
	}
	replay := func() error {
		for {
			rows, err := s.store.OutboxAfter(ctx, store.OutboxFilter{AfterID: last, Source: f.Source, Resource: f.Resource, Limit: 500})
			if err != nil {
				return err
			}
			for _, row := range rows {
				ev, err := events.FromOutbox(row)
				if err != nil {
					return err
				}
				if err := send(ev); err != nil {
					return err
				}
			}
			flusher.Flush()
			if len(rows) < 500 {
				return nil
			}
		}
	}
	if err := replay(); err != nil {
		s.logStreamEnd(ctx, err)
		return
	}
	beat := time.NewTicker(s.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case ev, ok := <-sub.C:
			if !ok {
				if !sub.Lagged() {
					return // the hub stopped: the server is shutting down
				}
				// Too slow for the live stream: resubscribe, then catch up
				// from the table, which loses nothing.
				if sub, err = s.subscribe(ctx, f); err == nil {
					err = replay()
				}
				if err != nil {
					s.logStreamEnd(ctx, err)
					return
				}
				continue
			}
			if ev.ID == 0 { // ephemeral (run.progress): no id, so Last-Event-ID stays
				if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, ev.Data); err != nil {
					return
				}
				flusher.Flush()
				continue
			}
			if ev.ID <= last {
				continue // already sent by the replay
			}
			if err := send(ev); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}

func (s *Server) subscribe(ctx context.Context, f events.Filter) (*events.Subscription, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.hub.Subscribe(ctx, f)
}

func (s *Server) logStreamEnd(ctx context.Context, err error) {
	if ctx.Err() == nil {
		s.log.Warn("event stream ended", "error", err)
	}
}
