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
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentityScheduler, service.WithManager())
	if err != nil {
		return err
	}
	defer rt.Close()
	m := scheduling.NewMetrics(rt.Endpoint.Registry())
	dests := rt.Destinations(rt.Manager.GetClient())
	planner := &scheduling.Planner{
		Reader: rt.Manager.GetClient(), Destinations: dests, API: rt.Kube, ManualInterval: cfg.TriggerMinInterval,
		MinInterval: cfg.MinInterval,
		Queue:       scheduling.JetStreamQueue{JS: rt.JS, Metrics: m},
	}
	rec := &scheduling.Reconciler{Client: rt.Manager.GetClient(), Planner: planner, Recorder: rt.Events, Now: time.Now,
		Log: rt.Log, Metrics: m}
	if err := rec.SetupWithManager(ctx, rt.Manager, cfg.DestinationsConfigMap != ""); err != nil {
		return err
	}
	writer := statuswriter.New(rt.Kube, rt.Log, rt.Endpoint.Registry())
	writer.Destinations, writer.Events, writer.Cache, writer.Parallel = dests, rt.Events, rt.Manager.GetClient(),
		cfg.StatusWriters
	statuses, err := rt.BatchWorker(ctx, bus.ConsumerStatusWriter, cfg.MaxDeliver,
		bus.TypedBatch[etcdbackupv1.StatusEvent](cfg.MaxDeliver, writer.HandleBatch), cfg.StatusBatch,
		bus.WithBackoff(bus.ExponentialBackoff(500*time.Millisecond, 30*time.Second)))
	if err != nil {
		return err
	}
	triggers := trigger.New(rt.NC, planner, time.Now, rt.Log)
	return rt.Run(ctx, statuses, triggers.Start)
}
