package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// phaseFixture is the world one reconcile of restore "r" of cluster "a" sees, built the way
// sample-controller's controller_test.go builds its fixture: objects in, one sync, then what
// the API holds out. Each field is one thing a case may change.
type phaseFixture struct {
	t       *testing.T
	s3      *s3test.Server
	rs      *kubermaticv1.EtcdRestore
	cluster *kubermaticv1.Cluster
	sts     *appsv1.StatefulSet // nil: none
	pvcs    int
	pods    []corev1.Pod
	saved   bool // the saved-spec ConfigMap exists, controlled by the restore
	extra   []client.Object
	sha     string
	etcd    string // the cluster's etcd endpoint (rebuild's health check)
	now     time.Time
	// decryption is the destination's decryptionSecret (nil: none).
	decryption *corev1.SecretReference
	// bucket is the destination's bucket ("backups", where the backup is, when empty).
	bucket string
}

func phaseStatefulSet(ns string) *appsv1.StatefulSet {
	one := int32(1)
	labels := map[string]string{EtcdLabel: EtcdLabelValue}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "etcd", UID: "old-sts", Generation: 1},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "etcd", Image: "etcd"}}}}},
	}
}

func newPhaseFixture(t *testing.T) *phaseFixture {
	t.Helper()
	s3 := s3test.Run(t, "backups")
	rs := restoreOf("a")
	key, _ := ObjectKeyOf(rs)
	sha := storeBackup(t, s3, key)
	return &phaseFixture{
		t: t, s3: s3, rs: rs, sha: sha, pvcs: 1,
		cluster: &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "a"},
			Spec: kubermaticv1.ClusterSpec{Features: map[string]bool{kubermaticv1.FeatureEtcdLauncher: true}}},
		sts: phaseStatefulSet(rs.Namespace),
		now: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC),
	}
}

// started makes the world of a restore that prepared: phase Started with the verified backup,
// the cluster locked and paused by it.
func (f *phaseFixture) started() {
	key, _ := ObjectKeyOf(f.rs)
	start := metav1.NewTime(f.now.Add(-time.Minute))
	f.rs.Finalizers = []string{kubermaticv1.RestoreFinalizer}
	f.rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseStarted, StartTime: &start,
		PhaseTime: &start, Destination: "s3", ObjectKey: key, SHA256: f.sha, Progress: "tearing down"}
	f.cluster.Annotations = map[string]string{kubermaticv1.AnnotationActiveRestore: Lock(f.rs),
		kubermaticv1.AnnotationRestoreVerified: verificationJSON(f.t, Verification{UID: string(f.rs.UID),
			Restore: Lock(f.rs), Destination: "s3", ObjectKey: key, SHA256: f.sha})}
	f.cluster.Spec.Pause = true
}

// forged makes the world of a restore whose Started phase was written by hand: the state is
// there, but the cluster holds no verification by the restorer, no lock and no pause.
func (f *phaseFixture) forged() {
	f.started()
	f.cluster.Annotations = nil
	f.cluster.Spec.Pause = false
}

func verificationJSON(t *testing.T, v Verification) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rebuilding makes the world of a restore whose StatefulSet was rebuilt: phase StsRebuilding,
// the spec saved, the StatefulSet the rebuilt one (ready unless a case says otherwise).
func (f *phaseFixture) rebuilding() {
	f.started()
	f.rs.Status.Phase = kubermaticv1.RestorePhaseStsRebuilding
	f.saved, f.pvcs = true, 0
	f.sts.UID = "rebuilt-sts"
	f.sts.Annotations = map[string]string{AnnotationRestoreID: string(f.rs.UID)}
	f.sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: 1, ReadyReplicas: 1}
}

// readOnly names a backupDownloadCredentialsSecret in the cluster's namespace with key id,
// and lets the store accept only the destination's own key besides readerKey.
func (f *phaseFixture) readOnly(id string) {
	f.rs.Spec.BackupDownloadCredentialsSecret = "readonly"
	f.extra = append(f.extra, secretOf(f.rs.Namespace, "readonly", id, secretValue))
	f.s3.Allow(adminKey, readerKey)
}

