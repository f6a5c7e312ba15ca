package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net/url"
	"strings"
	"testing"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	seedNamespace = "kubermatic"
	adminKey      = "admin-key"  // the destination's own credentials
	readerKey     = "reader-key" // read-only credentials the store also accepts
	secretValue   = "s3cr3t-value-never-shown"
)

// storeBackup stores a valid backup (zstd of a minimal etcd snapshot: data and its sha256
// trailer) at key, with its sha256 in the metadata, and returns that sha256.
func storeBackup(t *testing.T, s3 *s3test.Server, key string) string {
	t.Helper()
	return storeSealedBackup(t, s3, key, backupformat.Encryption{})
}

// storeSealedBackup is storeBackup encrypted to seal (when it has recipients), with the
// codec and recipients' fingerprints in the metadata, as the uploader stores it.
func storeSealedBackup(t *testing.T, s3 *s3test.Server, key string, seal backupformat.Encryption) string {
	t.Helper()
	raw := bytes.Repeat([]byte{7}, 4096)
	trailer := sha256.Sum256(raw)
	return s3.PutBackup(t, "backups", key, append(raw, trailer[:]...), seal, backupformat.Meta{})
}

func secretOf(ns, name, id, key string) *corev1.Secret {
	data := map[string][]byte{kubermaticv1.SecretAccessKeyID: []byte(id)}
	if key != "" {
		data[kubermaticv1.SecretSecretAccessKey] = []byte(key)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

// preparable is everything a restore of cluster "a" needs to reach Started: the cluster
// (etcd-launcher on, running), its etcd StatefulSet, a Seed destination with its credentials
// and a valid backup in the bucket, which accepts only adminKey and readerKey.
func preparable(t *testing.T, extra ...client.Object) (*Reconciler, *kubermaticv1.EtcdRestore, string) {
	t.Helper()
	s3 := s3test.Run(t, "backups")
	rs := restoreOf("a")
	key, _ := ObjectKeyOf(rs)
	sha := storeBackup(t, s3, key)
	s3.Allow(adminKey, readerKey)
	objs := append([]client.Object{
		rs,
		&kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "a"},
			Spec: kubermaticv1.ClusterSpec{Features: map[string]bool{kubermaticv1.FeatureEtcdLauncher: true}}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: "etcd", UID: "sts-uid"}},
		&kubermaticv1.Seed{ObjectMeta: metav1.ObjectMeta{Namespace: seedNamespace, Name: "kubermatic"},
			Spec: kubermaticv1.SeedSpec{EtcdBackupRestore: &kubermaticv1.EtcdBackupRestore{
				DefaultDestination: "s3",
				Destinations: map[string]*kubermaticv1.BackupDestination{"s3": {
					Endpoint: s3.Endpoint, BucketName: "backups", Credentials: &corev1.SecretReference{Namespace: seedNamespace,
						Name: "s3-credentials"},
				}},
			}}},
		secretOf(seedNamespace, "s3-credentials", adminKey, secretValue),
	}, extra...)
	r, _, _ := newTestReconciler(t, false, objs...)
	r.Destinations = destination.NewResolver(r.API,
		destination.Source{Seed: types.NamespacedName{Namespace: seedNamespace, Name: "kubermatic"}})
	return r, rs, sha
}

