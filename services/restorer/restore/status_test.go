package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// writes counts what a test's client wrote.
type writes struct{ status, patch, other atomic.Int32 }

func (w *writes) total() int32 { return w.status.Load() + w.patch.Load() + w.other.Load() }

// kkpSchema makes the fake client's EtcdRestore status behave as under KKP's CRD: the phase is
// required and one of KKP's four (no Failed), and everything but phase and restoreTime is
// pruned.
func kkpSchema(ctx context.Context, c client.Client, sub string, obj client.Object,
	opts ...client.SubResourceUpdateOption) error {
	rs, ok := obj.(*kubermaticv1.EtcdRestore)
	if !ok {
		return c.SubResource(sub).Update(ctx, obj, opts...)
	}
	switch rs.Status.Phase {
	case kubermaticv1.RestorePhaseStarted, kubermaticv1.RestorePhaseStsRebuilding, kubermaticv1.RestorePhaseCompleted,
		kubermaticv1.RestorePhaseEtcdLauncherNotEnabled:
	default:
		return apierrors.NewInvalid(schema.GroupKind{Group: "kubermatic.k8c.io", Kind: "EtcdRestore"}, rs.Name,
			field.ErrorList{
				field.NotSupported(field.NewPath("status", "phase"), rs.Status.Phase, []string{"Started", "StsRebuilding",
					"Completed", "EtcdLauncherNotEnabled"})})
	}
	rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: rs.Status.Phase, RestoreTime: rs.Status.RestoreTime}
	return c.SubResource(sub).Update(ctx, obj, opts...)
}

func newTestReconciler(t *testing.T, kkp bool, objs ...client.Object) (*Reconciler, *writes, *events.FakeRecorder) {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, kubermaticv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	w := &writes{}
	funcs := interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object,
			opts ...client.SubResourceUpdateOption) error {
			w.status.Add(1)
			if kkp {
				return kkpSchema(ctx, c, sub, obj, opts...)
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch,
			opts ...client.PatchOption) error {
			w.patch.Add(1)
			return c.Patch(ctx, obj, p, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			w.other.Add(1)
			return c.Update(ctx, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			w.other.Add(1)
			return c.Create(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			w.other.Add(1)
			return c.Delete(ctx, obj, opts...)
		},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&kubermaticv1.EtcdRestore{}, &kubermaticv1.Cluster{}).
		WithInterceptorFuncs(funcs).Build()
	rec := events.NewFakeRecorder(20)
	now := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	return &Reconciler{
		Client: c, API: c, Recorder: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Opts:    Options{StatefulSet: "etcd", Timeout: time.Hour, Poll: time.Second},
		Metrics: NewMetrics(prometheus.NewRegistry()), Bus: bus.NewMetrics(prometheus.NewRegistry()),
		Now: func() time.Time { return now },
	}, w, rec
}

func restoreOf(cluster string) *kubermaticv1.EtcdRestore {
	return &kubermaticv1.EtcdRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: "r", UID: "uid-r"},
		Spec: kubermaticv1.EtcdRestoreSpec{Name: "r",
			Cluster:    corev1.ObjectReference{APIVersion: "kubermatic.k8c.io/v1", Kind: "Cluster", Name: cluster},
			BackupName: "daily-2026-11-29T02:00:00"},
	}
}

func reconcile(t *testing.T, r *Reconciler, rs *kubermaticv1.EtcdRestore) ctrl.Result {
	t.Helper()
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(rs)})
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	return res
}

