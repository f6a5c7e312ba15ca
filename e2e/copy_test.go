package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
)

// A destination with copyTo: its backup is copied to the other destination, verified there,
// and the config's condition BackupsCopied says so, with no copy lag. Then the primary bucket
// is lost, objects and all: a restore of the backup completes from the copy, said in an Event,
// and etcd holds exactly the backup's data.
func TestRestoreFromTheCopyWhenThePrimaryBucketIsLost(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 6*time.Minute)
	const primaryBucket, copyBucket = "etcd-backups-primary", "etcd-backups-copy"
	for _, b := range []string{primaryBucket, copyBucket} {
		if err := env.S3.MakeBucket(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	creds := &corev1.SecretReference{Namespace: sandbox.SeedNamespace, Name: sandbox.CredentialsSecret}
	withDestinations(t, ctx, map[string]*kubermaticv1.BackupDestination{
		"primary": {Endpoint: env.S3.Endpoint, BucketName: primaryBucket, Credentials: creds, CopyTo: "second"},
		"second":  {Endpoint: env.S3.Endpoint, BucketName: copyBucket, Credentials: creds},
	})

	const cluster = "copied1"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/things/k%03d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := newConfig(t, ctx, cluster, "copied", "", "primary", 5)
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 90*time.Second, "the backup copied",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			cond := c.Status.Condition(kubermaticv1.ConditionBackupsCopied)
			// A pass before the backup was stored finds nothing to copy ("0 objects there"): the
			// condition must count the backup's copy.
			return len(entries(c, kubermaticv1.PhaseCompleted)) == 1 && cond != nil &&
				cond.Status == corev1.ConditionTrue && cond.Reason == "Copied" &&
				strings.Contains(cond.Message, "(1 objects there)")
		})
	want := dump(t, ctx, cli)
	b := entries(done, kubermaticv1.PhaseCompleted)[0]
	key := backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, b.BackupName)
	s3 := env.S3.Client()
	if _, err := s3.StatObject(ctx, copyBucket, key, minio.StatObjectOptions{}); err != nil {
		t.Fatalf("the copy of %s: %v", key, err)
	}
	labels := map[string]string{"namespace": cfg.Namespace, "config": cfg.Name}
	if lag := metricSum(t, ctx, "pruner", "etcdbackup_copy_lag_seconds", labels); lag != 0 {
		t.Errorf("etcdbackup_copy_lag_seconds %v after the copy, want 0", lag)
	}
	if _, err := cli.Put(ctx, "/registry/after-the-backup", "x"); err != nil {
		t.Fatal(err)
	}

	// The primary bucket is lost.
	var keys []string
	for o := range s3.ListObjects(ctx, primaryBucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	if !slices.Contains(keys, key) {
		t.Fatalf("the primary holds %v, not %s", keys, key)
	}
	for _, k := range keys {
		if err := s3.RemoveObject(ctx, primaryBucket, k, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s3.RemoveBucket(ctx, primaryBucket); err != nil {
		t.Fatal(err)
	}

	rs := newRestore(t, ctx, cluster, "from-the-copy", b.BackupName, func(rs *kubermaticv1.EtcdRestore) {
		rs.Spec.Destination = "primary"
	})
	got := completed(t, ctx, rs, "the restore with the primary bucket gone")
	if st := got.EffectiveStatus(); st.Destination != "second" {
		t.Errorf("restored from destination %q, want the copy, second", st.Destination)
	}
	waitEvent(t, ctx, rs.Namespace, rs.Name, corev1.EventTypeWarning, "RestoringFromCopy")
	if keys := restoredKeys(t, ctx, k); !maps.Equal(keys, want) {
		t.Fatalf("etcd holds %d keys after the restore from the copy, want the backup's %d", len(keys), len(want))
	}
}
