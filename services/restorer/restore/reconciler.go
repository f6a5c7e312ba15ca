// Package restore drives EtcdRestores: verify the backup, lock and pause the cluster, tear
// down its etcd StatefulSet and PVCs, recreate the StatefulSet with the restore step in front
// of etcd, wait until etcd is whole, roll the control plane and unpause.
//
// Every step is idempotent and its progress is kept in the API (the EtcdRestore's phase, the
// Cluster's lock annotation, the saved-spec ConfigMap, the rebuilt StatefulSet's restore-id
// annotation), so a restorer killed at any point picks up where it stopped.
package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
	"github.com/minio/minio-go/v7"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// ErrBackupNotFound: the restore names a backup that cannot be found.
var ErrBackupNotFound = errors.New("backup not found")

// Options configure the restorer.
type Options struct {
	Step StepOptions
	// StatefulSet is the name of the etcd StatefulSet in the cluster namespace.
	StatefulSet string
	// Timeout bounds a restore from taking the lock to Completed.
	Timeout time.Duration
	// Poll is how often teardown and rebuild are looked at while waiting.
	Poll time.Duration
}

// Metrics observe restores (nil funcs are not called).
type Metrics struct {
	// Step is called with "verify", "teardown" or "rebuild" and how long it took.
	Step func(step string, d time.Duration)
	// Finished is called with "completed" or "failed".
	Finished func(result string)
	// Failed is called with the reason of a failure.
	Failed func(reason string)
}