func get(t *testing.T, r *Reconciler, rs *kubermaticv1.EtcdRestore) *kubermaticv1.EtcdRestore {
	t.Helper()
	var got kubermaticv1.EtcdRestore
	if err := r.Client.Get(context.Background(), types.NamespacedName{Namespace: rs.Namespace, Name: rs.Name},
		&got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func drain(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// Under KKP's schema a failed restore cannot write phase Failed. It ends all the same: the
// annotation holds Failed and the message, an Event says why, the finalizer goes, and the
// next reconcile writes nothing (no loop on the refused write).
func TestFailedRestoreUnderKKPSchemaEndsWithoutLooping(t *testing.T) {
	rs := restoreOf("gone")
	r, w, rec := newTestReconciler(t, true, rs)
	reconcile(t, r, rs)

	got := get(t, r, rs)
	if got.Status.Phase != "" {
		t.Errorf("served phase = %q, want none (KKP's enum has no Failed)", got.Status.Phase)
	}
	st := got.EffectiveStatus()
	if st.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(st.Message, `cluster "gone" does not exist`) {
		t.Errorf("effective status = %+v, want Failed with the cause", st)
	}
	if len(got.Finalizers) != 0 {
		t.Errorf("finalizers = %v, want none once failed", got.Finalizers)
	}
	evs := drain(rec)
	if len(evs) != 1 || !strings.Contains(evs[0], "Warning ClusterNotFound") {
		t.Errorf("events = %q, want one Warning ClusterNotFound", evs)
	}

	before := w.total()
	for range 3 {
		if res := reconcile(t, r, rs); res.RequeueAfter != 0 {
			t.Errorf("a failed restore is requeued after %s", res.RequeueAfter)
		}
	}
	if n := w.total() - before; n != 0 {
		t.Errorf("reconciling a failed restore wrote %d times, want 0", n)
	}
}

// Waiting for another restore's lock has no phase KKP's schema takes (the phase is required):
// the message goes to the annotation and an Event, and polling writes nothing new.
func TestWaitingRestoreUnderKKPSchema(t *testing.T) {
	rs := restoreOf("c")
	other := restoreOf("c")
	other.Name, other.UID = "first", "uid-first"
	cluster := &kubermaticv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Name: "c",
			Annotations: map[string]string{kubermaticv1.AnnotationActiveRestore: "cluster-c/first"}},
		Spec: kubermaticv1.ClusterSpec{Features: map[string]bool{kubermaticv1.FeatureEtcdLauncher: true}},
	}
	r, w, rec := newTestReconciler(t, true, rs, other, cluster)
	if res := reconcile(t, r, rs); res.RequeueAfter == 0 {
		t.Error("a waiting restore is not polled")
	}
	st := get(t, r, rs).EffectiveStatus()
	if st.Phase != "" || !strings.Contains(st.Message,
		"waiting: cluster c is being restored by EtcdRestore cluster-c/first") {
		t.Errorf("effective status = %+v, want the wait explained", st)
	}
	if evs := drain(rec); len(evs) != 1 || !strings.Contains(evs[0], "Normal WaitingForLock") {
		t.Errorf("events = %q, want one WaitingForLock", evs)
	}
	before := w.total()
	reconcile(t, r, rs)
	if n := w.total() - before; n != 0 {
		t.Errorf("polling an unchanged wait wrote %d times, want 0", n)
	}
}

// Under this project's schema the whole status is status, and no annotation is written.
func TestFailedRestoreUnderOwnSchemaWritesStatusOnly(t *testing.T) {
	rs := restoreOf("gone")
	r, _, _ := newTestReconciler(t, false, rs)
	reconcile(t, r, rs)
	got := get(t, r, rs)
	if got.Status.Phase != kubermaticv1.RestorePhaseFailed || got.Status.Message == "" {
		t.Errorf("status = %+v, want Failed with a message", got.Status)
	}
	if v, ok := got.Annotations[kubermaticv1.AnnotationRestoreStatus]; ok {
		t.Errorf("annotation %s = %s, want none under a schema that keeps the status",
			kubermaticv1.AnnotationRestoreStatus, v)
	}
}

// Phases KKP's enum has reach status (phase and restoreTime), the rest of the state stays in
// the annotation, and a phase the schema refuses leaves the served phase as it was.
func TestStatusProjectionUnderKKPSchema(t *testing.T) {
	rs := restoreOf("c")
	r, _, _ := newTestReconciler(t, true, rs)
	ctx := context.Background()
	cur := get(t, r, rs)
	steps := []struct {
		phase, msg, served string
	}{
		{"", "verifying", ""},
		{kubermaticv1.RestorePhaseStarted, "verified; paused", kubermaticv1.RestorePhaseStarted},
		{kubermaticv1.RestorePhaseStsRebuilding, "rebuilding", kubermaticv1.RestorePhaseStsRebuilding},
		{kubermaticv1.RestorePhaseFailed, "step failed", kubermaticv1.RestorePhaseStsRebuilding},
	}
	for _, s := range steps {
		if err := r.setPhase(ctx, cur, s.phase, "", "", s.msg, func(st *kubermaticv1.EtcdRestoreStatus) {
			st.ObjectKey = "c/cluster-c/daily/daily-2026-11-29T02-00-00.db.zst"
		}); err != nil {
			t.Fatalf("setPhase %q: %v", s.phase, err)
		}
		got := get(t, r, rs)
		if got.Status.Phase != s.served || got.Status.Message != "" {
			t.Errorf("after %q: served status = %+v, want phase %q and nothing else", s.phase, got.Status, s.served)
		}
		st := got.EffectiveStatus()
		if st.Phase != s.phase || st.Message != s.msg || st.ObjectKey == "" || st.PhaseTime == nil {
			t.Errorf("after %q: effective status = %+v", s.phase, st)
		}
		if cur.Status.Phase != s.phase {
			t.Errorf("after %q: the caller's copy holds phase %q", s.phase, cur.Status.Phase)
		}
	}
}

// A restorer killed between the annotation and the status write leaves status behind; the
// next reconcile brings status up to the annotation.
func TestReconcileCatchesUpServedPhase(t *testing.T) {
	rs := restoreOf("c")
	state := kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseCompleted, Message: "done",
		RestoreTime: metav1.NewTime(time.Date(2026, 11, 29, 2, 30, 0, 0, time.UTC))}
	b, _ := json.Marshal(state)
	rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreStatus: string(b)}
	rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseStsRebuilding}
	r, _, _ := newTestReconciler(t, true, rs)
	reconcile(t, r, rs)
	got := get(t, r, rs)
	if got.Status.Phase != kubermaticv1.RestorePhaseCompleted || !got.Status.RestoreTime.Equal(&state.RestoreTime) {
		t.Errorf("served status = %+v, want Completed at %s", got.Status, state.RestoreTime)
	}
}

