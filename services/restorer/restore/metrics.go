package restore

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the restores'; each failure is counted in etcdbackup_failures_total too
// (Reconciler.Bus).
type Metrics struct {
	steps    *prometheus.HistogramVec
	finished *prometheus.CounterVec
}

// NewMetrics registers the restores' metrics on r.
func NewMetrics(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "etcdbackup_restore_step_duration_seconds",
			Help: "Time a restore spent in a step: verify (the backup, before anything is touched), " +
				"teardown (old StatefulSet, PVCs and pods gone), rebuild (members restored and etcd healthy).",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 14),
		}, []string{"step"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_restores_total",
			Help: "Restores this replica finished, by result (completed or failed).",
		}, []string{"result"}),
	}
	r.MustRegister(m.steps, m.finished)
	return m
}