// Reconciler is the EtcdRestore controller.
type Reconciler struct {
	// Client reads EtcdRestores and Clusters from the cache and writes.
	Client client.Client
	// API reads everything else uncached: StatefulSets, PVCs, Pods, Secrets, ConfigMaps and
	// EtcdBackupConfigs of the clusters being restored only.
	API          client.Reader
	Destinations *destination.Resolver
	Recorder     events.EventRecorder
	Log          *slog.Logger
	// Publish sends a phase change to subscribers on the bus (nil: not sent).
	Publish func(ctx context.Context, r *kubermaticv1.EtcdRestore)
	Opts    Options
	Metrics Metrics
	Now     func() time.Time

	deferred sync.Map // uids of restores told their deletion waits
	refused  sync.Map // restore (namespace/name) -> the phase the schema refused in status; forgotten when the restore is gone
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Lock is the value of the Cluster's active-restore annotation that restore holds.
func Lock(rs *kubermaticv1.EtcdRestore) string { return rs.Namespace + "/" + rs.Name }

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var rs kubermaticv1.EtcdRestore
	if err := r.Client.Get(ctx, req.NamespacedName, &rs); err != nil {
		if apierrors.IsNotFound(err) {
			r.refused.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if _, annotated := rs.Annotations[kubermaticv1.AnnotationRestoreStatus]; annotated {
		served, state := rs.Status, rs.EffectiveStatus()
		rs.Status = state
		if err := r.project(ctx, &rs, served, state); err != nil {
			return ctrl.Result{}, err
		}
	}
	if rs.Status.Finished() {
		return ctrl.Result{}, r.removeFinalizer(ctx, &rs)
	}
	if rs.DeletionTimestamp != nil {
		return r.deleted(ctx, &rs)
	}
	if !controllerutil.ContainsFinalizer(&rs, kubermaticv1.RestoreFinalizer) {
		patched := rs.DeepCopy()
		controllerutil.AddFinalizer(patched, kubermaticv1.RestoreFinalizer)
		if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(&rs, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
		rs = *patched
	}
	return r.step(ctx, &rs)
}

func (r *Reconciler) step(ctx context.Context, rs *kubermaticv1.EtcdRestore) (ctrl.Result, error) {
	switch rs.Status.Phase {
	case kubermaticv1.RestorePhaseStarted:
		return r.teardown(ctx, rs)
	case kubermaticv1.RestorePhaseStsRebuilding:
		return r.rebuild(ctx, rs)
	default:
		return r.prepare(ctx, rs)
	}
}

// deleted handles an EtcdRestore being deleted before it finished. Until the etcd
// StatefulSet's spec was saved (the step before it is deleted), the restore is cancelled: the
// lock is released and the cluster unpaused if this restore paused it. After that the
// cluster's etcd is being replaced, and the restore finishes before the object goes.
func (r *Reconciler) deleted(ctx context.Context, rs *kubermaticv1.EtcdRestore) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(rs, kubermaticv1.RestoreFinalizer) {
		return ctrl.Result{}, nil
	}
	saved, err := r.savedExists(ctx, rs)
	if err != nil {
		return ctrl.Result{}, err
	}
	if rs.Status.Phase == kubermaticv1.RestorePhaseStsRebuilding || (rs.Status.Phase == kubermaticv1.RestorePhaseStarted && saved) {
		// Said once per replica, not on every poll of the rebuild.
		if _, said := r.deferred.LoadOrStore(rs.UID, true); !said {
			r.event(rs, corev1.EventTypeWarning, "DeletionDeferred", "Delete",
				"the etcd StatefulSet is being rebuilt; the restore finishes before this EtcdRestore goes")
		}
		return r.step(ctx, rs)
	}
	cluster, err := r.cluster(ctx, rs)
	if err != nil {
		return ctrl.Result{}, err
	}
	if cluster != nil && cluster.Annotations[kubermaticv1.AnnotationActiveRestore] == Lock(rs) {
		unpause := rs.Status.Phase == kubermaticv1.RestorePhaseStarted
		if err := r.unlock(ctx, rs, unpause, ""); err != nil {
			return ctrl.Result{}, err
		}
	}
	r.event(rs, corev1.EventTypeNormal, "Cancelled", "Delete", "restore deleted before etcd was touched: cluster unlocked and left as it was")
	r.cleanup(ctx, rs)
	return ctrl.Result{}, r.removeFinalizer(ctx, rs)
}

// prepare checks the preconditions, takes the lock, verifies the backup and pauses the
// cluster: phase Started. Anything that fails here leaves the cluster as it was.
func (r *Reconciler) prepare(ctx context.Context, rs *kubermaticv1.EtcdRestore) (ctrl.Result, error) {
	cluster, err := r.cluster(ctx, rs)
	if err != nil {
		return ctrl.Result{}, err
	}
	if cluster == nil {
		return ctrl.Result{}, r.fail(ctx, rs, "ClusterNotFound",
			fmt.Sprintf("cluster %q does not exist. Nothing was changed; create the EtcdRestore for an existing cluster.", rs.Spec.Cluster.Name))
	}
	// Everything the restore touches (the etcd StatefulSet, its PVCs, the saved spec and the
	// credentials) is in the EtcdRestore's namespace, and what it locks and pauses is the
	// cluster it names: both must be the same cluster's, or a typo tears down one cluster's
	// etcd while pausing another.
	if ns := cluster.NamespaceName(); rs.Namespace != ns {
		return ctrl.Result{}, r.fail(ctx, rs, kubermaticv1.ReasonClusterNamespaceMismatch, fmt.Sprintf(
			"the EtcdRestore is in namespace %q, but cluster %q lives in %q. Nothing was changed; create the EtcdRestore in the cluster's namespace.", rs.Namespace, cluster.Name, ns))
	}
	if !cluster.Spec.Features[kubermaticv1.FeatureEtcdLauncher] {
		return ctrl.Result{}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseEtcdLauncherNotEnabled, corev1.EventTypeWarning, "EtcdLauncherNotEnabled",
			fmt.Sprintf("cluster %s does not have spec.features.%s: true; enable it and the restore proceeds. Nothing was changed.", cluster.Name, kubermaticv1.FeatureEtcdLauncher), nil)
	}
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != Lock(rs) {
		if holder != "" && !r.stale(ctx, holder) {
			return ctrl.Result{RequeueAfter: 5 * r.Opts.Poll}, r.setPhase(ctx, rs, "", corev1.EventTypeNormal, "WaitingForLock",
				fmt.Sprintf("waiting: cluster %s is being restored by EtcdRestore %s; this restore starts after it", cluster.Name, holder), nil)
		}
		if err := r.patchCluster(ctx, cluster, lockPatch(cluster, Lock(rs), true)); err != nil {
			return ctrl.Result{}, err // a conflict: someone else locked it, look again
		}
	}
	if rs.Status.StartTime == nil {
		if err := r.setPhase(ctx, rs, "", corev1.EventTypeNormal, "Verifying", fmt.Sprintf("cluster %s locked; verifying backup %s", cluster.Name, rs.Spec.BackupName), func(s *kubermaticv1.EtcdRestoreStatus) {
			t := metav1.NewTime(r.now())
			s.StartTime = &t
		}); err != nil {
			return ctrl.Result{}, err
		}
	}
	backup, err := Locate(ctx, r.API, rs)
	if err != nil {
		if errors.Is(err, ErrBackupNotFound) {
			return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, "BackupNotFound", err.Error())
		}
		return r.retryPrepare(ctx, rs, cluster, err)
	}
	destName := rs.Spec.Destination
	if destName == "" {
		destName = backup.Destination
	}
	dest, err := r.Destinations.Lookup(ctx, destName)
	var s3 *minio.Client
	if err == nil {
		s3, err = r.Destinations.Client(ctx, dest)
	}
	if err != nil {
		if destination.IsConfigError(err) {
			return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, "DestinationNotFound", err.Error())
		}
		return r.retryPrepare(ctx, rs, cluster, err)
	}
	start := r.now()
	vctx, cancel := context.WithTimeout(ctx, r.Opts.Timeout)
	v, err := member.Verify(vctx, s3, dest.BucketName, backup.ObjectKey)
	cancel()
	switch {
	case errors.Is(err, member.ErrNotFound):
		return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, "BackupNotFound",
			fmt.Sprintf("backup %q does not exist in destination %q (bucket %s, key %s); pick a backup listed in an EtcdBackupConfig's status.lastBackups", rs.Spec.BackupName, dest.Name, dest.BucketName, backup.ObjectKey))
	case errors.Is(err, member.ErrCorrupt):
		return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, "BackupCorrupt",
			fmt.Sprintf("backup %q in destination %q failed verification (%v); restore from another backup", rs.Spec.BackupName, dest.Name, err))
	case err != nil:
		return r.retryPrepare(ctx, rs, cluster, fmt.Errorf("verify backup: %w", err))
	}
	took := r.now().Sub(start)
	r.observe("verify", took)
	// Nothing to rebuild into, nothing to pause for.
	if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: r.Opts.StatefulSet}, &appsv1.StatefulSet{}); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, "StatefulSetNotFound", fmt.Sprintf(
				"there is no StatefulSet %s/%s to rebuild (the EtcdRestore must be in the cluster's namespace)", rs.Namespace, r.Opts.StatefulSet))
		}
		return r.retryPrepare(ctx, rs, cluster, err)
	}
	// The member pods download with other credentials than the restorer's: proven now, while
	// a refusal still leaves the cluster as it was.
	if _, err := r.proveCredentials(ctx, rs, cluster, dest, backup.ObjectKey, v.SHA256); err != nil {
		if errors.Is(err, ErrCredentials) {
			return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, credentialsReason(err), err.Error())
		}
		return r.retryPrepare(ctx, rs, cluster, fmt.Errorf("prove the download credentials: %w", err))
	}
	if !cluster.Spec.Pause {
		if err := r.patchCluster(ctx, cluster, []byte(`{"spec":{"pause":true}}`)); err != nil {
			return ctrl.Result{}, err
		}
	}
	msg := fmt.Sprintf("backup %s verified in %s (%d bytes stored, %d bytes of snapshot, sha256 %s); cluster %s paused",
		rs.Spec.BackupName, took.Round(time.Millisecond), v.Size, v.SnapshotSize, v.SHA256, cluster.Name)
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseStarted, corev1.EventTypeNormal, "Started", msg, func(s *kubermaticv1.EtcdRestoreStatus) {
		s.Destination, s.ObjectKey, s.SHA256 = dest.Name, backup.ObjectKey, v.SHA256
	})
}

