package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/restorer/restore"
	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// startEtcdCluster adds a Cluster with a 3-member etcd StatefulSet whose kubelet runs until the
// test ends, and returns once etcd answers with 3 members.
func startEtcdCluster(t *testing.T, ctx context.Context, name string,
	extraSpec map[string]any) (*sandbox.Kubelet, *clientv3.Client) {
	t.Helper()
	k, err := env.StartEtcdCluster(ctx, name, 3, extraSpec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k, etcdClient(t, k)
}

func etcdClient(t *testing.T, k *sandbox.Kubelet) *clientv3.Client {
	t.Helper()
	cli, err := k.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// dump returns every key and value in etcd.
func dump(t *testing.T, ctx context.Context, cli *clientv3.Client) map[string]string {
	t.Helper()
	return keyValues(t, ctx, cli, "")
}

// backUp takes a one-time backup of the cluster and returns its status entry.
func backUp(t *testing.T, ctx context.Context, cluster string) kubermaticv1.BackupStatus {
	t.Helper()
	cfg := newConfig(t, ctx, cluster, "before-restore", "", sandbox.Destination, 5)
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the one-time backup",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) == 1
		})
	return entries(done, kubermaticv1.PhaseCompleted)[0]
}

func newRestore(t *testing.T, ctx context.Context, cluster, name, backup string,
	mutate ...func(*kubermaticv1.EtcdRestore)) *kubermaticv1.EtcdRestore {
	t.Helper()
	rs := &kubermaticv1.EtcdRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: name},
		Spec: kubermaticv1.EtcdRestoreSpec{
			Cluster:     corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster", Name: cluster},
			BackupName:  backup,
			Destination: sandbox.Destination,
		},
	}
	for _, f := range mutate {
		f(rs)
	}
	if err := env.Client.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(ctx), rs) })
	return rs
}

func waitRestore(t *testing.T, ctx context.Context, rs *kubermaticv1.EtcdRestore, timeout time.Duration,
	phases ...string) *kubermaticv1.EtcdRestore {
	t.Helper()
	var got kubermaticv1.EtcdRestore
	err := sandbox.Poll(ctx, timeout, 100*time.Millisecond, func() (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs), &got); err != nil {
			return false, err
		}
		return slices.Contains(phases, got.Status.Phase), nil
	})
	if err != nil {
		t.Fatalf("restore %s/%s: waiting for %v: %v\nstatus: %+v", rs.Namespace, rs.Name, phases, err, got.Status)
	}
	return &got
}

