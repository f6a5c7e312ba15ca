// Command setup creates the bus: every JetStream stream, the staging and lease buckets and the
// services' durable consumers, or updates them to this version's settings, with the setup
// identity — the only one allowed to. The services only check what it made (bus.CheckFor).
// It runs once per install or upgrade (the deploy's Job etcdbackup-setup; the sandbox runs
// this program too) and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
)

func main() { service.Main(run) }

type config struct {
	nats      service.NATS
	replicas  int
	logLevel  string
	logFormat string
	timeout   time.Duration
	// maxDeliver is each durable's MaxDeliver.
	maxDeliver map[string]int
}

// maxDeliverFlags are the flags of the durables' MaxDeliver, and what each bounds.
var maxDeliverFlags = []struct{ flag, durable, usage string }{
	{"status-writer-max-deliver", bus.ConsumerStatusWriter,
		"deliveries of one status event before it is given up (a dead letter, logged and counted)"},
	{"snapshotter-max-deliver", bus.ConsumerSnapshotter,
		"deliveries of one backup request (the snapshotter's --max-attempts, and two more to report a failure)"},
	{"uploader-max-deliver", bus.ConsumerUploader,
		"deliveries of one staged snapshot before its backup is Failed; 0: no count, a transient failure is retried " +
			"until the staged copy is about to expire"},
	{"pruner-max-deliver", bus.ConsumerPruner, "deliveries of one stored-backup message before it is given up"},
	{"pruner-deleter-max-deliver", bus.ConsumerDeleter,
		"deliveries of one deletion before it is given up (the deletion is marked Failed)"},
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	c.nats.Register(fs)
	service.IntVar(fs, &c.replicas, "stream-replicas", 1, "replicas of the JetStream streams and staging bucket (1 or 3)")
	service.StringVar(fs, &c.logLevel, "log-level", "info", "debug, info, warn or error")
	service.StringVar(fs, &c.logFormat, "log-format", "json", "json or text")
	service.DurationVar(fs, &c.timeout, "timeout", 5*time.Minute, "how long to wait for NATS before giving up")
	counts := make([]int, len(maxDeliverFlags))
	for i, f := range maxDeliverFlags {
		def := bus.DefaultMaxDeliver()[f.durable]
		if def == bus.Unlimited {
			def = 0
		}
		service.IntVar(fs, &counts[i], f.flag, def, f.usage)
	}
	if err := service.Parse(fs, args); err != nil {
		return config{}, err
	}
	c.maxDeliver = map[string]int{}
	for i, f := range maxDeliverFlags {
		switch n := counts[i]; {
		case n < 0:
			return config{}, fmt.Errorf("%w: --%s must not be negative, got %d", service.ErrInvalidOption, f.flag, n)
		case n == 0:
			c.maxDeliver[f.durable] = bus.Unlimited
		default:
			c.maxDeliver[f.durable] = n
		}
	}
	if c.replicas != 1 && c.replicas != 3 {
		return config{}, fmt.Errorf("%w: --stream-replicas must be 1 or 3, got %d", service.ErrInvalidOption, c.replicas)
	}
	return c, nil
}

func run(ctx context.Context, args []string) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	common := service.Common{LogLevel: c.logLevel, LogFormat: c.logFormat, StreamReplicas: c.replicas}
	log, err := common.Logger("setup")
	if err != nil {
		return fmt.Errorf("%w: %w", service.ErrInvalidOption, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	nc, js, err := service.ConnectNATS(ctx, c.nats, bus.IdentitySetup, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	topo := common.Topology()
	for {
		err := bus.Ensure(ctx, js, topo)
		if err == nil {
			err = bus.EnsureDurables(ctx, js, c.maxDeliver)
		}
		if err == nil {
			break
		}
		log.Warn("set up the bus, retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("set up the bus: %w", err)
		case <-time.After(2 * time.Second):
		}
	}
	var names []string
	for _, s := range topo.StreamConfigs() {
		names = append(names, s.Name)
	}
	log.Info("bus set up", "streams", names, "staging", bus.StagingBucket, "leases", bus.LeaseBucket,
		"replicas", topo.Replicas, "durables", bus.Durables())
	return nil
}
