package main

import (
	"context"
	"fmt"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/services/pruner/prune"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	w, err := cfg.ConnectWorker(ctx, "pruner", bus.ConsumerPruner)
	if err != nil {
		return err
	}
	defer w.Close()
	ctrl.SetLogger(logr.FromSlogHandler(w.Log.Handler()))
	deletes, err := bus.Consumer(ctx, w.JS, bus.ConsumerDeleter)
	if err != nil {
		return err
	}
	restCfg, err := kube.Config(cfg.Kubeconfig, "etcdbackup-pruner")
	if err != nil {
		return err
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&kubermaticv1.Seed{}: {Namespaces: map[string]cache.Config{cfg.SeedNamespace: {}}},
		}},
	})
	if err != nil {
		return fmt.Errorf("controller manager: %w", err)
	}
	// Secrets are read directly (uncached): only the Seed namespace's, only when needed.
	dests := destination.NewResolver(w.Kube, cfg.Seed())
	planner := &prune.Planner{JS: w.JS, Destinations: dests, Log: w.Log}
	rec := &prune.Reconciler{
		Client: mgr.GetClient(), Planner: planner, Recorder: mgr.GetEventRecorder("etcdbackup-pruner"),
		Interval: cfg.ReconcileInterval, Log: w.Log,
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("etcdbackupconfig-pruner").For(&kubermaticv1.EtcdBackupConfig{}).Complete(rec); err != nil {
		return fmt.Errorf("pruner controller: %w", err)
	}
	stored := &prune.Stored{Reader: w.Kube, Planner: planner}
	backoff := bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, cfg.RetryMaxDelay))
	storedWorker, err := bus.NewWorker(w.Consumer, stored.Handle, bus.WithLogger(w.Log), backoff)
	if err != nil {
		return err
	}
	deleter := &prune.Deleter{JS: w.JS, Destinations: dests, Log: w.Log, Metrics: newMetrics(w.Endpoint.Registry())}
	deleteWorker, err := bus.NewWorker(deletes, deleter.Handle, bus.WithLogger(w.Log), bus.WithConcurrency(cfg.Concurrency), backoff)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mgr.Start(gctx) })
	g.Go(func() error { return deleteWorker.Start(gctx) })
	g.Go(func() error { return w.Run(gctx, storedWorker) })
	return g.Wait()
}

func newMetrics(r prometheus.Registerer) prune.Metrics {
	deleted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_backups_deleted_total",
		Help: "Backups this replica deleted (or found already gone), by cluster and destination.",
	}, []string{"cluster", "destination"})
	failed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_delete_failures_total",
		Help: "Failed deletion attempts, by cluster, destination and reason (s3, config).",
	}, []string{"cluster", "destination", "reason"})
	r.MustRegister(deleted, failed)
	return prune.Metrics{
		Deleted: func(c, d string) { deleted.WithLabelValues(c, d).Inc() },
		Failed:  func(c, d, reason string) { failed.WithLabelValues(c, d, reason).Inc() },
	}
}
