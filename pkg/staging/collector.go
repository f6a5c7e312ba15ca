package staging

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	usedDesc = prometheus.NewDesc("etcdbackup_staging_used_bytes",
		"Bytes the staging bucket holds (snapshots staged, not yet uploaded), read from NATS at scrape time.", nil, nil)
	limitDesc = prometheus.NewDesc("etcdbackup_staging_limit_bytes",
		"The staging bucket's limit (its stream's max bytes); absent when it has none.", nil, nil)
)

// Collector reports the staging bucket's usage, read from NATS at each scrape.
type Collector struct {
	js     jetstream.JetStream
	bucket string
}

// NewCollector returns a Collector of bucket; register it on the service's registry.
func NewCollector(js jetstream.JetStream, bucket string) *Collector {
	return &Collector{js: js, bucket: bucket}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- usedDesc
	ch <- limitDesc
}

// Collect implements prometheus.Collector. With NATS away it reports no sample rather than a
// wrong one.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	used, limit, err := Usage(ctx, c.js, c.bucket)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(usedDesc, prometheus.GaugeValue, float64(used))
	if limit > 0 {
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(limit))
	}
}