// completed waits for rs to end and requires it Completed; what names it in the failure.
func completed(t *testing.T, ctx context.Context, rs *kubermaticv1.EtcdRestore, what string) *kubermaticv1.EtcdRestore {
	t.Helper()
	done := waitRestore(t, ctx, rs, 3*time.Minute, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
	if done.Status.Phase != kubermaticv1.RestorePhaseCompleted {
		t.Fatalf("%s ended %s: %s", what, done.Status.Phase, done.Status.Message)
	}
	return done
}

// restoredKeys waits until the cluster's etcd answers with its 3 members and returns every
// key and value it holds.
func restoredKeys(t *testing.T, ctx context.Context, k *sandbox.Kubelet) map[string]string {
	t.Helper()
	if err := k.WaitMembers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	return dump(t, ctx, etcdClient(t, k))
}

// watchPhases records every phase the restores of namespace pass through, in order.
func watchPhases(t *testing.T, ctx context.Context, ns string) func(name string) []string {
	t.Helper()
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	wc, err := client.NewWithWatch(env.API.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &kubermaticv1.EtcdRestoreList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	var mu sync.Mutex
	seen := map[string][]string{}
	go func() {
		for ev := range w.ResultChan() {
			rs, ok := ev.Object.(*kubermaticv1.EtcdRestore)
			if !ok {
				continue
			}
			mu.Lock()
			if p := seen[rs.Name]; rs.Status.Phase != "" && (len(p) == 0 || p[len(p)-1] != rs.Status.Phase) {
				seen[rs.Name] = append(p, rs.Status.Phase)
			}
			mu.Unlock()
		}
	}()
	// The watch may trail a Get: wait (briefly) until it has delivered a final phase.
	return func(name string) []string {
		var out []string
		_ = sandbox.Poll(ctx, 10*time.Second, 50*time.Millisecond, func() (bool, error) {
			mu.Lock()
			out = slices.Clone(seen[name])
			mu.Unlock()
			return len(out) > 0 && (out[len(out)-1] == kubermaticv1.RestorePhaseCompleted ||
				out[len(out)-1] == kubermaticv1.RestorePhaseFailed), nil
		})
		return out
	}
}

// clusterObject returns the Cluster as stored, without what every write changes.
func clusterObject(t *testing.T, ctx context.Context, name string) map[string]any {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(kubermaticv1.GroupVersion.WithKind("Cluster"))
	if err := env.Client.Get(ctx, types.NamespacedName{Name: name}, u); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"resourceVersion", "generation", "managedFields"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	return u.Object
}

// The whole restore: write keys, back up, change and delete keys, restore: etcd holds exactly
// the backup's keys again, rebuilt as 3 members by the real restore step while the cluster was
// paused; nothing else of the Cluster changed; the phases came in order.
func TestRestoreRebuildsEtcdFromBackup(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "restore-ok"
	k, cli := startEtcdCluster(t, ctx, cluster, map[string]any{
		"version": "1.33.4", "humanReadableName": "restore me",
		"cloud": map[string]any{"dc": "do-fra1", "digitalocean": map[string]any{}},
	})
	for i := range 200 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/things/k%03d", i), fmt.Sprintf("v%03d-original", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/registry/big", strings.Repeat("x", 64<<10)); err != nil {
		t.Fatal(err)
	}
	b := backUp(t, ctx, cluster)
	want := dump(t, ctx, cli)
	if len(want) != 201 {
		t.Fatalf("etcd holds %d keys before the restore, want 201", len(want))
	}
	// Change and delete keys after the backup.
	if _, err := cli.Put(ctx, "/registry/things/k000", "changed"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/registry/things/k1", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/after-backup", "new"); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, ctx, cli); maps.Equal(got, want) {
		t.Fatal("the changes after the backup did not change etcd")
	}
	before := clusterObject(t, ctx, cluster)
	var oldSts appsv1.StatefulSet
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "cluster-" + cluster, Name: sandbox.EtcdStatefulSet},
		&oldSts); err != nil {
		t.Fatal(err)
	}
	phases := watchPhases(t, ctx, "cluster-"+cluster)

	// Each member's restore step stops once it has logged its download, as a slow download
	// would hold it: the progress then says what each member fetched, read from the step's
	// log through the API server (pods/log), in status and in kubectl's PROGRESS column.
	k.HoldSteps()
	rs := newRestore(t, ctx, cluster, "restore", b.BackupName)
	fetched := regexp.MustCompile(
		`^members restored 0/3; fetched etcd-0 (\d+) of (\d+) KiB \(100%\), ` +
			`etcd-1 \d+ of \d+ KiB \(100%\), etcd-2 \d+ of \d+ KiB \(100%\)$`)
	var held kubermaticv1.EtcdRestore
	err := sandbox.Poll(ctx, 2*time.Minute, 100*time.Millisecond, func() (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs), &held); err != nil {
			return false, err
		}
		return fetched.MatchString(held.Status.Progress), fmt.Errorf("%d steps held, phase %s, progress %q", k.Held(),
			held.Status.Phase, held.Status.Progress)
	})
	if err != nil {
		k.ReleaseSteps()
		t.Fatalf("the progress never showed each member's download: %v", err)
	}
	// The members downloaded through a presigned URL of exactly this backup: the destination's
	// keys never reached the cluster's namespace.
	var podSecret corev1.Secret
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: restore.SavedName(rs)},
		&podSecret); err != nil {
		k.ReleaseSteps()
		t.Fatal(err)
	}
	if u := string(podSecret.Data[restore.URLEnv]); !strings.Contains(u, b.ObjectKey+"?") ||
		podSecret.Data[kubermaticv1.SecretSecretAccessKey] != nil || strings.Contains(u, env.S3.SecretKey) {
		k.ReleaseSteps()
		t.Fatalf("the member pods' Secret holds keys %v; want only a presigned URL of %s", slices.Collect(maps.Keys(
			podSecret.Data)), b.ObjectKey)
	}
	info, err := env.S3.Client().StatObject(ctx, sandbox.Bucket, b.ObjectKey, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m := fetched.FindStringSubmatch(held.Status.Progress); m[1] != m[2] || m[2] != strconv.FormatInt(info.Size>>10,
		10) {
		t.Errorf("progress %q: etcd-0 fetched %s of %s KiB; the backup has %d KiB", held.Status.Progress, m[1], m[2],
			info.Size>>10)
	}
	if out := mustKubectl(t, nil, "-n", rs.Namespace, "get", "etcdrestores", rs.Name); !strings.Contains(out,
		"fetched etcd-0") {
		t.Errorf("kubectl get etcdrestores while the members restore:\n%s", out)
	}
	k.ReleaseSteps()
	done := completed(t, ctx, rs, fmt.Sprintf("the restore (kubelet: %v)", k.Err()))
	t.Logf("restore: %s", done.Status.Message)
	// This project's CRD keeps the whole status: the annotation KKP's schema needs is not written.
	if v, ok := done.Annotations[kubermaticv1.AnnotationRestoreStatus]; ok {
		t.Errorf("annotation %s = %s on a CRD that keeps the status", kubermaticv1.AnnotationRestoreStatus, v)
	}
	if done.Status.ObjectKey != b.ObjectKey || done.Status.SHA256 != b.SHA256 || done.Status.RestoreTime.IsZero() {
		t.Errorf("status names object %s (sha256 %s, restored %v); the backup is %s (sha256 %s)",
			done.Status.ObjectKey, done.Status.SHA256, done.Status.RestoreTime, b.ObjectKey, b.SHA256)
	}
	// kubectl shows how far it got: the Progress column.
	if out := mustKubectl(t, nil, "-n", rs.Namespace, "get", "etcdrestores", rs.Name); !strings.Contains(out,
		"PROGRESS") || !strings.Contains(out, "done: members restored 3/3") {
		t.Errorf("kubectl get etcdrestores:\n%s\nwant a PROGRESS column saying done: members restored 3/3", out)
	}

	// etcd: exactly the backup's keys and values, 3 members, each restored by the real step
	// while the cluster was paused.
	if got := restoredKeys(t, ctx, k); !maps.Equal(got, want) {
		t.Fatalf("restored etcd holds %d keys; want the backup's %d (k000=%q, after-backup present: %v)",
			len(got), len(want), got["/registry/things/k000"], got["/registry/after-backup"] != "")
	}
	steps := k.Steps()
	var pods []string
	for _, s := range steps {
		pods = append(pods, s.Pod)
		if s.ExitCode != 0 || !s.ClusterPaused {
			t.Errorf("restore step in %s: exit %d, cluster paused: %v\n%s", s.Pod, s.ExitCode, s.ClusterPaused, s.Log)
		}
	}
	slices.Sort(pods)
	if !slices.Equal(pods, []string{"etcd-0", "etcd-1", "etcd-2"}) {
		t.Errorf("restore step ran for %v, want once for each of etcd-0, etcd-1, etcd-2", pods)
	}

	// The Cluster: unpaused, unlocked, rolled; everything else as it was.
	after := clusterObject(t, ctx, cluster)
	ann, _, _ := unstructured.NestedStringMap(after, "metadata", "annotations")
	if ann[kubermaticv1.AnnotationLastRestart] == "" || ann[kubermaticv1.AnnotationActiveRestore] != "" ||
		ann[kubermaticv1.AnnotationEtcdTimeline] == "" {
		t.Errorf("cluster annotations after the restore: %v; want last-restart and etcd-timeline set, no lock", ann)
	}
	if paused, _, _ := unstructured.NestedBool(after, "spec", "pause"); paused {
		t.Error("cluster is still paused")
	}
	unstructured.RemoveNestedField(after, "metadata", "annotations", kubermaticv1.AnnotationLastRestart)
	unstructured.RemoveNestedField(after, "metadata", "annotations", kubermaticv1.AnnotationEtcdTimeline)
	unstructured.RemoveNestedField(after, "spec", "pause")
	if diff := diffObjects(before, after); diff != "" {
		t.Errorf("the restore changed other fields of the Cluster: %s", diff)
	}

	if got, want := phases(rs.Name), []string{kubermaticv1.RestorePhaseStarted, kubermaticv1.RestorePhaseStsRebuilding,
		kubermaticv1.RestorePhaseCompleted}; !slices.Equal(got, want) {
		t.Errorf("phases observed: %v, want %v", got, want)
	}
	for _, reason := range []string{"Started", "StsRebuilding", "Completed"} {
		waitEvent(t, ctx, rs.Namespace, rs.Name, corev1.EventTypeNormal, reason)
	}

	// The StatefulSet has its own spec back (a member replaced later must not restore
	// again), is a new object, and nothing of the restore is left behind.
	var sts appsv1.StatefulSet
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: sandbox.EtcdStatefulSet},
		&sts); err != nil {
		t.Fatal(err)
	}
	if sts.UID == oldSts.UID || len(sts.Spec.Template.Spec.InitContainers) != 0 ||
		sts.Annotations[restore.AnnotationRestoreID] != "" {
		t.Errorf("statefulset after the restore: uid %s (old %s), init containers %v, annotations %v",
			sts.UID, oldSts.UID, sts.Spec.Template.Spec.InitContainers, sts.Annotations)
	}
	for _, obj := range []client.Object{&corev1.ConfigMap{}, &corev1.Secret{}} {
		err := env.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: restore.SavedName(rs)}, obj)
		if !apierrors.IsNotFound(err) {
			t.Errorf("%T %s left after the restore: %v", obj, restore.SavedName(rs), err)
		}
	}
	// The finalizer goes right after the phase (status and metadata are written apart).
	err = sandbox.Poll(ctx, 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		var got kubermaticv1.EtcdRestore
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs), &got); err != nil {
			return false, err
		}
		return len(got.Finalizers) == 0, fmt.Errorf("finalizers %v", got.Finalizers)
	})
	if err != nil {
		t.Errorf("a completed restore keeps its finalizer: %v", err)
	}
	// Subscribers saw the restore on the bus.
	evs := statusEvents(t, ctx, func(ev *etcdbackupv1.StatusEvent) bool {
		return ev.GetOperation() == etcdbackupv1.Operation_OPERATION_RESTORE && ev.GetConfig().GetUid() == string(rs.UID)
	})
	if len(evs) == 0 || evs[len(evs)-1].GetPhase() != etcdbackupv1.Phase_PHASE_COMPLETED {
		t.Errorf("restore status events on the bus: %v", evs)
	}
}

