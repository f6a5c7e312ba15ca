package main

import (
	"context"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/pruner/prune"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentityPruner, service.WithManager())
	if err != nil {
		return err
	}
	defer rt.Close()
	// Secrets are read directly (uncached): only the Seed namespace's, only when needed.
	// Restores and Clusters (which backups a restore holds) are read from the cache.
	dests := rt.Destinations(rt.Kube)
	m := prune.NewMetrics(rt.Endpoint.Registry())
	planner := &prune.Planner{JS: rt.JS, Destinations: dests, Reader: rt.Manager.GetClient(), Log: rt.Log, Metrics: m,
		Grace: cfg.DeletionGrace}
	rec := &prune.Reconciler{Client: rt.Manager.GetClient(), API: rt.Kube, Planner: planner, Recorder: rt.Events,
		Interval: cfg.ReconcileInterval, Log: rt.Log}
	if err := rec.SetupWithManager(rt.Manager); err != nil {
		return err
	}
	grace := &prune.Grace{Client: rt.Manager.GetClient(), Destinations: dests, Recorder: rt.Events, Metrics: m,
		Log: rt.Log}
	if err := grace.SetupWithManager(rt.Manager); err != nil {
		return err
	}
	backoff := bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, cfg.RetryMaxDelay))
	stored := &prune.Stored{Reader: rt.Kube, Configs: rt.Manager.GetClient(), Planner: planner, Events: rt.Events}
	storedWorker, err := rt.Worker(ctx, bus.ConsumerPruner, stored.Handler, backoff)
	if err != nil {
		return err
	}
	deleter := &prune.Deleter{Reader: rt.Kube, Planner: planner, JS: rt.JS, Destinations: dests, Events: rt.Events,
		Bus: rt.Bus, Log: rt.Log, Metrics: m}
	deleteWorker, err := rt.Worker(ctx, bus.ConsumerDeleter, deleter.Handler,
		bus.WithConcurrency(cfg.Concurrency), backoff)
	if err != nil {
		return err
	}
	return rt.Run(ctx, storedWorker, deleteWorker)
}
