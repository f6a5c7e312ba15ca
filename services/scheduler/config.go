package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
)

// Config is the scheduler's configuration.
type Config struct {
	service.Common
	// StatusWriters is how many configs' status writes one replica runs at once.
	StatusWriters int
	// StatusBatch is how many waiting status events one replica takes at once.
	StatusBatch int
	// TriggerMinInterval is the least time between two manual backups of one config.
	TriggerMinInterval time.Duration
	// MinInterval is the least time between two scheduled backups of one config.
	MinInterval time.Duration
	// RunningTimeout bounds how long a backup may stay Running in status.
	RunningTimeout time.Duration
	// OnePerCluster queues one backup of a cluster at a time.
	OnePerCluster bool
	// LeaderElect runs the scheduling controller on one replica at a time.
	LeaderElect bool
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	c.Register(fs)
	service.IntVar(fs, &c.StatusWriters, "status-writers", 8, "configs whose status one replica writes at once")
	service.IntVar(fs, &c.StatusBatch, "status-batch", 256,
		"waiting status events one replica takes at once; those of one config become one status write")
	service.DurationVar(fs, &c.TriggerMinInterval, "trigger-min-interval", time.Minute,
		"least time between two manual backups of one config; the trigger refuses earlier ones")
	service.DurationVar(fs, &c.MinInterval, "min-interval", 10*time.Minute,
		"least time between two scheduled backups of one config; a config whose schedule asks for more is not "+
			"scheduled (SchedulingActive False, reason ScheduleTooFrequent)")
	service.DurationVar(fs, &c.RunningTimeout, "running-timeout", 3*time.Hour,
		"how long a backup may stay Running in status before it is reported Failed (no stage reported its end); above "+
			"the snapshotter's and uploader's retry budgets")
	service.BoolVar(fs, &c.OnePerCluster, "one-per-cluster", true,
		"queue a config's due backup only while no other backup of its cluster is queued or running: the configs of "+
			"one cluster share one place in the queue, so a tenant with many configs cannot fill it")
	service.BoolVar(fs, &c.LeaderElect, "leader-elect", true,
		"only the replica holding the Lease etcdbackup-scheduler in the Seed's namespace queues scheduled backups (one "+
			"place in the queue per cluster needs one queuer); every replica writes status and serves the trigger")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.StatusWriters < 1 || c.StatusBatch < 1 {
		return Config{}, fmt.Errorf("status-writers and status-batch must be at least 1, got %d and %d", c.StatusWriters,
			c.StatusBatch)
	}
	if c.MinInterval < time.Second {
		return Config{}, fmt.Errorf("min-interval must be at least 1s, got %s", c.MinInterval)
	}
	if c.RunningTimeout < time.Minute {
		return Config{}, fmt.Errorf("running-timeout must be at least 1m, got %s", c.RunningTimeout)
	}
	return c, nil
}