func diffObjects(a, b map[string]any) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if fmt.Sprint(a[k]) != fmt.Sprint(b[k]) {
			out = append(out, fmt.Sprintf("%s: %v → %v", k, a[k], b[k]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s added: %v", k, b[k]))
		}
	}
	return strings.Join(out, "; ")
}

// A corrupted backup (one byte flipped in the bucket) and a backup that does not exist fail the
// restore before anything is touched; a cluster without etcd-launcher waits in
// EtcdLauncherNotEnabled, persisted, and goes on once it is enabled.
func TestRestoreRefusesBadBackupsBeforeTouchingTheCluster(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "restore-bad"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	if _, err := cli.Put(ctx, "/registry/k", "v"); err != nil {
		t.Fatal(err)
	}
	b := backUp(t, ctx, cluster)
	flipByte(t, ctx, b.ObjectKey)

	ns := "cluster-" + cluster
	type state struct {
		cluster map[string]any
		sts     string
		pvcs    []string
	}
	snapshot := func() state {
		var s state
		s.cluster = clusterObject(t, ctx, cluster)
		var sts appsv1.StatefulSet
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: sandbox.EtcdStatefulSet}, &sts); err != nil {
			t.Fatal(err)
		}
		s.sts = string(sts.UID) + "@" + sts.ResourceVersion
		var pvcs corev1.PersistentVolumeClaimList
		if err := env.Client.List(ctx, &pvcs, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, p := range pvcs.Items {
			s.pvcs = append(s.pvcs, string(p.UID)+"@"+p.ResourceVersion)
		}
		slices.Sort(s.pvcs)
		return s
	}
	before := snapshot()
	if len(before.pvcs) != 3 {
		t.Fatalf("the cluster has %d PVCs, want 3", len(before.pvcs))
	}
	untouched := func(what string) {
		t.Helper()
		now := snapshot()
		if diff := diffObjects(before.cluster, now.cluster); diff != "" {
			t.Errorf("%s changed the Cluster: %s", what, diff)
		}
		if now.sts != before.sts || !slices.Equal(now.pvcs, before.pvcs) {
			t.Errorf("%s touched the StatefulSet or PVCs: %s %v, before %s %v", what, now.sts, now.pvcs, before.sts, before.pvcs)
		}
		if n := len(k.Steps()); n != 0 {
			t.Errorf("%s ran the restore step %d times", what, n)
		}
	}

	for _, tc := range []struct{ name, backup, reason, says string }{
		{"corrupt", b.BackupName, "BackupCorrupt", "sha256"},
		{"missing", "before-restore-2020-01-01T00:00:00", "BackupNotFound", "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRestore(t, ctx, cluster, tc.name, tc.backup)
			done := waitRestore(t, ctx, rs, 60*time.Second, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
			if done.Status.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(done.Status.Message,
				tc.says) || !strings.Contains(done.Status.Message, "Nothing was changed") {
				t.Errorf("restore of a %s backup: %s: %s", tc.name, done.Status.Phase, done.Status.Message)
			}
			waitEvent(t, ctx, ns, rs.Name, corev1.EventTypeWarning, tc.reason)
			untouched("a restore of a " + tc.name + " backup")
			if err := env.Client.Delete(ctx, rs); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("etcd-launcher not enabled", func(t *testing.T) {
		setLauncher := func(on bool) {
			patch := fmt.Sprintf(`{"spec":{"features":{%q:%t}}}`, kubermaticv1.FeatureEtcdLauncher, on)
			if err := env.Client.Patch(ctx, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: cluster}},
				client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
				t.Fatal(err)
			}
		}
		setLauncher(false)
		rs := newRestore(t, ctx, cluster, "launcher", "before-restore-2020-01-01T00:00:00")
		waitRestore(t, ctx, rs, 30*time.Second, kubermaticv1.RestorePhaseEtcdLauncherNotEnabled)
		waitEvent(t, ctx, ns, rs.Name, corev1.EventTypeWarning, "EtcdLauncherNotEnabled")
		// The phase is in the API, not in a restorer's memory, and stays while it waits.
		var persisted kubermaticv1.EtcdRestore
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs),
			&persisted); err != nil || persisted.Status.Phase != kubermaticv1.RestorePhaseEtcdLauncherNotEnabled {
			t.Fatalf("phase read back: %q, %v", persisted.Status.Phase, err)
		}
		// Deleted before etcd was touched, a restore is cancelled and goes at once.
		cancelled := newRestore(t, ctx, cluster, "cancelled", b.BackupName)
		waitRestore(t, ctx, cancelled, 30*time.Second, kubermaticv1.RestorePhaseEtcdLauncherNotEnabled)
		if err := env.Client.Delete(ctx, cancelled); err != nil {
			t.Fatal(err)
		}
		err := sandbox.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(cancelled), &kubermaticv1.EtcdRestore{})
			return apierrors.IsNotFound(err), err
		})
		if err != nil {
			t.Fatalf("deleted restore still there: %v", err)
		}
		waitEvent(t, ctx, ns, cancelled.Name, corev1.EventTypeNormal, "Cancelled")
		setLauncher(true)
		done := waitRestore(t, ctx, rs, 30*time.Second, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
		if done.Status.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(done.Status.Message, "does not exist") {
			t.Errorf("once enabled, the restore went on to %s: %s", done.Status.Phase, done.Status.Message)
		}
		untouched("a restore waiting for etcd-launcher")
	})
}

