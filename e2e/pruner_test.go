package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// bucketKeys lists the keys under a config's prefix.
func bucketKeys(t *testing.T, ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) []string {
	t.Helper()
	prefix := backupname.Prefix(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name)
	var keys []string
	for o := range env.S3.Client().ListObjects(ctx, sandbox.Bucket, minio.ListObjectsOptions{Prefix: prefix,
		Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s: %v", prefix, o.Err)
		}
		keys = append(keys, o.Key)
	}
	sort.Strings(keys)
	return keys
}

// liveKeys are the object keys of completed entries whose deletion has not completed.
func liveKeys(cfg *kubermaticv1.EtcdBackupConfig) []string {
	var keys []string
	for _, b := range cfg.Status.LastBackups {
		if b.BackupPhase == kubermaticv1.PhaseCompleted && b.DeletePhase != kubermaticv1.PhaseCompleted {
			keys = append(keys, b.ObjectKey)
		}
	}
	sort.Strings(keys)
	return keys
}

func deletedEntries(cfg *kubermaticv1.EtcdBackupConfig) int {
	n := 0
	for _, b := range cfg.Status.LastBackups {
		if b.DeletePhase == kubermaticv1.PhaseCompleted {
			n++
		}
	}
	return n
}

// With keep 3 and a one-second schedule, the bucket settles at the 3 newest backups, status
// matches the bucket, and three pruner replicas delete each backup once.
func TestRetentionKeepsTheNewest(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "retain1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	if n := len(env.ServicesOf("pruner")); n != 3 {
		t.Fatalf("%d pruners running, want 3", n)
	}
	keep := 3
	cfg := newConfig(t, ctx, cluster, "keep3", "@every 2s", "", keep)
	maxSeen := 0
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 90*time.Second, "five deleted backups",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			maxSeen = max(maxSeen, len(bucketKeys(t, ctx, c)))
			return deletedEntries(c) >= 5
		})
	// Stop the schedule, then the bucket and status settle.
	var current kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &current); err != nil {
		t.Fatal(err)
	}
	stop := client.MergeFrom(current.DeepCopy())
	current.Spec.Schedule = "@every 24h"
	if err := env.Client.Patch(ctx, &current, stop); err != nil {
		t.Fatal(err)
	}
	var keys []string
	settled := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "bucket and status to agree on 3 backups",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			for _, b := range c.Status.LastBackups {
				if b.BackupPhase == kubermaticv1.PhaseRunning {
					return false
				}
			}
			keys = bucketKeys(t, ctx, c)
			return len(keys) == keep && strings.Join(keys, ",") == strings.Join(liveKeys(c), ",")
		})
	t.Logf("most objects seen in the prefix at once: %d (keep %d)", maxSeen, keep)
	// The pruners' listing gauges agree with the bucket.
	err := sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		best := 0.0
		for _, p := range env.ServicesOf("pruner") {
			v, err := p.Metric(ctx, "etcdbackup_stored_backups", map[string]string{"namespace": cfg.Namespace,
				"config": cfg.Name})
			if err != nil {
				return false, err
			}
			best = max(best, v)
		}
		return best == float64(keep), fmt.Errorf("etcdbackup_stored_backups = %v", best)
	})
	if err != nil {
		t.Fatal(err)
	}
	if maxSeen > keep+1 {
		t.Errorf("the prefix held %d backups at once; retention lets at most keep+1 (the new one before the oldest goes)",
			maxSeen)
	}
	// The 3 kept are the newest completed.
	var completed []kubermaticv1.BackupStatus
	for _, b := range settled.Status.LastBackups {
		if b.BackupPhase == kubermaticv1.PhaseCompleted {
			completed = append(completed, b)
		}
	}
	for _, b := range completed[len(completed)-keep:] {
		if b.DeletePhase == kubermaticv1.PhaseCompleted {
			t.Errorf("one of the 3 newest, %s, was deleted", b.BackupName)
		}
	}
	for _, b := range settled.Status.LastBackups {
		if b.DeletePhase == kubermaticv1.PhaseCompleted && (b.DeleteJobName == "" || b.DeleteFinishedTime.IsZero()) {
			t.Errorf("deleted entry lacks job or time: %+v", b)
		}
	}
	started := map[string]int{}
	for _, ev := range statusEvents(t, ctx, func(ev *etcdbackupv1.StatusEvent) bool {
		return ev.GetConfig().GetName() == cfg.Name && ev.GetOperation() == etcdbackupv1.Operation_OPERATION_DELETE &&
			strings.HasPrefix(ev.GetMessage(), "deleting (")
	}) {
		started[ev.GetBackupName()]++
	}
	if len(started) < 5 {
		t.Fatalf("deletions started for %d backups, want at least 5", len(started))
	}
	for b, n := range started {
		if n != 1 {
			t.Errorf("backup %s deleted %d times by 3 pruners", b, n)
		}
	}
}

