package main

import (
	"context"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/uploader/upload"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentityUploader)
	if err != nil {
		return err
	}
	defer rt.Close()
	h := upload.New(upload.Options{
		Reader: rt.Kube, Events: rt.Events, JS: rt.JS, Staging: rt.Staging, Bus: rt.Bus,
		Destinations: rt.Destinations(rt.Kube, destination.WithPartSize(uint64(cfg.PartSizeMiB)<<20),
			destination.WithUploadThreads(uint(cfg.Threads)), destination.WithPartTimeout(cfg.PartTimeout)),
		WorkDir: cfg.WorkDir, StagingReadBytes: cfg.StagingMiB << 20, StagingIdle: cfg.StagingIdle, Log: rt.Log,
		StagingTTL: cfg.Topology().StagingTTL,
	}, rt.Endpoint.Registry())
	worker, err := rt.Worker(ctx, bus.ConsumerUploader, h.Handler,
		bus.WithConcurrency(cfg.Concurrency),
		bus.WithBackoff(bus.ExponentialBackoff(cfg.RetryDelay, cfg.RetryMaxDelay)))
	if err != nil {
		return err
	}
	return rt.Run(ctx, worker)
}
