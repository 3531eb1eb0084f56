package config

import "sync/atomic"

// Provider hands out the config in force. Read Current once per task, tick
// or request and use that snapshot throughout: a *Config is never changed
// once handed out, so work that began under one finishes under it even
// when a reload has replaced it since.
//
// A *Config is a Provider of itself, a config that never changes (tests,
// one-shot commands); a *Live is one that a Watcher replaces.
type Provider interface {
	Current() *Config
}

// Current returns c: a plain config is a Provider that never changes.
func (c *Config) Current() *Config { return c }

// Live is a config replaced while the program runs (see Watcher): every
// role of one process shares it.
type Live struct {
	cur atomic.Pointer[Config]
}

var (
	_ Provider = (*Live)(nil)
	_ Provider = (*Config)(nil)
)

// NewLive returns a Live holding c.
func NewLive(c *Config) *Live {
	l := &Live{}
	l.cur.Store(c)
	return l
}

// Current returns the config in force.
func (l *Live) Current() *Config { return l.cur.Load() }

// Store puts c in force; readers get it from their next Current on.
func (l *Live) Store(c *Config) { l.cur.Store(c) }
