package config

import "github.com/tidemark/tidemark"

// readingProbe checks what the probe strategies that read the collection
// itself (delta, rolling_hash) need: they ask the fetch's own pages, so
// probe.path and probe.limit, which ask something else, do not apply.
// (A partitioned resource's probe must be none: partitions.go.)
func (c *checker) readingProbe(pp string, r *Resource) {
	p := &r.Probe
	switch p.Strategy {
	case tidemark.ProbeDelta:
		if r.Delta == nil {
			c.report(join(pp, "strategy"), "delta reads the changes since the watermark as the probe: it needs a delta section (delta.field and delta.param)")
		}
	case tidemark.ProbeRollingHash:
		if r.Post() {
			c.report(join(pp, "strategy"), "rolling_hash re-asks the pages the last full read requested, by URL: not available with method POST, whose pages are bodies (use hash)")
		}
	default:
		return
	}
	if p.Path != "" {
		c.report(join(pp, "path"), "not with strategy %s: it reads the %s's own pages", p.Strategy, readBy(p.Strategy))
	}
	if p.Limit != 0 || c.zeros[join(pp, "limit")] {
		c.report(join(pp, "limit"), "not with strategy %s: its page is the %s's page, of pagination.limit", p.Strategy, readBy(p.Strategy))
	}
}

// readBy names the read whose pages a reading probe asks.
func readBy(strategy tidemark.ProbeStrategy) string {
	if strategy == tidemark.ProbeDelta {
		return "delta read"
	}
	return "full read"
}