// storeCorrupt replaces the backup at key with bytes its metadata does not describe.
func storeCorrupt(t *testing.T, s3 *s3test.Server, key string) {
	t.Helper()
	body := []byte("not the backup that was stored")
	if err := s3.Bucket(t, "backups").Put(context.Background(), key, bytes.NewReader(body), int64(len(body)),
		destination.PutOptions{Metadata: backupformat.Meta{SHA256: strings.Repeat("ab", 32)}.Map()}); err != nil {
		t.Fatal(err)
	}
}

func (f *phaseFixture) build() (*Reconciler, *events.FakeRecorder) {
	t := f.t
	ns := f.rs.Namespace
	bucket := f.bucket
	if bucket == "" {
		bucket = "backups"
	}
	objs := []client.Object{f.rs, f.cluster,
		&kubermaticv1.Seed{ObjectMeta: metav1.ObjectMeta{Namespace: seedNamespace, Name: "kubermatic"},
			Spec: kubermaticv1.SeedSpec{EtcdBackupRestore: &kubermaticv1.EtcdBackupRestore{
				DefaultDestination: "s3",
				Destinations: map[string]*kubermaticv1.BackupDestination{"s3": {
					Endpoint: f.s3.Endpoint, BucketName: bucket, Credentials: &corev1.SecretReference{Namespace: seedNamespace,
						Name: "s3-credentials"},
					DecryptionSecret: f.decryption}},
			}}},
		secretOf(seedNamespace, "s3-credentials", adminKey, secretValue),
	}
	if f.sts != nil {
		objs = append(objs, f.sts)
	}
	for i := range f.pvcs {
		objs = append(objs, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns,
			Name: "data-etcd-" + string(rune('0'+i)), Labels: map[string]string{EtcdLabel: EtcdLabelValue}}})
	}
	for i := range f.pods {
		objs = append(objs, &f.pods[i])
	}
	if f.saved {
		data, err := Encode(Saveable(phaseStatefulSet(ns)))
		if err != nil {
			t.Fatal(err)
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: SavedName(f.rs),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "kubermatic.k8c.io/v1", Kind: "EtcdRestore",
				Name: f.rs.Name, UID: f.rs.UID, Controller: boolPtr(true)}}},
			Data: map[string]string{SavedSpecKey: data}}
		objs = append(objs, cm)
	}
	if f.etcd != "" {
		f.cluster.Annotations[kubermaticv1.AnnotationEtcdEndpoints] = f.etcd
		f.cluster.Annotations[kubermaticv1.AnnotationEtcdClientSecret] = "none"
	}
	r, _, rec := newTestReconciler(t, false, append(objs, f.extra...)...)
	r.Destinations = destination.NewResolver(r.API,
		destination.Source{Seed: types.NamespacedName{Namespace: seedNamespace, Name: "kubermatic"}})
	r.Opts.Timeout = time.Hour
	now := f.now
	r.Now = func() time.Time { return now }
	return r, rec
}

// outcome is what the API holds after the reconcile.
type outcome struct {
	phase, message string
	progress       string
	paused, locked bool
	sts            string // the etcd StatefulSet's uid, "" if none
	pvcs           int
}

func observe(t *testing.T, r *Reconciler, rs *kubermaticv1.EtcdRestore) outcome {
	t.Helper()
	ctx := context.Background()
	st := get(t, r, rs).EffectiveStatus()
	o := outcome{phase: st.Phase, message: st.Message, progress: st.Progress}
	var c kubermaticv1.Cluster
	if err := r.Client.Get(ctx, types.NamespacedName{Name: "a"}, &c); err == nil {
		o.paused, o.locked = c.Spec.Pause, c.Annotations[kubermaticv1.AnnotationActiveRestore] != ""
	}
	var sts appsv1.StatefulSet
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: "etcd"}, &sts); err == nil {
		o.sts = string(sts.UID)
		if o.sts == "" {
			o.sts = "created"
		}
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := r.Client.List(ctx, &pvcs, client.InNamespace(rs.Namespace)); err != nil {
		t.Fatal(err)
	}
	o.pvcs = len(pvcs.Items)
	return o
}

