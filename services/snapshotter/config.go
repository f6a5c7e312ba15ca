package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/klauspost/compress/zstd"
)

// Config is the snapshotter's configuration.
type Config struct {
	service.Common
	Concurrency       int
	MaxAttempts       int
	RetryDelay        time.Duration
	MemberTimeout     time.Duration
	SnapshotIdle      time.Duration
	Level             string
	ZstdThreads       int
	StagingReserveMiB int
	BusyRetry         time.Duration
	StartedAfter      time.Duration
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("snapshotter", flag.ContinueOnError)
	c.Register(fs)
	service.IntVar(fs, &c.Concurrency, "concurrency", 1, "snapshots one replica takes at once")
	service.IntVar(fs, &c.MaxAttempts, "max-attempts", 3,
		"deliveries of a backup request before its backup is marked Failed")
	service.DurationVar(fs, &c.RetryDelay, "retry-delay", 5*time.Second,
		"delay before a failed snapshot is retried (doubles per attempt)")
	service.DurationVar(fs, &c.MemberTimeout, "member-timeout", 5*time.Second, "timeout of one etcd member's health check")
	service.DurationVar(fs, &c.SnapshotIdle, "snapshot-idle-timeout", time.Minute,
		"how long etcd's snapshot stream may send nothing before the attempt fails and is retried (a member that stalls "+
			"or is blackholed)")
	service.StringVar(fs, &c.Level, "zstd-level", "default",
		"zstd level the snapshot is compressed with while it streams: fastest, default, better or best")
	service.IntVar(fs, &c.ZstdThreads, "zstd-threads", 1,
		"zstd encoder goroutines per snapshot (1: memory flat at one window)")
	service.IntVar(fs, &c.StagingReserveMiB, "staging-reserve-mib", 1024,
		"free MiB staging must have before a snapshot starts (0: no check); a full staging is retried without contacting "+
			"etcd")
	service.DurationVar(fs, &c.BusyRetry, "busy-retry", 30*time.Second,
		"delay before a request whose cluster is being backed up by another snapshot (its lease held) comes again; one "+
			"snapshot per cluster at a time, across every replica")
	service.DurationVar(fs, &c.StartedAfter, "started-status-after", 2*time.Second,
		"how long a first attempt runs before its \"taking snapshot\" status event is published (0: at once; a retry's "+
			"at once): a quick backup goes from queued to Completed with one status write fewer")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.MaxAttempts < 1 {
		c.MaxAttempts = 1
	}
	if ok, _ := zstd.EncoderLevelFromString(c.Level); !ok {
		return Config{}, fmt.Errorf("%w: zstd-level %q: want fastest, default, better or best", service.ErrInvalidOption,
			c.Level)
	}
	if c.BusyRetry <= 0 {
		return Config{}, fmt.Errorf("%w: busy-retry must be positive, got %s", service.ErrInvalidOption, c.BusyRetry)
	}
	if c.StartedAfter < 0 {
		return Config{}, fmt.Errorf("%w: started-status-after must not be negative, got %s", service.ErrInvalidOption,
			c.StartedAfter)
	}
	if c.StagingReserveMiB < 0 {
		return Config{}, fmt.Errorf("%w: staging-reserve-mib must not be negative, got %d", service.ErrInvalidOption,
			c.StagingReserveMiB)
	}
	if c.ZstdThreads < 1 {
		return Config{}, fmt.Errorf("%w: zstd-threads must be at least 1, got %d", service.ErrInvalidOption, c.ZstdThreads)
	}
	return c, nil
}

func (c Config) level() zstd.EncoderLevel {
	_, l := zstd.EncoderLevelFromString(c.Level)
	return l
}
