package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
)

// Config is the journal's configuration.
type Config struct {
	service.Common
	SegmentInterval   time.Duration
	PublishLinger     time.Duration
	SegmentMiB        int
	HashEvery         time.Duration
	MaxChainRevisions int64
	MaxChainMiB       int64
	ContinuousDefault bool
	ClaimInterval     time.Duration
	RetryDelay        time.Duration
	MemberTimeout     time.Duration
	StatusInterval    time.Duration
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("journal", flag.ContinueOnError)
	c.Register(fs)
	service.DurationVar(fs, &c.SegmentInterval, "segment-interval", 10*time.Second,
		"how often the revisions received are sealed into a segment in the bucket")
	service.DurationVar(fs, &c.PublishLinger, "publish-linger", 500*time.Millisecond,
		"how long revisions received wait for more before one bus message carries them all (fewer messages and "+
			"fsyncs; a revision is durable on the bus within about this)")
	service.IntVar(fs, &c.SegmentMiB, "segment-mib", 8, "MiB of revisions that seal a segment before the interval ends")
	service.DurationVar(fs, &c.HashEvery, "hash-every", 5*time.Minute,
		"how often a segment carries the member's HashKV, which a restore must reproduce (and the first of each run)")
	service.Int64Var(fs, &c.MaxChainRevisions, "max-chain-revisions", 1_000_000,
		"revisions since the newest full backup past which the journal asks for a full backup (0: never)")
	service.Int64Var(fs, &c.MaxChainMiB, "max-chain-mib", 1024,
		"MiB of segments since the newest full backup past which the journal asks for a full backup (0: never)")
	service.BoolVar(fs, &c.ContinuousDefault, "continuous-default", false,
		"journal every config with a schedule unless its annotation etcdbackup.k8c.io/continuous is \"off\"")
	service.DurationVar(fs, &c.ClaimInterval, "claim-interval", 3*time.Second,
		"how often this replica claims the continuous configs no live replica claims, and gives back what it "+
			"holds beyond its share")
	service.DurationVar(fs, &c.RetryDelay, "retry-delay", time.Second,
		"delay before a failed journal resumes (doubles up to 10 s; starts over after a journal ran 10 s)")
	service.DurationVar(fs, &c.MemberTimeout, "member-timeout", 5*time.Second, "timeout of one etcd member's health check")
	service.DurationVar(fs, &c.StatusInterval, "status-interval", time.Minute,
		"how often each config's ContinuousBackup condition is brought up to date")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	for name, d := range map[string]time.Duration{"segment-interval": c.SegmentInterval, "hash-every": c.HashEvery,
		"claim-interval": c.ClaimInterval, "retry-delay": c.RetryDelay, "member-timeout": c.MemberTimeout,
		"status-interval": c.StatusInterval} {
		if d <= 0 {
			return Config{}, fmt.Errorf("%w: %s must be positive, got %s", service.ErrInvalidOption, name, d)
		}
	}
	if c.PublishLinger >= c.SegmentInterval {
		return Config{}, fmt.Errorf("%w: publish-linger (%s) must be shorter than segment-interval (%s)",
			service.ErrInvalidOption, c.PublishLinger, c.SegmentInterval)
	}
	if c.SegmentMiB < 1 || c.SegmentMiB > 64 {
		return Config{}, fmt.Errorf("%w: segment-mib must be 1 to 64, got %d", service.ErrInvalidOption, c.SegmentMiB)
	}
	if c.MaxChainRevisions < 0 {
		return Config{}, fmt.Errorf("%w: max-chain-revisions must not be negative, got %d", service.ErrInvalidOption,
			c.MaxChainRevisions)
	}
	if c.MaxChainMiB < 0 {
		return Config{}, fmt.Errorf("%w: max-chain-mib must not be negative, got %d", service.ErrInvalidOption,
			c.MaxChainMiB)
	}
	return c, nil
}
