package e2e

import (
	"bytes"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/minio/minio-go/v7"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A backup to a destination with an encryption Secret is encrypted before it leaves the
// snapshotter: the bucket holds an age file whose metadata names the codec and the
// recipient, and no zstd frame of the snapshot. A restore with an identity that is not the
// recipient's fails before the cluster is touched (DecryptionFailed); one with the
// destination's identity brings etcd back to the backup.
func TestEncryptedBackupAndRestore(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "sealed"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	for i := range 20 {
		if _, err := cli.Put(ctx, "/registry/secrets/default/s"+string(rune('a'+i)), "token-"+strings.Repeat("x",
			64)); err != nil {
			t.Fatal(err)
		}
	}
	want := dump(t, ctx, cli)
	cfg := newConfig(t, ctx, cluster, "sealed", "", sandbox.SealedDestination, 5)
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the encrypted backup",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) == 1
		})
	b := entries(done, kubermaticv1.PhaseCompleted)[0]

	obj, err := env.S3.Client().GetObject(ctx, sandbox.Bucket, b.ObjectKey, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := obj.Stat()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 64)
	if _, err := io.ReadFull(obj, head); err != nil {
		t.Fatal(err)
	}
	obj.Close()
	recipient := backupformat.Fingerprint(env.Identity.Recipient().String())
	st, err := backupformat.ParseMeta(info.UserMetadata)
	if err != nil || st.Codec != backupformat.CodecZstdAge || st.Recipients != recipient {
		t.Fatalf("object metadata %v, want codec %s to recipient %s", info.UserMetadata, backupformat.CodecZstdAge, recipient)
	}
	if !bytes.HasPrefix(head, []byte("age-encryption.org/v1\n")) || bytes.Contains(head, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Fatalf("the object starts %q: want an age file, not a zstd frame", head[:24])
	}

	ns := "cluster-" + cluster
	var before appsv1.StatefulSet
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: sandbox.EtcdStatefulSet},
		&before); err != nil {
		t.Fatal(err)
	}
	stranger, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	wrong := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "not-the-key"},
		Data: map[string][]byte{destination.IdentityKey: []byte(stranger.String())}}
	if err := env.Client.Create(ctx, wrong); err != nil {
		t.Fatal(err)
	}
	rs := newRestore(t, ctx, cluster, "wrong-identity", b.BackupName, func(r *kubermaticv1.EtcdRestore) {
		r.Spec.Destination = sandbox.SealedDestination
		r.Annotations = map[string]string{kubermaticv1.AnnotationDecryptionSecret: wrong.Name}
	})
	failed := waitRestore(t, ctx, rs, time.Minute, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
	if failed.Status.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(failed.Status.Message,
		recipient) || !strings.Contains(failed.Status.Message, "Nothing was changed") {
		t.Fatalf("restore with a wrong identity: %s: %s", failed.Status.Phase, failed.Status.Message)
	}
	waitEvent(t, ctx, ns, rs.Name, corev1.EventTypeWarning, "DecryptionFailed")
	assertUntouched(t, ctx, k, cluster, before.UID, "a decryption failure")

	if _, err := cli.Put(ctx, "/registry/after-the-backup", "v"); err != nil {
		t.Fatal(err)
	}
	rs = newRestore(t, ctx, cluster, "with-the-destinations-identity", b.BackupName, func(r *kubermaticv1.EtcdRestore) {
		r.Spec.Destination = sandbox.SealedDestination
	})
	completed(t, ctx, rs, "the restore of the encrypted backup")
	if got := restoredKeys(t, ctx, k); !maps.Equal(got, want) {
		t.Fatalf("after the restore etcd holds %d keys, want the backup's %d", len(got), len(want))
	}
}
