package main

import (
	"context"
	"os"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/etcd-backup/etcdbackup/services/snapshotter/take"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentitySnapshotter)
	if err != nil {
		return err
	}
	defer rt.Close()
	leases, err := bus.OpenLeases(ctx, rt.JS)
	if err != nil {
		return err
	}
	holder, _ := os.Hostname()
	h := take.New(take.Options{
		Leases: leases, BusyRetry: cfg.BusyRetry, Holder: holder,
		Reader: rt.Kube, Events: rt.Events, JS: rt.JS, Bus: rt.Bus, MaxAttempts: uint64(cfg.MaxAttempts),
		MemberTimeout: cfg.MemberTimeout, SnapshotIdle: cfg.SnapshotIdle, Level: cfg.level(), Concurrency: cfg.ZstdThreads,
		StagingReserve: int64(cfg.StagingReserveMiB) << 20, StartedAfter: cfg.StartedAfter,
		// The Seed (or destinations ConfigMap) and a destination's encryption Secret.
		Destinations: rt.Destinations(rt.Kube), Log: rt.Log,
	}, rt.Endpoint.Registry())
	rt.Endpoint.Registry().MustRegister(staging.NewCollector(rt.JS, bus.StagingBucket))
	worker, err := rt.Worker(ctx, bus.ConsumerSnapshotter, h.Handler,
		bus.WithConcurrency(cfg.Concurrency), bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, 5*time.Minute)))
	if err != nil {
		return err
	}
	return rt.Run(ctx, worker)
}
