package scheduling

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the scheduler's: backups queued, and each config's schedule and what blocks it.
type Metrics struct {
	queued   *prometheus.CounterVec
	interval *prometheus.GaugeVec
	blocked  *prometheus.GaugeVec
	waited   prometheus.Counter
}

// NewMetrics registers the scheduler's metrics on r; the Reconciler and the queue share them.
func NewMetrics(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		queued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_scheduler_backups_queued_total",
			Help: "Backup requests this replica queued that the stream accepted as new, by trigger.",
		}, []string{"trigger"}),
		interval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdbackup_schedule_interval_seconds",
			Help: "Time between two scheduled backups of a config (absent for one-time backups): what an overdue backup is " +
				"measured against.",
		}, []string{"namespace", "config"}),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdbackup_scheduling_blocked",
			Help: "1 while a config takes no backups, with the reason of its SchedulingActive=False condition " +
				"(TooManyBackups, ClusterPaused, InvalidSchedule, ...).",
		}, []string{"namespace", "config", "reason"}),
		waited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdbackup_scheduler_slots_waiting_total",
			Help: "Looks at a due backup that waited because another backup of its cluster was queued or running " +
				"(one per cluster in the queue).",
		}),
	}
	r.MustRegister(m.queued, m.interval, m.blocked, m.waited)
	return m
}

// observe sets a config's schedule interval (0: one-time) and which reason ("": none) blocks it.
func (m *Metrics) observe(ns, config string, interval time.Duration, reason string) {
	if interval > 0 {
		m.interval.WithLabelValues(ns, config).Set(interval.Seconds())
	} else {
		m.interval.DeleteLabelValues(ns, config)
	}
	m.blocked.DeletePartialMatch(prometheus.Labels{"namespace": ns, "config": config})
	if reason != "" {
		m.blocked.WithLabelValues(ns, config, reason).Set(1)
	}
}

// forget drops a config that is gone.
func (m *Metrics) forget(ns, config string) {
	m.interval.DeleteLabelValues(ns, config)
	m.blocked.DeletePartialMatch(prometheus.Labels{"namespace": ns, "config": config})
}
