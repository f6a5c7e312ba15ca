package main

import (
	"context"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/uploader/upload"
	"github.com/prometheus/client_golang/prometheus"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	w, err := cfg.ConnectWorker(ctx, bus.IdentityUploader, bus.ConsumerUploader, cfg.MaxDeliver)
	if err != nil {
		return err
	}
	defer w.Close()
	h := &upload.Handler{
		Reader:           w.Kube,
		Events:           w.Events,
		JS:               w.JS,
		Staging:          w.Staging,
		Destinations:     destination.NewResolver(w.Kube, destination.Source{Seed: cfg.Seed(), ConfigMap: cfg.DestinationsConfigMap}),
		WorkDir:          cfg.WorkDir,
		StagingReadBytes: cfg.StagingMiB << 20,
		StagingIdle:      cfg.StagingIdle,
		PartSize:         uint64(cfg.PartSizeMiB) << 20,
		Threads:          uint(cfg.Threads),
		Log:              w.Log,
		Metrics:          newMetrics(w.Endpoint.Registry()),
	}
	worker, err := bus.NewWorker(w.Consumer, bus.Typed(cfg.MaxDeliver, h.Handle, h.DeadLetter), bus.WithLogger(w.Log), bus.WithMetrics(w.Bus), bus.WithConcurrency(cfg.Concurrency),
		bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, cfg.RetryMaxDelay)))
	if err != nil {
		return err
	}
	return w.Run(ctx, nil, worker)
}

func newMetrics(r prometheus.Registerer) upload.Metrics {
	uploaded := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_uploads_total",
		Help: "Upload attempts by this replica, by result (ok, failed).",
	}, []string{"result"})
	bytes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "etcdbackup_upload_bytes_total",
		Help: "Compressed bytes this replica stored in destinations.",
	})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "etcdbackup_upload_duration_seconds",
		Help:    "Time to compress and store one backup, retries excluded.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
	})
	stored := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_backups_stored_total",
		Help: "Backups this replica stored, by cluster and destination.",
	}, []string{"cluster", "destination"})
	r.MustRegister(uploaded, bytes, duration, stored)
	failed := service.Failures(r)
	return upload.Metrics{
		Stored:   func(cluster, dest string) { stored.WithLabelValues(cluster, dest).Inc() },
		Failed:   func(reason string) { failed("upload", reason) },
		Uploaded: func(result string) { uploaded.WithLabelValues(result).Inc() },
		Bytes:    func(n int64) { bytes.Add(float64(n)) },
		Duration: func(d time.Duration) { duration.Observe(d.Seconds()) },
	}
}
