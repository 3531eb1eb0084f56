package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/store"
)

// views makes the typed views match the config: tidemark views.
func (e env) views(args []string) error {
	var s settings
	fs := e.flags("views", &s)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	conf, err := s.loadConfig()
	if err != nil {
		return err
	}
	st, err := s.openStore(e.ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	results, err := st.RefreshViews(e.ctx, conf)
	printViews(e.stdout, conf.Views.SchemaName(), results)
	return err
}

// migrateViews refreshes the views after tidemark migrate. A missing config
// file skips them; a view that cannot be changed is reported on stderr but
// does not fail the migration: views are a convenience, and a deployment
// that waits for migrate must not stop syncing for one.
func (e env) migrateViews(s settings, st *store.Store) error {
	conf, err := s.loadConfig()
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(e.stdout, "views: no config file %s, none made (tidemark views makes them)\n", s.configPath)
		return nil
	}
	if err != nil {
		return err
	}
	results, err := st.RefreshViews(e.ctx, conf)
	printViews(e.stdout, conf.Views.SchemaName(), results)
	if err != nil {
		fmt.Fprintf(e.stderr, "tidemark: %v (the migrations are applied; run tidemark views once it is fixed)\n", err)
	}
	return nil
}

// printViews writes one block per view: what was done, its columns with
// their types (declared or inferred), values that did not cast, and notes.
func printViews(w io.Writer, schema string, results []store.ViewResult) {
	for _, r := range results {
		fmt.Fprintf(w, "%s.%s  %s  (%s)\n", schema, r.View, r.Action, r.Key)
		if r.Err != nil {
			fmt.Fprintf(w, "  error: %v\n", r.Err)
			continue
		}
		if r.Action == store.ViewDropped {
			continue
		}
		cols := []string{"external_id text", "synced_at timestamptz", "deleted boolean", "payload jsonb"}
		var failures []string
		for _, c := range r.Columns {
			how := "inferred"
			if c.Declared {
				how = "declared"
			}
			cols = append(cols, fmt.Sprintf("%s %s (%s)", c.Name, c.Type, how))
			if c.Failures > 0 {
				failures = append(failures, fmt.Sprintf("%s %d", c.Name, c.Failures))
			}
		}
		fmt.Fprintf(w, "  columns: %s\n", strings.Join(cols, ", "))
		if len(failures) > 0 {
			fmt.Fprintf(w, "  values that do not cast (NULL in the view): %s\n", strings.Join(failures, ", "))
		}
		if r.Awaiting {
			fmt.Fprintln(w, "  no records yet to infer columns from: the scheduler adds them after the first sync")
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
}

// Views after a reload: how often the scheduler looks for a config that
// changes them (and for views waiting for records), and how long it waits
// after a failed change to try again.
const (
	viewsFollowEvery = 5 * time.Second
	viewsRetryAfter  = time.Minute
)

// followViews is the scheduler's task that keeps the views in step between
// tidemark views runs: it refreshes them when a reload changes what they
// show (the schema, a resource, its fields or their types), makes those
// missing (a migrate without the config file), and gives a view of raw
// records made before there were any (by the first migrate) its columns
// once the first sync has stored some. It runs beside the
// ticks, never in them, and each view change is a short transaction that
// gives up on a lock rather than wait (store.RefreshViews), so a view never
// holds up a sync. It does not count values that do not cast (a pass over
// every record), and does not follow types that change with the data:
// tidemark views does both.
func followViews(conf config.Provider, st *store.Store, log *slog.Logger, every time.Duration) func(context.Context) error {
	// What migrate made the views from, taken now: a reload before the
	// task runs is followed too.
	done := viewsSignature(conf.Current())
	return func(ctx context.Context) error {
		var retryAt time.Time
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case now := <-t.C:
				if now.Before(retryAt) {
					continue
				}
				cur := conf.Current()
				sig := viewsSignature(cur)
				why := "config reload"
				refresh := st.RefreshViewsUncounted
				if sig == done {
					why, refresh = "pending", st.RefreshPendingViews
				}
				results, err := refresh(ctx, cur)
				logViews(log, cur, why, results)
				if err != nil && ctx.Err() == nil {
					log.Warn("views not refreshed; trying again in a minute (or run tidemark views)", "after", why, "error", err)
					retryAt = now.Add(viewsRetryAfter)
					continue
				}
				done = sig
			}
		}
	}
}

func logViews(log *slog.Logger, conf *config.Config, why string, results []store.ViewResult) {
	for _, r := range results {
		view := conf.Views.SchemaName() + "." + r.View
		switch {
		case r.Err != nil:
			log.Warn("view not refreshed", "view", view, "after", why, "error", r.Err)
		case r.Action != store.ViewUnchanged:
			log.Info("view refreshed", "view", view, "after", why, "action", r.Action)
		}
	}
}

// viewsSignature is what of conf the views depend on, as a string to compare.
func viewsSignature(conf *config.Config) string {
	var b strings.Builder
	b.WriteString(conf.Views.SchemaName())
	conf.Each(func(src *config.Source, res *config.Resource) {
		fmt.Fprintf(&b, "|%s/%s:%q:", src.Name, res.Name, slices.Sorted(maps.Keys(res.Fields)))
		for _, k := range slices.Sorted(maps.Keys(res.FieldTypes)) {
			fmt.Fprintf(&b, "%q=%s,", k, res.FieldTypes[k])
		}
	})
	return b.String()
}
