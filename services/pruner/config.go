package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
)

// Config is the pruner's configuration.
type Config struct {
	service.Common
	Concurrency       int
	ReconcileInterval time.Duration
	RetryDelay        time.Duration
	RetryMaxDelay     time.Duration
	DeletionGrace     time.Duration
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("pruner", flag.ContinueOnError)
	c.Register(fs)
	service.IntVar(fs, &c.Concurrency, "concurrency", 4, "deletions one replica runs at once")
	service.DurationVar(fs, &c.ReconcileInterval, "reconcile-interval", 5*time.Minute,
		"how often every config's prefix is listed and retention applied, besides after each stored backup")
	service.DurationVar(fs, &c.RetryDelay, "retry-delay", 2*time.Second,
		"first delay before a failed deletion is retried (doubles per attempt)")
	service.DurationVar(fs, &c.RetryMaxDelay, "retry-max-delay", time.Minute, "longest delay between deletion retries")
	service.DurationVar(fs, &c.DeletionGrace, "deletion-grace", 7*24*time.Hour,
		"how long the backups a deleted config's retention keeps stay (in a DeletedBackupSet) before they are "+
			"deleted; 0 deletes every backup with the config, as KKP does")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.DeletionGrace < 0 {
		return Config{}, fmt.Errorf("--deletion-grace %s: must not be negative", c.DeletionGrace)
	}
	return c, nil
}
