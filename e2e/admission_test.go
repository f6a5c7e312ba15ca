package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// deploy/k8s/admission.yaml, on the real API server (the sandbox applies it with the RBAC, so
// every restore test runs under it too): the restorer's ServiceAccount creates and deletes a
// Secret or ConfigMap only when it is named etcdbackup-restore-<r> and EtcdRestore <r>
// controls it, and updates none; another identity is not held to it.
func TestRestorerCreatesAndDeletesOnlyWhatItOwns(t *testing.T) {
	ctx := testContext(t, time.Minute)
	restorer := clientAs(t, ctx, "restorer")
	const ns = "cluster-" + "admission"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// A new owner uid each time: the garbage collector remembers the uids of owners it found
	// absent, and deletes a new dependent of one at once (beforeTheGC).
	owner := func(restore string, controller bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "kubermatic.k8c.io/v1", Kind: "EtcdRestore", Name: restore,
			UID: uuid.NewUUID(), Controller: &controller}}
	}
	for _, kind := range []string{"Secret", "ConfigMap"} {
		obj := func(name string, owners []metav1.OwnerReference) client.Object {
			meta := metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: owners}
			if kind == "Secret" {
				return &corev1.Secret{ObjectMeta: meta}
			}
			return &corev1.ConfigMap{ObjectMeta: meta}
		}
		denied := func(what string, err error) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), "etcdbackup-restorer-owned-objects") {
				t.Errorf("%s %s: %v, want it denied by the policy", what, kind, err)
			}
		}
		denied("create one of another name", restorer.Create(ctx, obj("planted-"+strings.ToLower(kind),
			owner("planted-"+strings.ToLower(kind), true))))
		denied("create one without an owner", restorer.Create(ctx, obj("etcdbackup-restore-r1", nil)))
		denied("create one owned by another restore", restorer.Create(ctx, obj("etcdbackup-restore-r1", owner("r2", true))))
		denied("create one the restore owns but does not control", restorer.Create(ctx, obj("etcdbackup-restore-r1",
			owner("r1", false))))

		// Someone else's, in a cluster namespace: not the restorer's to delete.
		theirs := obj("credentials-"+strings.ToLower(kind), nil)
		if err := env.Client.Create(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		denied("delete someone else's", restorer.Delete(ctx, theirs))
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(theirs), theirs); err != nil {
			t.Fatalf("someone else's %s after the restorer tried to delete it: %v", kind, err)
		}

		beforeTheGC(ctx, t, restorer, func() client.Object { return obj("etcdbackup-restore-r1", owner("r1", true)) },
			func(ours client.Object) error {
				ours.SetLabels(map[string]string{"changed": "true"})
				// Refused: by RBAC (Secrets) or by the policy (ConfigMaps).
				switch err := restorer.Update(ctx, ours); {
				case err == nil:
					return fmt.Errorf("the restorer updated its %s; want every update refused", kind)
				case apierrors.IsNotFound(err), apierrors.IsConflict(err):
					return fmt.Errorf("the restorer's update of its %s: %w, want a refusal", kind, err)
				}
				return restorer.Delete(ctx, ours)
			})
	}
}

