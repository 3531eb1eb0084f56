package server

import (
	"cmp"
	"fmt"
	"io"
	"net/http"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// lookup finds the resource a path names, or answers 404 and returns nil.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (*config.Source, *config.Resource) {
	srcName, resName := r.PathValue("source"), r.PathValue("resource")
	src := s.conf.Source(srcName)
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

// sync enqueues a fetch now: delta, or full with ?mode=full.
func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	mode := r.URL.Query().Get("mode")
	if mode != "" && mode != jobs.ModeDelta && mode != jobs.ModeFull {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("mode=%q: want delta or full", mode))
		return
	}
	p := jobs.FetchPayload{Source: src.Name, Resource: res.Name, Mode: jobs.ModeFor(res, mode == jobs.ModeFull), Trigger: jobs.TriggerManual}
	task, err := jobs.NewFetch(p, jobs.FetchOptions(res)...)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	info, err := s.client.EnqueueContext(r.Context(), task)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("enqueue fetch %s/%s: %v", src.Name, res.Name, err))
		return
	}
	s.log.Info("sync requested", "source", src.Name, "resource", res.Name, "mode", p.Mode, "task_id", info.ID)
	writeJSON(w, http.StatusAccepted, map[string]string{
		"source": src.Name, "resource": res.Name, "mode": p.Mode, "task_id": info.ID, "queue": info.Queue,
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

// hook is an upstream's change notification: it enqueues an immediate
// probe. With a secret configured for the source the body must be signed
// (X-Tidemark-Signature or X-Hub-Signature-256: sha256=<hex HMAC-SHA256>);
// the admin token is accepted instead.
func (s *Server) hook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	secret := s.cfg.HookSecret(r.PathValue("source"))
	if secret != "" {
		sig := cmp.Or(r.Header.Get("X-Tidemark-Signature"), r.Header.Get("X-Hub-Signature-256"))
		if !jobs.VerifySignature([]byte(secret), body, sig) && (s.cfg.AdminToken == "" || !s.authorized(r)) {
			writeError(w, http.StatusUnauthorized, "missing or wrong X-Tidemark-Signature (want sha256=<hex HMAC-SHA256 of the body>)")
			return
		}
	} else if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "missing or wrong admin token (or set "+HookSecretEnv(r.PathValue("source"))+" to accept signed hooks)")
		return
	}
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	task, err := jobs.NewProbe(jobs.ProbePayload{Source: src.Name, Resource: res.Name, Trigger: jobs.TriggerWebhook}, jobs.ProbeOptions(res)...)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	info, err := s.client.EnqueueContext(r.Context(), task)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("enqueue probe %s/%s: %v", src.Name, res.Name, err))
		return
	}
	s.log.Info("inbound hook", "source", src.Name, "resource", res.Name, "task_id", info.ID)
	writeJSON(w, http.StatusAccepted, map[string]string{"source": src.Name, "resource": res.Name, "task_id": info.ID, "queue": info.Queue})
}