// retryPrepare retries a transient error before the cluster was touched, up to the timeout.
func (r *Reconciler) retryPrepare(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, err error) (ctrl.Result, error) {
	if r.expired(rs) {
		return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, "VerifyFailed", fmt.Sprintf("gave up after %s: %v", r.Opts.Timeout, err))
	}
	_ = r.setPhase(ctx, rs, "", corev1.EventTypeWarning, "Retrying", fmt.Sprintf("retrying (nothing was changed yet): %v", err), nil)
	return ctrl.Result{}, err
}

// teardown saves the etcd StatefulSet's spec, deletes it and the etcd PVCs, waits until they
// and the pods are gone, and recreates the StatefulSet with the restore step: StsRebuilding.
func (r *Reconciler) teardown(ctx context.Context, rs *kubermaticv1.EtcdRestore) (ctrl.Result, error) {
	cluster, err := r.lockedCluster(ctx, rs)
	if err != nil || cluster == nil {
		return ctrl.Result{}, err
	}
	if !cluster.Spec.Pause {
		if err := r.patchCluster(ctx, cluster, []byte(`{"spec":{"pause":true}}`)); err != nil {
			return ctrl.Result{}, err
		}
	}
	saved, err := r.saved(ctx, rs)
	if errors.Is(err, ErrSavedNotOwned) {
		return ctrl.Result{}, r.failNotOwned(ctx, rs, err)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	// The key the restore step downloads is the spec's backup, never what the recorded state
	// says: under KKP's schema that state is an annotation anyone who may edit the EtcdRestore
	// can write. A recorded key that differs (a forged annotation, an edited spec.backupName)
	// is not the backup that was verified.
	if key, ok := ObjectKeyOf(rs); !ok || key != rs.Status.ObjectKey {
		msg := fmt.Sprintf("the verified backup's key %q is not spec.backupName %q's (the restore's spec or recorded state changed after verification)", rs.Status.ObjectKey, rs.Spec.BackupName)
		if saved != nil {
			return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "StateMismatch", msg+".")
		}
		if err := r.unlock(ctx, rs, true, ""); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.fail(ctx, rs, "StateMismatch", msg+". Nothing was deleted; the cluster was unpaused and unlocked.")
	}
	dest, err := r.Destinations.Lookup(ctx, rs.Status.Destination)
	var secret string
	if err == nil {
		secret, err = r.proveCredentials(ctx, rs, cluster, dest, rs.Status.ObjectKey, rs.Status.SHA256)
	}
	if err != nil {
		reason := credentialsReason(err)
		if destination.IsConfigError(err) {
			reason = "DestinationNotFound"
		} else if !errors.Is(err, ErrCredentials) {
			return ctrl.Result{}, err
		}
		if saved != nil {
			return ctrl.Result{}, r.failPaused(ctx, rs, cluster, reason, err.Error()+".")
		}
		if err := r.unlock(ctx, rs, true, ""); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.fail(ctx, rs, reason, err.Error()+". Nothing was deleted; the cluster was unpaused and unlocked.")
	}
	if saved == nil {
		var sts appsv1.StatefulSet
		if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: r.Opts.StatefulSet}, &sts); err != nil {
			if apierrors.IsNotFound(err) {
				if perr := r.unlock(ctx, rs, true, ""); perr != nil {
					return ctrl.Result{}, perr
				}
				return ctrl.Result{}, r.fail(ctx, rs, "StatefulSetNotFound", fmt.Sprintf(
					"there is no StatefulSet %s/%s to rebuild. Nothing was deleted; the cluster was unpaused and unlocked.", rs.Namespace, r.Opts.StatefulSet))
			}
			return ctrl.Result{}, err
		}
		if saved, err = r.save(ctx, rs, &sts); err != nil {
			if errors.Is(err, ErrSavedNotOwned) {
				return ctrl.Result{}, r.failNotOwned(ctx, rs, err)
			}
			return ctrl.Result{}, err
		}
	}
	waiting, err := r.deleteOld(ctx, rs, saved)
	if err != nil {
		return ctrl.Result{}, err
	}
	if waiting != "" {
		if r.expired(rs) {
			return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "TeardownTimeout", fmt.Sprintf("after %s still waiting for %s to be deleted.", r.Opts.Timeout, waiting))
		}
		return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, rs.Status.Phase, "", "", "waiting for "+waiting+" to be deleted", nil)
	}
	rebuilt, err := Rebuilt(saved, Step{Restore: rs, Cluster: cluster, Destination: dest, ObjectKey: rs.Status.ObjectKey, SHA256: rs.Status.SHA256, Secret: secret}, r.Opts.Step)
	if err != nil {
		return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "InvalidStatefulSet", err.Error())
	}
	if err := r.Client.Create(ctx, rebuilt); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("create statefulset: %w", err)
	}
	took := r.sincePhase(rs)
	r.observe("teardown", took)
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseStsRebuilding, corev1.EventTypeNormal, "StsRebuilding",
		fmt.Sprintf("old StatefulSet, PVCs and pods gone after %s; StatefulSet %s recreated with the restore step, waiting for %d members to restore and become healthy",
			took.Round(time.Millisecond), rebuilt.Name, replicas(rebuilt)), nil)
}

