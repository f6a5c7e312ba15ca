package drill

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the drills'.
type Metrics struct {
	drills      *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
}

// NewMetrics registers the drills' metrics on r.
func NewMetrics(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		drills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_drills_total",
			Help: "Restore drills this replica ran, by result: passed, failed (the backup is not restorable), error (the " +
				"drill could not run).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdbackup_drill_last_success_timestamp_seconds",
			Help: "When a config's newest backup last passed a restore drill on this replica.",
		}, []string{"namespace", "config"}),
	}
	r.MustRegister(m.drills, m.lastSuccess)
	return m
}
