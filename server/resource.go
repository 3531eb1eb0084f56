package server

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tidemark/tidemark"
	"github.com/tidemark/tidemark/jobs"
	"github.com/tidemark/tidemark/store"
)

// ResourceDetail is one resource as the resource page shows it: its row of
// /api/resources and the settings that explain it.
type ResourceDetail struct {
	ResourceView
	Path              string                 `json:"path"`
	ProbeStrategy     tidemark.ProbeStrategy `json:"probe_strategy"`
	ProbeMethod       string                 `json:"probe_method"`
	ProbeEverySeconds float64                `json:"probe_every_seconds"`
	ProbeMaxSeconds   float64                `json:"probe_max_every_seconds"`
	ProbeNowSeconds   float64                `json:"probe_interval_seconds"` // the adaptive interval now
	FullSyncSeconds   float64                `json:"full_sync_every_seconds"`
	DeltaParam        string                 `json:"delta_param,omitempty"`
	DeadTasks         []string               `json:"dead_tasks"` // ids of its archived tasks
}

func (s *Server) resource(w http.ResponseWriter, r *http.Request) {
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	conf := s.conf()
	views, err := Resources(r.Context(), conf, s.store)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	i := slices.IndexFunc(views, func(v ResourceView) bool { return v.Source == src.Name && v.Resource == res.Name })
	if i < 0 { // a reload removed it since lookup
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s/%s is no longer in the config", src.Name, res.Name))
		return
	}
	views = views[i : i+1]
	FillNext(conf, s.inspector, views)
	d := ResourceDetail{ResourceView: views[0], Path: res.Path,
		ProbeStrategy: res.Probe.Strategy, ProbeMethod: res.Probe.Method,
		ProbeEverySeconds: res.Probe.Every.D().Seconds(), ProbeMaxSeconds: res.Probe.MaxEvery.D().Seconds(),
		ProbeNowSeconds: res.Probe.Every.D().Seconds(), FullSyncSeconds: res.FullSync.Every.D().Seconds(),
		DeadTasks: []string{}}
	if st := views[0].State; st != nil {
		d.ProbeNowSeconds = st.ProbeInterval(res.Probe.Every.D()).Seconds()
	}
	if res.Delta != nil {
		d.DeltaParam = res.Delta.Param
	}
	dead, err := s.deadTasks(src.Name, res.Name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "read the task queues: "+err.Error())
		return
	}
	for _, info := range dead {
		d.DeadTasks = append(d.DeadTasks, info.ID)
	}
	writeJSON(w, http.StatusOK, d)
}

// deadTasks are the archived probe and fetch tasks of a resource.
func (s *Server) deadTasks(source, resource string) ([]*asynq.TaskInfo, error) {
	all, err := jobs.Archived(s.inspector)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(info *asynq.TaskInfo) bool {
		sn, rn, ok := jobs.TaskResource(info)
		return !ok || sn != source || rn != resource
	}), nil
}

// History is what the resource page charts: the last hours of a resource.
type History struct {
	Since         time.Time `json:"since"`
	Now           time.Time `json:"now"`
	TargetSeconds float64   `json:"target_seconds"`
	// Lag is the freshness lag sampled each minute: Times in unix seconds,
	// LagSeconds null before the resource was first known in step.
	Times      []int64              `json:"times"`
	LagSeconds []*float64           `json:"lag_seconds"`
	Requests   []store.HourRequests `json:"requests"`
	Runs       []HistoryRun         `json:"runs"`
}

// HistoryRun is one finished fetch run on the charts.
type HistoryRun struct {
	ID       int64            `json:"id"`
	Kind     tidemark.RunKind `json:"kind"`
	Status   string           `json:"status"`
	At       time.Time        `json:"at"` // finished
	Created  int64            `json:"created"`
	Updated  int64            `json:"updated"`
	Deleted  int64            `json:"deleted"`
	Drift    *int64           `json:"drift"` // full runs
	Requests int              `json:"requests"`
}

// rangeParam is the query parameter name as a whole number from 1 to max,
// def when absent; a value out of range answers 400 and returns false.
func rangeParam(w http.ResponseWriter, q url.Values, name string, def, max int) (int, bool) {
	v := q.Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s=%q: want a whole number from 1 to %d", name, v, max))
		return 0, false
	}
	return n, true
}

