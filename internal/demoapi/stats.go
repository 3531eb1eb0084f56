package demoapi

import (
	"strconv"
	"sync"
)

// Stats are the request counters of GET /_stats. Only API requests count;
// the test endpoints do not.
type Stats struct {
	// Requests is the number of API requests answered.
	Requests int64 `json:"requests"`
	// BodyBytes is the number of response body bytes written (0 for HEAD and 304).
	BodyBytes int64 `json:"body_bytes"`
	// ByStatus counts responses by status code ("200", "304", ...).
	ByStatus map[string]int64 `json:"by_status"`
	// Resources has one entry per resource in Resources.
	Resources map[string]ResourceStats `json:"resources"`
}

// ResourceStats are the counters of one resource.
type ResourceStats struct {
	Requests  int64            `json:"requests"`
	BodyBytes int64            `json:"body_bytes"`
	ByStatus  map[string]int64 `json:"by_status"`
	// Records is the number of live records.
	Records int `json:"records"`
}

type counters struct {
	requests, bodyBytes int64
	byStatus            map[int]int64
}

func (c *counters) add(status int, n int64) {
	if c.byStatus == nil {
		c.byStatus = make(map[int]int64)
	}
	c.requests++
	c.bodyBytes += n
	c.byStatus[status]++
}

func (c *counters) statusMap() map[string]int64 {
	m := make(map[string]int64, len(c.byStatus))
	for code, n := range c.byStatus {
		m[strconv.Itoa(code)] = n
	}
	return m
}

type statsRecorder struct {
	mu    sync.Mutex
	total counters
	res   [numResources]counters
}

// record counts one API request; res is -1 for an unknown path.
func (r *statsRecorder) record(res, status int, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total.add(status, n)
	if res >= 0 {
		r.res[res].add(status, n)
	}
}

func (r *statsRecorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total = counters{}
	r.res = [numResources]counters{}
}

// Stats returns the counters and live record counts, as GET /_stats does.
func (s *Server) Stats() Stats {
	var live [numResources]int
	s.mu.RLock()
	for i, t := range s.tables {
		live[i] = t.live()
	}
	s.mu.RUnlock()

	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	out := Stats{
		Requests:  s.stats.total.requests,
		BodyBytes: s.stats.total.bodyBytes,
		ByStatus:  s.stats.total.statusMap(),
		Resources: make(map[string]ResourceStats, numResources),
	}
	for i, name := range Resources {
		c := &s.stats.res[i]
		out.Resources[name] = ResourceStats{Requests: c.requests, BodyBytes: c.bodyBytes, ByStatus: c.statusMap(), Records: live[i]}
	}
	return out
}
