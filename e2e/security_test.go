package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// These tests replay the probes of an attacker inside the seed (issue "the bus is a trust
// boundary") against the sandbox, which runs NATS from deploy/k8s/nats.yaml's own
// configuration. Each probe now ends in a refusal.

// natsCLI runs the real nats CLI with args and returns its combined output.
func natsCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(filepath.Join(env.Opts.ToolDir, "nats"), args...).CombinedOutput()
	return string(out), err
}

// Probe 1: an anonymous client, and the people's identities, cannot read staged snapshots.
func TestStagingIsUnreadableButToItsTwoServices(t *testing.T) {
	t.Run("anonymous", func(t *testing.T) {
		out, err := natsCLI(t, "--server", env.NATSURL, "--tlsca", env.NATSCreds.CA(), "stream", "info",
			"OBJ_ETCDBACKUP_STAGING")
		if err == nil || !strings.Contains(strings.ToLower(out), "authorization violation") {
			t.Fatalf("anonymous stream info: %v\n%s", err, out)
		}
		out, err = natsCLI(t, "--server", env.NATSURL, "stream", "info", "OBJ_ETCDBACKUP_STAGING")
		if err == nil {
			t.Fatalf("a client without TLS got through:\n%s", out)
		}
	})
	for _, id := range []bus.Identity{bus.IdentityWatcher, bus.IdentityTrigger} {
		t.Run(string(id), func(t *testing.T) {
			out, err := natsCLI(t, append(env.NATSCLIFlags(id), "stream", "info", "OBJ_ETCDBACKUP_STAGING")...)
			if err == nil || !strings.Contains(strings.ToLower(out), "permission") && !strings.Contains(out, "timeout") {
				t.Fatalf("%s: stream info of staging: %v\n%s", id, err, out)
			}
			if err := subscribeRefused(t, id, "$O."+bus.StagingBucket+".C.>"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// subscribeRefused subscribes as id and expects the server to refuse.
func subscribeRefused(t *testing.T, id bus.Identity, subject string) error {
	t.Helper()
	return refused(t, id, "subscribe to "+subject, func(nc *nats.Conn) error {
		_, err := nc.SubscribeSync(subject)
		return err
	})
}

// publishRefused publishes as id and expects the server to refuse.
func publishRefused(t *testing.T, id bus.Identity, subject string, data []byte) error {
	t.Helper()
	return refused(t, id, "publish on "+subject, func(nc *nats.Conn) error { return nc.Publish(subject, data) })
}

// refused does what as id and expects the server to answer with a permissions violation (a
// refused publish or subscription is not an error of the call itself: the server says so on
// the connection).
func refused(t *testing.T, id bus.Identity, what string, do func(*nats.Conn) error) error {
	t.Helper()
	errs := make(chan error, 4)
	nc, err := env.NATSClient(id, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := do(nc); err != nil {
		return err
	}
	_ = nc.Flush()
	select {
	case err := <-errs:
		if errors.Is(err, nats.ErrPermissionViolation) {
			return nil
		}
		return fmt.Errorf("%s: %s: %w", id, what, err)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s may %s", id, what)
	}
}

// Probe 2: a forged deletion of a real, Completed backup. Who may not publish deletions is
// refused by NATS; the pruner's own identity, stolen, gets the message rejected by the deleter
// (retention does not plan it), which leaves the object, an Event and a count.
func TestForgedDeletionDeletesNothing(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	cfg, b := completedBackup(t, ctx, "probedelete1")
	req := &etcdbackupv1.DeleteRequested{
		Config:     &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)},
		Cluster:    cfg.Spec.Cluster.Name,
		BackupName: b.BackupName, DeleteJobName: backupname.DeleteJob(cfg.Spec.Cluster.Name, cfg.Name, b.BackupName),
		Destination: sandbox.Destination, ObjectKey: b.ObjectKey, Reason: bus.DeleteReasonRetention,
		ScheduledTime: timestamppb.New(b.ScheduledTime.Time),
	}
	data, _, err := bus.Encode(req, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []bus.Identity{bus.IdentityWatcher, bus.IdentityTrigger, bus.IdentityUploader,
		bus.IdentitySnapshotter} {
		if err := publishRefused(t, id, bus.SubjectDeleteRequested, data); err != nil {
			t.Error(err)
		}
	}
	before := metricSum(t, ctx, "pruner", "etcdbackup_rejected_messages_total",
		map[string]string{"subject": bus.SubjectDeleteRequested, "reason": trust.ReasonNotPlanned})
	if _, err := bus.Publish(ctx, jetStreamAs(t, bus.IdentityPruner), bus.SubjectDeleteRequested, "", req); err != nil {
		t.Fatal(err)
	}
	err = sandbox.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		return metricSum(t, ctx, "pruner", "etcdbackup_rejected_messages_total",
			map[string]string{"subject": bus.SubjectDeleteRequested, "reason": trust.ReasonNotPlanned}) > before, nil
	})
	if err != nil {
		t.Fatalf("the forged deletion was not rejected: %v", err)
	}
	waitEvent(t, ctx, cfg.Namespace, cfg.Name, "Warning", trust.EventReasonRejected)
	if _, err := env.S3.Client().StatObject(ctx, sandbox.Bucket, b.ObjectKey, minio.StatObjectOptions{}); err != nil {
		t.Fatalf("the backup's object is gone after a forged deletion: %v", err)
	}
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 5*time.Second, "the status",
		func(*kubermaticv1.EtcdBackupConfig) bool { return true })
	if e, _ := entry(got, b.BackupName); e.DeletePhase != "" {
		t.Fatalf("status reports a deletion of %s: %+v", b.BackupName, e)
	}
}

// Probe 3: a forged Completed status event for a backup never taken. The watcher may not
// publish status events; a stolen snapshotter identity may not publish on the uploader's
// subject, and on its own subject it cannot complete a backup. Status never lists it.
func TestForgedStatusIsNotBelieved(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	cfg, _ := completedBackup(t, ctx, "probestatus1")
	at := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	name := backupname.Backup(cfg.Name, at)
	cluster := cfg.Spec.Cluster.Name
	ev := &etcdbackupv1.StatusEvent{
		Config: &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)}, Cluster: cluster,
		BackupName: name, JobName: backupname.Job(cluster, cfg.Name, name), ScheduledTime: timestamppb.New(at),
		Stage: etcdbackupv1.Stage_STAGE_UPLOADER, Phase: etcdbackupv1.Phase_PHASE_COMPLETED, Message: "forged",
		Destination: sandbox.Destination, ObjectKey: backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, name),
		Size: 1234, Sha256: strings.Repeat("ab", 32), Time: timestamppb.Now(),
	}
	data, _, err := bus.Encode(ev, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []bus.Identity{bus.IdentityWatcher, bus.IdentityTrigger, bus.IdentitySnapshotter} {
		if err := publishRefused(t, id, bus.StatusSubject(etcdbackupv1.Stage_STAGE_UPLOADER), data); err != nil {
			t.Error(err)
		}
	}
	labels := map[string]string{"subject": bus.StatusSubject(etcdbackupv1.Stage_STAGE_SNAPSHOTTER),
		"reason": trust.ReasonStage}
	before := metricSum(t, ctx, "scheduler", "etcdbackup_rejected_messages_total", labels)
	ev.Stage = etcdbackupv1.Stage_STAGE_SNAPSHOTTER
	if err := bus.PublishStatus(ctx, jetStreamAs(t, bus.IdentitySnapshotter), ev); err != nil {
		t.Fatal(err)
	}
	err = sandbox.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		return metricSum(t, ctx, "scheduler", "etcdbackup_rejected_messages_total", labels) > before, nil
	})
	if err != nil {
		t.Fatalf("the snapshotter's Completed event was not rejected: %v", err)
	}
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 5*time.Second, "the status",
		func(*kubermaticv1.EtcdBackupConfig) bool { return true })
	if e, ok := entry(got, name); ok {
		t.Fatalf("status lists the forged backup: %+v", e)
	}
}

