package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/restorer/restore"
	"github.com/etcd-backup/etcdbackup/services/uploader/upload"
	"github.com/minio/minio-go/v7"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// A tenant of namespace cluster-attacker creates EtcdRestores naming cluster victim, with a
// restore status annotation that says the restore already verified its backup and paused the
// cluster (phase Started), once with a decryption annotation that is no Secret name and once
// without. Each fails at once, naming the namespace mismatch: victim is neither locked nor
// paused nor unpaused (its admin had paused it for the second), and no credentials are copied
// into the attacker's namespace.
func TestForgedRestoreStateTouchesNoOtherCluster(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	dumpLogsOnFailure(t)
	mustAddCluster(t, ctx, "victim", env.DemoEtcd.Endpoint)
	mustAddCluster(t, ctx, "attacker", env.DemoEtcd.Endpoint)
	forged := `{"phase":"Started","startTime":"` + time.Now().UTC().Format(time.RFC3339) + `","destination":"` +
		"s3" + `","objectKey":"victim/cluster-victim/daily/daily-2026-12-01T00-00-00.db.zst"}`
	for _, tc := range []struct {
		name        string
		decryption  string
		adminPaused bool
	}{
		{name: "forged-with-decryption", decryption: ".."},
		{name: "forged-admin-paused", adminPaused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.adminPaused {
				setPause(t, ctx, "victim", true)
			}
			before := clusterObject(t, ctx, "victim")
			rs := newRestore(t, ctx, "victim", tc.name, "daily-2026-12-01T00:00:00", func(rs *kubermaticv1.EtcdRestore) {
				rs.Namespace = "cluster-attacker"
				rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreStatus: forged}
				if tc.decryption != "" {
					rs.Annotations[kubermaticv1.AnnotationDecryptionSecret] = tc.decryption
				}
			})
			done := waitRestore(t, ctx, rs, time.Minute, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
			st := done.EffectiveStatus()
			if st.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(st.Message, `lives in "cluster-victim"`) ||
				!strings.Contains(st.Message, "Nothing was changed") {
				t.Fatalf("forged restore: %s: %s; want Failed, the namespace mismatch, nothing changed", st.Phase, st.Message)
			}
			waitEvent(t, ctx, rs.Namespace, rs.Name, corev1.EventTypeWarning, kubermaticv1.ReasonClusterNamespaceMismatch)
			if diff := diffObjects(before, clusterObject(t, ctx, "victim")); diff != "" {
				t.Errorf("cluster victim changed: %s", diff)
			}
			err := env.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: restore.SavedName(rs)},
				&corev1.Secret{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("credentials Secret in the attacker's namespace: %v; want none", err)
			}
		})
	}
}

// A snapshot of a backup that is already stored, arriving after the bus's one-hour dedup
// window (a request replayed by a stolen scheduler key or a lagging status writer, a stolen
// snapshotter key): the uploader refuses to store it over the backup at its key (rejected,
// reason "exists"). The stored object and the status entry stay what they were.
func TestReplayedSnapshotNeverReplacesABackup(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	cfg, b := completedBackup(t, ctx, "replay1")
	before, err := env.S3.Client().StatObject(ctx, sandbox.Bucket, b.ObjectKey, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cluster := cfg.Spec.Cluster.Name
	snapshot := bytes.Repeat([]byte{1}, 2*512+32) // another snapshot than the stored one's
	ready := &etcdbackupv1.SnapshotReady{
		Request: &etcdbackupv1.BackupRequested{
			Config:     &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)},
			Cluster:    cluster,
			BackupName: b.BackupName, JobName: backupname.Job(cluster, cfg.Name, b.BackupName),
			Destination: sandbox.Destination, ObjectKey: b.ObjectKey, ScheduledTime: timestamppb.New(b.ScheduledTime.Time),
			Trigger: etcdbackupv1.Trigger_TRIGGER_MANUAL,
		},
		StagedObject: cfg.Namespace + "/" + b.BackupName, SnapshotSize: uint64(len(snapshot)),
		SnapshotSha256: fmt.Sprintf("%x", sha256.Sum256(snapshot)), Revision: 1, StartedTime: timestamppb.Now(),
	}
	labels := map[string]string{"subject": bus.SubjectSnapshotReady, "reason": upload.ReasonExists}
	rejected := metricSum(t, ctx, "uploader", "etcdbackup_rejected_messages_total", labels)
	if _, err := bus.Publish(ctx, jetStreamAs(t, bus.IdentitySnapshotter), bus.SubjectSnapshotReady,
		"replay-"+b.BackupName, ready); err != nil {
		t.Fatal(err)
	}
	err = sandbox.Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		return metricSum(t, ctx, "uploader", "etcdbackup_rejected_messages_total", labels) > rejected, nil
	})
	if err != nil {
		t.Fatalf("the replayed backup was not refused: %v", err)
	}
	waitEvent(t, ctx, cfg.Namespace, cfg.Name, corev1.EventTypeWarning, trust.EventReasonRejected)
	after, err := env.S3.Client().StatObject(ctx, sandbox.Bucket, b.ObjectKey, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ETag != before.ETag || !after.LastModified.Equal(before.LastModified) ||
		after.UserMetadata["Sha256"] != before.UserMetadata["Sha256"] {
		t.Fatalf("the stored backup changed: %+v -> %+v", before.UserMetadata, after.UserMetadata)
	}
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 5*time.Second, "the status",
		func(*kubermaticv1.EtcdBackupConfig) bool { return true })
	if e, _ := entry(got, b.BackupName); e.BackupPhase != kubermaticv1.PhaseCompleted || e.SHA256 != b.SHA256 {
		t.Fatalf("status entry after the replay: %s, sha256 %s; want Completed with %s", e.BackupPhase, e.SHA256, b.SHA256)
	}
}