// An annotation that does not hold a valid status is not believed.
func TestEffectiveStatusIgnoresInvalidAnnotation(t *testing.T) {
	for _, v := range []string{"{", `{"phase":"Deleted"}`, ""} {
		rs := restoreOf("c")
		rs.Status.Phase = kubermaticv1.RestorePhaseStarted
		rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreStatus: v}
		if got := rs.EffectiveStatus(); got.Phase != kubermaticv1.RestorePhaseStarted {
			t.Errorf("annotation %q: effective phase %q, want status's Started", v, got.Phase)
		}
	}
}

// Under KKP's schema the recorded state is an annotation anyone who may edit the EtcdRestore
// can write. A state that names another cluster's backup is not downloaded: the restore fails
// before the etcd StatefulSet is touched, and the cluster is unlocked and unpaused.
func TestForgedStateKeyIsNotRestored(t *testing.T) {
	rs := restoreOf("c")
	start := metav1.NewTime(time.Date(2026, 11, 29, 2, 50, 0, 0, time.UTC))
	state := kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseStarted, StartTime: &start, PhaseTime: &start,
		Destination: "s3", ObjectKey: "victim/cluster-victim/daily/daily-2026-11-29T02-00-00.db.zst",
		SHA256: strings.Repeat("ab", 32)}
	b, _ := json.Marshal(state)
	rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreStatus: string(b)}
	rs.Finalizers = []string{kubermaticv1.RestoreFinalizer}
	cluster, sts := lockedClusterOf(rs)
	r, _, rec := newTestReconciler(t, true, rs, cluster, sts)
	reconcile(t, r, rs)

	st := get(t, r, rs).EffectiveStatus()
	if st.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(st.Message, "changed after verification") {
		t.Errorf("effective status = %+v, want Failed: state mismatch", st)
	}
	var left appsv1.StatefulSet
	if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(sts),
		&left); err != nil || left.DeletionTimestamp != nil {
		t.Errorf("the etcd StatefulSet was touched: %v", err)
	}
	var c kubermaticv1.Cluster
	if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(cluster), &c); err != nil {
		t.Fatal(err)
	}
	if c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" {
		t.Errorf("cluster pause %v, lock %q: want unpaused and unlocked", c.Spec.Pause,
			c.Annotations[kubermaticv1.AnnotationActiveRestore])
	}
	if evs := drain(rec); len(evs) == 0 || !strings.Contains(evs[len(evs)-1], "Warning StateMismatch") {
		t.Errorf("events = %q, want a Warning StateMismatch", evs)
	}
}

