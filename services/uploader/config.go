package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/service"
)

// Config is the uploader's configuration.
type Config struct {
	service.Common
	Concurrency   int
	WorkDir       string
	PartSizeMiB   int
	Threads       int
	RetryDelay    time.Duration
	RetryMaxDelay time.Duration
	StagingMiB    int
	StagingIdle   time.Duration
	PartTimeout   time.Duration
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("uploader", flag.ContinueOnError)
	c.Register(fs)
	service.IntVar(fs, &c.Concurrency, "concurrency", 1, "uploads one replica runs at once")
	service.StringVar(fs, &c.WorkDir, "work-dir", os.TempDir(),
		"directory for the compressed file of a raw snapshot staged by an earlier snapshotter while it uploads (needs the "+
			"compressed size free)")
	service.IntVar(fs, &c.PartSizeMiB, "part-size-mib", 8,
		"multipart upload part size in MiB (memory: one part; at most 10,000 parts, so 8 MiB holds 78 GiB)")
	service.IntVar(fs, &c.Threads, "upload-threads", 4, "parts uploaded at once")
	service.DurationVar(fs, &c.PartTimeout, "part-timeout", destination.DefaultPartTimeout,
		"deadline of each request of an upload (a part, the single PUT of a small backup, the completion): an endpoint "+
			"that stops answering fails the attempt within it, and the upload is retried")
	service.DurationVar(fs, &c.RetryDelay, "retry-delay", 2*time.Second,
		"first delay before a failed upload is retried (doubles per attempt)")
	service.DurationVar(fs, &c.RetryMaxDelay, "retry-max-delay", time.Minute, "longest delay between upload retries")
	service.IntVar(fs, &c.StagingMiB, "staging-read-mib", 4, "MiB of staged snapshot chunks in flight to one upload")
	service.DurationVar(fs, &c.StagingIdle, "staging-idle-timeout", time.Minute,
		"how long a staged chunk may take to arrive before the upload is retried")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.PartSizeMiB < 5 {
		return Config{}, fmt.Errorf("part-size-mib must be at least 5 (S3's minimum part size), got %d", c.PartSizeMiB)
	}
	if c.Threads < 1 {
		return Config{}, fmt.Errorf("upload-threads must be at least 1, got %d", c.Threads)
	}
	return c, nil
}
