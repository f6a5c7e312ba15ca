package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// waitDeletedSet waits for the DeletedBackupSet a config (namespace, name) left.
func waitDeletedSet(t *testing.T, ctx context.Context, ns, config string) *backupv1.DeletedBackupSet {
	t.Helper()
	var found *backupv1.DeletedBackupSet
	err := sandbox.Poll(ctx, 90*time.Second, 200*time.Millisecond, func() (bool, error) {
		var sets backupv1.DeletedBackupSetList
		if err := env.Client.List(ctx, &sets); err != nil {
			return false, err
		}
		for i := range sets.Items {
			if s := &sets.Items[i]; s.Spec.Namespace == ns && s.Spec.Config == config {
				found = s
				return s.Status.Phase == backupv1.DeletedPhaseKept, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no DeletedBackupSet of %s/%s kept: %v", ns, config, err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(ctx), found) })
	return found
}

// A config's deletion keeps its backups for the grace period: the config goes at once, its
// backup stays in the bucket, recorded in a DeletedBackupSet that kubectl lists with its
// expiry and the pruner reports in etcdbackup_backups_in_grace. Deleting the set deletes them.
func TestConfigDeletionKeepsItsBackupsForTheGrace(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "deleting1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "once", "", "", 5)
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the one-time backup and the finalizer",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) == 1 && len(c.Finalizers) == 1
		})
	keys := bucketKeys(t, ctx, done)
	if len(keys) != 1 {
		t.Fatalf("bucket holds %v, want the one-time backup", keys)
	}
	if err := env.Client.Delete(ctx, done); err != nil {
		t.Fatal(err)
	}
	err := sandbox.Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &kubermaticv1.EtcdBackupConfig{})
		return apierrors.IsNotFound(err), err
	})
	if err != nil {
		t.Fatalf("config not released: %v", err)
	}
	set := waitDeletedSet(t, ctx, cfg.Namespace, cfg.Name)
	b := entries(done, kubermaticv1.PhaseCompleted)[0]
	if len(set.Spec.Backups) != 1 || set.Spec.Backups[0].Name != b.BackupName ||
		set.Spec.Backups[0].ObjectKey != keys[0] || set.Spec.ConfigUID != done.UID {
		t.Fatalf("set %s holds %+v of config uid %s, want %s (%s) of %s", set.Name, set.Spec.Backups, set.Spec.ConfigUID,
			b.BackupName, keys[0], done.UID)
	}
	if d := set.Spec.Expires.Sub(set.Spec.DeletedAt.Time); d != 7*24*time.Hour {
		t.Errorf("expires %s after the deletion, want the default grace, 7 days", d)
	}
	if got := bucketKeys(t, ctx, cfg); len(got) != 1 {
		t.Fatalf("the backup was deleted with its config: %v", got)
	}
	out := mustKubectl(t, nil, "get", "deletedbackupsets")
	expiry := set.Spec.Expires.UTC().Format(time.RFC3339)
	for _, want := range []string{set.Name, cfg.Namespace, cluster, b.BackupName, backupv1.DeletedPhaseKept} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get deletedbackupsets does not show %q:\n%s", want, out)
		}
	}
	if out := mustKubectl(t, nil, "get", "deletedbackupset", set.Name, "-o", "jsonpath={.spec.expires}"); out != expiry {
		t.Errorf("expiry %q, want %q", out, expiry)
	}
	labels := map[string]string{"namespace": cfg.Namespace, "config": cfg.Name}
	err = sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		return metricSum(t, ctx, "pruner", "etcdbackup_backups_in_grace", labels) >= 1, nil
	})
	if err != nil {
		t.Errorf("etcdbackup_backups_in_grace never counted the kept backup: %v", err)
	}

	// The config created again under its name finds its old backup and takes it back: listed
	// in its status (restorable by name as any other), the set gone. (Created in a later
	// second: a one-time backup is named after its config's creation, to the second.)
	nextSecond(t, ctx, done.CreationTimestamp.Time)
	again := newConfig(t, ctx, cluster, "once", "", "", 5)
	adopted := waitConfig(t, ctx, again.Namespace, again.Name, 60*time.Second, "the old backup listed again",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			e, ok := entry(c, b.BackupName)
			return ok && e.BackupPhase == kubermaticv1.PhaseCompleted && len(entries(c, kubermaticv1.PhaseCompleted)) == 2
		})
	waitEvent(t, ctx, again.Namespace, again.Name, corev1.EventTypeNormal, "BackupsAdopted")
	err = sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(set), &backupv1.DeletedBackupSet{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Fatalf("the set stayed after its config was created again: %v", err)
	}

	// Deleted again: a new set with both; deleting the set deletes them.
	if err := env.Client.Delete(ctx, adopted); err != nil {
		t.Fatal(err)
	}
	second := waitDeletedSet(t, ctx, cfg.Namespace, cfg.Name) // the first one is gone
	if second.Spec.ConfigUID != adopted.UID || len(second.Spec.Backups) != 2 {
		t.Fatalf("the second deletion's set is of config uid %s with %+v; want %s's two backups", second.Spec.ConfigUID,
			second.Spec.Backups, adopted.UID)
	}
	mustKubectl(t, nil, "delete", "deletedbackupset", second.Name, "--wait=true", "--timeout=60s")
	if got := bucketKeys(t, ctx, cfg); len(got) != 0 {
		t.Fatalf("the set was deleted, its backups stayed: %v", got)
	}
}

