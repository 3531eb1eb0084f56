package bench

import (
	"context"
	"strings"

	"github.com/tidemark/tidemark/config"
)

// rig is what a workload runs against: a database of its own, a
// demo-upstream and the workload's config, all named after the workload
// (tidemark_bench_<pid>_<name>, upstream-<name>.log, <name>.yaml).
type rig struct {
	db      *database
	up      *upstreamProc
	cfgPath string
	conf    *config.Config
	src     *config.Source // the config's only source
	keep    bool
}

// startRig creates the workload's database, starts demo-upstream with
// upstreamArgs and writes the config configOf makes for its base URL.
func (e *env) startRig(ctx context.Context, name string, configOf func(base string) string, upstreamArgs ...string) (*rig, error) {
	db, err := createDatabase(ctx, e.cfg.AdminDatabaseURL, strings.ReplaceAll(name, "-", "_"))
	if err != nil {
		return nil, err
	}
	r := &rig{db: db, keep: e.cfg.Keep}
	r.up, err = startUpstream(ctx, e.upstream(), e.tmp, "upstream-"+name, upstreamArgs...)
	if err != nil {
		r.close(ctx)
		return nil, err
	}
	r.cfgPath, r.conf, err = e.writeConfig(name+".yaml", configOf(r.up.base))
	if err != nil {
		r.close(ctx)
		return nil, err
	}
	r.src = &r.conf.Sources[0]
	return r, nil
}

// startProbeRig is the rig both probe workloads run against: 100 records
// a resource, the probe config.
func (e *env) startProbeRig(ctx context.Context, name string) (*rig, error) {
	return e.startRig(ctx, name, probeConfig, "--records", "100")
}

// close stops the upstream and drops the database unless Config.Keep.
func (r *rig) close(ctx context.Context) {
	if r.up != nil {
		r.up.stop()
	}
	if !r.keep {
		r.db.drop(context.WithoutCancel(ctx))
	}
}