// An EtcdRestore in one cluster's namespace that names another cluster fails at once with
// ClusterNamespaceMismatch and a Warning: neither cluster is locked or paused, and the etcd
// StatefulSet in the EtcdRestore's namespace is untouched.
func TestRestoreOutsideItsClusterNamespaceChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name, restoreNS, statusNS string
	}{
		{"in another cluster's namespace", "cluster-a", ""},
		{"in cluster-<name> when the Cluster's status names another", "cluster-b", "kkp-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := restoreOf("b")
			rs.Namespace = tc.restoreNS
			victim := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "b"},
				Spec: kubermaticv1.ClusterSpec{Features: map[string]bool{kubermaticv1.FeatureEtcdLauncher: true}}}
			victim.Status.NamespaceName = tc.statusNS
			sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: tc.restoreNS, Name: "etcd"}}
			r, w, rec := newTestReconciler(t, false, rs, victim, sts)
			reconcile(t, r, rs)
			got := get(t, r, rs)
			if st := got.EffectiveStatus(); st.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(st.Message,
				`cluster "b" lives in`) {
				t.Fatalf("status %+v, want Failed saying where the cluster lives", st)
			}
			if evs := drain(rec); len(evs) != 1 || !strings.Contains(evs[0],
				"Warning "+kubermaticv1.ReasonClusterNamespaceMismatch) {
				t.Fatalf("events %q, want one Warning %s", evs, kubermaticv1.ReasonClusterNamespaceMismatch)
			}
			var c kubermaticv1.Cluster
			if err := r.Client.Get(context.Background(), types.NamespacedName{Name: "b"}, &c); err != nil {
				t.Fatal(err)
			}
			if c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" {
				t.Fatalf("cluster b paused=%v lock=%q, want neither", c.Spec.Pause,
					c.Annotations[kubermaticv1.AnnotationActiveRestore])
			}
			if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(sts), &appsv1.StatefulSet{}); err != nil {
				t.Fatalf("the StatefulSet in %s: %v", tc.restoreNS, err)
			}
			var cms corev1.ConfigMapList
			var secrets corev1.SecretList
			if err := r.Client.List(context.Background(), &cms); err != nil {
				t.Fatal(err)
			}
			if err := r.Client.List(context.Background(), &secrets); err != nil {
				t.Fatal(err)
			}
			if len(cms.Items)+len(secrets.Items) != 0 || w.status.Load() == 0 {
				t.Fatalf("%d ConfigMaps and %d Secrets created, %d status writes; want none created and the failure written",
					len(cms.Items), len(secrets.Items), w.status.Load())
			}
			if len(got.Finalizers) != 0 {
				t.Fatalf("finalizers %v, want none once failed", got.Finalizers)
			}
		})
	}
}

