package main

import (
	"context"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/snapshotter/take"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.Logger("snapshotter")
	if err != nil {
		return err
	}
	restCfg, err := kube.Config(cfg.Kubeconfig, "etcdbackup-snapshotter")
	if err != nil {
		return err
	}
	kc, err := kube.NewClient(restCfg)
	if err != nil {
		return err
	}
	nc, js, err := service.ConnectNATS(ctx, cfg.NATSURL, "etcdbackup-snapshotter", log)
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
	consumer, err := bus.Consumer(ctx, js, bus.ConsumerSnapshotter)
	if err != nil {
		return err
	}

	endpoint := service.NewEndpoint(cfg.MetricsAddr)
	h := &take.Handler{
		Reader:        kc,
		JS:            js,
		Staging:       staging,
		MaxAttempts:   uint64(cfg.MaxAttempts),
		MemberTimeout: cfg.MemberTimeout,
		Log:           log,
		Metrics:       newMetrics(endpoint.Registry()),
	}
	worker, err := bus.NewWorker(consumer, h.Handle, bus.WithLogger(log), bus.WithConcurrency(cfg.Concurrency),
		bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, 5*time.Minute)))
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return endpoint.Start(gctx) })
	g.Go(func() error { return worker.Start(gctx) })
	endpoint.SetReady(true)
	log.Info("snapshotter ready", "nats", nc.ConnectedUrlRedacted())
	err = g.Wait()
	endpoint.SetReady(false)
	return err
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
	return take.Metrics{
		Taken:    func(result string) { taken.WithLabelValues(result).Inc() },
		Bytes:    func(n int64) { bytes.Add(float64(n)) },
		Duration: func(d time.Duration) { duration.Observe(d.Seconds()) },
	}
}
