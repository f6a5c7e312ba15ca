package e2e

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A restore from the wrong backup is undone from the backup the restorer took of the cluster
// just before it (one-time config pre-restore-<restore>, controlled by the restore, run
// through the normal pipeline although the cluster is locked): etcd then holds exactly what it
// held before the wrong restore.
func TestAWrongRestoreIsUndoneFromItsPreRestoreBackup(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "undo"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/things/k%03d", i), "old"); err != nil {
			t.Fatal(err)
		}
	}
	old := backUp(t, ctx, cluster)
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/things/k%03d", i), "new"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/registry/after-the-backup", "x"); err != nil {
		t.Fatal(err)
	}
	before := dump(t, ctx, cli)

	wrong := completed(t, ctx, newRestore(t, ctx, cluster, "wrong", old.BackupName), "the wrong restore")
	st := wrong.EffectiveStatus()
	if st.PreRestoreBackup == "" || st.PreRestoreSkipped != "" {
		t.Fatalf("the restore recorded no pre-restore backup: %+v", st)
	}
	var cfg kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "cluster-" + cluster,
		Name: kubermaticv1.PreRestoreConfig("wrong")}, &cfg); err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(&cfg, wrong) || cfg.Spec.Schedule != "" {
		t.Errorf("pre-restore config %s: owners %v, schedule %q; want a one-time config the restore controls", cfg.Name,
			cfg.OwnerReferences, cfg.Spec.Schedule)
	}
	e, ok := entry(&cfg, st.PreRestoreBackup)
	if !ok || e.BackupPhase != kubermaticv1.PhaseCompleted {
		t.Fatalf("backup %s is not Completed in %s's status: %+v", st.PreRestoreBackup, cfg.Name, cfg.Status.Backups())
	}
	// What the pre-restore backup adds to a restore (go test -v): from the lock to the backup
	// stored, and the whole restore.
	t.Logf("pre-restore backup: %s from the lock to stored (backup itself %s); restore %s from the lock to Completed",
		e.BackupFinishedTime.Sub(st.StartTime.Time), e.BackupFinishedTime.Sub(e.BackupStartTime.Time),
		st.RestoreTime.Sub(st.StartTime.Time))
	if got := restoredKeys(t, ctx, k); maps.Equal(got, before) {
		t.Fatal("the wrong restore did not change etcd")
	}

	completed(t, ctx, newRestore(t, ctx, cluster, "undo", st.PreRestoreBackup), "the undo")
	if got := restoredKeys(t, ctx, k); !maps.Equal(got, before) {
		t.Fatalf("after the undo etcd holds %d keys, want the %d it held before the wrong restore", len(got), len(before))
	}
}

// When the cluster's etcd is not healthy (a member down: the usual reason to restore), the
// restore goes on without a pre-restore backup and says so in status and a Warning Event.
func TestRestoreOfAnUnhealthyEtcdGoesOnWithoutAPreRestoreBackup(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "unhealthy"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/things/k%03d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	b := backUp(t, ctx, cluster)
	want := dump(t, ctx, cli)
	k.StopMember(2)

	rs := newRestore(t, ctx, cluster, "rescue", b.BackupName)
	done := completed(t, ctx, rs, "the restore of an unhealthy etcd")
	st := done.EffectiveStatus()
	if st.PreRestoreBackup != "" || !strings.Contains(st.PreRestoreSkipped, "etcd is not healthy") {
		t.Fatalf("status %+v: want no pre-restore backup and why", st)
	}
	waitEvent(t, ctx, rs.Namespace, rs.Name, corev1.EventTypeWarning, "PreRestoreBackupSkipped")
	err := env.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: kubermaticv1.PreRestoreConfig(rs.Name)},
		&kubermaticv1.EtcdBackupConfig{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("a pre-restore config was created for an unhealthy etcd: %v", err)
	}
	if got := restoredKeys(t, ctx, k); !maps.Equal(got, want) {
		t.Fatalf("etcd holds %d keys after the restore, want the backup's %d", len(got), len(want))
	}
}
