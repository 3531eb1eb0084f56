package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// watchYAML is a valid config whose source s has the resources named.
func watchYAML(resources ...string) string {
	var b strings.Builder
	b.WriteString("sources:\n  - name: s\n    base_url: http://127.0.0.1:9000\n    resources:\n")
	for _, r := range resources {
		b.WriteString("      - {name: " + r + ", path: /" + r + ", records: {id: id}}\n")
	}
	return b.String()
}

// writeAtomic replaces path's content the way a careful writer does: a
// new file renamed over the old.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// watchRecorder is a Watcher's callbacks, recorded.
type watchRecorder struct {
	applied  chan *Config
	rejected chan error
}

func newWatchRecorder() *watchRecorder {
	return &watchRecorder{applied: make(chan *Config, 10), rejected: make(chan error, 10)}
}

func (r *watchRecorder) config(t *testing.T, cfg WatcherConfig) WatcherConfig {
	cfg.OnApply = func(_, cur *Config, _ string) { r.applied <- cur }
	cfg.OnReject = func(err error, _ string) { r.rejected <- err }
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	return cfg
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func resourceNames(c *Config) []string {
	var out []string
	c.Each(func(_ *Source, r *Resource) { out = append(out, r.Name) })
	return out
}

// TestWatcherPoll steps the poll by hand: new content is acted on when two
// reads agree, by content (not by write), and refused content leaves the
// config in force and is reported once.
func TestWatcherPoll(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tidemark.yaml")
	writeAtomic(t, path, watchYAML("a"))
	rec := newWatchRecorder()
	w, err := Watch(path, rec.config(t, WatcherConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	first := w.Live().Current()
	noCallbacks := func(step string) {
		t.Helper()
		select {
		case c := <-rec.applied:
			t.Fatalf("%s: applied %v", step, resourceNames(c))
		case err := <-rec.rejected:
			t.Fatalf("%s: rejected: %v", step, err)
		default:
		}
	}

	writeAtomic(t, path, watchYAML("a")) // rewritten, same content
	if w.poll() || w.Live().Current() != first {
		t.Fatal("the same content rewritten: want nothing to do")
	}
	noCallbacks("same content")

	writeAtomic(t, path, watchYAML("a", "b"))
	if !w.poll() || w.Live().Current() != first {
		t.Fatal("new content on its first read: want it waiting for the settling read")
	}
	if w.poll() {
		t.Fatal("second read agrees: want it acted on")
	}
	if got := resourceNames(<-rec.applied); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("applied %v, want [a b]", got)
	}
	if got := resourceNames(w.Live().Current()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("in force %v, want [a b]", got)
	}
	second := w.Live().Current()

	// Caught half-written: the settling read sees other content, and waits
	// for that to settle in turn.
	writeAtomic(t, path, "sources:\n  - name: s\n")
	w.poll()
	writeAtomic(t, path, watchYAML("b"))
	if !w.poll() {
		t.Fatal("content changed again before settling: want a new settling read")
	}
	noCallbacks("half-written")
	w.poll()
	if got := resourceNames(<-rec.applied); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("applied %v, want [b]", got)
	}
	third := w.Live().Current()
	if c := Compare(second, third); !slices.Equal(c.Removed, []string{"s/a"}) || len(c.Added) != 0 {
		t.Errorf("Compare: %+v, want s/a removed", c)
	}

	writeAtomic(t, path, watchYAML("b")+"    timeout: soon\n")
	w.poll()
	w.poll()
	var cerr *Error
	if err := <-rec.rejected; !errors.As(err, &cerr) || !strings.Contains(err.Error(), "sources[0].timeout") {
		t.Fatalf("rejected with %v, want a config error naming sources[0].timeout", err)
	}
	if w.Live().Current() != third {
		t.Fatal("a refused config replaced the one in force")
	}
	w.poll()
	w.poll()
	noCallbacks("refused content polled again")

	writeAtomic(t, path, watchYAML("b")) // back to the content in force
	w.poll()
	if w.Live().Current() != third || w.rejected != "" {
		t.Fatal("back to the content in force: want nothing applied and the refusal forgotten")
	}
	noCallbacks("back to the content in force")
}

// TestWatcherReloadSignal: with polling off, a signal reloads at once; a
// refused file is reported on every signal, and the config in force stays.
func TestWatcherReloadSignal(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tidemark.yaml")
	writeAtomic(t, path, watchYAML("a"))
	rec := newWatchRecorder()
	hup := make(chan os.Signal)
	w, err := Watch(path, rec.config(t, WatcherConfig{Interval: -1, Reload: hup}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	writeAtomic(t, path, watchYAML("a", "b"))
	hup <- os.Interrupt
	select {
	case c := <-rec.applied:
		if got := resourceNames(c); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("applied %v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reload 5s after the signal")
	}
	inForce := w.Live().Current()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		hup <- os.Interrupt
		select {
		case err := <-rec.rejected:
			if !strings.Contains(err.Error(), "no such file") {
				t.Fatalf("rejected with %v, want the missing file named", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no rejection 5s after the signal")
		}
	}
	if w.Live().Current() != inForce {
		t.Fatal("a missing file replaced the config in force")
	}
}

// TestWatcherConfigMapSwap polls a file mounted the way a Kubernetes
// ConfigMap volume is: tidemark.yaml -> ..data/tidemark.yaml, and an update
// swaps the ..data symlink to a new directory. The file itself is never
// written, so only its content tells.
func TestWatcherConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "tidemark.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", watchYAML("a"))
	path := filepath.Join(dir, "tidemark.yaml")
	if err := os.Symlink("..data/tidemark.yaml", path); err != nil {
		t.Fatal(err)
	}
	rec := newWatchRecorder()
	w, err := Watch(path, rec.config(t, WatcherConfig{Interval: 20 * time.Millisecond, Settle: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	go w.Run(t.Context())
	version("..v2", watchYAML("a", "c"))
	select {
	case c := <-rec.applied:
		if got := resourceNames(c); !slices.Equal(got, []string{"a", "c"}) {
			t.Fatalf("applied %v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the swapped ConfigMap was not applied within 5s")
	}
}

// TestWatcherRefresh: Refresh applies a changed valid file at once and
// leaves an invalid one to the poll.
func TestWatcherRefresh(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tidemark.yaml")
	writeAtomic(t, path, watchYAML("a"))
	rec := newWatchRecorder()
	w, err := Watch(path, rec.config(t, WatcherConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	if w.Refresh() {
		t.Fatal("Refresh of an unchanged file applied something")
	}
	writeAtomic(t, path, "sources: []\n")
	if w.Refresh() || len(rec.rejected) > 0 {
		t.Fatal("Refresh of an invalid file: want nothing applied and nothing refused")
	}
	writeAtomic(t, path, watchYAML("a", "b"))
	if !w.Refresh() || w.Live().Current().Source("s").Resource("b") == nil {
		t.Fatal("Refresh of a changed valid file: want it in force")
	}
}
