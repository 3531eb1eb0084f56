package config

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"time"
)

// PollDefault is how often a Watcher hashes the config file by default.
const PollDefault = 5 * time.Second

// WatcherConfig tunes a Watcher.
type WatcherConfig struct {
	// Interval is how often the file's content is read and hashed. The
	// content, not a file event: a Kubernetes ConfigMap volume replaces the
	// file by swapping a symlink (..data), which inotify on the file never
	// reports. Default PollDefault; negative: no polling, only Reload.
	Interval time.Duration
	// Settle is how long after a poll first sees new content it reads the
	// file again: the content is acted on only when both reads agree, so a
	// file caught half-written (an editor saving in place) is neither
	// applied nor reported as broken. Default 1s, at most Interval.
	Settle time.Duration
	// Reload, when set, makes the Watcher reload at once, without settling,
	// on every value received: SIGHUP.
	Reload <-chan os.Signal
	// OnApply is called after a new config is in force, with the one it
	// replaced and the new content's hash. Default none.
	OnApply func(old, cur *Config, sum string)
	// OnReject is called when changed content is refused (invalid, or the
	// file unreadable): the config in force stays. Called once per distinct
	// content, and again on every Reload while it is still refused.
	// Default none.
	OnReject func(err error, sum string)
	// Log receives a line per reload decision. Default slog.Default().
	Log *slog.Logger
}

// Watcher keeps a Live in step with a config file: a changed file that
// loads and validates is put in force; one that does not is refused and the
// config in force stays.
type Watcher struct {
	cfg  WatcherConfig
	path string
	live *Live
	// mu serialises reads of the file: the poll loop's, Reload's, Refresh's.
	mu sync.Mutex
	// applied is the hash of the content in force; rejected of the content
	// last refused (so it is reported once); pending of new content one
	// poll has seen, waiting for the settling read.
	applied, rejected, pending string
}

// Watch loads the config file at path (as Load does) and returns a Watcher
// holding it in force. Start it with Run.
func Watch(path string, cfg WatcherConfig) (*Watcher, error) {
	cfg.Interval = cmp.Or(cfg.Interval, PollDefault)
	cfg.Settle = cmp.Or(cfg.Settle, time.Second)
	if cfg.Interval > 0 {
		cfg.Settle = min(cfg.Settle, cfg.Interval)
	}
	cfg.Log = cmp.Or(cfg.Log, slog.Default())
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	return &Watcher{cfg: cfg, path: path, live: NewLive(c), applied: hash(data)}, nil
}

// Live is the config in force, replaced on every applied reload.
func (w *Watcher) Live() *Live { return w.live }

// Run polls the file, and reloads on every Reload signal, until ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTimer(w.cfg.Interval)
	defer t.Stop()
	tick := t.C
	if w.cfg.Interval < 0 {
		tick = nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.cfg.Reload:
			w.cfg.Log.Info("config reload requested (SIGHUP)", "file", w.path)
			w.ReloadNow()
		case <-tick:
			if w.poll() {
				t.Reset(w.cfg.Settle)
				continue
			}
			t.Reset(w.cfg.Interval)
		}
	}
}

// poll reads the file and acts on content that two reads in a row agree
// on. It reports whether new content is waiting for its settling read.
func (w *Watcher) poll() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, sum, err := w.read()
	switch {
	case sum == w.applied:
		if w.rejected != "" {
			w.cfg.Log.Info("config file is back to the config in force", "file", w.path, "sha256", short(sum))
		}
		w.rejected, w.pending = "", ""
	case sum == w.rejected:
		w.pending = ""
	case sum != w.pending:
		w.pending = sum
		return true
	default:
		w.pending = ""
		w.load(data, sum, err)
	}
	return false
}

