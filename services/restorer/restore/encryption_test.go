package restore

import (
	"context"
	"strings"
	"testing"

	"filippo.io/age"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func identitySecret(ns, name string, ids ...*age.X25519Identity) *corev1.Secret {
	var lines []string
	for _, id := range ids {
		lines = append(lines, id.String())
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data: map[string][]byte{destination.IdentityKey: []byte("# created by age-keygen\n" + strings.Join(lines,
			"\n") + "\n")}}
}

// An encrypted backup is verified with an identity from the Secret the EtcdRestore's
// annotation names, or else the destination's decryptionSecret, and the member pods get the
// same identities in their Secret. A wrong or missing identity fails the restore before
// anything is paused: DecryptionFailed, naming the backup's recipients, never a key.
func TestEncryptedBackupRestores(t *testing.T) {
	owner, seal := s3test.AgeKey(t)
	stranger, _ := s3test.AgeKey(t)
	next, _ := s3test.AgeKey(t)
	for _, tc := range []struct {
		name  string
		setup func(f *phaseFixture)
		ok    bool
	}{
		{"the destination's identity", func(f *phaseFixture) {
			f.decryption = &corev1.SecretReference{Namespace: seedNamespace, Name: "backup-identity"}
			f.extra = append(f.extra, identitySecret(seedNamespace, "backup-identity", owner))
		}, true},
		{"the restore's own, with the next key besides (rotation)", func(f *phaseFixture) {
			f.rs.Annotations = map[string]string{kubermaticv1.AnnotationDecryptionSecret: "my-identity"}
			f.extra = append(f.extra, identitySecret("cluster-a", "my-identity", next, owner))
		}, true},
		{"a wrong identity", func(f *phaseFixture) {
			f.rs.Annotations = map[string]string{kubermaticv1.AnnotationDecryptionSecret: "my-identity"}
			f.extra = append(f.extra, identitySecret("cluster-a", "my-identity", stranger))
		}, false},
		{"no identity at all", func(*phaseFixture) {}, false},
		{"an annotation naming no Secret", func(f *phaseFixture) {
			f.rs.Annotations = map[string]string{kubermaticv1.AnnotationDecryptionSecret: "missing"}
		}, false},
		// The API server answers a GET of this name with an error a retry never cures.
		{"an annotation that is no Secret name", func(f *phaseFixture) {
			f.rs.Annotations = map[string]string{kubermaticv1.AnnotationDecryptionSecret: ".."}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPhaseFixture(t)
			key, _ := ObjectKeyOf(f.rs)
			f.sha = storeSealedBackup(t, f.s3, key, seal)
			tc.setup(f)
			r, rec := f.build()
			reconcile(t, r, f.rs)
			got := observe(t, r, f.rs)
			events := strings.Join(drain(rec), "\n")
			var copied corev1.Secret
			copyErr := r.Client.Get(context.Background(), types.NamespacedName{Namespace: "cluster-a", Name: SavedName(f.rs)},
				&copied)
			if tc.ok {
				if got.phase != kubermaticv1.RestorePhaseStarted || !got.paused {
					t.Fatalf("phase %s (%s), paused %v; want Started and paused", got.phase, got.message, got.paused)
				}
				pods, err := backupformat.ParseIdentities(string(copied.Data[IdentityEnv]))
				if copyErr != nil || err != nil || !strings.Contains(strings.Join(pods.Fingerprints, ","), seal.Fingerprints[0]) {
					t.Fatalf("the member pods' Secret: %v, %v, identities for %v; want the owner's (%s)", copyErr, err,
						pods.Fingerprints, seal.Fingerprints[0])
				}
				return
			}
			if got.phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(events,
				" "+ReasonDecryptionFailed+" ") || !strings.Contains(got.message, "Nothing was changed") {
				t.Fatalf("phase %s: %s; events %q; want Failed, DecryptionFailed, nothing changed", got.phase, got.message, events)
			}
			if tc.name == "an annotation that is no Secret name" && !strings.Contains(got.message, `".." is not a Secret name`) {
				t.Fatalf("message %q, want it to say the annotation names no valid Secret", got.message)
			}
			if !strings.HasPrefix(tc.name, "an annotation") && !strings.Contains(got.message, seal.Fingerprints[0]) {
				t.Fatalf("message %q does not name the backup's recipient %s", got.message, seal.Fingerprints[0])
			}
			if strings.Contains(got.message,
				"AGE-SECRET-KEY") || got.paused || got.locked || got.sts != "old-sts" || copyErr == nil {
				t.Fatalf("after a decryption failure: message %q, paused %v, locked %v, sts %q, copy %v; want nothing changed",
					got.message, got.paused, got.locked, got.sts, copyErr)
			}
		})
	}
}