// A cluster's namespace deleted (by a person, a script, a GitOps sync) leaves its backups in
// a DeletedBackupSet. Another cluster's namespace may restore from them only once an operator
// lists it in the set's spec.restoreInto: refused before, with nothing touched; after, the
// new cluster's etcd holds exactly the deleted cluster's data.
func TestDeletedNamespaceRestoresIntoANewOne(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 6*time.Minute)
	kA, cliA := startEtcdCluster(t, ctx, "grace-a", nil)
	for i := range 100 {
		if _, err := cliA.Put(ctx, fmt.Sprintf("/registry/things/k%03d", i), fmt.Sprintf("v%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b := backUp(t, ctx, "grace-a")
	want := dump(t, ctx, cliA)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-grace-a"}}
	if err := env.Client.Delete(ctx, ns); err != nil {
		t.Fatal(err)
	}
	err := sandbox.Poll(ctx, 120*time.Second, 200*time.Millisecond, func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		return apierrors.IsNotFound(err), err
	})
	if err != nil {
		t.Fatalf("namespace %s did not go: %v", ns.Name, err)
	}
	kA.Stop()
	set := waitDeletedSet(t, ctx, "cluster-grace-a", "before-restore")
	if _, ok := set.Backup(b.BackupName); !ok {
		t.Fatalf("set %s holds %+v, not %s", set.Name, set.Spec.Backups, b.BackupName)
	}

	kB, cliB := startEtcdCluster(t, ctx, "grace-b", nil)
	if _, err := cliB.Put(ctx, "/registry/new-cluster", "x"); err != nil {
		t.Fatal(err)
	}
	before := dump(t, ctx, cliB)
	fromSet := func(rs *kubermaticv1.EtcdRestore) {
		rs.Annotations = map[string]string{backupv1.AnnotationDeletedBackups: set.Name}
	}
	refused := waitRestore(t, ctx, newRestore(t, ctx, "grace-b", "from-deleted-refused", b.BackupName, fromSet),
		time.Minute, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
	if refused.Status.Phase != kubermaticv1.RestorePhaseFailed ||
		!strings.Contains(refused.Status.Message, "spec.restoreInto") {
		t.Fatalf("a restore from another namespace's deleted backups ended %s: %s; want Failed, naming spec.restoreInto",
			refused.Status.Phase, refused.Status.Message)
	}
	waitEvent(t, ctx, "cluster-grace-b", "from-deleted-refused", corev1.EventTypeWarning, "NotPermitted")
	if got := dump(t, ctx, cliB); !maps.Equal(got, before) {
		t.Fatal("a refused restore changed the cluster's etcd")
	}

	// The operator lets cluster-grace-b restore them.
	patched := set.DeepCopy()
	patched.Spec.RestoreInto = []string{"cluster-grace-b"}
	if err := env.Client.Patch(ctx, patched, client.MergeFrom(set)); err != nil {
		t.Fatal(err)
	}
	rs := newRestore(t, ctx, "grace-b", "from-deleted", b.BackupName, fromSet)
	completed(t, ctx, rs, "the restore from the deleted namespace's backup")
	if got := restoredKeys(t, ctx, kB); !maps.Equal(got, want) {
		t.Fatalf("cluster grace-b holds %d keys after the restore, want the %d grace-a held", len(got), len(want))
	}
	var still backupv1.DeletedBackupSet
	if err := env.Client.Get(ctx, types.NamespacedName{Name: set.Name}, &still); err != nil {
		t.Fatalf("the set went with the restore: %v", err)
	}
}