// Failed backups are always deleted (marked, as they stored nothing).
func TestFailedBackupsAreDeleted(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	const cluster = "failing1"
	mustAddCluster(t, ctx, cluster, "http://127.0.0.1:1")
	cfg := newConfig(t, ctx, cluster, "failing", "@every 2s", "", 5)
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 90*time.Second, "a failed backup deleted",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			for _, b := range c.Status.LastBackups {
				if b.BackupPhase == kubermaticv1.PhaseFailed && b.DeletePhase == kubermaticv1.PhaseCompleted &&
					strings.Contains(b.DeleteMessage, "failed") {
					return true
				}
			}
			return false
		})
}

// An object planted in a config's prefix by hand is listed, counted and pruned as the oldest.
func TestPlantedObjectIsCounted(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	const cluster = "planted1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	keep := 1
	cfg := newConfig(t, ctx, cluster, "planted", "@every 24h", "", keep)
	old := backupname.Backup(cfg.Name, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	key := backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, old)
	if _, err := env.S3.Client().PutObject(ctx, sandbox.Bucket, key, bytes.NewReader([]byte("planted")), 7,
		minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	reply := triggerWithCLI(t, cfg.Namespace, cfg.Name)
	if reply.GetError() != "" {
		t.Fatal(reply.GetError())
	}
	// The "found in the bucket" event and the deletion's events may be applied in any order;
	// the entry ends the same.
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the planted backup listed Completed and pruned",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, ok := entry(c, old)
			return ok && b.DeletePhase == kubermaticv1.PhaseCompleted && b.BackupPhase == kubermaticv1.PhaseCompleted
		})
	if keys := bucketKeys(t, ctx, got); len(keys) != 1 || keys[0] == key {
		t.Fatalf("bucket %v after pruning the planted object", keys)
	}
}

// An S3 outage during pruning leaves the deletion pending; it completes once S3 is back.
func TestPruningResumesAfterS3Outage(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "pruneoutage1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "outage", "@every 24h", "", 5)
	var names []string
	for range 2 {
		reply := triggerWhenAllowed(t, ctx, cfg.Namespace, cfg.Name)
		names = append(names, reply.GetBackupName())
		waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the backup completed",
			func(c *kubermaticv1.EtcdBackupConfig) bool {
				b, ok := entry(c, reply.GetBackupName())
				return ok && b.BackupPhase == kubermaticv1.PhaseCompleted
			})
	}
	env.S3.Stop()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = env.S3.Start(context.Background())
		}
	})
	var current kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &current); err != nil {
		t.Fatal(err)
	}
	keep := 1
	patch := client.MergeFrom(current.DeepCopy())
	current.Spec.Keep = &keep
	if err := env.Client.Patch(ctx, &current, patch); err != nil {
		t.Fatal(err)
	}
	// The pruners try (their listing fails) at least once during the outage.
	pruner := env.ServicesOf("pruner")[0]
	if err := sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		return strings.Contains(pruner.LogTail(200), "retention of "+cfg.Namespace+"/"+cfg.Name), nil
	}); err != nil {
		t.Fatalf("no pruning attempt seen during the outage: %v", err)
	}
	var during kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &during); err != nil {
		t.Fatal(err)
	}
	if b, _ := entry(&during, names[0]); b.DeletePhase == kubermaticv1.PhaseCompleted {
		t.Fatalf("deletion completed while S3 was down: %+v", b)
	}
	if err := env.S3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the older backup deleted after S3 returned",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, _ := entry(c, names[0])
			newer, _ := entry(c, names[1])
			return b.DeletePhase == kubermaticv1.PhaseCompleted && newer.DeletePhase == ""
		})
}

