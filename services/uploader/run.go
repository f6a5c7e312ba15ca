package main

import (
	"context"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/uploader/upload"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.Logger("uploader")
	if err != nil {
		return err
	}
	restCfg, err := kube.Config(cfg.Kubeconfig, "etcdbackup-uploader")
	if err != nil {
		return err
	}
	kc, err := kube.NewClient(restCfg)
	if err != nil {
		return err
	}
	nc, js, err := service.ConnectNATS(ctx, cfg.NATSURL, "etcdbackup-uploader", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := service.EnsureBus(ctx, js, cfg.Topology(), log); err != nil {
		return err
	}
	staging, err := js.ObjectStore(ctx, bus.StagingBucket)
	if err != nil {
		return fmt.Errorf("open staging bucket: %w", err)
	}
	consumer, err := bus.Consumer(ctx, js, bus.ConsumerUploader)
	if err != nil {
		return err
	}
	endpoint := service.NewEndpoint(cfg.MetricsAddr)
	h := &upload.Handler{
		JS:               js,
		Staging:          staging,
		Destinations:     destination.NewResolver(kc, cfg.Seed()),
		WorkDir:          cfg.WorkDir,
		StagingReadBytes: cfg.StagingMiB << 20,
		StagingIdle:      cfg.StagingIdle,
		PartSize:         uint64(cfg.PartSizeMiB) << 20,
		Threads:          uint(cfg.Threads),
		Level:            cfg.level(),
		Log:              log,
		Metrics:          newMetrics(endpoint.Registry()),
	}
	worker, err := bus.NewWorker(consumer, h.Handle, bus.WithLogger(log), bus.WithConcurrency(cfg.Concurrency),
		bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, cfg.RetryMaxDelay)))
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return endpoint.Start(gctx) })
	g.Go(func() error { return worker.Start(gctx) })
	endpoint.SetReady(true)
	log.Info("uploader ready", "nats", nc.ConnectedUrlRedacted())
	err = g.Wait()
	endpoint.SetReady(false)
	return err
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
	r.MustRegister(uploaded, bytes, duration)
	return upload.Metrics{
		Uploaded: func(result string) { uploaded.WithLabelValues(result).Inc() },
		Bytes:    func(n int64) { bytes.Add(float64(n)) },
		Duration: func(d time.Duration) { duration.Observe(d.Seconds()) },
	}
}
