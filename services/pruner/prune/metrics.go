package prune

import (
	"time"

	"github.com/etcd-backup/etcdbackup/services/pruner/retention"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pruner's: what each listing found of a config's backups, and the backups
// deleted. Its failures are counted by Report.
type Metrics struct {
	count, bytes, newest, grace   *prometheus.GaugeVec
	retainedVersions, lockedUntil *prometheus.GaugeVec
	copyLagSeconds                *prometheus.GaugeVec
	passes, deleted               *prometheus.CounterVec
}

// NewMetrics registers the pruner's metrics on r; the Planner, Deleter and Reconciler share them.
func NewMetrics(r prometheus.Registerer) *Metrics {
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"namespace", "config"})
	}
	m := &Metrics{
		count: gauge("etcdbackup_stored_backups",
			"Backups of a config in its destination, as the last listing found (every --reconcile-interval)."),
		bytes: gauge("etcdbackup_stored_bytes",
			"Bytes of a config's backups in its destination, as the last listing found."),
		newest: gauge("etcdbackup_newest_backup_timestamp_seconds",
			"Scheduled time of a config's newest backup in its destination, as the last listing found."),
		grace: gauge("etcdbackup_backups_in_grace",
			"Backups a deleted config left that are kept for the grace period (a DeletedBackupSet's), by the "+
				"deleted config."),
		retainedVersions: gauge("etcdbackup_retained_versions",
			"Versions of a config's deleted backups that S3 Object Lock still retains (destroyed once it lets them go)."),
		lockedUntil: gauge("etcdbackup_newest_backup_locked_until_timestamp_seconds",
			"When the Object Lock of a config's newest backup runs out: after that, whoever holds the bucket's keys can "+
				"destroy it."),
		copyLagSeconds: gauge("etcdbackup_copy_lag_seconds",
			"How long the oldest object of a config not yet in its destination's copyTo has waited (0: all copied)."),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_retention_passes_total",
			Help: "Listings of a config's prefix this replica made to apply retention.",
		}, []string{"namespace", "config"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_backups_deleted_total",
			Help: "Backups this replica deleted (or found already gone), by cluster and destination.",
		}, []string{"cluster", "destination"}),
	}
	r.MustRegister(m.count, m.bytes, m.newest, m.grace, m.retainedVersions, m.lockedUntil, m.copyLagSeconds, m.passes,
		m.deleted)
	return m
}

// listed records what a listing found of a config's backups.
func (m *Metrics) listed(ns, config string, objects []retention.Object) {
	var bytes int64
	var newest time.Time
	for _, o := range objects {
		bytes += o.Size
		if o.Scheduled.After(newest) {
			newest = o.Scheduled
		}
	}
	m.passes.WithLabelValues(ns, config).Inc()
	m.count.WithLabelValues(ns, config).Set(float64(len(objects)))
	m.bytes.WithLabelValues(ns, config).Set(float64(bytes))
	if !newest.IsZero() {
		m.newest.WithLabelValues(ns, config).Set(float64(newest.Unix()))
	}
}

// locked records what a sweep of a config's Object Lock destinations found.
func (m *Metrics) locked(ns, config string, retained int, newestUntil time.Time) {
	m.retainedVersions.WithLabelValues(ns, config).Set(float64(retained))
	if !newestUntil.IsZero() {
		m.lockedUntil.WithLabelValues(ns, config).Set(float64(newestUntil.Unix()))
	}
}

// copyLag records how long the oldest object not yet copied has waited (zero oldest: none).
func (m *Metrics) copyLag(ns, config string, oldest, now time.Time) {
	lag := 0.0
	if !oldest.IsZero() {
		lag = max(now.Sub(oldest).Seconds(), 0) // the bucket's clock may run ahead
	}
	m.copyLagSeconds.WithLabelValues(ns, config).Set(lag)
}

// forget drops a config that is gone.
func (m *Metrics) forget(ns, config string) {
	for _, g := range []*prometheus.GaugeVec{m.count, m.bytes, m.newest, m.retainedVersions, m.lockedUntil,
		m.copyLagSeconds} {
		g.DeleteLabelValues(ns, config)
	}
	m.passes.DeleteLabelValues(ns, config)
}