// flipByte flips one byte in the middle of a stored backup, keeping its metadata.
func flipByte(t *testing.T, ctx context.Context, key string) {
	t.Helper()
	s3 := env.S3.Client()
	info, err := s3.StatObject(ctx, sandbox.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s3.GetObject(ctx, sandbox.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		t.Fatal(err)
	}
	body[len(body)/2] ^= 0x01
	if _, err := s3.PutObject(ctx, sandbox.Bucket, key, bytes.NewReader(body), int64(len(body)),
		minio.PutObjectOptions{UserMetadata: info.UserMetadata}); err != nil {
		t.Fatal(err)
	}
}

// While a cluster is locked for a restore no backup of it is taken: the scheduler blocks
// its configs (ClusterRestoring), the manual trigger refuses, and a request queued just before
// the lock fails in the snapshotter instead of capturing etcd mid-rebuild.
func TestNoBackupsWhileRestoring(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	const cluster = "restoring1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	lock := func(holder any) {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{
			kubermaticv1.AnnotationActiveRestore: holder}}})
		if err := env.Client.Patch(ctx, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: cluster}},
			client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
	}
	lock("cluster-" + cluster + "/in-progress")
	cfg := newConfig(t, ctx, cluster, "while-restoring", "@every 2s", "", 5)
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 30*time.Second, "condition ClusterRestoring",
		blockedBy(kubermaticv1.ReasonClusterRestoring))
	waitEvent(t, ctx, cfg.Namespace, cfg.Name, corev1.EventTypeNormal, kubermaticv1.ReasonClusterRestoring)
	if r := triggerWithProtobuf(t, cfg.Namespace, cfg.Name); r.GetBackupName() != "" || !strings.Contains(r.GetError(),
		"being restored") {
		t.Fatalf("manual trigger while restoring: %+v", r)
	}

	// A request queued just before the lock was taken.
	var current kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &current); err != nil {
		t.Fatal(err)
	}
	slot := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	name := backupname.Backup(cfg.Name, slot)
	req := &etcdbackupv1.BackupRequested{
		Config:        &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(current.UID)},
		Cluster:       cluster,
		BackupName:    name,
		JobName:       backupname.Job(cluster, cfg.Name, name),
		Destination:   sandbox.Destination,
		ObjectKey:     backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, name),
		ScheduledTime: timestamppb.New(slot),
		Trigger:       etcdbackupv1.Trigger_TRIGGER_MANUAL,
	}
	sched := jetStreamAs(t, bus.IdentityScheduler)
	if _, err := bus.Publish(ctx, sched, bus.SubjectBackupRequested, bus.MsgID(req), req); err != nil {
		t.Fatal(err)
	}
	// As the scheduler's queue does: the request, then the event that lists it.
	if err := bus.PublishStatus(ctx, sched, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SCHEDULER,
		etcdbackupv1.Phase_PHASE_RUNNING, "queued")); err != nil {
		t.Fatal(err)
	}
	failed := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 30*time.Second, "the queued backup failed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			e, ok := entry(c, name)
			return ok && e.BackupPhase == kubermaticv1.PhaseFailed
		})
	if e, _ := entry(failed, name); !strings.Contains(e.BackupMessage, "being restored") {
		t.Errorf("queued backup of a cluster being restored: %s", e.BackupMessage)
	}
	if n := len(entries(failed, kubermaticv1.PhaseCompleted)); n != 0 {
		t.Fatalf("%d backups completed while the cluster was locked", n)
	}

	unlocked := time.Now()
	lock(nil)
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "a backup after the restore", completedSince(unlocked))
}