// progressOf is how status.progress (the kubectl column) starts in each phase.
var progressOf = map[string]string{
	kubermaticv1.RestorePhaseStarted:       "tearing down",
	kubermaticv1.RestorePhaseStsRebuilding: "members restored ",
	kubermaticv1.RestorePhaseCompleted:     "done: members restored 1/1",
}

// The phase machine, one reconcile per case: each step (prepare, teardown, rebuild, finished)
// from its phase, going on and with each failure it knows. want names the phase, the Event
// reason, a part of the message, and the cluster, StatefulSet and PVCs as they must be after.
func TestPhaseMachine(t *testing.T) {
	otherRestore := &kubermaticv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "other"}}
	failingPod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "etcd-0",
		Labels: map[string]string{EtcdLabel: EtcdLabelValue}},
		Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: StepContainer, RestartCount: 2,
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1,
				Message: "sha256 differs"}}}}}}
	for _, tc := range []struct {
		name   string
		setup  func(f *phaseFixture)
		phase  string
		reason string // the Event's reason, "" for none
		says   string
		paused bool
		locked bool
		sts    string // uid of the etcd StatefulSet after: "old-sts", "rebuilt-sts", "created" or ""
		pvcs   int
		passes int // reconciles (default 1): teardown deletes in one, finds them gone in the next
	}{
		// prepare, from no phase
		{name: "prepare: verified and paused", setup: func(*phaseFixture) {},
			phase: kubermaticv1.RestorePhaseStarted, reason: "Started", says: "verified", paused: true, locked: true,
			sts: "old-sts", pvcs: 1},
		{name: "prepare: no cluster", setup: func(f *phaseFixture) { f.cluster.Name = "b" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "ClusterNotFound", says: "does not exist", sts: "old-sts", pvcs: 1},
		{name: "prepare: restore outside the cluster's namespace",
			setup: func(f *phaseFixture) { f.cluster.Status.NamespaceName = "cluster-elsewhere" },
			phase: kubermaticv1.RestorePhaseFailed, reason: kubermaticv1.ReasonClusterNamespaceMismatch, says: "lives in",
			sts: "old-sts", pvcs: 1},
		{name: "prepare: etcd-launcher off", setup: func(f *phaseFixture) { f.cluster.Spec.Features = nil },
			phase: kubermaticv1.RestorePhaseEtcdLauncherNotEnabled, reason: "EtcdLauncherNotEnabled",
			says: "Nothing was changed", sts: "old-sts", pvcs: 1},
		{name: "prepare: locked by another restore", setup: func(f *phaseFixture) {
			f.cluster.Annotations = map[string]string{kubermaticv1.AnnotationActiveRestore: "cluster-a/other"}
			f.extra = append(f.extra, otherRestore)
		}, phase: "", reason: "WaitingForLock", says: "being restored by EtcdRestore cluster-a/other", locked: true,
			sts: "old-sts", pvcs: 1},
		{name: "prepare: a stale lock is taken over", setup: func(f *phaseFixture) {
			f.cluster.Annotations = map[string]string{kubermaticv1.AnnotationActiveRestore: "cluster-a/gone"}
		}, phase: kubermaticv1.RestorePhaseStarted, reason: "Started", says: "verified", paused: true, locked: true,
			sts: "old-sts", pvcs: 1},
		{name: "prepare: not a backup name", setup: func(f *phaseFixture) { f.rs.Spec.BackupName = "yesterday" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "BackupNotFound", says: "not a backup name", sts: "old-sts",
			pvcs: 1},
		{name: "prepare: backup not in the bucket",
			setup: func(f *phaseFixture) { f.rs.Spec.BackupName = "daily-2020-01-01T00:00:00" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "BackupNotFound", says: "does not exist in destination",
			sts: "old-sts", pvcs: 1},
		{name: "prepare: corrupt backup", setup: func(f *phaseFixture) {
			key, _ := ObjectKeyOf(f.rs)
			storeCorrupt(f.t, f.s3, key)
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "BackupCorrupt", says: "failed verification", sts: "old-sts",
			pvcs: 1},
		{name: "prepare: a point-in-time target that is no time", setup: func(f *phaseFixture) {
			f.rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreTo: "yesterday at noon"}
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "TargetNotRestorable", says: "neither an RFC 3339 time",
			sts: "old-sts", pvcs: 1},
		{name: "prepare: a point in time of a config without a journal", setup: func(f *phaseFixture) {
			f.rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreTo: "revision:42"}
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "TargetNotRestorable",
			says: "not restorable to a point in time: no full backup anchors the journal yet", sts: "old-sts", pvcs: 1},
		{name: "prepare: destination not configured", setup: func(f *phaseFixture) { f.rs.Spec.Destination = "nope" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "DestinationNotFound", says: "nope", sts: "old-sts", pvcs: 1},
		{name: "prepare: no StatefulSet", setup: func(f *phaseFixture) { f.sts = nil },
			phase: kubermaticv1.RestorePhaseFailed, reason: "StatefulSetNotFound", says: "no StatefulSet", pvcs: 1},
		{name: "prepare: the member pods' credentials refused", setup: func(f *phaseFixture) { f.readOnly("stranger") },
			phase: kubermaticv1.RestorePhaseFailed, reason: "CredentialsRefused", says: "Nothing was changed", sts: "old-sts",
			pvcs: 1},
		// A missing bucket is the destination's configuration error, as the uploader, the
		// pruner and the drill say: the restore fails at once, not at its timeout.
		{name: "prepare: the destination's bucket does not exist",
			setup: func(f *phaseFixture) { f.bucket = "no-such-bucket" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "BucketNotFound",
			says: `bucket "no-such-bucket" of destination "s3" does not exist`, sts: "old-sts", pvcs: 1},

		// teardown, from Started
		{name: "teardown: saved, deleted, rebuilt", setup: func(f *phaseFixture) { f.started() },
			phase: kubermaticv1.RestorePhaseStsRebuilding, reason: "StsRebuilding", says: "recreated with the restore step",
			paused: true, locked: true, sts: "created", passes: 2},
		{name: "teardown: waits for the pods", setup: func(f *phaseFixture) {
			f.started()
			f.pods = []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "etcd-0",
				Labels: map[string]string{EtcdLabel: EtcdLabelValue}}}}
		}, phase: kubermaticv1.RestorePhaseStarted, says: "waiting for 1 pods to be deleted", paused: true, locked: true,
			passes: 2},
		{name: "teardown: the lock was taken by another", setup: func(f *phaseFixture) {
			f.started()
			f.cluster.Annotations[kubermaticv1.AnnotationActiveRestore] = "cluster-a/other"
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "LockLost", says: "stays paused", paused: true, locked: true,
			sts: "old-sts", pvcs: 1},
		{name: "teardown: the cluster was deleted", setup: func(f *phaseFixture) { f.started(); f.cluster.Name = "b" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "ClusterNotFound", says: "deleted during the restore",
			sts: "old-sts", pvcs: 1},
		{name: "teardown: the verified key is not the spec's",
			setup: func(f *phaseFixture) { f.started(); f.rs.Status.ObjectKey = "victim/key" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "StateMismatch", says: "Nothing was deleted", sts: "old-sts",
			pvcs: 1},
		{name: "teardown: the StatefulSet is gone before it was saved",
			setup: func(f *phaseFixture) { f.started(); f.sts = nil },
			phase: kubermaticv1.RestorePhaseFailed, reason: "StatefulSetNotFound", says: "Nothing was deleted", pvcs: 1},
		{name: "teardown: a saved spec that is not the restore's", setup: func(f *phaseFixture) {
			f.started()
			f.extra = append(f.extra, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a",
				Name: SavedName(f.rs)}, Data: map[string]string{SavedSpecKey: "{}"}})
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "SavedSpecNotOwned", says: "does not rebuild from it",
			paused: true, sts: "old-sts", pvcs: 1},
		{name: "teardown: credentials refused before anything is deleted",
			setup: func(f *phaseFixture) { f.started(); f.readOnly("stranger") },
			phase: kubermaticv1.RestorePhaseFailed, reason: "CredentialsRefused", says: "Nothing was deleted", sts: "old-sts",
			pvcs: 1},
		{name: "teardown: the bucket is gone before anything is deleted",
			setup: func(f *phaseFixture) { f.started(); f.bucket = "no-such-bucket" },
			phase: kubermaticv1.RestorePhaseFailed, reason: "BucketNotFound", says: "Nothing was deleted", sts: "old-sts",
			pvcs: 1},

		// A recorded phase is never a shortcut past prepare's checks: without the restorer's
		// verification on the cluster, a teardown or rebuild fails and touches nothing.
		{name: "teardown: a forged phase for another namespace's cluster", setup: func(f *phaseFixture) {
			f.forged()
			f.cluster.Status.NamespaceName = "cluster-victim"
		}, phase: kubermaticv1.RestorePhaseFailed, reason: kubermaticv1.ReasonClusterNamespaceMismatch,
			says: "Nothing was changed", sts: "old-sts", pvcs: 1},
		{name: "teardown: a forged phase for its own cluster", setup: func(f *phaseFixture) { f.forged() },
			phase: kubermaticv1.RestorePhaseFailed, reason: "NotVerified", says: "holds no verification", sts: "old-sts",
			pvcs: 1},
		{name: "teardown: a forged phase leaves a cluster its admin paused paused", setup: func(f *phaseFixture) {
			f.forged()
			f.cluster.Spec.Pause = true
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "NotVerified", says: "Nothing was changed", paused: true,
			sts: "old-sts", pvcs: 1},
		{name: "teardown: a forged phase while prepare holds the lock", setup: func(f *phaseFixture) {
			f.forged()
			f.cluster.Annotations = map[string]string{kubermaticv1.AnnotationActiveRestore: Lock(f.rs)}
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "NotVerified", says: "not paused and is unlocked",
			sts: "old-sts", pvcs: 1},
		{name: "teardown: another restore's verification", setup: func(f *phaseFixture) {
			f.started()
			f.cluster.Annotations[kubermaticv1.AnnotationRestoreVerified] = verificationJSON(f.t, Verification{
				UID: "other-uid", Restore: "cluster-a/other", Destination: "s3", ObjectKey: f.rs.Status.ObjectKey,
				SHA256: f.sha})
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "NotVerified", says: "holds no verification", paused: true,
			sts: "old-sts", pvcs: 1},
		{name: "teardown: the recorded sha256 is not the verified one", setup: func(f *phaseFixture) {
			f.started()
			f.rs.Status.SHA256 = strings.Repeat("0", 64)
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "StateMismatch", says: "Nothing was deleted", sts: "old-sts",
			pvcs: 1},
		{name: "teardown: an unreachable store, past the timeout, before anything is deleted",
			setup: func(f *phaseFixture) {
				f.started()
				f.s3.Close()
				f.now = f.now.Add(2 * time.Hour)
			}, phase: kubermaticv1.RestorePhaseFailed, reason: "Timeout", says: "Nothing was deleted", sts: "old-sts",
			pvcs: 1},
		{name: "rebuild: a forged phase", setup: func(f *phaseFixture) {
			f.rebuilding()
			f.cluster.Annotations = nil
			f.cluster.Spec.Pause = false
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "NotVerified", says: "Nothing was changed",
			sts: "rebuilt-sts"},

		// rebuild, from StsRebuilding
		{name: "rebuild: etcd whole again",
			setup: func(f *phaseFixture) { f.rebuilding(); f.etcd = etcdtest.Start(f.t).Endpoint },
			phase: kubermaticv1.RestorePhaseCompleted, reason: "Completed", says: "restored from backup", sts: "rebuilt-sts"},
		{name: "rebuild: waits for ready pods",
			setup: func(f *phaseFixture) { f.rebuilding(); f.sts.Status.ReadyReplicas = 0 },
			phase: kubermaticv1.RestorePhaseStsRebuilding, says: "0 of 1 etcd pods ready", paused: true, locked: true,
			sts: "rebuilt-sts"},
		{name: "rebuild: reports the members restored", setup: func(f *phaseFixture) {
			f.rebuilding()
			f.sts.Status.ReadyReplicas = 0
			f.pods = []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "etcd-0",
				Labels: map[string]string{EtcdLabel: EtcdLabelValue}},
				Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: StepContainer,
					State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}}}}}
		}, phase: kubermaticv1.RestorePhaseStsRebuilding, says: "members restored 1/1; waiting for 0 of 1 etcd pods ready",
			paused: true, locked: true, sts: "rebuilt-sts"},
		{name: "rebuild: names the members still restoring", setup: func(f *phaseFixture) {
			f.rebuilding()
			f.sts.Status.ReadyReplicas = 0
			f.pods = []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "etcd-0",
				Labels: map[string]string{EtcdLabel: EtcdLabelValue}},
				Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: StepContainer,
					State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}}}
		}, phase: kubermaticv1.RestorePhaseStsRebuilding, says: "members restored 0/1 (restore step running in etcd-0)",
			paused: true, locked: true, sts: "rebuilt-sts"},
		{name: "rebuild: times out", setup: func(f *phaseFixture) {
			f.rebuilding()
			f.sts.Status.ReadyReplicas = 0
			f.now = f.now.Add(2 * time.Hour)
		}, phase: kubermaticv1.RestorePhaseFailed, reason: "RebuildTimeout", says: "stays paused", paused: true,
			sts: "rebuilt-sts"},
		{name: "rebuild: the restore step failed",
			setup: func(f *phaseFixture) { f.rebuilding(); f.pods = []corev1.Pod{failingPod} },
			phase: kubermaticv1.RestorePhaseFailed, reason: "RestoreStepFailed", says: "sha256 differs", paused: true,
			sts: "rebuilt-sts"},
		{name: "rebuild: the saved spec was deleted", setup: func(f *phaseFixture) { f.rebuilding(); f.saved = false },
			phase: kubermaticv1.RestorePhaseFailed, reason: "SavedSpecLost", says: "was deleted", paused: true,
			sts: "rebuilt-sts"},
		{name: "rebuild: the rebuilt StatefulSet was deleted", setup: func(f *phaseFixture) { f.rebuilding(); f.sts = nil },
			phase: kubermaticv1.RestorePhaseStarted, reason: "StatefulSetGone", says: "rebuilding it again", paused: true,
			locked: true},

		// finished
		{name: "completed: nothing to do", setup: func(f *phaseFixture) {
			f.rs.Finalizers = []string{kubermaticv1.RestoreFinalizer}
			f.rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseCompleted, Message: "done",
				Progress: "done: members restored 1/1"}
		}, phase: kubermaticv1.RestorePhaseCompleted, says: "done", sts: "old-sts", pvcs: 1},
		{name: "failed: nothing to do", setup: func(f *phaseFixture) {
			f.rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseFailed, Message: "earlier"}
		}, phase: kubermaticv1.RestorePhaseFailed, says: "earlier", sts: "old-sts", pvcs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPhaseFixture(t)
			tc.setup(f)
			r, rec := f.build()
			for range max(tc.passes, 1) {
				reconcile(t, r, f.rs)
			}
			got := observe(t, r, f.rs)
			if got.phase != tc.phase || !strings.Contains(got.message, tc.says) {
				t.Fatalf("phase %q, message %q; want %q saying %q", got.phase, got.message, tc.phase, tc.says)
			}
			events := strings.Join(drain(rec), "\n")
			if tc.reason != "" && !strings.Contains(events, " "+tc.reason+" ") {
				t.Errorf("events %q, want one of reason %s", events, tc.reason)
			}
			if tc.reason == "" && events != "" {
				t.Errorf("events %q, want none", events)
			}
			if got.paused != tc.paused || got.locked != tc.locked {
				t.Errorf("cluster paused=%v locked=%v, want paused=%v locked=%v", got.paused, got.locked, tc.paused, tc.locked)
			}
			if want := progressOf[tc.phase]; want != "" && !strings.HasPrefix(got.progress, want) {
				t.Errorf("progress %q, want it to start %q", got.progress, want)
			}
			if got.sts != tc.sts || got.pvcs != tc.pvcs {
				t.Errorf("StatefulSet %q and %d PVCs, want %q and %d", got.sts, got.pvcs, tc.sts, tc.pvcs)
			}
		})
	}
}

