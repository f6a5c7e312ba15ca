package main

import (
	"context"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/scheduler/scheduling"
	"github.com/etcd-backup/etcdbackup/services/scheduler/statuswriter"
	"github.com/etcd-backup/etcdbackup/services/scheduler/trigger"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentityScheduler,
		service.WithLeaderElection(cfg.LeaderElect, "etcdbackup-scheduler"))
	if err != nil {
		return err
	}
	defer rt.Close()
	m := scheduling.NewMetrics(rt.Endpoint.Registry())
	dests := rt.Destinations(rt.Manager.GetClient())
	// Credentials are read through the API: the cache would watch every Secret.
	buckets := rt.Destinations(rt.Kube)
	planner := &scheduling.Planner{
		Reader: rt.Manager.GetClient(), Destinations: dests, Buckets: buckets, API: rt.Kube,
		ManualInterval: cfg.TriggerMinInterval,
		MinInterval:    cfg.MinInterval, OnePerCluster: cfg.OnePerCluster,
		Queue: scheduling.JetStreamQueue{JS: rt.JS, Metrics: m},
	}
	rec := &scheduling.Reconciler{Client: rt.Manager.GetClient(), Planner: planner, Recorder: rt.Events, Now: time.Now,
		Log: rt.Log, Metrics: m, RunningTimeout: cfg.RunningTimeout,
		Report: func(ctx context.Context, ev *etcdbackupv1.StatusEvent) error {
			return bus.PublishStatus(ctx, rt.JS, ev)
		}}
	if err := rec.SetupWithManager(ctx, rt.Manager, cfg.DestinationsConfigMap != ""); err != nil {
		return err
	}
	writer := statuswriter.New(rt.Kube, rt.Log, rt.Endpoint.Registry())
	// The writer reads destination credentials (to confirm completions) through the API: the
	// cache would watch every Secret.
	writer.Destinations = buckets
	writer.Events, writer.Cache, writer.Parallel = rt.Events, rt.Manager.GetClient(), cfg.StatusWriters
	statuses, err := rt.BatchWorker(ctx, bus.ConsumerStatusWriter, func(maxDeliver int) bus.BatchHandler {
		return bus.TypedBatch[etcdbackupv1.StatusEvent](maxDeliver, writer.HandleBatch)
	}, cfg.StatusBatch,
		bus.WithBackoff(bus.ExponentialBackoff(500*time.Millisecond, 30*time.Second)))
	if err != nil {
		return err
	}
	triggers := trigger.New(rt.NC, planner, time.Now, rt.Log)
	return rt.Run(ctx, statuses, triggers.Start)
}
