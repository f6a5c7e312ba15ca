package restore

import (
	"context"
	"errors"
	"testing"
	"time"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// A restore from a deleted config's backups reads the key and destination the set records,
// and only from the config's own namespace (same uid) or one the set's restoreInto lists: a
// namespace re-created under the old name, or any other, is refused.
func TestLocateADeletedConfigsBackup(t *testing.T) {
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	set := &backupv1.DeletedBackupSet{
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-a.cfg.12345678"},
		Spec: backupv1.DeletedBackupSetSpec{Namespace: "cluster-a", NamespaceUID: "a-uid", Config: "cfg", ConfigUID: "1",
			Cluster: "a", Expires: metav1.NewTime(time.Now().Add(time.Hour)), RestoreInto: []string{"cluster-b"},
			Backups: []backupv1.DeletedBackup{{Name: "cfg-2026-12-06T10:00:00", Destination: "s3",
				ObjectKey: "a/cluster-a/cfg/cfg-2026-12-06T10-00-00.db.zst"}}},
	}
	forged := set.DeepCopy()
	forged.Name = "forged"
	forged.Spec.Backups[0].ObjectKey = "victim/cluster-victim/daily/daily-2026-12-06T10-00-00.db.zst"
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(set, forged,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-a", UID: "a-uid"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-b", UID: "b-uid"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-c", UID: "c-uid"}},
	).Build()
	restore := func(ns, setName, backup string) *kubermaticv1.EtcdRestore {
		return &kubermaticv1.EtcdRestore{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r",
				Annotations: map[string]string{backupv1.AnnotationDeletedBackups: setName}},
			Spec: kubermaticv1.EtcdRestoreSpec{BackupName: backup, Destination: "elsewhere"},
		}
	}
	ctx := context.Background()
	for _, ns := range []string{"cluster-a", "cluster-b"} {
		b, err := Locate(ctx, c, restore(ns, set.Name, "cfg-2026-12-06T10:00:00"))
		if err != nil || b.ObjectKey != set.Spec.Backups[0].ObjectKey || b.Destination != "s3" || !b.Deleted {
			t.Errorf("restore in %s: %+v, %v; want the set's key in destination s3", ns, b, err)
		}
	}
	refused := []struct {
		name    string
		restore *kubermaticv1.EtcdRestore
		want    error
	}{
		{"another namespace", restore("cluster-c", set.Name, "cfg-2026-12-06T10:00:00"), ErrNotPermitted},
		{"no such set", restore("cluster-a", "nope", "cfg-2026-12-06T10:00:00"), ErrBackupNotFound},
		{"no such backup", restore("cluster-a", set.Name, "cfg-2026-12-06T11:00:00"), ErrBackupNotFound},
		{"a key outside the deleted config's prefix", restore("cluster-b", forged.Name, "cfg-2026-12-06T10:00:00"),
			ErrBackupNotFound},
	}
	for _, tc := range refused {
		if _, err := Locate(ctx, c, tc.restore); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// cluster-a deleted and created again: a new uid, another tenant perhaps.
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: "cluster-a"}, &ns); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	recreated := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-a", UID: "new-uid"}}
	if err := c.Create(ctx, recreated); err != nil {
		t.Fatal(err)
	}
	if _, err := Locate(ctx, c, restore("cluster-a", set.Name, "cfg-2026-12-06T10:00:00")); !errors.Is(err,
		ErrNotPermitted) {
		t.Errorf("a re-created namespace: %v, want %v", err, ErrNotPermitted)
	}
	pit := restore("cluster-a", set.Name, "cfg-2026-12-06T10:00:00")
	pit.Annotations[kubermaticv1.AnnotationRestoreTo] = "revision:5"
	if _, err := Locate(ctx, c, pit); !errors.Is(err, ErrTarget) {
		t.Errorf("point in time from a deleted config: %v, want %v", err, ErrTarget)
	}
}