// deleteOld deletes the etcd StatefulSet (unless it is the one this restore built) and the
// etcd PVCs; it returns what is still there, "" when all is gone.
func (r *Reconciler) deleteOld(ctx context.Context, rs *kubermaticv1.EtcdRestore, saved *appsv1.StatefulSet) (string, error) {
	var left []string
	var sts appsv1.StatefulSet
	err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: saved.Name}, &sts)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return "", err
	case sts.Annotations[AnnotationRestoreID] == string(rs.UID):
		return "", nil // rebuilt already: the old ones were gone before it was created
	default:
		left = append(left, "StatefulSet "+sts.Name)
		if sts.DeletionTimestamp == nil {
			policy := metav1.DeletePropagationBackground
			if err := r.Client.Delete(ctx, &sts, &client.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &sts.UID}}); client.IgnoreNotFound(err) != nil {
				return "", fmt.Errorf("delete statefulset: %w", err)
			}
		}
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := r.API.List(ctx, &pvcs, client.InNamespace(rs.Namespace), client.MatchingLabels{EtcdLabel: EtcdLabelValue}); err != nil {
		return "", err
	}
	for i := range pvcs.Items {
		pvc := &pvcs.Items[i]
		if pvc.DeletionTimestamp == nil {
			if err := r.Client.Delete(ctx, pvc, &client.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pvc.UID}}); client.IgnoreNotFound(err) != nil {
				return "", fmt.Errorf("delete pvc %s: %w", pvc.Name, err)
			}
		}
	}
	if n := len(pvcs.Items); n > 0 {
		left = append(left, fmt.Sprintf("%d PVCs", n))
	}
	pods, err := r.pods(ctx, saved)
	if err != nil {
		return "", err
	}
	if n := len(pods); n > 0 {
		left = append(left, fmt.Sprintf("%d pods", n))
	}
	return strings.Join(left, ", "), nil
}

// rebuild waits until the rebuilt StatefulSet is ready and etcd healthy with every member,
// then gives the StatefulSet its old spec back, unlocks, rolls and unpauses the cluster.
func (r *Reconciler) rebuild(ctx context.Context, rs *kubermaticv1.EtcdRestore) (ctrl.Result, error) {
	cluster, err := r.lockedCluster(ctx, rs)
	if err != nil || cluster == nil {
		return ctrl.Result{}, err
	}
	saved, err := r.saved(ctx, rs)
	if errors.Is(err, ErrSavedNotOwned) {
		return ctrl.Result{}, r.failNotOwned(ctx, rs, err)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if saved == nil {
		return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "SavedSpecLost", fmt.Sprintf("ConfigMap %s/%s with the StatefulSet's spec was deleted.", rs.Namespace, SavedName(rs)))
	}
	var sts appsv1.StatefulSet
	if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: saved.Name}, &sts); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseStarted, corev1.EventTypeWarning, "StatefulSetGone",
				"the rebuilt StatefulSet was deleted; rebuilding it again", nil)
		}
		return ctrl.Result{}, err
	}
	pods, err := r.pods(ctx, saved)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, p := range pods {
		if msg, failed := stepFailed(&p); failed {
			return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "RestoreStepFailed", fmt.Sprintf(
				"the restore step failed in pod %s: %s. See `kubectl -n %s logs %s -c %s`.", p.Name, msg, p.Namespace, p.Name, StepContainer))
		}
	}
	want := replicas(&sts)
	waiting := ""
	if sts.Status.ObservedGeneration < sts.Generation || int(sts.Status.ReadyReplicas) < want {
		waiting = fmt.Sprintf("%d of %d etcd pods ready", sts.Status.ReadyReplicas, want)
	} else {
		target, err := endpoints.Resolve(ctx, r.API, cluster, rs.Namespace)
		if err != nil {
			if errors.Is(err, endpoints.ErrConfig) {
				return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "EtcdUnreachable", err.Error())
			}
			return ctrl.Result{}, err
		}
		if h, err := CheckEtcd(ctx, target, want); err != nil {
			waiting = fmt.Sprintf("etcd: %d members, %d of %d endpoints healthy (%v)", h.Members, h.Healthy, len(target.Endpoints), err)
		}
	}
	if waiting != "" {
		if r.expired(rs) {
			return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "RebuildTimeout", fmt.Sprintf("after %s etcd is not healthy: %s.", r.Opts.Timeout, waiting))
		}
		return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, rs.Status.Phase, "", "", "waiting for "+waiting, nil)
	}

	// Whole again. The StatefulSet gets its own spec back, so that a member replaced later
	// does not restore this backup again, and KKP finds its StatefulSet as it left it.
	sts.Spec.Template = saved.Spec.Template
	delete(sts.Annotations, AnnotationRestoreID)
	if err := r.Client.Update(ctx, &sts); err != nil {
		return ctrl.Result{}, fmt.Errorf("give the statefulset its spec back: %w", err)
	}
	if err := r.unlock(ctx, rs, true, r.now().UTC().Format(time.RFC3339)); err != nil {
		return ctrl.Result{}, err
	}
	r.cleanup(ctx, rs)
	took := r.sincePhase(rs)
	r.observe("rebuild", took)
	total := r.now().Sub(rs.Status.StartTime.Time)
	if err := r.setPhase(ctx, rs, kubermaticv1.RestorePhaseCompleted, corev1.EventTypeNormal, "Completed", fmt.Sprintf(
		"etcd of cluster %s restored from backup %s: %d members healthy after %s of rebuild; control plane rolled, cluster unlocked and %s (%s in all)",
		cluster.Name, rs.Spec.BackupName, want, took.Round(time.Millisecond), pauseWord(cluster), total.Round(time.Millisecond)), func(s *kubermaticv1.EtcdRestoreStatus) {
		s.RestoreTime = metav1.NewTime(r.now())
	}); err != nil {
		return ctrl.Result{}, err
	}
	if r.Metrics.Finished != nil {
		r.Metrics.Finished("completed")
	}
	return ctrl.Result{}, r.removeFinalizer(ctx, rs)
}

