package e2e

import (
	"context"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A config without a schedule takes exactly one backup, named for its creation time, even
// when it is reconciled again afterwards by both schedulers.
func TestOneTimeBackupIsTakenOnce(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	const cluster = "onetime1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "snapshot", "", "", 5)
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the one-time backup completed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) == 1
		})
	want := backupname.Backup(cfg.Name, done.CreationTimestamp.Time)
	if b := done.Status.LastBackups[0]; b.BackupName != want {
		t.Fatalf("one-time backup named %q, want %q", b.BackupName, want)
	}
	if c := condition(done); c == nil || c.Reason != kubermaticv1.ReasonOneTimeBackup {
		t.Fatalf("condition %+v", c)
	}
	// Wake both schedulers up again: a label change is a new event for every informer.
	patch := client.MergeFrom(done.DeepCopy())
	done.Labels = map[string]string{"touched": "yes"}
	if err := env.Client.Patch(ctx, done, patch); err != nil {
		t.Fatal(err)
	}
	// A second manual backup afterwards proves the schedulers processed the label event
	// (events for one object are handled in order) before we count.
	nextSecond(t, ctx, done.CreationTimestamp.Time)
	reply := triggerWithCLI(t, cfg.Namespace, cfg.Name)
	if reply.GetError() != "" {
		t.Fatalf("trigger: %s", reply.GetError())
	}
	final := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the manual backup completed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, ok := entry(c, reply.GetBackupName())
			return ok && b.BackupPhase == kubermaticv1.PhaseCompleted
		})
	if n := len(final.Status.LastBackups); n != 2 {
		t.Fatalf("%d backups listed, want the one-time backup and the manual one: %+v", n, final.Status.LastBackups)
	}
	queued := statusEvents(t, ctx, func(ev *etcdbackupv1.StatusEvent) bool {
		return ev.GetConfig().GetName() == cfg.Name && ev.GetConfig().GetNamespace() == cfg.Namespace &&
			ev.GetStage() == etcdbackupv1.Stage_STAGE_SCHEDULER && ev.GetBackupName() == want
	})
	if len(queued) != 1 {
		t.Fatalf("one-time backup queued %d times", len(queued))
	}
}

// A paused cluster is not backed up; when it is unpaused, its next slot is.
func TestPausedClusterIsSkipped(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	const cluster = "paused1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	setPause(t, ctx, cluster, true)
	cfg := newConfig(t, ctx, cluster, "paused", "@every 2s", "", 5)
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 30*time.Second, "condition ClusterPaused",
		blockedBy(kubermaticv1.ReasonClusterPaused))
	waitEvent(t, ctx, cfg.Namespace, cfg.Name, corev1.EventTypeNormal, kubermaticv1.ReasonClusterPaused)
	// The manual trigger refuses too, and says why.
	if r := triggerWithCLI(t, cfg.Namespace, cfg.Name); r.GetBackupName() != "" || r.GetError() == "" {
		t.Fatalf("trigger on a paused cluster: %+v", r)
	}
	var paused kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &paused); err != nil {
		t.Fatal(err)
	}
	if len(paused.Status.LastBackups) != 0 {
		t.Fatalf("backups taken while paused: %+v", paused.Status.LastBackups)
	}
	unpausedAt := time.Now()
	setPause(t, ctx, cluster, false)
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "a backup after unpausing", completedSince(unpausedAt))
}

func setPause(t *testing.T, ctx context.Context, cluster string, pause bool) {
	t.Helper()
	var c kubermaticv1.Cluster
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"pause":`+map[bool]string{true: "true",
		false: "false"}[pause]+`}}`))
	if err := env.Client.Patch(ctx, &c, patch); err != nil {
		t.Fatal(err)
	}
}

// KKP's Cluster and Seed carry many more fields than this system reads: the CRDs keep them.
func TestClusterAndSeedKeepUnknownFields(t *testing.T) {
	ctx := testContext(t, time.Minute)
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubermatic.k8c.io/v1",
		"kind":       "Cluster",
		"metadata":   map[string]any{"name": "kkp-shaped"},
		"address":    map[string]any{"url": "https://kkp-shaped.example.com:6443"},
		"spec": map[string]any{
			"pause":             false,
			"humanReadableName": "prod",
			"version":           "1.33.1",
			"cloud":             map[string]any{"dc": "europe-west3-c", "aws": map[string]any{"vpcID": "vpc-1"}},
		},
	}}
	if err := env.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(u.GroupVersionKind())
	if err := env.Client.Get(ctx, types.NamespacedName{Name: "kkp-shaped"}, got); err != nil {
		t.Fatal(err)
	}
	for _, path := range [][]string{{"address", "url"}, {"spec", "humanReadableName"}, {"spec", "version"}, {"spec",
		"cloud", "aws", "vpcID"}} {
		if v, ok, _ := unstructured.NestedString(got.Object, path...); !ok || v == "" {
			t.Errorf("field %v was dropped", path)
		}
	}
	seed := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubermatic.k8c.io/v1",
		"kind":       "Seed",
		"metadata":   map[string]any{"name": "kkp-shaped", "namespace": "kubermatic"},
		"spec": map[string]any{
			"country":     "DE",
			"datacenters": map[string]any{"europe-west3-c": map[string]any{"country": "DE"}},
			"etcdBackupRestore": map[string]any{"defaultDestination": "s3",
				"destinations": map[string]any{"s3": map[string]any{"bucketName": "b", "endpoint": "s3.example.com"}}},
		},
	}}
	if err := env.Client.Create(ctx, seed); err != nil {
		t.Fatal(err)
	}
	gotSeed := &unstructured.Unstructured{}
	gotSeed.SetGroupVersionKind(seed.GroupVersionKind())
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(seed), gotSeed); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := unstructured.NestedString(gotSeed.Object, "spec", "country"); v != "DE" {
		t.Errorf("seed spec.country dropped: %v", gotSeed.Object["spec"])
	}
	if _, ok, _ := unstructured.NestedMap(gotSeed.Object, "spec", "datacenters"); !ok {
		t.Errorf("seed spec.datacenters dropped")
	}
}
