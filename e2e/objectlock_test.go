package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// withDestinations adds destinations to the sandbox's Seed until the test ends.
func withDestinations(t *testing.T, ctx context.Context, add map[string]*kubermaticv1.BackupDestination) {
	t.Helper()
	edit := func(f func(map[string]*kubermaticv1.BackupDestination)) error {
		var seed kubermaticv1.Seed
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: sandbox.SeedNamespace, Name: sandbox.SeedName},
			&seed); err != nil {
			return err
		}
		base := seed.DeepCopy()
		f(seed.Spec.EtcdBackupRestore.Destinations)
		return env.Client.Patch(ctx, &seed, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	}
	if err := edit(func(d map[string]*kubermaticv1.BackupDestination) {
		for name, dest := range add {
			d[name] = dest
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = edit(func(d map[string]*kubermaticv1.BackupDestination) {
			for name := range add {
				delete(d, name)
			}
		})
	})
}

// A destination with objectLock writes every backup with S3 Object Lock retention, and the
// S3 server itself refuses to destroy one before the retention runs out, whoever asks
// (COMPLIANCE: even the bucket's owner bypassing governance). Retention still deletes beyond
// keep: the object is hidden behind a delete marker, its version stays, retained, and status
// says until when. A destination whose bucket has no Object Lock is refused with a condition.
func TestObjectLockedBackupsCannotBeDestroyed(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 4*time.Minute)
	const lockedBucket, plainBucket = "etcd-backups-locked", "etcd-backups-not-locked"
	if err := env.S3.MakeLockedBucket(ctx, lockedBucket); err != nil {
		t.Fatal(err)
	}
	if err := env.S3.MakeBucket(ctx, plainBucket); err != nil {
		t.Fatal(err)
	}
	creds := &corev1.SecretReference{Namespace: sandbox.SeedNamespace, Name: sandbox.CredentialsSecret}
	lock := &kubermaticv1.ObjectLock{Mode: "COMPLIANCE", Days: 1}
	withDestinations(t, ctx, map[string]*kubermaticv1.BackupDestination{
		"locked":     {Endpoint: env.S3.Endpoint, BucketName: lockedBucket, Credentials: creds, ObjectLock: lock},
		"not-locked": {Endpoint: env.S3.Endpoint, BucketName: plainBucket, Credentials: creds, ObjectLock: lock},
	})

	const cluster = "locked1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	refused := newConfig(t, ctx, cluster, "to-an-unlocked-bucket", "@every 1h", "not-locked", 1)
	waitConfig(t, ctx, refused.Namespace, refused.Name, 60*time.Second, "refused: ObjectLockNotEnabled",
		blockedBy("ObjectLockNotEnabled"))
	waitEvent(t, ctx, refused.Namespace, refused.Name, corev1.EventTypeWarning, "ObjectLockNotEnabled")

	cfg := newConfig(t, ctx, cluster, "immutable", "@every 1h", "locked", 1)
	first := triggerWhenAllowed(t, ctx, cfg.Namespace, cfg.Name).GetBackupName()
	stored := time.Now()
	completed := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the first backup",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			e, ok := entry(c, first)
			return ok && e.BackupPhase == kubermaticv1.PhaseCompleted
		})
	// Status shows until when the bucket retains it, as the bucket says.
	if e, _ := entry(completed, first); e.Object == nil || e.Object.LockMode != "COMPLIANCE" ||
		e.Object.RetainUntil == nil || e.Object.RetainUntil.Time.Before(stored.Add(23*time.Hour)) ||
		e.Object.RetainUntil.After(time.Now().Add(25*time.Hour)) {
		t.Errorf("the first backup's object %+v: want it retained (COMPLIANCE) for a day", e.Object)
	}
	nextSecond(t, ctx, time.Now())
	second := triggerWhenAllowed(t, ctx, cfg.Namespace, cfg.Name).GetBackupName()
	// keep 1: retention deletes the first once the second is stored.
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 90*time.Second, "the first backup deleted by retention",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			e, ok := entry(c, first)
			return ok && e.DeletePhase == kubermaticv1.PhaseCompleted
		})
	e, _ := entry(done, first)
	if !strings.Contains(e.DeleteMessage, "object lock (COMPLIANCE for 1 days) retains its version until") {
		t.Errorf("delete message %q: want until when the lock retains it", e.DeleteMessage)
	}

	s3 := env.S3.Client()
	key := backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, first)
	var firstVersion string
	for o := range s3.ListObjects(ctx, lockedBucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if !o.IsDeleteMarker {
			firstVersion = o.VersionID
		}
	}
	if firstVersion == "" {
		t.Fatalf("the deleted backup %s left no version: object lock did not retain it", key)
	}
	for _, opts := range []minio.RemoveObjectOptions{{VersionID: firstVersion},
		{VersionID: firstVersion, GovernanceBypass: true}} {
		err := s3.RemoveObject(ctx, lockedBucket, key, opts)
		if resp := minio.ToErrorResponse(err); err == nil || resp.StatusCode != 403 {
			t.Fatalf("destroying a retained version with the bucket's own keys (%+v): %v; want the server to refuse it",
				opts, err)
		}
	}
	if _, err := s3.StatObject(ctx, lockedBucket, key, minio.StatObjectOptions{VersionID: firstVersion}); err != nil {
		t.Fatalf("the retained version is gone: %v", err)
	}
	// The live backup is as safe: a delete only hides it, its bytes stay.
	secondKey := backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, second)
	info, err := s3.StatObject(ctx, lockedBucket, secondKey, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.RemoveObject(ctx, lockedBucket, secondKey,
		minio.RemoveObjectOptions{VersionID: info.VersionID}); err == nil {
		t.Fatal("the newest backup's version was destroyed")
	}
	labels := map[string]string{"namespace": cfg.Namespace, "config": cfg.Name}
	if err := sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		return metricSum(t, ctx, "pruner", "etcdbackup_retained_versions", labels) >= 1, nil
	}); err != nil {
		t.Errorf("etcdbackup_retained_versions never counted the retained version: %v", err)
	}
}
