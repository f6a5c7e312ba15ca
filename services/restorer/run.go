package main

import (
	"context"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/restorer/drill"
	"github.com/etcd-backup/etcdbackup/services/restorer/restore"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentityRestorer, service.WithLeaderElection(cfg.LeaderElect,
		"etcdbackup-restorer"))
	if err != nil {
		return err
	}
	defer rt.Close()
	// Restores read what they touch uncached (the API reader): StatefulSets, PVCs, Pods,
	// Secrets and ConfigMaps of the clusters being restored only.
	dests := rt.Destinations(rt.Manager.GetAPIReader())
	announce := bus.Announcer(rt.JS, rt.Log)
	rec := &restore.Reconciler{
		Client: rt.Manager.GetClient(), API: rt.Manager.GetAPIReader(), Destinations: dests, Recorder: rt.Events, Log: rt.Log,
		Publish: announce, Logs: restore.PodLogsOf(rt.Clientset), Opts: cfg.Options,
		Metrics: restore.NewMetrics(rt.Endpoint.Registry()), Bus: rt.Bus,
	}
	if err := rec.SetupWithManager(rt.Manager, cfg.Concurrency); err != nil {
		return err
	}
	// Drills run on the leader only, one at a time: each restores a whole backup.
	drills := &drill.Controller{
		Client: rt.Manager.GetClient(), Destinations: dests, Recorder: rt.Events, Log: rt.Log, Publish: announce,
		Default: cfg.DrillSchedule, Scratch: cfg.DrillDir, Metrics: drill.NewMetrics(rt.Endpoint.Registry()),
		MaxSnapshot: cfg.Step.MaxSnapshotSize,
	}
	if err := drills.SetupWithManager(rt.Manager); err != nil {
		return err
	}
	return rt.Run(ctx)
}
