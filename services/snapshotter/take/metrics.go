package take

import "github.com/prometheus/client_golang/prometheus"

// metrics are the snapshotter's own; its failures are counted by Report.
type metrics struct {
	taken    *prometheus.CounterVec
	bytes    prometheus.Counter
	duration prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		taken: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_snapshots_total",
			Help: "Snapshots attempted by this replica, by result (ok, failed, reused: a whole staged snapshot of a " +
				"redelivered request offered again, busy: its cluster's snapshot lease was held).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdbackup_snapshot_bytes_total",
			Help: "Bytes of verified snapshots staged by this replica.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcdbackup_snapshot_duration_seconds",
			Help:    "Time to stream, verify and stage one snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
	}
	r.MustRegister(m.taken, m.bytes, m.duration)
	return m
}
