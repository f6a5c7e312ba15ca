package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// etcd unreachable: that backup ends Failed with the cause; once etcd is reachable again the
// next slot completes.
func TestEtcdUnreachableFailsThatBackupOnly(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "unreachable1"
	port, err := sandbox.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	mustAddCluster(t, ctx, cluster, fmt.Sprintf("http://127.0.0.1:%d", port))
	newConfig(t, ctx, cluster, "flaky", "@every 2s", "", 5)
	cfg := waitConfig(t, ctx, "cluster-"+cluster, "flaky", 90*time.Second, "a failed backup",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseFailed)) > 0
		})
	failed := entries(cfg, kubermaticv1.PhaseFailed)[0]
	if !strings.Contains(failed.BackupMessage, "no healthy etcd member") || !strings.Contains(failed.BackupMessage,
		fmt.Sprint(port)) {
		t.Fatalf("failure message does not name the cause: %q", failed.BackupMessage)
	}
	if failed.BackupFinishedTime.IsZero() {
		t.Fatalf("failed entry has no finish time: %+v", failed)
	}

	if n := metricSum(t, ctx, "snapshotter", "etcdbackup_failures_total", map[string]string{"stage": "snapshot",
		"reason": "etcd"}); n < 1 {
		t.Fatalf("etcdbackup_failures_total{stage=snapshot,reason=etcd} = %v", n)
	}
	var c kubermaticv1.Cluster
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(c.DeepCopy())
	c.Annotations[kubermaticv1.AnnotationEtcdEndpoints] = env.DemoEtcd.Endpoint
	if err := env.Client.Patch(ctx, &c, patch); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, ctx, "cluster-"+cluster, "flaky", 90*time.Second, "a later backup completed",
		completedSince(failed.ScheduledTime.Add(time.Second)))
}

// S3 down: the upload is retried from the staged snapshot and completes once S3 is back,
// without a second snapshot.
func TestUploadRetriedWhileS3DownWithoutSecondSnapshot(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "s3outage1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	newConfig(t, ctx, cluster, "outage", "@every 1h", "", 5)
	waitConfig(t, ctx, "cluster-"+cluster, "outage", 30*time.Second, "scheduling active", schedulingActive)

	env.S3.Stop()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = env.S3.Start(context.Background())
		}
	})
	reply := triggerWithProtobuf(t, "cluster-"+cluster, "outage")
	if reply.GetError() != "" {
		t.Fatalf("trigger reply %+v", reply)
	}
	backup := reply.GetBackupName()

	waitConfig(t, ctx, "cluster-"+cluster, "outage", 60*time.Second, "the upload retrying",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, ok := entry(c, backup)
			return ok && b.BackupPhase == kubermaticv1.PhaseRunning && strings.Contains(b.BackupMessage,
				"upload failed, retrying")
		})
	if err := env.S3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	cfg := waitConfig(t, ctx, "cluster-"+cluster, "outage", 60*time.Second, "the backup completed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, ok := entry(c, backup)
			return ok && b.BackupPhase == kubermaticv1.PhaseCompleted
		})
	b, _ := entry(cfg, backup)
	if _, err := env.S3.Client().StatObject(ctx, sandbox.Bucket, b.ObjectKey, minio.StatObjectOptions{}); err != nil {
		t.Fatalf("stored object: %v", err)
	}
	// Each snapshot staged is a line of its replica's log (a quick one publishes no event of
	// its start).
	staged := 0
	for _, s := range env.ServicesOf("snapshotter") {
		data, err := os.ReadFile(s.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if strings.Contains(line, `msg="snapshot staged"`) && strings.Contains(line, " backup="+backup+" ") {
				staged++
			}
		}
	}
	if staged != 1 {
		t.Fatalf("%d snapshots staged for %s, want exactly 1", staged, backup)
	}
	if n := metricSum(t, ctx, "uploader", "etcdbackup_failures_total", map[string]string{"stage": "upload",
		"reason": "s3"}); n < 1 {
		t.Fatalf("etcdbackup_failures_total{stage=upload,reason=s3} = %v", n)
	}
	if n := metricSum(t, ctx, "uploader", "etcdbackup_backups_stored_total", map[string]string{"cluster": cluster,
		"destination": sandbox.Destination}); n != 1 {
		t.Fatalf("etcdbackup_backups_stored_total for %s = %v, want 1", cluster, n)
	}
	retries := statusEvents(t, ctx, func(ev *etcdbackupv1.StatusEvent) bool {
		return ev.GetBackupName() == backup && ev.GetStage() == etcdbackupv1.Stage_STAGE_UPLOADER &&
			ev.GetPhase() == etcdbackupv1.Phase_PHASE_RUNNING
	})
	if len(retries) == 0 {
		t.Fatal("no upload retry was reported")
	}
	// A long outage loses nothing while the staged copy lives: the uploader's deliveries are
	// not counted (the setup's consumer has no MaxDeliver), each retry says how long it has
	// waited and until when it is retried (the staged copy's age limit).
	jsz, err := env.NATS.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true, Config: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			for _, c := range sd.Consumer {
				if c.Name != bus.ConsumerUploader || c.Config == nil {
					continue
				}
				seen = true
				if c.Config.MaxDeliver != bus.Unlimited {
					t.Errorf("the uploader's consumer delivers a message at most %d times: an outage longer than that "+
						"would fail backups still staged", c.Config.MaxDeliver)
				}
			}
		}
	}
	if !seen {
		t.Error("the uploader's consumer and its configuration were not found")
	}
	if msg := retries[len(retries)-1].GetMessage(); !strings.Contains(msg, "waiting ") ||
		!strings.Contains(msg, "retried until ") {
		t.Errorf("the upload's retry says %q; want how long it has waited and until when it is retried", msg)
	}
}