// stepFailed reports a pod whose restore step failed for good: exited non-zero and was
// restarted twice since.
func stepFailed(p *corev1.Pod) (string, bool) {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name != StepContainer {
			continue
		}
		term := s.State.Terminated
		if term == nil || term.ExitCode == 0 {
			term = s.LastTerminationState.Terminated
		}
		if term != nil && term.ExitCode != 0 && s.RestartCount >= 2 {
			msg := strings.TrimSpace(term.Message)
			if msg == "" {
				msg = fmt.Sprintf("exit code %d", term.ExitCode)
			}
			return msg, true
		}
	}
	return "", false
}

func replicas(sts *appsv1.StatefulSet) int {
	if sts.Spec.Replicas == nil {
		return 1
	}
	return int(*sts.Spec.Replicas)
}

func (r *Reconciler) pods(ctx context.Context, saved *appsv1.StatefulSet) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(saved.Spec.Selector)
	if err != nil || sel.Empty() {
		sel = labels.SelectorFromSet(labels.Set{EtcdLabel: EtcdLabelValue})
	}
	var pods corev1.PodList
	if err := r.API.List(ctx, &pods, client.InNamespace(saved.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// cluster returns the restore's Cluster, nil if it does not exist.
func (r *Reconciler) cluster(ctx context.Context, rs *kubermaticv1.EtcdRestore) (*kubermaticv1.Cluster, error) {
	var c kubermaticv1.Cluster
	if err := r.Client.Get(ctx, types.NamespacedName{Name: rs.Spec.Cluster.Name}, &c); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return &c, nil
}

// lockedCluster returns the Cluster once this restore holds its lock, taking it again if
// someone removed it; a lock taken by another restore fails this one.
func (r *Reconciler) lockedCluster(ctx context.Context, rs *kubermaticv1.EtcdRestore) (*kubermaticv1.Cluster, error) {
	cluster, err := r.cluster(ctx, rs)
	if err != nil {
		return nil, err
	}
	if cluster == nil {
		return nil, r.fail(ctx, rs, "ClusterNotFound", fmt.Sprintf("cluster %q was deleted during the restore.", rs.Spec.Cluster.Name))
	}
	switch holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder {
	case Lock(rs):
		return cluster, nil
	case "":
		// Taken again mid-restore: the cluster is paused by this restore now, not before it.
		return nil, r.patchCluster(ctx, cluster, lockPatch(cluster, Lock(rs), false))
	default:
		return nil, r.fail(ctx, rs, "LockLost", fmt.Sprintf(
			"cluster %s was locked by EtcdRestore %s during this restore; this one stopped. The cluster stays paused.", cluster.Name, holder))
	}
}

// stale reports whether the restore holding a lock no longer exists.
func (r *Reconciler) stale(ctx context.Context, holder string) bool {
	ns, name, ok := strings.Cut(holder, "/")
	if !ok {
		return true
	}
	var other kubermaticv1.EtcdRestore
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &other)
	return apierrors.IsNotFound(err)
}

// lockPatch takes the lock for holder. With recordPause, it records in the same write whether
// the cluster is paused now, before the restore pauses it (AnnotationPausedBeforeRestore):
// the lock and the record are one write, so no crash falls between them.
func lockPatch(c *kubermaticv1.Cluster, holder string, recordPause bool) []byte {
	ann := map[string]any{kubermaticv1.AnnotationActiveRestore: holder}
	if recordPause {
		ann[kubermaticv1.AnnotationPausedBeforeRestore] = nil
		if c.Spec.Pause {
			ann[kubermaticv1.AnnotationPausedBeforeRestore] = "true"
		}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": c.ResourceVersion,
		"annotations":     ann,
	}})
	return b
}

// pauseWord says what the end of a restore does to the cluster's pause.
func pauseWord(c *kubermaticv1.Cluster) string {
	if c.Annotations[kubermaticv1.AnnotationPausedBeforeRestore] == "true" {
		return "left paused, as it was before the restore"
	}
	return "unpaused"
}

// unlockPatch removes the lock, unpauses if asked and the cluster was not paused before the
// restore began, and, with lastRestart, rolls the control plane the way KKP does.
func unlockPatch(c *kubermaticv1.Cluster, unpause bool, lastRestart string) []byte {
	ann := map[string]any{kubermaticv1.AnnotationActiveRestore: nil, kubermaticv1.AnnotationPausedBeforeRestore: nil}
	if lastRestart != "" {
		ann[kubermaticv1.AnnotationLastRestart] = lastRestart
	}
	p := map[string]any{"metadata": map[string]any{"resourceVersion": c.ResourceVersion, "annotations": ann}}
	if unpause && c.Annotations[kubermaticv1.AnnotationPausedBeforeRestore] != "true" {
		p["spec"] = map[string]any{"pause": false}
	}
	b, _ := json.Marshal(p)
	return b
}

// unlock releases this restore's lock on its Cluster (and unpauses it, and rolls its control
// plane with lastRestart set), reading the Cluster afresh on a conflict: KKP writes Clusters
// often, and a lock this restore holds is its own to release.
func (r *Reconciler) unlock(ctx context.Context, rs *kubermaticv1.EtcdRestore, unpause bool, lastRestart string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var c kubermaticv1.Cluster
		if err := r.API.Get(ctx, types.NamespacedName{Name: rs.Spec.Cluster.Name}, &c); err != nil {
			return client.IgnoreNotFound(err)
		}
		if c.Annotations[kubermaticv1.AnnotationActiveRestore] != Lock(rs) {
			return nil
		}
		return r.Client.Patch(ctx, &c, client.RawPatch(types.MergePatchType, unlockPatch(&c, unpause, lastRestart)))
	})
}

// patchCluster applies a JSON merge patch: only the fields named change.
func (r *Reconciler) patchCluster(ctx context.Context, c *kubermaticv1.Cluster, patch []byte) error {
	if err := r.Client.Patch(ctx, c, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("patch cluster %s: %w", c.Name, err)
	}
	return nil
}