// beforeTheGC has the restorer create an object owned by a restore that does not exist, and
// runs steps on it. kube-controller-manager's garbage collector deletes such an object as soon
// as it sees it (on an idle machine within milliseconds, before the steps could run), so the
// object is created with a finalizer of the test's: the collector can only mark it deleted,
// and the steps run on it. The test takes the finalizer off at the end.
func beforeTheGC(ctx context.Context, t *testing.T, restorer client.Client, newObj func() client.Object,
	steps func(client.Object) error) {
	t.Helper()
	const hold = "etcdbackup.test/hold"
	obj := newObj()
	obj.SetFinalizers([]string{hold})
	if err := restorer.Create(ctx, obj); err != nil {
		t.Fatalf("the restorer creating %s owned by its restore: %v", obj.GetName(), err)
	}
	defer func() {
		// As the admin: the test's finalizer off (only it: a service's stays), and the object
		// gone with it.
		// The services write the object too (a config's status): read again on a conflict.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := newObj()
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
				return client.IgnoreNotFound(err)
			}
			before := cur.DeepCopyObject().(client.Object)
			if !controllerutil.RemoveFinalizer(cur, hold) {
				return nil
			}
			return client.IgnoreNotFound(env.Client.Patch(ctx, cur, client.MergeFromWithOptions(before,
				client.MergeFromWithOptimisticLock{})))
		})
		if err != nil {
			t.Errorf("take the test's finalizer off %s: %v", obj.GetName(), err)
		}
	}()
	if err := steps(obj); err != nil {
		t.Fatalf("%s owned by the restorer's restore: %v", obj.GetName(), err)
	}
}

// The restorer's ServiceAccount may create an EtcdBackupConfig only as a restore's pre-restore
// config: named pre-restore-<r> and controlled by EtcdRestore <r>. Its drills still patch any
// config (not matched by the policy).
func TestRestorerCreatesOnlyPreRestoreConfigs(t *testing.T) {
	ctx := testContext(t, time.Minute)
	restorer := clientAs(t, ctx, "restorer")
	const ns = "cluster-admission-cfg"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	controller := true
	cfg := func(name, restore string) *kubermaticv1.EtcdBackupConfig {
		keep := 1
		c := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: kubermaticv1.EtcdBackupConfigSpec{Name: name, Cluster: corev1Ref("admission-cfg"), Keep: &keep}}
		if restore != "" {
			c.OwnerReferences = []metav1.OwnerReference{{APIVersion: "kubermatic.k8c.io/v1", Kind: "EtcdRestore",
				Name: restore, UID: uuid.NewUUID(), Controller: &controller}}
		}
		return c
	}
	for what, c := range map[string]*kubermaticv1.EtcdBackupConfig{
		"a config of another name":           cfg("daily", "r1"),
		"a pre-restore config of no restore": cfg("pre-restore-r1", ""),
		"another restore's":                  cfg("pre-restore-r1", "r2"),
	} {
		if err := restorer.Create(ctx, c); err == nil ||
			!strings.Contains(err.Error(), "etcdbackup-restorer-owned-objects") {
			t.Errorf("create %s: %v, want it denied by the policy", what, err)
		}
	}
	beforeTheGC(ctx, t, restorer, func() client.Object { return cfg("pre-restore-r1", "r1") },
		func(obj client.Object) error {
			ours := obj.(*kubermaticv1.EtcdBackupConfig)
			patched := ours.DeepCopy()
			patched.Annotations = map[string]string{kubermaticv1.AnnotationLastRestorable: "x"}
			return restorer.Patch(ctx, patched, client.MergeFrom(ours))
		})
}

// clientAs is a client with the service's ServiceAccount: exactly the permissions deploy/k8s
// grants it.
func clientAs(t *testing.T, ctx context.Context, service string) client.Client {
	t.Helper()
	kubeconfig, err := env.ServiceKubeconfig(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kube.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The snapshotter reads etcd's Secrets by KKP's names, in any namespace, and no other Secret.
func TestSnapshotterReadsOnlyEtcdSecrets(t *testing.T) {
	ctx := testContext(t, time.Minute)
	snapshotter := clientAs(t, ctx, "snapshotter")
	const ns = "cluster-secrets-by-name"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca", "apiserver-etcd-client-certificate", "s3-credentials", "admin-kubeconfig"} {
		if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns,
			Name: name}}); err != nil {
			t.Fatal(err)
		}
		err := snapshotter.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.Secret{})
		etcds := name == "ca" || name == "apiserver-etcd-client-certificate"
		if etcds && err != nil || !etcds && !apierrors.IsForbidden(err) {
			t.Errorf("the snapshotter reading Secret %s: %v; want it read only if it is one of etcd's", name, err)
		}
	}
}
