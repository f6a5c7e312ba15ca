package destination_test

import (
	"context"
	"errors"
	"testing"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// A destination's objectLock is checked: a mode S3 does not know or days out of range is
// ObjectLockInvalid at Lookup; a bucket without Object Lock is ObjectLockNotEnabled when it is
// opened (the in-process server has none), so nothing is written there unlocked.
func TestObjectLockIsRefusedWhereItCannotHold(t *testing.T) {
	s3 := s3test.Run(t, "plain")
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	creds := &corev1.SecretReference{Namespace: "kubermatic", Name: "s3"}
	dest := func(mode string, days int) *kubermaticv1.BackupDestination {
		return &kubermaticv1.BackupDestination{Endpoint: s3.Endpoint, BucketName: "plain", Credentials: creds,
			ObjectLock: &kubermaticv1.ObjectLock{Mode: mode, Days: days}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&kubermaticv1.Seed{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "kubermatic"},
			Spec: kubermaticv1.SeedSpec{EtcdBackupRestore: &kubermaticv1.EtcdBackupRestore{
				Destinations: map[string]*kubermaticv1.BackupDestination{
					"locked": dest(destination.LockCompliance, 7), "bad-mode": dest("FOREVER", 7),
					"no-days": dest(destination.LockGovernance, 0), "too-long": dest(destination.LockGovernance, 36501),
				}}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "s3"}, Data: map[string][]byte{
			kubermaticv1.SecretAccessKeyID:     []byte(s3test.AccessKey),
			kubermaticv1.SecretSecretAccessKey: []byte(s3test.SecretKey)}},
	).Build()
	r := destination.NewResolver(c, destination.Source{Seed: types.NamespacedName{Namespace: "kubermatic",
		Name: "kubermatic"}})
	ctx := context.Background()
	for _, name := range []string{"bad-mode", "no-days", "too-long"} {
		if _, err := r.Lookup(ctx, name); !errors.Is(err, destination.ErrObjectLockInvalid) ||
			destination.Reason(err) != "ObjectLockInvalid" {
			t.Errorf("%s: %v, want ObjectLockInvalid", name, err)
		}
	}
	d, err := r.Lookup(ctx, "locked")
	if err != nil || d.Lock == nil || d.Lock.Mode != destination.LockCompliance || d.Lock.Days != 7 {
		t.Fatalf("locked: %+v, %v", d, err)
	}
	if _, err := r.Bucket(ctx, d); !errors.Is(err, destination.ErrObjectLockNotEnabled) ||
		destination.Reason(err) != "ObjectLockNotEnabled" {
		t.Fatalf("a bucket without Object Lock: %v, want ObjectLockNotEnabled", err)
	}
}
