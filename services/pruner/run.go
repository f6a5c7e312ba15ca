package main

import (
	"context"
	"fmt"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/pruner/prune"
	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/handler"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	w, err := cfg.ConnectWorker(ctx, bus.IdentityPruner, bus.ConsumerPruner, cfg.MaxDeliver)
	if err != nil {
		return err
	}
	defer w.Close()
	deletes, err := bus.Consumer(ctx, w.JS, bus.ConsumerDeleter, cfg.MaxDeliver)
	if err != nil {
		return err
	}
	mgr, _, err := cfg.NewManager("pruner", w.Log)
	if err != nil {
		return err
	}
	// Secrets are read directly (uncached): only the Seed namespace's, only when needed.
	dests := destination.NewResolver(w.Kube, destination.Source{Seed: cfg.Seed(), ConfigMap: cfg.DestinationsConfigMap})
	m := newMetrics(w.Endpoint.Registry())
	// Restores and Clusters (which backups a restore holds) are read from the cache.
	planner := &prune.Planner{JS: w.JS, Destinations: dests, Reader: mgr.GetClient(), Log: w.Log, Listed: m.listed}
	rec := &prune.Reconciler{
		Client: mgr.GetClient(), Planner: planner, Recorder: mgr.GetEventRecorder("etcdbackup-pruner"),
		Interval: cfg.ReconcileInterval, Log: w.Log, Released: m.forget,
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("etcdbackupconfig-pruner").For(&kubermaticv1.EtcdBackupConfig{}).
		Watches(&kubermaticv1.EtcdRestore{}, handler.EnqueueRequestsFromMapFunc(prune.ConfigOfRestore)).Complete(rec); err != nil {
		return fmt.Errorf("pruner controller: %w", err)
	}
	stored := &prune.Stored{Reader: w.Kube, Planner: planner, Events: w.Events}
	backoff := bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, cfg.RetryMaxDelay))
	storedWorker, err := bus.NewWorker(w.Consumer, bus.Typed(cfg.MaxDeliver, stored.Handle, nil), bus.WithLogger(w.Log), bus.WithMetrics(w.Bus), backoff)
	if err != nil {
		return err
	}
	deleter := &prune.Deleter{Reader: w.Kube, Planner: planner, JS: w.JS, Destinations: dests, Events: w.Events, Log: w.Log, Metrics: m.deletes}
	deleteWorker, err := bus.NewWorker(deletes, bus.Typed(cfg.MaxDeliver, deleter.Handle, deleter.DeadLetter), bus.WithLogger(w.Log), bus.WithMetrics(w.Bus), bus.WithConcurrency(cfg.Concurrency), backoff)
	if err != nil {
		return err
	}
	return w.Run(ctx, mgr.GetCache().WaitForCacheSync, storedWorker, deleteWorker.Start, mgr.Start)
}

type metrics struct {
	deletes              prune.Metrics
	count, bytes, newest *prometheus.GaugeVec
	passes               *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) *metrics {
	deleted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_backups_deleted_total",
		Help: "Backups this replica deleted (or found already gone), by cluster and destination.",
	}, []string{"cluster", "destination"})
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"namespace", "config"})
	}
	m := &metrics{
		count:  gauge("etcdbackup_stored_backups", "Backups of a config in its destination, as the last listing found (every --reconcile-interval)."),
		bytes:  gauge("etcdbackup_stored_bytes", "Bytes of a config's backups in its destination, as the last listing found."),
		newest: gauge("etcdbackup_newest_backup_timestamp_seconds", "Scheduled time of a config's newest backup in its destination, as the last listing found."),
	}
	m.passes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_retention_passes_total",
		Help: "Listings of a config's prefix this replica made to apply retention.",
	}, []string{"namespace", "config"})
	r.MustRegister(deleted, m.count, m.bytes, m.newest, m.passes)
	failed := service.Failures(r)
	m.deletes = prune.Metrics{
		Deleted: func(c, d string) { deleted.WithLabelValues(c, d).Inc() },
		Failed:  func(reason string) { failed("delete", reason) },
	}
	return m
}

func (m *metrics) listed(ns, config string, count int, bytes int64, newest time.Time) {
	m.passes.WithLabelValues(ns, config).Inc()
	m.count.WithLabelValues(ns, config).Set(float64(count))
	m.bytes.WithLabelValues(ns, config).Set(float64(bytes))
	if !newest.IsZero() {
		m.newest.WithLabelValues(ns, config).Set(float64(newest.Unix()))
	}
}

func (m *metrics) forget(ns, config string) {
	for _, g := range []*prometheus.GaugeVec{m.count, m.bytes, m.newest} {
		g.DeleteLabelValues(ns, config)
	}
	m.passes.DeleteLabelValues(ns, config)
}