func (r *Reconciler) savedExists(ctx context.Context, rs *kubermaticv1.EtcdRestore) (bool, error) {
	var cm corev1.ConfigMap
	err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: SavedName(rs)}, &cm)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (r *Reconciler) saved(ctx context.Context, rs *kubermaticv1.EtcdRestore) (*appsv1.StatefulSet, error) {
	var cm corev1.ConfigMap
	if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: SavedName(rs)}, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	// Anyone who may write ConfigMaps in the namespace could have made one of that name: only
	// the one this restore created (its controller, by UID) says what to rebuild, and even
	// that one rebuilds only the cluster's own StatefulSet.
	if !metav1.IsControlledBy(&cm, rs) {
		return nil, fmt.Errorf("%w: ConfigMap %s/%s has no controller ownerReference to this EtcdRestore (uid %s)", ErrSavedNotOwned, cm.Namespace, cm.Name, rs.UID)
	}
	sts, err := Decode(cm.Data[SavedSpecKey])
	if err != nil {
		return nil, err
	}
	sts.Namespace, sts.Name = rs.Namespace, r.Opts.StatefulSet
	return sts, nil
}

// ErrSavedNotOwned: the ConfigMap named for this restore's saved StatefulSet spec is not
// this restore's; the restorer does not use it.
var ErrSavedNotOwned = errors.New("saved spec not this restore's")

func (r *Reconciler) save(ctx context.Context, rs *kubermaticv1.EtcdRestore, sts *appsv1.StatefulSet) (*appsv1.StatefulSet, error) {
	s := Saveable(sts)
	data, err := Encode(s)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: SavedName(rs), Namespace: rs.Namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "etcdbackup-restorer"}},
		Data:       map[string]string{SavedSpecKey: data},
	}
	if err := controllerutil.SetControllerReference(rs, cm, r.Client.Scheme()); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, cm); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("save statefulset spec: %w", err)
		}
		// Saved by an earlier attempt of this restore, or someone else's: saved tells.
		return r.saved(ctx, rs)
	}
	return s, nil
}

// ErrCredentials marks download credentials the member pods could not use: a Secret that is
// missing, lacks a key, is not this restore's, or keys the store refuses.
var ErrCredentials = errors.New("download credentials")

// credentials gives the member pods their download credentials: a Secret named SavedName in
// the cluster namespace, controlled by this restore, copied from
// spec.backupDownloadCredentialsSecret (a Secret in the cluster's namespace, as KKP means it)
// or else from the destination's own. It returns the Secret's name and the keys it holds in
// the API, which are exactly what the pods' environment will get.
func (r *Reconciler) credentials(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, d destination.Destination) (name, id, key string, err error) {
	copied := &corev1.Secret{}
	err = r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: SavedName(rs)}, copied)
	if apierrors.IsNotFound(err) {
		copied, err = r.copyCredentials(ctx, rs, cluster, d)
	}
	if err != nil {
		return "", "", "", err
	}
	// A Secret of that name someone else made would hand the pods keys nobody chose.
	if !metav1.IsControlledBy(copied, rs) {
		return "", "", "", fmt.Errorf("%w: Secret %s/%s has no controller ownerReference to this EtcdRestore (uid %s); delete it or rename the EtcdRestore",
			ErrCredentials, copied.Namespace, copied.Name, rs.UID)
	}
	id, key = string(copied.Data[kubermaticv1.SecretAccessKeyID]), string(copied.Data[kubermaticv1.SecretSecretAccessKey])
	if id == "" || key == "" {
		return "", "", "", fmt.Errorf("%w: Secret %s/%s lacks %s or %s", ErrCredentials, copied.Namespace, copied.Name, kubermaticv1.SecretAccessKeyID, kubermaticv1.SecretSecretAccessKey)
	}
	return copied.Name, id, key, nil
}

func (r *Reconciler) copyCredentials(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, d destination.Destination) (*corev1.Secret, error) {
	src := types.NamespacedName{Namespace: cluster.NamespaceName(), Name: rs.Spec.BackupDownloadCredentialsSecret}
	what := "spec.backupDownloadCredentialsSecret"
	if src.Name == "" {
		if d.Credentials == nil || d.Credentials.Name == "" {
			return nil, fmt.Errorf("%w: destination %q references no credentials secret", ErrCredentials, d.Name)
		}
		src, what = types.NamespacedName{Namespace: d.Credentials.Namespace, Name: d.Credentials.Name}, fmt.Sprintf("destination %q's credentials", d.Name)
	}
	var s corev1.Secret
	if err := r.API.Get(ctx, src, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s: Secret %s does not exist", ErrCredentials, what, src)
		}
		return nil, err
	}
	id, key := s.Data[kubermaticv1.SecretAccessKeyID], s.Data[kubermaticv1.SecretSecretAccessKey]
	if len(id) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("%w: %s: Secret %s lacks %s or %s", ErrCredentials, what, src, kubermaticv1.SecretAccessKeyID, kubermaticv1.SecretSecretAccessKey)
	}
	copied := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SavedName(rs), Namespace: rs.Namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "etcdbackup-restorer"}},
		Data:       map[string][]byte{kubermaticv1.SecretAccessKeyID: id, kubermaticv1.SecretSecretAccessKey: key},
	}
	if err := controllerutil.SetControllerReference(rs, copied, r.Client.Scheme()); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, copied); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create download credentials secret: %w", err)
		}
		// Made meanwhile by an earlier attempt, or by someone else: the caller checks whose.
		if err := r.API.Get(ctx, client.ObjectKeyFromObject(copied), copied); err != nil {
			return nil, err
		}
	}
	return copied, nil
}

// credentialsReason is the Event reason of a credentials failure.
func credentialsReason(err error) string {
	if errors.Is(err, member.ErrRefused) {
		return "CredentialsRefused"
	}
	return "CredentialsInvalid"
}