// A restore whose step fails in the member pods (here: download credentials that S3 refuses)
// ends Failed with what state the cluster is in and what to do; the cluster stays paused and
// is unlocked, and doing what the message says (a new restore) brings etcd back.
func TestRestoreStepFailureIsReportedAndRecoverable(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "restore-retry"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	b := backUp(t, ctx, cluster)
	want := dump(t, ctx, cli)

	ns := "cluster-" + cluster
	var before appsv1.StatefulSet
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: sandbox.EtcdStatefulSet},
		&before); err != nil {
		t.Fatal(err)
	}

	// Credentials the store refuses, in the cluster's namespace as KKP means
	// backupDownloadCredentialsSecret: proven before anything is touched.
	const wrongKey = "not-the-secret-key-4711"
	creds := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "restore-retry-readonly"},
		Data: map[string][]byte{
			kubermaticv1.SecretAccessKeyID:     []byte(env.S3.AccessKey),
			kubermaticv1.SecretSecretAccessKey: []byte(wrongKey),
		},
	}
	if err := env.Client.Create(ctx, creds); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), creds) })
	rs := newRestore(t, ctx, cluster, "refused-credentials", b.BackupName, func(r *kubermaticv1.EtcdRestore) {
		r.Spec.BackupDownloadCredentialsSecret = creds.Name
	})
	done := waitRestore(t, ctx, rs, 2*time.Minute, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
	for _, says := range []string{"refused the member pods' credentials", "Nothing was changed"} {
		if done.Status.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(done.Status.Message, says) {
			t.Fatalf("restore with refused credentials: %s: %s\n(want it to say %q)", done.Status.Phase, done.Status.Message,
				says)
		}
	}
	ev := waitEvent(t, ctx, rs.Namespace, rs.Name, corev1.EventTypeWarning, "CredentialsRefused")
	if strings.Contains(done.Status.Message+ev.Note, wrongKey) {
		t.Fatal("the secret key reached the restore's status or Event")
	}
	assertUntouched(t, ctx, k, cluster, before.UID, "refused credentials")
	var c kubermaticv1.Cluster
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: restore.SavedName(rs)},
		&corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the copied credentials after the failure: %v, want deleted", err)
	}

	// A restore step that fails in every member pod (peer URLs etcd refuses) is reported with
	// where to look, and leaves the cluster paused and unlocked for a retry.
	peers := c.Annotations[kubermaticv1.AnnotationEtcdPeerURLs]
	setPeers := func(v string) {
		t.Helper()
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{
			kubermaticv1.AnnotationEtcdPeerURLs: v}}})
		if err := env.Client.Patch(ctx, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: cluster}},
			client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
	}
	setPeers("ftp://bad-peer:1,ftp://bad-peer:2,ftp://bad-peer:3")
	rs = newRestore(t, ctx, cluster, "failing-step", b.BackupName)
	done = waitRestore(t, ctx, rs, 2*time.Minute, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
	for _, says := range []string{"restore step failed in pod etcd-", "stays paused",
		"ConfigMap " + restore.SavedName(rs), "new EtcdRestore"} {
		if done.Status.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(done.Status.Message, says) {
			t.Fatalf("restore with a failing step: %s: %s\n(want it to say %q)", done.Status.Phase, done.Status.Message, says)
		}
	}
	waitEvent(t, ctx, rs.Namespace, rs.Name, corev1.EventTypeWarning, "RestoreStepFailed")
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	if !c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" {
		t.Fatalf("after a failed rebuild the cluster is paused=%v, locked by %q; want paused and unlocked", c.Spec.Pause,
			c.Annotations[kubermaticv1.AnnotationActiveRestore])
	}
	var saved corev1.ConfigMap
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: restore.SavedName(rs)},
		&saved); err != nil {
		t.Fatalf("the saved StatefulSet spec the message names: %v", err)
	}
	setPeers(peers)

	retry := newRestore(t, ctx, cluster, "retry", b.BackupName)
	done = completed(t, ctx, retry, "the retry")
	if got := restoredKeys(t, ctx, k); !maps.Equal(got, want) {
		t.Fatalf("after the retry etcd holds %d keys, want the backup's %d", len(got), len(want))
	}
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	// The cluster was paused when the retry began (the failed restore left it so): the retry
	// leaves it paused, and says so; the operator hands it back.
	if !c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" ||
		c.Annotations[kubermaticv1.AnnotationPausedBeforeRestore] != "" {
		t.Fatalf("after the retry the cluster is paused=%v with annotations %v; want paused (as it was when the retry "+
			"began), unlocked, no record left", c.Spec.Pause, c.Annotations)
	}
	if !strings.Contains(done.Status.Message, "left paused, as it was before the restore") {
		t.Fatalf("the retry's message %q does not say the cluster was left paused", done.Status.Message)
	}
}

