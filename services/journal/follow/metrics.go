package follow

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the journal's, shared by every config a replica follows.
type Metrics struct {
	revisions    prometheus.Counter
	messages     prometheus.Counter
	segments     *prometheus.CounterVec
	segmentBytes prometheus.Counter
	gaps         prometheus.Counter
	secondsBehind,
	revisionsSinceFull *prometheus.GaugeVec
}

// NewMetrics registers the journal's metrics on r.
func NewMetrics(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		revisions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdbackup_journal_revisions_total",
			Help: "etcd revisions this replica published onto the journal stream.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdbackup_journal_messages_total",
			Help: "Messages this replica published onto the journal stream, each carrying the revisions received within " +
				"--publish-linger.",
		}),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_journal_segments_total",
			Help: "Journal segments this replica sealed into a bucket, by result (ok, failed: retried, the revisions " +
				"wait on the bus).",
		}, []string{"result"}),
		segmentBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdbackup_journal_segment_bytes_total",
			Help: "Bytes of journal segments (compressed, encrypted when the destination encrypts) this replica stored.",
		}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdbackup_journal_gaps_total",
			Help: "Chains this replica ended because etcd had compacted past the revision the journal resumes from.",
		}),
		secondsBehind: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdbackup_journal_seconds_behind",
			Help: "Age of the oldest revision of a config not yet in a segment (0: every revision received is sealed), " +
				"by the config's namespace and uid; set by the replica following it.",
		}, []string{"namespace", "config_uid"}),
		revisionsSinceFull: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdbackup_journal_revisions_since_full_backup",
			Help: "Revisions journaled since a config's newest full backup: what a restore to now replays.",
		}, []string{"namespace", "config_uid"}),
	}
	r.MustRegister(m.revisions, m.messages, m.segments, m.segmentBytes, m.gaps, m.secondsBehind, m.revisionsSinceFull)
	return m
}

func (m *Metrics) behind(ns, uid string, seconds float64) {
	m.secondsBehind.WithLabelValues(ns, uid).Set(seconds)
}

func (m *Metrics) sinceFull(ns, uid string, revisions float64) {
	m.revisionsSinceFull.WithLabelValues(ns, uid).Set(revisions)
}

// Forget drops a config's gauges, when this replica no longer follows it.
func (m *Metrics) Forget(ns, uid string) {
	m.secondsBehind.DeleteLabelValues(ns, uid)
	m.revisionsSinceFull.DeleteLabelValues(ns, uid)
}
