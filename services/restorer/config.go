package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/restorer/restore"
	"github.com/robfig/cron/v3"
)

// Config is the restorer's configuration.
type Config struct {
	service.Common
	Concurrency int
	LeaderElect bool
	restore.Options
	// DrillSchedule and DrillDir configure restore drills (package drill).
	DrillSchedule string
	DrillDir      string
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("restorer", flag.ContinueOnError)
	c.Register(fs)
	service.IntVar(fs, &c.Concurrency, "concurrency", 4, "restores (of different clusters) one replica drives at once")
	service.StringVar(fs, &c.DrillSchedule, "drill-schedule", "@weekly",
		"cron schedule of restore drills of each config's newest backup, for configs without the annotation "+
			"etcdbackup.k8c.io/drill-schedule (off: none)")
	service.StringVar(fs, &c.DrillDir, "drill-dir", filepath.Join(os.TempDir(), "etcdbackup-drills"),
		"scratch directory of restore drills: it needs twice the largest snapshot's size free")
	service.BoolVar(fs, &c.LeaderElect, "leader-elect", true,
		"only the replica holding the Lease etcdbackup-restorer in the Seed's namespace drives restores; the others stand by")
	service.DurationVar(fs, &c.Timeout, "timeout", 30*time.Minute,
		"how long a restore may take from locking the cluster to Completed before it ends Failed")
	service.BoolVar(fs, &c.PreRestoreBackup, "pre-restore-backup", true,
		"back up a cluster's etcd (one-time config pre-restore-<restore>) before restoring it, unless etcd is unhealthy")
	service.DurationVar(fs, &c.PreRestoreTimeout, "pre-restore-timeout", 5*time.Minute,
		"how long a restore waits for its pre-restore backup before it goes on without it (and says so)")
	service.DurationVar(fs, &c.Poll, "poll-interval", 2*time.Second,
		"how often teardown and rebuild are checked while waiting")
	service.StringVar(fs, &c.StatefulSet, "etcd-statefulset", "etcd",
		"name of the etcd StatefulSet in a cluster's namespace")
	service.StringVar(fs, &c.Step.Image, "restore-step-image", "etcdbackup/restorer:latest",
		"image holding the restore-step program, run in front of etcd in each member pod")
	service.StringVar(fs, &c.Step.Command, "restore-step-command", "/restore-step",
		"path of the restore-step program in that image")
	service.StringVar(fs, &c.Step.DataDir, "etcd-data-dir", "/var/run/etcd/pod_$(POD_NAME)",
		"a member's data dir in the etcd container; $(POD_NAME) is the pod's name")
	service.StringVar(fs, &c.Step.PeerURL, "etcd-peer-url", "http://{pod}.etcd.{namespace}.svc.cluster.local:2380",
		"a member's peer URL; {pod}, {statefulset} and {namespace} are replaced (Cluster annotation "+
			"etcdbackup.k8c.io/etcd-peer-urls overrides)")
	service.Int64Var(fs, &c.Step.MaxSnapshotSize, "max-snapshot-size", backupformat.DefaultMaxSnapshotSize,
		"largest plausible snapshot in bytes: a backup whose metadata records more is refused, and one that records no "+
			"size is decompressed no further (verify, drills, and the restore step on each member's disk)")
	service.DurationVar(fs, &c.Step.ProgressInterval, "restore-step-progress-interval", 5*time.Second,
		"how often the restore step logs the bytes it has downloaded; the restorer reads the last line from each member "+
			"pod's log for the EtcdRestore's progress")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if c.Step.MaxSnapshotSize < 1 {
		return Config{}, fmt.Errorf("max-snapshot-size must be positive, got %d", c.Step.MaxSnapshotSize)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.Step.ProgressInterval <= 0 {
		return Config{}, fmt.Errorf("%w: restore-step-progress-interval %s must be positive", service.ErrInvalidOption,
			c.Step.ProgressInterval)
	}
	if c.DrillSchedule != "off" && c.DrillSchedule != "" {
		if _, err := cron.ParseStandard(c.DrillSchedule); err != nil {
			return Config{}, fmt.Errorf("%w: drill-schedule %q: %w", service.ErrInvalidOption, c.DrillSchedule, err)
		}
	}
	return c, nil
}