// A restorer killed (-9) in the middle of a rebuild, and the EtcdRestore deleted meanwhile: a
// standby replica takes the lease over and finishes the restore from what the API holds, and
// only then lets the object go (etcd was already torn down: stopping would leave none).
func TestRestoreSurvivesRestorerKillAndDeletion(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "restore-kill"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	for i := range 50 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%02d", i), "before"); err != nil {
			t.Fatal(err)
		}
	}
	b := backUp(t, ctx, cluster)
	want := dump(t, ctx, cli)
	if _, err := cli.Put(ctx, "/registry/k00", "after"); err != nil {
		t.Fatal(err)
	}

	var leader *sandbox.Service
	for _, s := range env.ServicesOf("restorer") {
		if strings.Contains(s.LogTail(1000), "Successfully acquired lease") {
			leader = s
		}
	}
	if leader == nil {
		t.Fatal("no restorer replica holds the lease")
	}
	rs := newRestore(t, ctx, cluster, "killed-midway", b.BackupName)
	waitRestore(t, ctx, rs, 60*time.Second, kubermaticv1.RestorePhaseStsRebuilding)
	leader.Kill()
	if err := env.Client.Delete(ctx, rs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := env.StartService(context.Background(), "restorer"); err != nil {
			t.Errorf("replace the killed restorer: %v", err)
		}
	})
	// The standby takes the lease once the killed leader's expires (15 s), then rebuilds.
	waitEventWithin(t, ctx, env.Client, time.Minute, rs.Namespace, rs.Name, corev1.EventTypeWarning, "DeletionDeferred")
	waitEventWithin(t, ctx, env.Client, 2*time.Minute, rs.Namespace, rs.Name, corev1.EventTypeNormal, "Completed")
	err := sandbox.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs), &kubermaticv1.EtcdRestore{})
		return apierrors.IsNotFound(err), err
	})
	if err != nil {
		t.Fatalf("the deleted restore did not go once it finished: %v", err)
	}
	var c kubermaticv1.Cluster
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	if c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" {
		t.Errorf("after the restore the cluster is paused=%v, locked by %q", c.Spec.Pause,
			c.Annotations[kubermaticv1.AnnotationActiveRestore])
	}
	if got := restoredKeys(t, ctx, k); !maps.Equal(got, want) {
		t.Fatalf("etcd holds %d keys (k00=%q), want the backup's %d", len(got), got["/registry/k00"], len(want))
	}
	if n := len(k.Steps()); n != 3 {
		t.Errorf("the restore step ran %d times, want once per member", n)
	}
	took := false
	for _, s := range env.ServicesOf("restorer") {
		took = took || (s != leader && strings.Contains(s.LogTail(1000), "Successfully acquired lease"))
	}
	if !took {
		t.Error("no standby restorer took the lease over: who finished the restore?")
	}
}