// ReloadNow reads the file and acts on it at once: SIGHUP. Content already
// in force is left as it is; refused content is reported again.
func (w *Watcher) ReloadNow() {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, sum, err := w.read()
	w.pending, w.rejected = "", ""
	if sum == w.applied {
		w.cfg.Log.Info("config file unchanged: nothing to reload", "file", w.path, "sha256", short(sum))
		return
	}
	w.load(data, sum, err)
}

// Refresh applies the file at once if it has changed and is valid, and
// reports whether it did. It never refuses anything (the poll reports bad
// content once it has settled): a worker calls it when a task names a
// resource it does not know, as a scheduler that reloaded first enqueues.
func (w *Watcher) Refresh() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, sum, err := w.read()
	if err != nil || sum == w.applied || sum == w.rejected {
		return false
	}
	c, err := Parse(w.path, data)
	if err != nil {
		return false
	}
	w.pending = ""
	w.apply(c, sum)
	return true
}

// read returns the file's content and its hash; an unreadable file hashes
// by its error, so that it too is reported once.
func (w *Watcher) read() ([]byte, string, error) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return nil, "unreadable: " + err.Error(), fmt.Errorf("config: %w", err)
	}
	return data, hash(data), nil
}

// load validates changed content and applies or refuses it; err is the
// error reading it, if any.
func (w *Watcher) load(data []byte, sum string, err error) {
	var next *Config
	if err == nil {
		next, err = Parse(w.path, data)
	}
	if err != nil {
		w.rejected = sum
		w.cfg.Log.Error("config file refused: the config in force stays", "file", w.path, "sha256", short(sum), "error", err.Error())
		if w.cfg.OnReject != nil {
			w.cfg.OnReject(err, sum)
		}
		return
	}
	w.apply(next, sum)
}

func (w *Watcher) apply(c *Config, sum string) {
	old := w.live.Current()
	w.live.Store(c)
	w.applied, w.rejected = sum, ""
	ch := Compare(old, c)
	attrs := []any{"file", w.path, "sha256", short(sum)}
	for _, l := range []struct {
		key  string
		list []string
	}{{"added", ch.Added}, {"removed", ch.Removed}, {"changed", ch.Changed}, {"sources_changed", ch.Sources}} {
		if len(l.list) > 0 {
			attrs = append(attrs, l.key, l.list)
		}
	}
	w.cfg.Log.Info("config reloaded", attrs...)
	if w.cfg.OnApply != nil {
		w.cfg.OnApply(old, c, sum)
	}
}

func hash(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// short is a hash cut to the length people compare by eye.
func short(sum string) string { return sum[:min(len(sum), 12)] }

// Changes is what a new config changes: resources ("source/resource")
// added, removed or changed, and sources whose own settings (base URL,
// auth, limits, ...) changed.
type Changes struct {
	Added, Removed, Changed, Sources []string
}

// Compare lists what cur changes from old.
func Compare(old, cur *Config) Changes {
	var ch Changes
	seen := map[string]bool{}
	cur.Each(func(s *Source, r *Resource) {
		key := s.Name + "/" + r.Name
		seen[key] = true
		was := old.Source(s.Name)
		switch {
		case was == nil || was.Resource(r.Name) == nil:
			ch.Added = append(ch.Added, key)
		case !reflect.DeepEqual(was.Resource(r.Name), r):
			ch.Changed = append(ch.Changed, key)
		}
	})
	old.Each(func(s *Source, r *Resource) {
		if key := s.Name + "/" + r.Name; !seen[key] {
			ch.Removed = append(ch.Removed, key)
		}
	})
	for i := range cur.Sources {
		s := &cur.Sources[i]
		if was := old.Source(s.Name); was != nil && !SameSource(was, s) {
			ch.Sources = append(ch.Sources, s.Name)
		}
	}
	return ch
}

// SameSource reports whether a and b agree on everything but their
// resources: what an upstream client is made from.
func SameSource(a, b *Source) bool {
	x, y := *a, *b
	x.Resources, y.Resources = nil, nil
	return reflect.DeepEqual(x, y)
}