// The member pods' download credentials are proven before anything is touched: read from
// spec.backupDownloadCredentialsSecret in the cluster's namespace (KKP's meaning), or without
// it a presigned URL of the backup (never the destination's keys), put into a Secret the
// restore controls, and used, exactly as stored, to read the backup's metadata.
// Missing keys, refused access or a Secret that is not the restore's fail the restore with
// the cluster running, unlocked, its StatefulSet there, and no copied Secret left.
func TestCredentialsAreProvenBeforeTheClusterIsTouched(t *testing.T) {
	ns := restoreOf("a").Namespace
	for _, tc := range []struct {
		name   string
		secret string // spec.backupDownloadCredentialsSecret
		objs   []client.Object
		reason string // "" when the restore starts
		says   string
	}{
		{name: "the destination's own credentials", reason: ""},
		{name: "read-only credentials in the cluster namespace", secret: "readonly", objs: []client.Object{secretOf(ns,
			"readonly", readerKey, secretValue)}},
		{name: "credentials the store refuses", secret: "readonly", objs: []client.Object{secretOf(ns, "readonly",
			"stranger", secretValue)},
			reason: "CredentialsRefused", says: "refused the member pods' credentials"},
		{name: "a Secret without SECRET_ACCESS_KEY", secret: "readonly", objs: []client.Object{secretOf(ns, "readonly",
			readerKey, "")},
			reason: "CredentialsInvalid", says: "lacks"},
		{name: "a Secret only in the Seed's namespace", secret: "readonly", objs: []client.Object{secretOf(seedNamespace,
			"readonly", readerKey, secretValue)},
			reason: "CredentialsInvalid", says: "Secret " + ns + "/readonly does not exist"},
		{name: "a Secret of the copy's name the restore does not control", objs: []client.Object{secretOf(ns,
			"etcdbackup-restore-r", "planted", secretValue)},
			reason: "CredentialsInvalid", says: "no controller ownerReference"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rs, sha := preparable(t, tc.objs...)
			rs.Spec.BackupDownloadCredentialsSecret = tc.secret
			if err := r.Client.Update(context.Background(), rs); err != nil {
				t.Fatal(err)
			}
			reconcile(t, r, rs)
			st := get(t, r, rs).EffectiveStatus()
			var c kubermaticv1.Cluster
			if err := r.Client.Get(context.Background(), types.NamespacedName{Name: "a"}, &c); err != nil {
				t.Fatal(err)
			}
			var copied corev1.Secret
			copyErr := r.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: SavedName(rs)}, &copied)
			if tc.reason == "" {
				if st.Phase != kubermaticv1.RestorePhaseStarted || st.SHA256 != sha || !c.Spec.Pause {
					t.Fatalf("status %+v, cluster paused=%v: want Started with the backup's sha256, paused", st, c.Spec.Pause)
				}
				if copyErr != nil || !metav1.IsControlledBy(&copied, rs) {
					t.Fatalf("the member pods' Secret: %v, controlled: %v", copyErr, metav1.IsControlledBy(&copied, rs))
				}
				if tc.secret == "" {
					presignedOnly(t, &copied, rs)
				}
				return
			}
			if st.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(st.Message,
				tc.says) || !strings.Contains(st.Message, "Nothing was changed") {
				t.Fatalf("status %s: %s; want Failed saying %q and that nothing was changed", st.Phase, st.Message, tc.says)
			}
			if c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" {
				t.Fatalf("cluster paused=%v, locked by %q: want it as it was", c.Spec.Pause,
					c.Annotations[kubermaticv1.AnnotationActiveRestore])
			}
			if err := r.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "etcd"},
				&appsv1.StatefulSet{}); err != nil {
				t.Fatalf("the etcd StatefulSet: %v", err)
			}
			planted := len(tc.objs) > 0 && tc.objs[0].GetName() == SavedName(rs)
			switch {
			case planted && (copyErr != nil || string(copied.Data[kubermaticv1.SecretAccessKeyID]) != "planted"):
				t.Fatalf("someone else's Secret of the copy's name: %v, %q; want it left alone", copyErr,
					copied.Data[kubermaticv1.SecretAccessKeyID])
			case !planted && !apierrors.IsNotFound(copyErr):
				t.Fatalf("the copied credentials after the failure: %v, want none", copyErr)
			}
			if strings.Contains(st.Message, secretValue) {
				t.Fatalf("message %q carries a secret key", st.Message)
			}
		})
	}
}

// presignedOnly requires the member pods' Secret to hold a presigned URL of rs's backup, and
// none of the destination's keys.
func presignedOnly(t *testing.T, s *corev1.Secret, rs *kubermaticv1.EtcdRestore) {
	t.Helper()
	key, _ := ObjectKeyOf(rs)
	u, err := url.Parse(string(s.Data[URLEnv]))
	if err != nil || !strings.HasSuffix(u.Path, "/"+key) || u.Query().Get("X-Amz-Signature") == "" {
		t.Fatalf("%s in the pods' Secret: %v; want a presigned URL of %s", URLEnv, err, key)
	}
	if _, ok := s.Data[kubermaticv1.SecretAccessKeyID]; ok {
		t.Fatalf("the pods' Secret holds %s: the destination's keys reached the cluster namespace",
			kubermaticv1.SecretAccessKeyID)
	}
	for k, v := range s.Data {
		if strings.Contains(string(v), secretValue) || strings.Contains(string(v), adminKey) && k != URLEnv {
			t.Fatalf("the pods' Secret, key %s, carries the destination's credentials", k)
		}
	}
}