// The lock records whether the cluster was paused before the restore; ending the restore
// leaves such a cluster paused and unpauses one the restore paused. Re-taking a lock mid-way
// records nothing (the pause is the restore's own by then).
func TestRestoreKeepsAPauseThatWasThere(t *testing.T) {
	paused := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c", ResourceVersion: "7"},
		Spec: kubermaticv1.ClusterSpec{Pause: true}}
	running := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c", ResourceVersion: "7"}}
	for _, tc := range []struct {
		name    string
		cluster *kubermaticv1.Cluster
		record  bool
		want    string
	}{
		{"a paused cluster is recorded", paused, true, `"etcdbackup.k8c.io/paused-before-restore":"true"`},
		{"a running one clears any record", running, true, `"etcdbackup.k8c.io/paused-before-restore":null`},
		{"re-locking records nothing", paused, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := string(lockPatch(tc.cluster, "cluster-c/r", tc.record))
			if !strings.Contains(p, `"kubermatic.k8c.io/active-restore":"cluster-c/r"`) || !strings.Contains(p,
				`"resourceVersion":"7"`) {
				t.Fatalf("lock patch %s does not take the lock under the resourceVersion", p)
			}
			if tc.want == "" && strings.Contains(p, "paused-before-restore") || tc.want != "" && !strings.Contains(p, tc.want) {
				t.Fatalf("lock patch %s, want %q", p, tc.want)
			}
		})
	}

	// A restore deleted while Started (nothing torn down yet) cancels: the lock goes, and the
	// cluster is unpaused only if this restore paused it: its verification is on the cluster and
	// the cluster was not paused before. A Started phase without the verification (written by
	// hand) unpauses nothing.
	for _, tc := range []struct {
		before, verified, want bool
	}{{false, true, false}, {true, true, true}, {false, false, true}} {
		t.Run(fmt.Sprintf("cancelled, paused before: %v, verified: %v", tc.before, tc.verified), func(t *testing.T) {
			rs := restoreOf("c")
			rs.Finalizers = []string{kubermaticv1.RestoreFinalizer}
			rs.Status.Phase = kubermaticv1.RestorePhaseStarted
			now := metav1.Now()
			rs.DeletionTimestamp = &now
			c := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c",
				Annotations: map[string]string{kubermaticv1.AnnotationActiveRestore: Lock(rs)}},
				Spec: kubermaticv1.ClusterSpec{Pause: true}}
			if tc.before {
				c.Annotations[kubermaticv1.AnnotationPausedBeforeRestore] = "true"
			}
			if tc.verified {
				c.Annotations[kubermaticv1.AnnotationRestoreVerified] = verificationJSON(t,
					Verification{UID: string(rs.UID), Restore: Lock(rs)})
			}
			r, _, _ := newTestReconciler(t, false, rs, c)
			reconcile(t, r, rs)
			var got kubermaticv1.Cluster
			if err := r.Client.Get(context.Background(), types.NamespacedName{Name: "c"}, &got); err != nil {
				t.Fatal(err)
			}
			for _, a := range []string{kubermaticv1.AnnotationActiveRestore, kubermaticv1.AnnotationPausedBeforeRestore,
				kubermaticv1.AnnotationRestoreVerified} {
				if got.Annotations[a] != "" {
					t.Fatalf("annotations after the restore %v, want %s gone", got.Annotations, a)
				}
			}
			if got.Spec.Pause != tc.want {
				t.Fatalf("cluster paused=%v after the restore, want %v", got.Spec.Pause, tc.want)
			}
		})
	}
}

// A failed restore deletes the download credentials it copied (the Secret it controls), and
// never an object of that name it does not control.
func TestFailedRestoreDeletesOnlyItsCopiedCredentials(t *testing.T) {
	for _, owned := range []bool{true, false} {
		t.Run(fmt.Sprintf("owned by the restore: %v", owned), func(t *testing.T) {
			rs := restoreOf("gone") // no such cluster: the restore fails
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: SavedName(rs)},
				Data: map[string][]byte{kubermaticv1.SecretAccessKeyID: []byte("id"),
					kubermaticv1.SecretSecretAccessKey: []byte("key")}}
			if owned {
				secret.OwnerReferences = []metav1.OwnerReference{{APIVersion: "kubermatic.k8c.io/v1", Kind: "EtcdRestore",
					Name: rs.Name, UID: rs.UID, Controller: boolPtr(true)}}
			} else {
				// Someone else's Secret that happens to have the name.
				secret.OwnerReferences = []metav1.OwnerReference{{APIVersion: "kubermatic.k8c.io/v1", Kind: "EtcdRestore",
					Name: rs.Name, UID: "another-uid", Controller: boolPtr(true)}}
			}
			r, _, _ := newTestReconciler(t, false, rs, secret)
			reconcile(t, r, rs)
			if st := get(t, r, rs).EffectiveStatus(); st.Phase != kubermaticv1.RestorePhaseFailed {
				t.Fatalf("status %+v, want Failed", st)
			}
			err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(secret), &corev1.Secret{})
			if owned && !apierrors.IsNotFound(err) {
				t.Fatalf("the copied credentials after the failure: %v, want deleted", err)
			}
			if !owned && err != nil {
				t.Fatalf("a Secret the restore does not control: %v, want it left alone", err)
			}
		})
	}
}

func boolPtr(v bool) *bool { return &v }

