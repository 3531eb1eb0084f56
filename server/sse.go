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
	last, err := lastEventID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	sub, err := s.subscribe(ctx, f)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	st := &sseStream{s: s, w: w, flusher: flusher, filter: f, last: last, sub: sub}
	defer st.close()
	if st.last < 0 { // a new client: live events only
		if st.last, err = s.store.LastOutboxID(ctx); err != nil {
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
	if err := st.replay(ctx); err != nil {
		s.logStreamEnd(ctx, err)
		return
	}
	st.live(ctx)
}

// lastEventID is the id the client last saw (Last-Event-ID, or
// ?last_event_id=), or -1 for a new client.
func lastEventID(r *http.Request) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" && !r.URL.Query().Has("last_event_id") {
		return -1, nil
	}
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("Last-Event-ID %q: want an event id", v)
	}
	return n, nil
}

// sseStream is one client's event stream: its filter, its live
// subscription and the id of the last event it was sent.
type sseStream struct {
	s       *Server
	w       http.ResponseWriter
	flusher http.Flusher
	filter  events.Filter
	last    int64
	sub     *events.Subscription // nil after a failed resubscribe
}

func (st *sseStream) close() {
	if st.sub != nil {
		st.sub.Close()
	}
}

// send writes one outbox event and remembers its id.
func (st *sseStream) send(ev events.Event) error {
	if _, err := fmt.Fprintf(st.w, "id: %d\nevent: %s\ndata: %s\n\n", ev.ID, ev.Type, ev.Data); err != nil {
		return err
	}
	st.last = ev.ID
	return nil
}

// replay sends every event after the last one sent from the outbox table,
// 500 at a time.
func (st *sseStream) replay(ctx context.Context) error {
	for {
		rows, err := st.s.store.OutboxAfter(ctx, store.OutboxFilter{AfterID: st.last, Source: st.filter.Source, Resource: st.filter.Resource, Limit: 500})
		if err != nil {
			return err
		}
		for _, row := range rows {
			ev, err := events.FromOutbox(row)
			if err != nil {
				return err
			}
			if err := st.send(ev); err != nil {
				return err
			}
		}
		st.flusher.Flush()
		if len(rows) < 500 {
			return nil
		}
	}
}

// live sends the subscription's events, and a heartbeat while there are
// none, until the client goes, a write fails or the hub stops.
func (st *sseStream) live(ctx context.Context) {
	beat := time.NewTicker(st.s.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if _, err := fmt.Fprint(st.w, ": heartbeat\n\n"); err != nil {
				return
			}
			st.flusher.Flush()
		case ev, ok := <-st.sub.C:
			if !ok {
				if !st.sub.Lagged() {
					return // the hub stopped: the server is shutting down
				}
				if err := st.catchUp(ctx); err != nil {
					st.s.logStreamEnd(ctx, err)
					return
				}
				continue
			}
			if err := st.forward(ev); err != nil {
				return
			}
		}
	}
}

// catchUp follows a client too slow for the live stream: resubscribe, then
// catch up from the table, which loses nothing.
func (st *sseStream) catchUp(ctx context.Context) error {
	var err error
	if st.sub, err = st.s.subscribe(ctx, st.filter); err != nil {
		return err
	}
	return st.replay(ctx)
}

// forward sends one live event: an ephemeral one (run.progress) without
// an id, so Last-Event-ID stays; an outbox one unless the replay sent it
// already.
func (st *sseStream) forward(ev events.Event) error {
	if ev.ID == 0 {
		if _, err := fmt.Fprintf(st.w, "event: %s\ndata: %s\n\n", ev.Type, ev.Data); err != nil {
			return err
		}
		st.flusher.Flush()
		return nil
	}
	if ev.ID <= st.last {
		return nil // already sent by the replay
	}
	if err := st.send(ev); err != nil {
		return err
	}
	st.flusher.Flush()
	return nil
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