// When deletions stop (every pruner down), more than 2×keep backups pile up: scheduling pauses
// with condition TooManyBackups and a Warning Event, and resumes once the pruners catch up.
func TestTooManyBackupsPausesScheduling(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "piled1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	pruners := env.ServicesOf("pruner")
	for _, p := range pruners {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	restarted := false
	restart := func() {
		for range pruners {
			if _, err := env.StartService(context.Background(), "pruner"); err != nil {
				t.Error(err)
			}
		}
		restarted = true
	}
	t.Cleanup(func() {
		if !restarted {
			restart()
		}
	})
	keep := 1
	cfg := newConfig(t, ctx, cluster, "piling", "@every 2s", "", keep)
	piled := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "condition TooManyBackups",
		blockedBy(kubermaticv1.ReasonTooManyBackups))
	waitEvent(t, ctx, cfg.Namespace, cfg.Name, "Warning", kubermaticv1.ReasonTooManyBackups)
	// Scheduling has stopped: a backup queued just before the condition may still land,
	// nothing after it.
	settled := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 30*time.Second, "no backup running",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseRunning)) == 0
		})
	if n, m := len(piled.Status.LastBackups), len(settled.Status.LastBackups); m > n+1 || m > 2*keep+2 {
		t.Fatalf("scheduling went on while paused: %d entries when paused, %d later", n, m)
	}
	restart()
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 90*time.Second, "scheduling to resume after the pile cleared",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			cond := condition(c)
			return cond != nil && cond.Reason == kubermaticv1.ReasonScheduled &&
				len(c.Status.LastBackups) > len(settled.Status.LastBackups)
		})
}

// With S3 down, a deleted config keeps its finalizer and says why; once S3 is back its
// backups are listed (and kept for the grace period) and it goes. Its Cluster being gone
// already (a namespace being torn down) does not matter: deletion needs only the config.
func TestConfigDeletionWaitsForUnreachableDestination(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "teardown1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "teardown", "", "", 5)
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the backup and the finalizer",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) == 1 && len(c.Finalizers) == 1
		})
	if err := env.Client.Delete(ctx, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: cluster}}); err != nil {
		t.Fatal(err)
	}
	env.S3.Stop()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = env.S3.Start(context.Background())
		}
	})
	if err := env.Client.Delete(ctx, done); err != nil {
		t.Fatal(err)
	}
	blocked := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second,
		"condition BackupsDeleted=False DestinationUnreachable", func(c *kubermaticv1.EtcdBackupConfig) bool {
			cond := c.Status.Condition(kubermaticv1.ConditionBackupsDeleted)
			return cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == "DestinationUnreachable"
		})
	if len(blocked.Finalizers) != 1 {
		t.Fatalf("finalizer dropped while the destination was unreachable: %v", blocked.Finalizers)
	}
	waitEvent(t, ctx, cfg.Namespace, cfg.Name, "Warning", "DestinationUnreachable")
	if err := env.S3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	err := sandbox.Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		var c kubermaticv1.EtcdBackupConfig
		err := env.Client.Get(ctx, types.NamespacedName{Namespace: cfg.Namespace, Name: cfg.Name}, &c)
		return apierrors.IsNotFound(err), err
	})
	if err != nil {
		t.Fatalf("config not released after S3 returned: %v", err)
	}
	// Its one backup is kept for the grace period, recorded before the config went.
	set := waitDeletedSet(t, ctx, cfg.Namespace, cfg.Name)
	if keys := bucketKeys(t, ctx, cfg); len(set.Spec.Backups) != 1 || len(keys) != 1 ||
		set.Spec.Backups[0].ObjectKey != keys[0] {
		t.Fatalf("set holds %+v, the prefix %v: want the one backup in both", set.Spec.Backups, keys)
	}
}