// A cluster whose namespace holds no etcd StatefulSet is not paused for nothing.
func TestRestoreWithoutStatefulSetTouchesNothing(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "restore-nosts"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	b := backUp(t, ctx, cluster)
	before := clusterObject(t, ctx, cluster)
	rs := newRestore(t, ctx, cluster, "nosts", b.BackupName)
	done := waitRestore(t, ctx, rs, 60*time.Second, kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseCompleted)
	if done.Status.Phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(done.Status.Message,
		"no StatefulSet") || !strings.Contains(done.Status.Message, "Nothing was changed") {
		t.Fatalf("restore without a StatefulSet: %s: %s", done.Status.Phase, done.Status.Message)
	}
	waitEvent(t, ctx, rs.Namespace, rs.Name, corev1.EventTypeWarning, "StatefulSetNotFound")
	if diff := diffObjects(before, clusterObject(t, ctx, cluster)); diff != "" {
		t.Errorf("the Cluster changed: %s", diff)
	}
}

// A restore from the oldest of keep backups: while its teardown waits (a PVC held by a
// finalizer), a newer backup completes, which puts the restore's backup beyond keep, and then
// the config is deleted. Neither retention nor the config's deletion deletes the backup the
// restore needs; the restore completes from it, and then it goes with the config.
func TestRestoreKeepsTheBackupItNeeds(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "restore-held"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	ns := "cluster-" + cluster
	for i := range 20 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := newConfig(t, ctx, cluster, "held", "@every 24h", sandbox.Destination, 2)
	backupOf := func() string {
		t.Helper()
		r := triggerWhenAllowed(t, ctx, cfg.Namespace, cfg.Name)
		waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "backup "+r.GetBackupName(),
			func(c *kubermaticv1.EtcdBackupConfig) bool {
				e, ok := entry(c, r.GetBackupName())
				return ok && e.BackupPhase == kubermaticv1.PhaseCompleted
			})
		return r.GetBackupName()
	}
	oldest := backupOf()
	want := dump(t, ctx, cli)
	if _, err := cli.Put(ctx, "/registry/after-the-first-backup", "v"); err != nil {
		t.Fatal(err)
	}
	backupOf()
	oldestKey := backupname.ObjectKey(cluster, ns, cfg.Name, oldest)

	// Hold the teardown: one etcd PVC cannot go until the test lets it.
	var pvcs corev1.PersistentVolumeClaimList
	if err := env.Client.List(ctx, &pvcs, client.InNamespace(ns),
		client.MatchingLabels{restore.EtcdLabel: restore.EtcdLabelValue}); err != nil || len(pvcs.Items) == 0 {
		t.Fatalf("etcd PVCs: %d, %v", len(pvcs.Items), err)
	}
	const hold = "e2e.etcdbackup.k8c.io/hold"
	pvc := &pvcs.Items[0]
	setHold := func(on bool) error {
		var cur corev1.PersistentVolumeClaim
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(pvc), &cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		base := cur.DeepCopy()
		cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == hold })
		if on {
			cur.Finalizers = append(cur.Finalizers, hold)
		}
		return env.Client.Patch(context.Background(), &cur, client.MergeFromWithOptions(base,
			client.MergeFromWithOptimisticLock{}))
	}
	if err := setHold(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = setHold(false) })

	rs := newRestore(t, ctx, cluster, "from-the-oldest", oldest)
	err := sandbox.Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		var got kubermaticv1.EtcdRestore
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs), &got); err != nil {
			return false, err
		}
		st := got.EffectiveStatus()
		return st.Phase == kubermaticv1.RestorePhaseStarted && strings.Contains(st.Message, "PVCs to be deleted"),
			fmt.Errorf("%s: %s", st.Phase, st.Message)
	})
	if err != nil {
		t.Fatalf("teardown waiting for the held PVC: %v", err)
	}

	// A newer backup completes during the teardown. The cluster is locked, so the scheduler
	// takes none: it is stored as an upload that was under way would store it.
	// (Named a second ahead: the second backup may have been named this very second.)
	newer := backupname.Backup(cfg.Name, time.Now().UTC().Truncate(time.Second).Add(time.Second))
	if _, err := env.S3.Client().PutObject(ctx, sandbox.Bucket, backupname.ObjectKey(cluster, ns, cfg.Name, newer),
		bytes.NewReader([]byte("newer")), 5, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 30*time.Second, "the newer backup listed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			_, ok := entry(c, newer)
			return ok
		})
	passes := func() float64 {
		sum := 0.0
		for _, p := range env.ServicesOf("pruner") {
			v, err := p.Metric(ctx, "etcdbackup_retention_passes_total", map[string]string{"namespace": ns, "config": cfg.Name})
			if err != nil {
				t.Fatal(err)
			}
			sum += v
		}
		return sum
	}
	// Retention has three backups with keep 2; let it decide twice more.
	base := passes()
	if err := sandbox.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		return passes() >= base+2, fmt.Errorf("%v retention passes since, want 2", passes()-base)
	}); err != nil {
		t.Fatal(err)
	}
	if keys := bucketKeys(t, ctx, cfg); !slices.Contains(keys, oldestKey) || len(keys) != 3 {
		t.Fatalf("during the restore the bucket holds %v; want the restore's backup %s kept (beyond keep, but held)", keys,
			oldestKey)
	}

	// The config is deleted mid-restore: the two newest stay for the grace period (keep 2);
	// the oldest, beyond keep, would go but the restore needs it.
	kept := slices.DeleteFunc(bucketKeys(t, ctx, cfg), func(k string) bool { return k == oldestKey })
	if err := env.Client.Delete(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "deletion held for the restore",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			cond := c.Status.Condition(kubermaticv1.ConditionBackupsDeleted)
			return cond != nil && strings.Contains(cond.Message, "held until a restore ends") &&
				len(bucketKeys(t, ctx, c)) == 3
		})

	if err := setHold(false); err != nil {
		t.Fatal(err)
	}
	completed(t, ctx, rs, "the restore")
	if got := restoredKeys(t, ctx, k); !maps.Equal(got, want) {
		t.Fatalf("after the restore etcd holds %d keys, want the oldest backup's %d", len(got), len(want))
	}
	// Once the restore ended, the config's deletion finishes: the restore's backup goes, then
	// the config; the two newest stay, in its DeletedBackupSet.
	err = sandbox.Poll(ctx, 60*time.Second, 200*time.Millisecond, func() (bool, error) {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &kubermaticv1.EtcdBackupConfig{})
		return apierrors.IsNotFound(err) && slices.Equal(bucketKeys(t, ctx, cfg), kept),
			fmt.Errorf("config: %w, bucket: %v, want %v", err, bucketKeys(t, ctx, cfg), kept)
	})
	if err != nil {
		t.Fatal(err)
	}
	set := waitDeletedSet(t, ctx, ns, cfg.Name)
	var inSet []string
	for _, b := range set.Spec.Backups {
		inSet = append(inSet, b.ObjectKey)
	}
	slices.Sort(inSet)
	if !slices.Equal(inSet, kept) {
		t.Fatalf("the set keeps %v, want %v", inSet, kept)
	}
}

// assertUntouched fails t unless the cluster runs, unlocked, with the etcd StatefulSet of uid
// before, and no restore step ran: what a restore that failed before teardown leaves.
func assertUntouched(t *testing.T, ctx context.Context, k *sandbox.Kubelet, cluster string, before types.UID,
	what string) {
	t.Helper()
	var c kubermaticv1.Cluster
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	var after appsv1.StatefulSet
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "cluster-" + cluster, Name: sandbox.EtcdStatefulSet},
		&after); err != nil {
		t.Fatal(err)
	}
	if c.Spec.Pause || c.Annotations[kubermaticv1.AnnotationActiveRestore] != "" || after.UID != before ||
		len(k.Steps()) != 0 {
		t.Fatalf("after %s: cluster paused=%v, locked by %q, StatefulSet %s (was %s), %d restore steps run; want nothing "+
			"changed",
			what, c.Spec.Pause, c.Annotations[kubermaticv1.AnnotationActiveRestore], after.UID, before, len(k.Steps()))
	}
}
