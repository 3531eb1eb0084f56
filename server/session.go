package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SessionTTLDefault is Config.SessionTTL's default.
const SessionTTLDefault = 12 * time.Hour

// sessionCookie carries a dashboard session's id for browsers, whose
// EventSource and Asynqmon requests cannot send an Authorization header.
// The id is random and means something only while its Redis key lives; the
// admin token never leaves the server.
const sessionCookie = "tidemark_session"

// oldTokenCookie is where earlier releases kept the admin token itself. It
// is no longer accepted, and login and logout expire it so browsers drop it.
const oldTokenCookie = "tidemark_token"

// sessionKey is the Redis key of session id: a hash of it, so that reading
// Redis gives no usable cookie.
func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "tidemark:session:" + hex.EncodeToString(sum[:])
}

// sessionMAC binds a session to the admin token it was opened with:
// changing the token (and restarting the servers) ends every session. It
// is keyed with the token, so the stored value tells nothing about the
// token without the session id, which is not stored.
func (s *Server) sessionMAC(id string) string {
	m := hmac.New(sha256.New, []byte(s.cfg.AdminToken))
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// newSession stores a fresh session in Redis and returns its id. Redis, not
// the process, holds it, so any server replica accepts it.
func (s *Server) newSession(ctx context.Context) (string, error) {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	id := base64.RawURLEncoding.EncodeToString(b)
	if err := s.rdb.Set(ctx, sessionKey(id), s.sessionMAC(id), s.cfg.SessionTTL).Err(); err != nil {
		return "", err
	}
	return id, nil
}

// validSession reports whether r carries the cookie of a live session. A
// Redis failure is logged (without the id) and counts as no session.
func (s *Server) validSession(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return false
	}
	got, err := s.rdb.Get(r.Context(), sessionKey(c.Value)).Result()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			s.log.Warn("check dashboard session", "error", err)
		}
		return false
	}
	return hmac.Equal([]byte(got), []byte(s.sessionMAC(c.Value)))
}

// secure reports whether the client reached us over TLS: directly, or
// through a TLS-terminating proxy the operator said to trust
// (Config.TrustProxy). X-Forwarded-Proto is anyone's to send, so it counts
// only then.
func (s *Server) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if !s.cfg.TrustProxy {
		return false
	}
	// The proxy nearest the client comes first in a list.
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// setCookie sets (or, with maxAge < 0, deletes) a cookie: HttpOnly, so page
// scripts cannot read it; SameSite=Strict, so another site cannot make the
// browser send it along with a forged POST; Secure over TLS.
func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r),
	})
}

const loginForm = `<!doctype html><html><head><meta charset="utf-8"><title>tidemark: log in</title>
<style>body{font:16px system-ui,sans-serif;display:grid;place-items:center;height:90vh;background:#0f172a;color:#e2e8f0}
form{display:flex;gap:.5em;flex-direction:column;min-width:20em}input,button{font:inherit;padding:.5em}</style></head>
<body><form method="post" action="/login"><h1>tidemark</h1>%s<input type="password" name="token" placeholder="admin token" autofocus required>
<input type="hidden" name="next" value="%s"><button>Log in</button></form></body></html>`

func loginPage(w http.ResponseWriter, r *http.Request) {
	writeLogin(w, http.StatusOK, "", r.URL.Query().Get("next"))
}

func writeLogin(w http.ResponseWriter, code int, msg, next string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if msg != "" {
		msg = "<p>" + html.EscapeString(msg) + "</p>"
	}
	w.Write([]byte(strings.Replace(strings.Replace(loginForm, "%s", msg, 1), "%s", html.EscapeString(next), 1)))
}

// login checks the submitted token and opens a session: the cookie holds
// the session's id, never the token.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	next := r.FormValue("next")
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		next = "/"
	}
	if s.cfg.AdminToken == "" { // nothing to log in to
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.FormValue("token")), []byte(s.cfg.AdminToken)) != 1 {
		writeLogin(w, http.StatusUnauthorized, "wrong token", next)
		return
	}
	id, err := s.newSession(r.Context())
	if err != nil {
		// The details (addresses) are for the operator, not the login page.
		s.log.Error("open dashboard session", "error", err)
		writeLogin(w, http.StatusServiceUnavailable, "cannot open a session: the server cannot reach Redis (its log says why)", next)
		return
	}
	s.setCookie(w, r, sessionCookie, id, int(s.cfg.SessionTTL.Seconds()))
	s.setCookie(w, r, oldTokenCookie, "", -1)
	s.log.Info("dashboard login")
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the request's session, in Redis (so a copied cookie stops
// working too) and in the browser.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if err := s.rdb.Del(r.Context(), sessionKey(c.Value)).Err(); err != nil {
			s.log.Error("end dashboard session", "error", err)
			writeError(w, http.StatusServiceUnavailable, "log out: the server cannot reach Redis (its log says why); the session is still open")
			return
		}
	}
	s.setCookie(w, r, sessionCookie, "", -1)
	s.setCookie(w, r, oldTokenCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
