package server

import (
	"fmt"
	"net/http"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// lookup finds the resource a path names, or answers 404 and returns nil.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (*config.Source, *config.Resource) {
	srcName, resName := r.PathValue("source"), r.PathValue("resource")
	src := s.conf().Source(srcName)
	if src == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown source %q", srcName))
		return nil, nil
	}
	res := src.Resource(resName)
	if res == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown resource %q of source %q", resName, srcName))
		return nil, nil
	}
	return src, res
}

// sync enqueues a fetch now: delta, or full with ?mode=full
// (&confirm_deletes=true lets its deletions past the brake; &resume=true
// continues an interrupted full read).
func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	q := r.URL.Query()
	mode := tidemark.RunKind(q.Get("mode"))
	if mode != "" && mode != tidemark.RunDelta && mode != tidemark.RunFull {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("mode=%q: want delta or full", mode))
		return
	}
	flags := map[string]bool{}
	for _, name := range []string{"confirm_deletes", "resume"} {
		switch v := q.Get(name); v {
		case "", "false":
		case "true":
			if mode != tidemark.RunFull {
				writeError(w, http.StatusBadRequest, name+"=true needs mode=full")
				return
			}
			flags[name] = true
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s=%q: want true or false", name, v))
			return
		}
	}
	p := jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: jobs.ModeFor(res, mode == tidemark.RunFull), Trigger: jobs.TriggerManual,
		ConfirmDeletes: flags["confirm_deletes"], Resume: flags["resume"]}
	info, err := jobs.RequestFetch(r.Context(), s.store, s.client, p, res)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s.log.Info("sync requested", "source", src.Name, "resource", res.Name, "mode", p.Mode, "task_id", info.ID)
	writeJSON(w, http.StatusAccepted, map[string]string{
		"source": src.Name, "resource": res.Name, "mode": string(p.Mode), "task_id": info.ID, "queue": info.Queue,
	})
}

// pause stops (or restarts) scheduling of a resource; it is kept in
// sync_state, so it survives restarts.
func (s *Server) pause(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		src, res := s.lookup(w, r)
		if res == nil {
			return
		}
		k := store.Key{Source: src.Name, Resource: res.Name}
		if err := s.store.EnsureStates(r.Context(), []store.Key{k}); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		if _, err := s.store.SetPaused(r.Context(), k.Source, k.Resource, paused); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.log.Info("resource paused", "source", k.Source, "resource", k.Resource, "paused", paused)
		writeJSON(w, http.StatusOK, map[string]any{"source": k.Source, "resource": k.Resource, "paused": paused})
	}
}
