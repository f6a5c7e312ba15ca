package upload

import "github.com/prometheus/client_golang/prometheus"

// metrics are the uploader's own; its failures are counted by Report.
type metrics struct {
	uploads  *prometheus.CounterVec
	bytes    prometheus.Counter
	duration prometheus.Histogram
	stored   *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_uploads_total",
			Help: "Upload attempts by this replica, by result (ok, failed, config-deleted).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdbackup_upload_bytes_total",
			Help: "Compressed bytes this replica stored in destinations.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcdbackup_upload_duration_seconds",
			Help:    "Time to compress and store one backup, retries excluded.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_backups_stored_total",
			Help: "Backups this replica stored, by cluster and destination.",
		}, []string{"cluster", "destination"}),
	}
	r.MustRegister(m.uploads, m.bytes, m.duration, m.stored)
	return m
}