// proveCredentials makes the member pods' credentials (credentials) and reads the backup's
// metadata with exactly them, against the destination the pods will download from. It
// returns the Secret's name; an error wrapping ErrCredentials, member.ErrNotFound or
// member.ErrCorrupt needs a person, any other is transient.
func (r *Reconciler) proveCredentials(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, d destination.Destination, objectKey, sha string) (string, error) {
	name, id, key, err := r.credentials(ctx, rs, cluster, d)
	if err != nil {
		return "", err
	}
	s3, err := destination.NewClient(d.Endpoint, d.Secure, id, key)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrCredentials, err)
	}
	vctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = member.Visible(vctx, s3, d.BucketName, objectKey, sha)
	switch {
	case errors.Is(err, member.ErrRefused):
		return "", fmt.Errorf("%w: destination %q refused the member pods' credentials (Secret %s/%s): %w", ErrCredentials, d.Name, rs.Namespace, name, err)
	case errors.Is(err, member.ErrNotFound), errors.Is(err, member.ErrCorrupt):
		return "", fmt.Errorf("%w: with the member pods' credentials (Secret %s/%s) destination %q shows another object than the verified backup: %v", ErrCredentials, rs.Namespace, name, d.Name, err)
	}
	return name, err
}

// cleanup deletes the saved spec and the copied credentials (they are owned by the restore
// too, for the garbage collector, should this fail).
func (r *Reconciler) cleanup(ctx context.Context, rs *kubermaticv1.EtcdRestore) {
	r.deleteOwned(ctx, rs, &corev1.ConfigMap{})
	r.deleteOwned(ctx, rs, &corev1.Secret{})
}

// deleteOwned deletes this restore's object of obj's kind (named SavedName), only if this
// EtcdRestore is its controller (by UID) and only that object (UID precondition): an object
// of that name someone else made is not the restore's to delete.
func (r *Reconciler) deleteOwned(ctx context.Context, rs *kubermaticv1.EtcdRestore, obj client.Object) {
	if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: SavedName(rs)}, obj); err != nil {
		if !apierrors.IsNotFound(err) {
			r.Log.Warn("clean up after restore", "restore", Lock(rs), "err", err)
		}
		return
	}
	if !metav1.IsControlledBy(obj, rs) {
		r.Log.Warn("clean up after restore: not this restore's, left alone", "restore", Lock(rs), "object", client.ObjectKeyFromObject(obj).String())
		return
	}
	uid := obj.GetUID()
	if err := r.Client.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		r.Log.Warn("clean up after restore", "restore", Lock(rs), "err", err)
	}
}

// failUnlocked ends a restore that failed before the cluster was paused: the lock goes, the
// cluster is as it was.
func (r *Reconciler) failUnlocked(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, reason, msg string) error {
	if cluster.Annotations[kubermaticv1.AnnotationActiveRestore] == Lock(rs) {
		if err := r.unlock(ctx, rs, false, ""); err != nil {
			return err
		}
	}
	return r.fail(ctx, rs, reason, msg+". Nothing was changed: the cluster was not paused and is unlocked.")
}

// failPaused ends a restore that failed after the etcd StatefulSet was touched. The cluster
// stays paused (its etcd is not what KKP left) and is unlocked so that another restore can run.
func (r *Reconciler) failPaused(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, reason, msg string) error {
	if cluster.Annotations[kubermaticv1.AnnotationActiveRestore] == Lock(rs) {
		if err := r.unlock(ctx, rs, false, ""); err != nil {
			return err
		}
	}
	return r.fail(ctx, rs, reason, fmt.Sprintf(
		"%s The cluster stays paused and is unlocked; its etcd StatefulSet %s/%s was torn down for the rebuild. "+
			"Its spec as it was is in ConfigMap %s (key %s) until this EtcdRestore is deleted. "+
			"Create a new EtcdRestore to try again (delete this one afterwards), or set spec.pause=false on Cluster %s to hand it back to KKP as it is.",
		msg, rs.Namespace, r.Opts.StatefulSet, SavedName(rs), SavedSpecKey, cluster.Name))
}

// failNotOwned ends a restore whose saved-spec ConfigMap is not its own. Nothing is rebuilt
// from it; the cluster stays paused (whether its StatefulSet was already torn down cannot be
// told from someone else's object) and is unlocked.
func (r *Reconciler) failNotOwned(ctx context.Context, rs *kubermaticv1.EtcdRestore, cause error) error {
	if err := r.unlock(ctx, rs, false, ""); err != nil {
		return err
	}
	return r.fail(ctx, rs, "SavedSpecNotOwned", fmt.Sprintf(
		"%v. The restorer does not rebuild from it. The cluster stays paused and is unlocked: check StatefulSet %s/%s, then create a new EtcdRestore or unpause the cluster.",
		cause, rs.Namespace, r.Opts.StatefulSet))
}

func (r *Reconciler) fail(ctx context.Context, rs *kubermaticv1.EtcdRestore, reason, msg string) error {
	if err := r.setPhase(ctx, rs, kubermaticv1.RestorePhaseFailed, corev1.EventTypeWarning, reason, msg, nil); err != nil {
		return err
	}
	// The copied download credentials go with every end, a failure too; the saved spec stays
	// until the EtcdRestore is deleted (the message points at it).
	r.deleteOwned(ctx, rs, &corev1.Secret{})
	r.Log.Warn("restore failed", "restore", Lock(rs), "reason", reason, "message", msg)
	if r.Metrics.Finished != nil {
		r.Metrics.Finished("failed")
	}
	if r.Metrics.Failed != nil {
		r.Metrics.Failed(reason)
	}
	return r.removeFinalizer(ctx, rs)
}