// Probe 4: {} and garbage on every consumed subject, each published with the identity allowed
// to publish there, are terminated at once: counted as invalid, never redelivered, never left
// pending.
func TestPoisonMessagesAreTerminatedAtOnce(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	for _, tc := range []struct {
		subject   string
		publisher bus.Identity
		consumer  bus.Identity
		durable   string
		service   string
	}{
		{bus.SubjectBackupRequested, bus.IdentityScheduler, bus.IdentitySnapshotter, bus.ConsumerSnapshotter, "snapshotter"},
		{bus.SubjectSnapshotReady, bus.IdentitySnapshotter, bus.IdentityUploader, bus.ConsumerUploader, "uploader"},
		{bus.SubjectBackupStored, bus.IdentityUploader, bus.IdentityPruner, bus.ConsumerPruner, "pruner"},
		{bus.SubjectDeleteRequested, bus.IdentityPruner, bus.IdentityPruner, bus.ConsumerDeleter, "pruner"},
		{bus.StatusSubject(etcdbackupv1.Stage_STAGE_UPLOADER), bus.IdentityUploader, bus.IdentityScheduler,
			bus.ConsumerStatusWriter, "scheduler"},
	} {
		t.Run(tc.subject, func(t *testing.T) {
			labels := map[string]string{"subject": tc.subject}
			before := metricSum(t, ctx, tc.service, "etcdbackup_invalid_messages_total", labels)
			js := jetStreamAs(t, tc.publisher)
			for _, body := range []string{`{}`, "not a message"} {
				if _, err := js.Publish(ctx, tc.subject, []byte(body)); err != nil {
					t.Fatal(err)
				}
			}
			err := sandbox.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
				return metricSum(t, ctx, tc.service, "etcdbackup_invalid_messages_total", labels) >= before+2, nil
			})
			if err != nil {
				t.Fatalf("%s did not count 2 invalid messages: %v", tc.service, err)
			}
			c, err := jetStreamAs(t, tc.consumer).Consumer(ctx, bus.StreamOf(tc.durable), tc.durable)
			if err != nil {
				t.Fatal(err)
			}
			err = sandbox.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() (bool, error) {
				info, err := c.Info(ctx)
				if err != nil {
					return false, err
				}
				return info.NumAckPending == 0 && info.NumRedelivered == 0, fmt.Errorf("ack pending %d, redelivered %d",
					info.NumAckPending, info.NumRedelivered)
			})
			if err != nil {
				t.Fatalf("consumer %s holds poison: %v", tc.durable, err)
			}
		})
	}
}

