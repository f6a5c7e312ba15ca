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

// Status events with stolen stage keys. The snapshotter's key publishes Running events for
// backups the scheduler never queued (past backup names of the config), and the uploader's a
// completion of a backup never taken and another of a real backup with a forged sha256. None
// is believed: the first two are rejected as unlisted after a few deliveries, the third as
// unconfirmed by the bucket; status lists none of them, the real backup keeps its sha256, and
// the config keeps scheduling.
func TestForgedStageEventsListNothing(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	cfg, b := completedBackup(t, ctx, "phantom1")
	cluster := cfg.Spec.Cluster.Name
	// An event of the backup of slot at, as the stage would publish it.
	event := func(stage etcdbackupv1.Stage, phase etcdbackupv1.Phase, at time.Time) *etcdbackupv1.StatusEvent {
		at = at.UTC().Truncate(time.Second)
		name := backupname.Backup(cfg.Name, at)
		return &etcdbackupv1.StatusEvent{
			Config: &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)}, Cluster: cluster,
			BackupName: name, JobName: backupname.Job(cluster, cfg.Name, name), ScheduledTime: timestamppb.New(at),
			Stage: stage, Phase: phase, Message: "forged", Time: timestamppb.Now(),
		}
	}
	reasons := func(stage etcdbackupv1.Stage, reason string) map[string]string {
		return map[string]string{"subject": bus.StatusSubject(stage), "reason": reason}
	}
	snapUnlisted := reasons(etcdbackupv1.Stage_STAGE_SNAPSHOTTER, trust.ReasonUnlisted)
	upUnlisted := reasons(etcdbackupv1.Stage_STAGE_UPLOADER, trust.ReasonUnlisted)
	upUnconfirmed := reasons(etcdbackupv1.Stage_STAGE_UPLOADER, trust.ReasonUnconfirmed)
	before := map[*map[string]string]float64{}
	for _, l := range []*map[string]string{&snapUnlisted, &upUnlisted, &upUnconfirmed} {
		before[l] = metricSum(t, ctx, "scheduler", "etcdbackup_rejected_messages_total", *l)
	}
	var phantoms []string
	snap, up := jetStreamAs(t, bus.IdentitySnapshotter), jetStreamAs(t, bus.IdentityUploader)
	for i := range 10 {
		ev := event(etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_RUNNING,
			time.Now().Add(-time.Duration(i+1)*time.Hour))
		phantoms = append(phantoms, ev.GetBackupName())
		if err := bus.PublishStatus(ctx, snap, ev); err != nil {
			t.Fatal(err)
		}
	}
	done := event(etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED, time.Now().Add(-30*time.Minute))
	never := done.GetBackupName()
	done.Destination, done.ObjectKey = sandbox.Destination, backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, never)
	done.Size, done.Sha256 = 1234, strings.Repeat("ab", 32)
	forgedSum := event(etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED, b.ScheduledTime.Time)
	forgedSum.Destination, forgedSum.ObjectKey, forgedSum.Size = sandbox.Destination, b.ObjectKey, uint64(b.Size)
	forgedSum.Sha256 = strings.Repeat("cd", 32)
	for _, ev := range []*etcdbackupv1.StatusEvent{done, forgedSum} {
		if err := bus.PublishStatus(ctx, up, ev); err != nil {
			t.Fatal(err)
		}
	}
	for l, want := range map[*map[string]string]float64{&snapUnlisted: 10, &upUnlisted: 1, &upUnconfirmed: 1} {
		err := sandbox.Poll(ctx, 90*time.Second, 200*time.Millisecond, func() (bool, error) {
			return metricSum(t, ctx, "scheduler", "etcdbackup_rejected_messages_total", *l)-before[l] >= want, nil
		})
		if err != nil {
			t.Fatalf("rejections %v: %v, want %v more", *l, err, want)
		}
	}
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 5*time.Second, "the status",
		func(*kubermaticv1.EtcdBackupConfig) bool { return true })
	for _, name := range append(phantoms, never) {
		if e, ok := entry(got, name); ok {
			t.Fatalf("status lists the forged backup %s: %+v", name, e)
		}
	}
	if e, _ := entry(got, b.BackupName); e.BackupPhase != kubermaticv1.PhaseCompleted || e.SHA256 != b.SHA256 {
		t.Fatalf("the real backup after a forged completion: %s, sha256 %s; want Completed, %s", e.BackupPhase, e.SHA256,
			b.SHA256)
	}
	if c := condition(got); c == nil || c.Reason != kubermaticv1.ReasonScheduled {
		t.Fatalf("condition %+v, want the config still Scheduled", c)
	}
}

// The real nats CLI, with each service's key, tries what a stolen restorer key once did to
// every status publish in the seed: `nats stream edit ETCDBACKUP_STATUS --max-msgs 7`, and to
// seal it. Every attempt is refused, the stream stays as the setup made it, and backups still
// report.
func TestNoServiceKeyMayChangeAStream(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	for _, id := range []bus.Identity{bus.IdentityRestorer, bus.IdentityScheduler, bus.IdentitySnapshotter,
		bus.IdentityUploader, bus.IdentityPruner} {
		args := []string{"stream", "edit", bus.StreamStatus, "--max-msgs", "7", "--force", "--timeout", "3s"}
		out, err := natsCLI(t, append(args, env.NATSCLIFlags(id)...)...)
		if err == nil || strings.Contains(out, "unknown") || strings.Contains(out, "usage:") {
			t.Errorf("%s: nats %v: %v, want refused:\n%s", id, args, err, out)
		}
		// The CLI's seal exits 0 when its update goes unanswered: what counts is the stream after.
		_, _ = natsCLI(t, append([]string{"stream", "seal", bus.StreamStatus, "--force", "--timeout", "3s"},
			env.NATSCLIFlags(id)...)...)
	}
	s, err := jetStreamAs(t, bus.IdentitySetup).Stream(ctx, bus.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.MaxMsgs != -1 || c.Sealed {
		t.Fatalf("the status stream after the attempts: max msgs %d, sealed %v; want as the setup made it", c.MaxMsgs,
			c.Sealed)
	}
	// Status still flows: a backup completes and its status says so.
	completedBackup(t, ctx, "streams1")
}