// setPhase writes phase and message (and what mutate sets) to the status, with an Event of
// eventType/reason when eventType is set and the phase or message changed.
func (r *Reconciler) setPhase(ctx context.Context, rs *kubermaticv1.EtcdRestore, phase, eventType, reason, msg string, mutate func(*kubermaticv1.EtcdRestoreStatus)) error {
	state := *rs.Status.DeepCopy()
	s := &state
	if s.Phase != phase || s.PhaseTime == nil {
		t := metav1.NewTime(r.now())
		s.PhaseTime = &t
	}
	changed := s.Phase != phase || s.Message != msg
	s.Phase, s.Message = phase, msg
	if mutate != nil {
		mutate(s)
	}
	if !changed && mutate == nil {
		return nil
	}
	if err := r.writeStatus(ctx, rs, state); err != nil {
		return err
	}
	if changed && eventType != "" {
		r.event(rs, eventType, reason, "Restore", msg)
	}
	if changed && r.Publish != nil {
		r.Publish(ctx, rs)
	}
	return nil
}

// writeStatus makes state the restore's status. Under a CRD that keeps all of it (this
// project's) that is one status update. Under one that keeps less (KKP's: a required phase of
// an enum without Failed, restoreTime, nothing else) the whole status goes to the
// AnnotationRestoreStatus annotation, read back before status, and status gets what its
// schema takes. A status write the schema refuses is not retried, so it neither loops nor
// blocks the restore. rs ends with the server's metadata and state as its status.
func (r *Reconciler) writeStatus(ctx context.Context, rs *kubermaticv1.EtcdRestore, state kubermaticv1.EtcdRestoreStatus) error {
	if _, annotated := rs.Annotations[kubermaticv1.AnnotationRestoreStatus]; annotated {
		served := rs.Status
		if err := r.annotate(ctx, rs, state); err != nil {
			return err
		}
		return r.project(ctx, rs, served, state)
	}
	obj := rs.DeepCopy()
	obj.Status = state
	err := r.Client.Status().Update(ctx, obj)
	switch {
	case err == nil && sameJSON(obj.Status, state):
		*rs = *obj
		return nil
	case err == nil:
		*rs = *obj // the schema pruned fields: it keeps less than this status
	case apierrors.IsInvalid(err):
		r.refused.Store(client.ObjectKeyFromObject(rs), state.Phase)
		r.Log.Debug("status refused by the EtcdRestore schema; kept in the annotation", "restore", Lock(rs), "err", err)
	default:
		return fmt.Errorf("update status of %s: %w", Lock(rs), err)
	}
	if err := r.annotate(ctx, rs, state); err != nil {
		return err
	}
	rs.Status = state
	return nil
}

// annotate writes state to the AnnotationRestoreStatus annotation.
func (r *Reconciler) annotate(ctx context.Context, rs *kubermaticv1.EtcdRestore, state kubermaticv1.EtcdRestoreStatus) error {
	b, err := json.Marshal(state)
	if err != nil {
		return err
	}
	patched := rs.DeepCopy()
	if patched.Annotations == nil {
		patched.Annotations = map[string]string{}
	}
	patched.Annotations[kubermaticv1.AnnotationRestoreStatus] = string(b)
	if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(rs, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("annotate status of %s: %w", Lock(rs), err)
	}
	*rs = *patched
	return nil
}

// project writes to status what a schema that keeps less can take of state: its phase and
// restoreTime, when they differ from served. A refused write (a phase outside the schema's
// enum, such as Failed under KKP's) is left at that: the annotation, an Event and the bus say
// it. rs ends with state as its status.
func (r *Reconciler) project(ctx context.Context, rs *kubermaticv1.EtcdRestore, served, state kubermaticv1.EtcdRestoreStatus) error {
	defer func() { rs.Status = state }()
	if state.Phase == "" || (served.Phase == state.Phase && served.RestoreTime.Unix() == state.RestoreTime.Unix()) {
		return nil
	}
	if p, ok := r.refused.Load(client.ObjectKeyFromObject(rs)); ok && p == state.Phase {
		return nil
	}
	obj := rs.DeepCopy()
	obj.Status = kubermaticv1.EtcdRestoreStatus{Phase: state.Phase, RestoreTime: state.RestoreTime}
	if err := r.Client.Status().Update(ctx, obj); err != nil {
		if apierrors.IsInvalid(err) {
			r.refused.Store(client.ObjectKeyFromObject(rs), state.Phase)
			r.Log.Debug("phase refused by the EtcdRestore schema; it is in the annotation", "restore", Lock(rs), "phase", state.Phase, "err", err)
			return nil
		}
		return fmt.Errorf("update status of %s: %w", Lock(rs), err)
	}
	*rs = *obj
	return nil
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func (r *Reconciler) event(rs *kubermaticv1.EtcdRestore, eventType, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(rs, nil, eventType, reason, action, "%s", msg)
	}
}

func (r *Reconciler) removeFinalizer(ctx context.Context, rs *kubermaticv1.EtcdRestore) error {
	r.deferred.Delete(rs.UID)
	if !controllerutil.ContainsFinalizer(rs, kubermaticv1.RestoreFinalizer) {
		return nil
	}
	patched := rs.DeepCopy()
	controllerutil.RemoveFinalizer(patched, kubermaticv1.RestoreFinalizer)
	if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(rs, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(err)
	}
	*rs = *patched
	return nil
}

func (r *Reconciler) expired(rs *kubermaticv1.EtcdRestore) bool {
	return rs.Status.StartTime != nil && r.now().Sub(rs.Status.StartTime.Time) > r.Opts.Timeout
}

func (r *Reconciler) sincePhase(rs *kubermaticv1.EtcdRestore) time.Duration {
	if rs.Status.PhaseTime == nil {
		return 0
	}
	return r.now().Sub(rs.Status.PhaseTime.Time)
}

func (r *Reconciler) observe(step string, d time.Duration) {
	if r.Metrics.Step != nil {
		r.Metrics.Step(step, d)
	}
}