// The saved-spec ConfigMap is used only when this EtcdRestore is its controller (by UID). One
// of that name made by someone else, naming another namespace's StatefulSet, fails the restore
// (SavedSpecNotOwned): the etcd StatefulSet is not deleted, the other object is untouched, and
// the cluster stays paused and is unlocked. One the restore owns is forced to the cluster's
// namespace and the etcd StatefulSet's name, whatever it says.
func TestSavedSpecOnlyFromTheRestoresOwnConfigMap(t *testing.T) {
	victim := etcdStatefulSet()
	victim.Namespace, victim.Name = "cluster-victim", "victim"
	enc, err := Encode(victim)
	if err != nil {
		t.Fatal(err)
	}
	started := func() (*kubermaticv1.EtcdRestore, *kubermaticv1.Cluster, *appsv1.StatefulSet) {
		rs := restoreOf("c")
		key, _ := ObjectKeyOf(rs)
		start := metav1.NewTime(time.Date(2026, 11, 29, 2, 50, 0, 0, time.UTC))
		rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseStarted, StartTime: &start,
			PhaseTime: &start, Destination: "s3", ObjectKey: key, SHA256: strings.Repeat("ab", 32)}
		rs.Finalizers = []string{kubermaticv1.RestoreFinalizer}
		cluster, sts := lockedClusterOf(rs)
		return rs, cluster, sts
	}
	cm := func(rs *kubermaticv1.EtcdRestore, controllerUID types.UID) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: SavedName(rs),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "kubermatic.k8c.io/v1", Kind: "EtcdRestore", Name: rs.Name,
				UID: controllerUID, Controller: boolPtr(true)}}},
			Data: map[string]string{SavedSpecKey: enc}}
	}

	t.Run("someone else's is refused", func(t *testing.T) {
		rs, cluster, sts := started()
		foreign := cm(rs, "someone-else")
		r, _, _ := newTestReconciler(t, false, rs, cluster, sts, foreign)
		reconcile(t, r, rs)
		st := get(t, r, rs).EffectiveStatus()
		if st.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(st.Message,
			"no controller ownerReference to this EtcdRestore") {
			t.Fatalf("status %+v, want Failed: the saved spec is not this restore's", st)
		}
		var left appsv1.StatefulSet
		if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(sts),
			&left); err != nil || left.DeletionTimestamp != nil {
			t.Fatalf("the etcd StatefulSet was touched: %v", err)
		}
		if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(foreign), &corev1.ConfigMap{}); err != nil {
			t.Fatalf("the other ConfigMap: %v, want it left alone", err)
		}
		var c kubermaticv1.Cluster
		if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(cluster), &c); err != nil {
			t.Fatal(err)
		}
		if !c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" {
			t.Fatalf("cluster paused=%v lock=%q, want paused and unlocked", c.Spec.Pause,
				c.Annotations[kubermaticv1.AnnotationActiveRestore])
		}
	})
	t.Run("its own is forced to the cluster's StatefulSet", func(t *testing.T) {
		rs, cluster, sts := started()
		r, _, _ := newTestReconciler(t, false, rs, cluster, sts, cm(rs, rs.UID))
		got, err := r.saved(context.Background(), rs)
		if err != nil {
			t.Fatal(err)
		}
		if got.Namespace != rs.Namespace || got.Name != "etcd" {
			t.Fatalf("saved StatefulSet %s/%s, want %s/etcd whatever the ConfigMap says", got.Namespace, got.Name, rs.Namespace)
		}
	})
}

// lockedClusterOf returns Cluster c paused and locked by rs, with etcd-launcher, and the etcd
// StatefulSet in rs's namespace: the state a restore in phase Started finds.
func lockedClusterOf(rs *kubermaticv1.EtcdRestore) (*kubermaticv1.Cluster, *appsv1.StatefulSet) {
	key, _ := ObjectKeyOf(rs)
	verified, _ := json.Marshal(Verification{UID: string(rs.UID), Restore: Lock(rs), Destination: "s3", ObjectKey: key,
		SHA256: strings.Repeat("ab", 32)})
	cluster := &kubermaticv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Name: "c",
			Annotations: map[string]string{kubermaticv1.AnnotationActiveRestore: Lock(rs),
				kubermaticv1.AnnotationRestoreVerified: string(verified)}},
		Spec: kubermaticv1.ClusterSpec{Pause: true, Features: map[string]bool{kubermaticv1.FeatureEtcdLauncher: true}},
	}
	sts := etcdStatefulSet()
	sts.Namespace = rs.Namespace
	return cluster, sts
}
