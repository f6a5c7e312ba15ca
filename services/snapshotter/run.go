package main

import (
	"context"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/etcd-backup/etcdbackup/services/snapshotter/take"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	w, err := cfg.ConnectWorker(ctx, bus.IdentitySnapshotter, bus.ConsumerSnapshotter, take.MaxDeliver(cfg.MaxAttempts))
	if err != nil {
		return err
	}
	defer w.Close()
	h := &take.Handler{
		Reader:         w.Kube,
		Events:         w.Events,
		JS:             w.JS,
		MaxAttempts:    uint64(cfg.MaxAttempts),
		MemberTimeout:  cfg.MemberTimeout,
		Level:          cfg.level(),
		Concurrency:    cfg.ZstdThreads,
		StagingReserve: int64(cfg.StagingReserveMiB) << 20,
		// The Seed (or destinations ConfigMap) and a destination's encryption Secret.
		Destinations: destination.NewResolver(w.Kube, destination.Source{Seed: cfg.Seed(), ConfigMap: cfg.DestinationsConfigMap}),
		Log:          w.Log,
		Metrics:      newMetrics(w.Endpoint.Registry()),
	}
	worker, err := bus.NewWorker(w.Consumer, bus.Typed(take.MaxDeliver(cfg.MaxAttempts), h.Handle, h.DeadLetter), bus.WithLogger(w.Log), bus.WithMetrics(w.Bus), bus.WithConcurrency(cfg.Concurrency),
		bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, 5*time.Minute)))
	if err != nil {
		return err
	}
	w.Endpoint.Registry().MustRegister(&stagingCollector{js: w.JS})
	return w.Run(ctx, nil, worker)
}

var (
	stagingUsed  = prometheus.NewDesc("etcdbackup_staging_used_bytes", "Bytes the staging bucket holds (snapshots staged, not yet uploaded), read from NATS at scrape time.", nil, nil)
	stagingLimit = prometheus.NewDesc("etcdbackup_staging_limit_bytes", "The staging bucket's limit (its stream's max bytes); absent when it has none.", nil, nil)
)

// stagingCollector reads staging's usage from NATS when scraped.
type stagingCollector struct{ js jetstream.JetStream }

func (c *stagingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- stagingUsed
	ch <- stagingLimit
}

func (c *stagingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	used, limit, err := staging.Usage(ctx, c.js, bus.StagingBucket)
	if err != nil {
		return // NATS away: no sample rather than a wrong one
	}
	ch <- prometheus.MustNewConstMetric(stagingUsed, prometheus.GaugeValue, float64(used))
	if limit > 0 {
		ch <- prometheus.MustNewConstMetric(stagingLimit, prometheus.GaugeValue, float64(limit))
	}
}
func newMetrics(r prometheus.Registerer) take.Metrics {
	taken := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_snapshots_total",
		Help: "Snapshots attempted by this replica, by result (ok, failed).",
	}, []string{"result"})
	bytes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "etcdbackup_snapshot_bytes_total",
		Help: "Bytes of verified snapshots staged by this replica.",
	})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "etcdbackup_snapshot_duration_seconds",
		Help:    "Time to stream, verify and stage one snapshot.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
	})
	r.MustRegister(taken, bytes, duration)
	failed := service.Failures(r)
	return take.Metrics{
		Taken:    func(result string) { taken.WithLabelValues(result).Inc() },
		Failed:   func(reason string) { failed("snapshot", reason) },
		Bytes:    func(n int64) { bytes.Add(float64(n)) },
		Duration: func(d time.Duration) { duration.Observe(d.Seconds()) },
	}
}