// historyHoursMax bounds ?hours: probe_minutes keeps two days.
const historyHoursMax = 48

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	hours, ok := rangeParam(w, r.URL.Query(), "hours", 24, historyHoursMax)
	if !ok {
		return
	}
	k := store.Key{Source: src.Name, Resource: res.Name}
	now := time.Now().UTC()
	since := now.Add(-time.Duration(hours) * time.Hour).Truncate(time.Minute)
	h := History{Since: since, Now: now, TargetSeconds: res.Freshness.D().Seconds(), Runs: []HistoryRun{}}
	moments, err := s.store.InSyncMoments(r.Context(), k, since)
	if err == nil {
		h.Times, h.LagSeconds = lagSeries(moments, since, now, time.Minute)
		h.Requests, err = s.store.RequestsPerHour(r.Context(), k, since)
	}
	var runs []store.Run
	if err == nil {
		runs, err = s.store.FetchRunsSince(r.Context(), k, since)
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	for _, run := range runs {
		if run.FinishedAt == nil {
			continue
		}
		h.Runs = append(h.Runs, HistoryRun{ID: run.ID, Kind: run.Kind, Status: run.Status, At: *run.FinishedAt,
			Created: run.RecordsCreated, Updated: run.RecordsUpdated, Deleted: run.RecordsDeleted,
			Drift: run.Drift, Requests: run.HTTPRequests})
	}
	writeJSON(w, http.StatusOK, h)
}

// lagSeries samples the freshness lag every step from since to now (and at
// now): the time since the newest moment in step known by then.
func lagSeries(moments []store.InSyncMoment, since, now time.Time, step time.Duration) ([]int64, []*float64) {
	slices.SortFunc(moments, func(a, b store.InSyncMoment) int { return a.Known.Compare(b.Known) })
	var times []int64
	var lags []*float64
	var best time.Time
	i := 0
	sample := func(t time.Time) {
		for ; i < len(moments) && !moments[i].Known.After(t); i++ {
			if moments[i].At.After(best) {
				best = moments[i].At
			}
		}
		times = append(times, t.Unix())
		if best.IsZero() {
			lags = append(lags, nil)
			return
		}
		lag := t.Sub(best).Seconds()
		lags = append(lags, &lag)
	}
	for t := since; t.Before(now); t = t.Add(step) {
		sample(t)
	}
	sample(now)
	return times, lags
}

// retryDead re-enqueues the resource's dead (archived) probe and fetch
// tasks with a fresh retry budget, as `tidemark retry` does.
func (s *Server) retryDead(w http.ResponseWriter, r *http.Request) {
	src, res := s.lookup(w, r)
	if res == nil {
		return
	}
	dead, err := s.deadTasks(src.Name, res.Name)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "read the task queues: "+err.Error())
		return
	}
	type retried struct {
		TaskID    string `json:"task_id"`
		NewTaskID string `json:"new_task_id,omitempty"`
		What      string `json:"what"`
		Error     string `json:"error,omitempty"`
	}
	out := []retried{}
	for _, info := range dead {
		fresh, what, err := jobs.Retry(r.Context(), s.conf(), s.inspector, s.client, info)
		one := retried{TaskID: info.ID, What: what}
		if fresh != nil {
			one.NewTaskID = fresh.ID
		}
		if err != nil {
			one.Error = err.Error()
		}
		out = append(out, one)
		s.log.Info("dead task retried", "source", src.Name, "resource", res.Name, "task_id", info.ID, "new_task_id", one.NewTaskID, "error", one.Error)
	}
	writeJSON(w, http.StatusOK, map[string]any{"source": src.Name, "resource": res.Name, "retried": out})
}

//go:embed resource.html
var resourceHTML []byte

func (s *Server) resourcePage(w http.ResponseWriter, r *http.Request) {
	if _, res := s.lookup(w, r); res == nil {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(resourceHTML)
}

// static holds the vendored chart library (uPlot, MIT, its LICENSE beside
// it) and the pages' shared helpers (page.js): served from the binary, so
// the dashboard needs no network beyond tidemark.
//
//go:embed static
var static embed.FS

func staticFiles() http.Handler {
	sub, _ := fs.Sub(static, "static") // the directory is embedded: never fails
	return http.StripPrefix("/static/", http.FileServerFS(sub))
}
