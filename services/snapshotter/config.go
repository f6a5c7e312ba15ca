package main

import (
	"flag"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
)

// Config is the snapshotter's configuration.
type Config struct {
	service.Common
	Concurrency   int
	MaxAttempts   int
	RetryDelay    time.Duration
	MemberTimeout time.Duration
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("snapshotter", flag.ContinueOnError)
	c.Register(fs)
	service.IntVar(fs, &c.Concurrency, "concurrency", 1, "snapshots one replica takes at once")
	service.IntVar(fs, &c.MaxAttempts, "max-attempts", 3, "deliveries of a backup request before its backup is marked Failed")
	service.DurationVar(fs, &c.RetryDelay, "retry-delay", 5*time.Second, "delay before a failed snapshot is retried (doubles per attempt)")
	service.DurationVar(fs, &c.MemberTimeout, "member-timeout", 5*time.Second, "timeout of one etcd member's health check")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.MaxAttempts < 1 {
		c.MaxAttempts = 1
	}
	return c, nil
}
