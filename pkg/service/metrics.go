package service

import "github.com/prometheus/client_golang/prometheus"

// Failures registers etcdbackup_failures_total{stage,reason}, the one failure counter every
// stage reports to, and returns the function that counts.
func Failures(r prometheus.Registerer) func(stage, reason string) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_failures_total",
		Help: "Failed attempts, by stage (snapshot, upload, delete, restore) and reason.",
	}, []string{"stage", "reason"})
	r.MustRegister(c)
	return func(stage, reason string) { c.WithLabelValues(stage, reason).Inc() }
}
