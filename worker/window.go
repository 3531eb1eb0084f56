package worker

import (
	"fmt"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/upstream"
)

// A read of a resource with delta.window walks time ranges of
// delta.window.size, [since, since+size), [since+size, since+2*size), ...,
// each to its last page, until a window reaches past the moment the read
// began (WindowEnd). The
// checkpoint names the window a read is in (WindowFrom, WindowTo), saved
// with each page like the rest of the walk, so an interrupted read resumes
// in its window, not at its first. The watermark moves, as always, only
// when the whole read has succeeded: then to the end of its last window
// at most (never past the read's start less delta.clock_skew).

// start is delta.start as a lower bound, for a read that has no watermark
// to begin from.
func (f *run) start() (string, bool) {
	d := f.res.Delta
	if d == nil || d.Start == "" {
		return "", false
	}
	at, err := d.StartAt(f.began)
	if err != nil { // validation refuses it; a config built in code may not
		f.note("delta.start: %v: the read begins at the start of time", err)
		return "", false
	}
	return f.format(at), true
}

// startWindows sets up the first window of a new read, from since (the
// delta's lower bound) or, without one, delta.start; false without
// delta.window.
func (f *run) startWindows(since string) bool {
	d := f.res.Delta
	if d == nil || d.Window == nil {
		return false
	}
	if since == "" {
		since, _ = f.start()
	}
	from, err := parseCursor(since, d.Format)
	if err != nil {
		return false // validation requires a time start with windows
	}
	f.cp.WindowEnd = f.began.UTC()
	f.cp.WindowFrom = from.t
	f.cp.WindowTo = f.windowEnd(from.t)
	return true
}

// windowEnd is the end of the window that begins at from. The last
// window reaches past the read's start (WindowEnd) rather than stopping
// at it: a record changed during the read moves to a later time, and
// must still be in a window the read has yet to walk.
func (f *run) windowEnd(from time.Time) time.Time {
	return from.Add(f.res.Delta.Window.Size.D())
}

// windowsLeft reports whether the read has windows after the current one.
func (cp checkpoint) windowsLeft() bool {
	return !cp.WindowTo.IsZero() && cp.WindowTo.Before(cp.WindowEnd)
}

// nextWindow moves a read whose window is read to its last page on to the
// next window; false when there is none (the read is complete).
func (f *run) nextWindow() bool {
	if !f.cp.windowsLeft() {
		return false
	}
	f.cp.WindowFrom = f.cp.WindowTo
	f.cp.WindowTo = f.windowEnd(f.cp.WindowFrom)
	f.cp.Position = f.firstPosition(f.format(f.cp.WindowFrom))
	f.cp.First, f.cp.FirstVars = f.cp.Next, f.cp.Vars
	// Position starts afresh: what the walk knew (its served page size,
	// its read count) was of the window before.
	return true
}

// windowNote says which window a read is in, for its notes.
func (f *run) windowNote() string {
	if f.cp.WindowTo.IsZero() {
		return ""
	}
	return fmt.Sprintf(" (window %s to %s)", f.format(f.cp.WindowFrom), f.format(f.cp.WindowTo))
}

// format writes an instant in the delta's format.
func (f *run) format(t time.Time) string { return timeCursor(t).format(f.res.Delta.Format) }

// noLowerBound is a body's {since} for a read without a lower bound (a
// full read, a first sync without delta.start): null as a whole value,
// and inside a longer string (a search query) the start of time, which
// reads everything.
func noLowerBound(d *config.Delta) upstream.Absent {
	if d.Format == config.FormatNumber {
		return "0"
	}
	return upstream.Absent(timeCursor(time.Unix(0, 0)).format(d.Format))
}
