package main

import (
	"context"
	"os"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/journal/claim"
	"github.com/etcd-backup/etcdbackup/services/journal/follow"
	"github.com/nats-io/nats.go/jetstream"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentityJournal, service.WithManager())
	if err != nil {
		return err
	}
	defer rt.Close()
	// The session and its claims have a NATS connection of their own: a session's rewrite must
	// not wait behind the followers' thousands of publishes and acks a second, read by the same
	// connection's one reader (a rewrite too late loses the session, and every journal of the
	// replica with it).
	cnc, cjs, err := service.ConnectNATS(ctx, cfg.NATS, bus.IdentityJournal, rt.Log)
	if err != nil {
		return err
	}
	defer cnc.Close()
	claims, err := bus.OpenJournalClaims(ctx, cjs)
	if err != nil {
		return err
	}
	// The journal's own JetStream context: its revisions are small and many followers publish at
	// once, so more of them may be in flight than the services' chunk-sized default allows.
	js, err := jetstream.New(rt.NC, jetstream.WithPublishAsyncMaxPending(follow.MaxPublishPending))
	if err != nil {
		return err
	}
	holder, _ := os.Hostname()
	// A journal's start reads Clusters and Secrets uncached (rt.Kube); what journals read again
	// and again comes from the cache.
	src := &follow.Source{
		Client: rt.Kube, Cache: rt.Manager.GetClient(), Destinations: rt.Destinations(rt.Kube),
		JS: js, NC: rt.NC, Events: rt.Events,
		// Sealed revisions leave the bus every sixth segment interval (a minute by default): each
		// purge scans the stream's blocks, and at 1,000 configs a purge every third interval (33 a
		// second) timed out on a NATS server that also took 2,000 publishes a second.
		Template: follow.Options{SegmentInterval: cfg.SegmentInterval, PublishLinger: cfg.PublishLinger,
			PurgeEvery:   6 * cfg.SegmentInterval,
			SegmentBytes: cfg.SegmentMiB << 20,
			HashEvery:    cfg.HashEvery, MaxChainRevisions: cfg.MaxChainRevisions,
			MaxChainBytes: cfg.MaxChainMiB << 20},
		MemberTimeout: cfg.MemberTimeout, StatusInterval: cfg.StatusInterval,
		Starting: follow.NewStarting(follow.MaxStarting), Log: rt.Log,
		Metrics: follow.NewMetrics(rt.Endpoint.Registry()),
	}
	c := &claim.Claimer{Reader: rt.Manager.GetClient(), Claims: claims, Holder: holder, Interval: cfg.ClaimInterval,
		RetryDelay: cfg.RetryDelay, ByDefault: cfg.ContinuousDefault, Follow: src.Follow, Log: rt.Log}
	return rt.Run(ctx, c.Start)
}