// Bad input never crashes or silently stops the scheduler: the condition says why, with a
// Warning Event.
func TestBadConfigShowsConditionAndEvent(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	const cluster = "badconfig1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	tests := []struct {
		name, cluster, schedule, destination, reason, message string
	}{
		{"bad-schedule", cluster, "every tuesday", "", kubermaticv1.ReasonInvalidSchedule, `schedule "every tuesday"`},
		{"bad-destination", cluster, "@every 1m", "nowhere", kubermaticv1.ReasonDestinationNotFound,
			`"nowhere" is not configured`},
		{"no-cluster", "missing-cluster", "@every 1m", "", kubermaticv1.ReasonClusterNotFound,
			`cluster "missing-cluster" does not exist`},
		// A tenant's backup every second would run the shared pipeline for one cluster: refused
		// below the scheduler's --min-interval (sandbox.MinInterval).
		{"too-frequent", cluster, "@every 1s", "", kubermaticv1.ReasonScheduleTooFrequent, `takes backups 1s apart`},
		{"bad-destination-name", cluster, "@every 1m", "S3 Main", kubermaticv1.ReasonInvalidDestination,
			`"S3 Main" is not a destination name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &kubermaticv1.EtcdBackupConfig{
				ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: tc.name},
				Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1Ref(tc.cluster), Schedule: tc.schedule,
					Destination: tc.destination},
			}
			if err := env.Client.Create(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(ctx), cfg) })
			got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 30*time.Second, "condition "+tc.reason, blockedBy(tc.reason))
			if msg := condition(got).Message; !strings.Contains(msg, tc.message) {
				t.Fatalf("condition message %q lacks %q", msg, tc.message)
			}
			if len(got.Status.LastBackups) != 0 {
				t.Fatalf("a blocked config took backups: %+v", got.Status.LastBackups)
			}
			ev := waitEvent(t, ctx, cfg.Namespace, cfg.Name, corev1.EventTypeWarning, tc.reason)
			if !strings.Contains(ev.Note, tc.message) {
				t.Fatalf("event note %q lacks %q", ev.Note, tc.message)
			}
		})
	}
}

// The seed document's YAML applies unchanged, and the schema refuses keep < 1 and > 1000.
func TestSeedYAMLAppliesUnchanged(t *testing.T) {
	for _, f := range []string{"seed-etcdbackupconfig.yaml", "seed-etcdrestore.yaml"} {
		t.Run(f, func(t *testing.T) {
			out := mustKubectl(t, readTestdata(t, f), "apply", "--dry-run=server", "-f", "-")
			if !strings.Contains(out, "(server dry run)") {
				t.Fatalf("kubectl: %s", out)
			}
		})
	}
	for _, keep := range []string{"0", "1001"} {
		t.Run("keep "+keep+" is refused", func(t *testing.T) {
			yaml := strings.Replace(string(readTestdata(t, "seed-etcdbackupconfig.yaml")), "keep: 20", "keep: "+keep, 1)
			out, err := kubectl(t, []byte(yaml), "apply", "--dry-run=server", "-f", "-")
			if err == nil || !strings.Contains(out, "spec.keep") {
				t.Fatalf("keep: %s accepted or refused for another reason: %v\n%s", keep, err, out)
			}
		})
	}
}

// spec.cluster cannot change (the CRD's CEL rule, on the real API server): the backups a
// config lists are its cluster's. Other fields still change.
func TestConfigClusterIsImmutable(t *testing.T) {
	ctx := testContext(t, time.Minute)
	const cluster = "immutable1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "fixed", "@every 1h", "", 3)
	// The scheduler writes the config too (its finalizer): update the newest version.
	update := func(mutate func(*kubermaticv1.EtcdBackupConfig)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var cur kubermaticv1.EtcdBackupConfig
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &cur); err != nil {
				return err
			}
			mutate(&cur)
			return env.Client.Update(ctx, &cur)
		})
	}
	err := update(func(c *kubermaticv1.EtcdBackupConfig) { c.Spec.Cluster = corev1Ref("another") })
	if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.cluster is immutable") {
		t.Fatalf("changing spec.cluster: %v, want Invalid saying spec.cluster is immutable", err)
	}
	if err := update(func(c *kubermaticv1.EtcdBackupConfig) { c.Spec.Schedule = "@every 2h" }); err != nil {
		t.Fatalf("changing the schedule: %v", err)
	}
}
