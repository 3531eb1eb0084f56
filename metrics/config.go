package metrics

import "github.com/prometheus/client_golang/prometheus"

// Config reload results (label result of tidemark_config_reloads_total).
const (
	ReloadApplied  = "applied"
	ReloadRejected = "rejected"
)

// configReloads counts config file reloads by result: applied (the new
// config is in force) or rejected (it did not load or validate, and the
// config in force stays). Every role counts its own.
var configReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "tidemark_config_reloads_total",
	Help: "Config file reloads by result: applied, or rejected (invalid or unreadable; the config in force stays).",
}, []string{"result"})

func init() {
	Registry.MustRegister(configReloads)
	// Both series exist from the start, so that an alert on an increase
	// of rejected sees its first one.
	for _, r := range []string{ReloadApplied, ReloadRejected} {
		configReloads.WithLabelValues(r)
	}
}

// ObserveConfigReload counts one reload with its result.
func ObserveConfigReload(result string) {
	configReloads.WithLabelValues(result).Inc()
}