// Probe 5: the trigger called in a loop queues one backup; the others are refused with the
// reason, and so nothing older is pruned to make room.
func TestTriggerLoopQueuesOnce(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	const cluster = "probetrigger1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "loop", "@every 24h", "", 1)
	var (
		mu      sync.Mutex
		queued  []string
		refused []string
		failed  []error
	)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			r, err := trigger(cfg.Namespace, cfg.Name)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed = append(failed, err)
			case r.GetError() == "":
				queued = append(queued, r.GetBackupName())
			default:
				refused = append(refused, r.GetError())
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("triggers that got no reply: %v", failed)
	}
	if len(queued) != 1 || len(refused) != 7 {
		t.Fatalf("8 triggers at once queued %v and were refused %d times: %v", queued, len(refused), refused)
	}
	for _, why := range refused {
		if !strings.Contains(why, "trigger-min-interval") && !strings.Contains(why, "is running") {
			t.Errorf("refusal without the reason: %q", why)
		}
	}
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the one backup completed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, ok := entry(c, queued[0])
			return ok && b.BackupPhase == kubermaticv1.PhaseCompleted
		})
	if n := len(got.Status.LastBackups); n != 1 {
		t.Fatalf("status lists %d backups after the loop, want 1: %+v", n, got.Status.LastBackups)
	}
}