// The pods' credentials are proven against the bucket once before the teardown deletes
// anything; the polls while the old pods go do not ask the bucket again.
func TestTeardownProvesCredentialsOnce(t *testing.T) {
	f := newPhaseFixture(t)
	f.started()
	f.pods = []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "etcd-0",
		Labels: map[string]string{EtcdLabel: EtcdLabelValue}}}}
	r, _ := f.build()
	before := f.s3.Heads()
	for range 4 {
		reconcile(t, r, f.rs)
	}
	if got := observe(t, r, f.rs); got.phase != kubermaticv1.RestorePhaseStarted || !strings.Contains(got.message,
		"pods to be deleted") {
		t.Fatalf("phase %s: %s; want the teardown waiting for the pods", got.phase, got.message)
	}
	if n := f.s3.Heads() - before; n != 1 {
		t.Fatalf("%d metadata reads of the backup over 4 teardown polls, want 1 (before anything was deleted)", n)
	}
}

// While members restore, the progress says how much of the backup each one's restore step has
// downloaded, read from the last progress line of its log; a member whose step has not
// started is not asked, and one whose log cannot be read is left out.
func TestRebuildProgressShowsEachMembersDownload(t *testing.T) {
	f := newPhaseFixture(t)
	f.rebuilding()
	f.sts.Spec.Replicas = ptr.To(int32(3))
	f.sts.Status.ReadyReplicas = 0
	pod := func(name string, state corev1.ContainerState) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: name,
			Labels: map[string]string{EtcdLabel: EtcdLabelValue}}}
		if state != (corev1.ContainerState{}) {
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: StepContainer, State: state}}
		}
		return p
	}
	f.pods = []corev1.Pod{
		pod("etcd-0", corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}),
		pod("etcd-1", corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}),
		pod("etcd-2", corev1.ContainerState{}),
	}
	r, _ := f.build()
	logs := map[string]string{
		"etcd-0": `{"msg":"fetched","bytes_done":307200,"bytes_total":307200}` + "\n" +
			`{"msg":"member restored","restored":true}`,
		"etcd-1": `{"msg":"fetching","bytes_done":92160,"bytes_total":307200}`,
	}
	var asked []string
	r.Logs = func(_ context.Context, ns, pod, container string) ([]byte, error) {
		asked = append(asked, ns+"/"+pod+"/"+container)
		if l, ok := logs[pod]; ok {
			return []byte(l), nil
		}
		return nil, errors.New("no log")
	}
	reconcile(t, r, f.rs)
	want := "members restored 1/3; fetched etcd-0 300 of 300 KiB (100%), etcd-1 90 of 300 KiB (30%)"
	if got := observe(t, r, f.rs); got.progress != want || !strings.HasPrefix(got.message, want) {
		t.Fatalf("progress %q, message %q; want progress %q", got.progress, got.message, want)
	}
	if wantAsked := []string{"cluster-a/etcd-0/" + StepContainer,
		"cluster-a/etcd-1/" + StepContainer}; !slices.Equal(asked, wantAsked) {
		t.Errorf("logs read: %v, want %v", asked, wantAsked)
	}
	// A log that cannot be read leaves that member out; the restore goes on.
	delete(logs, "etcd-1")
	reconcile(t, r, f.rs)
	if got := observe(t, r,
		f.rs); got.progress != "members restored 1/3; fetched etcd-0 300 of 300 KiB (100%)" ||
		got.phase != kubermaticv1.RestorePhaseStsRebuilding {
		t.Fatalf("phase %s, progress %q with etcd-1's log unreadable", got.phase, got.progress)
	}
}
