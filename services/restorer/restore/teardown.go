// teardown: the etcd StatefulSet's spec saved, the StatefulSet and its PVCs deleted, and
// the StatefulSet recreated with the restore step (phase StsRebuilding).

package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

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
	key, ok := ObjectKeyOf(rs)
	if _, deleted := rs.Annotations[backupv1.AnnotationDeletedBackups]; deleted {
		b, err := Locate(ctx, r.API, rs)
		if err != nil && !errors.Is(err, ErrBackupNotFound) && !errors.Is(err, ErrNotPermitted) {
			return ctrl.Result{}, err
		}
		key, ok = b.ObjectKey, err == nil
	}
	if msg := stateMismatch(rs, cluster, key, ok); msg != "" {
		return ctrl.Result{}, r.abort(ctx, rs, cluster, saved, "StateMismatch", msg)
	}
	dest, secret, err := r.podSecret(ctx, rs, cluster, saved)
	if err != nil {
		reason, words, ok := refused(target{backup: rs.Spec.BackupName, destination: rs.Status.Destination,
			key: rs.Status.ObjectKey}, err)
		if !ok {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.abort(ctx, rs, cluster, saved, reason, words)
	}
	if saved == nil {
		if saved, err = r.saveSpec(ctx, rs); err != nil {
			if errors.Is(err, ErrSavedNotOwned) {
				return ctrl.Result{}, r.failNotOwned(ctx, rs, err)
			}
			if noStatefulSet(err) {
				return ctrl.Result{}, r.abort(ctx, rs, cluster, nil, "StatefulSetNotFound", err.Error())
			}
			return ctrl.Result{}, err
		}
	}
	if waiting, err := r.deleteOld(ctx, rs, saved); err != nil || waiting != "" {
		return r.waitForDeletion(ctx, rs, cluster, waiting, err)
	}
	return r.recreate(ctx, rs, cluster, saved, Step{Restore: rs, Cluster: cluster, Destination: dest,
		ObjectKey: rs.Status.ObjectKey, SHA256: rs.Status.SHA256, Secret: secret})
}

// stateMismatch says how rs's recorded backup differs from the one to restore (key, found:
// its spec's, located anew), "" if it does not. The key the restore step downloads is the
// spec's backup, never what the recorded state
// says: under KKP's schema that state is an annotation anyone who may edit the EtcdRestore can
// write. A recorded key that differs (a forged annotation, an edited spec.backupName) is not
// the backup that was verified, and the recorded backup must be the Verification on the
// cluster.
func stateMismatch(rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster, key string, ok bool) string {
	if !ok || key != rs.Status.ObjectKey {
		return fmt.Sprintf("the verified backup's key %q is not spec.backupName %q's (the restore's spec or recorded "+
			"state changed after verification)", rs.Status.ObjectKey, rs.Spec.BackupName)
	}
	if v, _ := verificationOf(cluster); !v.matches(rs.Status) {
		return fmt.Sprintf("the restore's recorded backup (destination %q, key %q, sha256 %q) is not the one verified "+
			"(destination %q, key %q, sha256 %q): the restore's recorded state changed after verification",
			rs.Status.Destination, rs.Status.ObjectKey, rs.Status.SHA256, v.Destination, v.ObjectKey, v.SHA256)
	}
	return ""
}

// waitForDeletion reports what the teardown still waits for (the old StatefulSet, PVCs or
// pods to go), until the restore's timeout.
func (r *Reconciler) waitForDeletion(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	waiting string, err error) (ctrl.Result, error) {
	if err != nil {
		return ctrl.Result{}, err
	}
	if r.expired(rs) {
		return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "TeardownTimeout",
			fmt.Sprintf("after %s still waiting for %s to be deleted.", r.Opts.Timeout, waiting))
	}
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, rs.Status.Phase, "", "",
		"waiting for "+waiting+" to be deleted", nil)
}

// abort ends a teardown that cannot go on: before anything was deleted (saved nil) the
// cluster is unpaused and unlocked as it was; after, it stays paused (failPaused).
func (r *Reconciler) abort(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	saved *appsv1.StatefulSet, reason, msg string) error {
	if saved != nil {
		return r.failPaused(ctx, rs, cluster, reason, msg+".")
	}
	if err := r.unlock(ctx, rs, true, time.Time{}); err != nil {
		return err
	}
	return r.fail(ctx, rs, reason, msg+". Nothing was deleted; the cluster was unpaused and unlocked.")
}

// podSecret returns the destination and the member pods' credentials Secret. Before the
// teardown began (saved nil) the credentials are proven once more, so that a change since
// prepare fails the restore while the cluster is whole; after, each poll only makes sure the
// Secret is there (no request to the bucket per poll).
func (r *Reconciler) podSecret(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	saved *appsv1.StatefulSet) (destination.Destination, string, error) {
	dest, err := r.Destinations.Lookup(ctx, rs.Status.Destination)
	if err != nil {
		return dest, "", err
	}
	ids, err := r.identities(ctx, rs, cluster, dest)
	if err != nil {
		return dest, "", err
	}
	if saved == nil {
		secret, err := r.proveCredentials(ctx, rs, cluster, dest, rs.Status.ObjectKey, rs.Status.SHA256, ids)
		return dest, secret, err
	}
	dl, err := r.credentials(ctx, rs, cluster, dest, rs.Status.ObjectKey, ids)
	return dest, dl.secret, err
}

// saveSpec saves the etcd StatefulSet's spec before it is deleted.
func (r *Reconciler) saveSpec(ctx context.Context, rs *kubermaticv1.EtcdRestore) (*appsv1.StatefulSet, error) {
	var sts appsv1.StatefulSet
	if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: r.Opts.StatefulSet}, &sts); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &NoStatefulSetError{Namespace: rs.Namespace, Name: r.Opts.StatefulSet}
		}
		return nil, err
	}
	return r.save(ctx, rs, &sts)
}

// recreate creates the StatefulSet again with the restore step in front of etcd: StsRebuilding.
func (r *Reconciler) recreate(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	saved *appsv1.StatefulSet, step Step) (ctrl.Result, error) {
	rebuilt, err := Rebuilt(saved, step, r.Opts.Step)
	if err != nil {
		return ctrl.Result{}, r.failPaused(ctx, rs, cluster, "InvalidStatefulSet", err.Error())
	}
	if err := r.Client.Create(ctx, rebuilt); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("create statefulset: %w", err)
	}
	took := r.sincePhase(rs)
	r.Metrics.steps.WithLabelValues("teardown").Observe(took.Seconds())
	n := replicas(rebuilt)
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseStsRebuilding,
		corev1.EventTypeNormal, "StsRebuilding",
		fmt.Sprintf("old StatefulSet, PVCs and pods gone after %s; StatefulSet %s recreated with the restore step, waiting "+
			"for %d members to restore and become healthy",
			took.Round(time.Millisecond), rebuilt.Name, n), func(s *kubermaticv1.EtcdRestoreStatus) {
			s.Progress = fmt.Sprintf("members restored 0/%d", n)
		})
}

// deleteOld deletes the etcd StatefulSet (unless it is the one this restore built) and the
// etcd PVCs; it returns what is still there, "" when all is gone.
func (r *Reconciler) deleteOld(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	saved *appsv1.StatefulSet) (string, error) {
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
			if err := r.Client.Delete(ctx, &sts, &client.DeleteOptions{PropagationPolicy: &policy,
				Preconditions: &metav1.Preconditions{UID: &sts.UID}}); client.IgnoreNotFound(err) != nil {
				return "", fmt.Errorf("delete statefulset: %w", err)
			}
		}
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := r.API.List(ctx, &pvcs, client.InNamespace(rs.Namespace),
		client.MatchingLabels{EtcdLabel: EtcdLabelValue}); err != nil {
		return "", err
	}
	for i := range pvcs.Items {
		pvc := &pvcs.Items[i]
		if pvc.DeletionTimestamp == nil {
			if err := r.Client.Delete(ctx, pvc,
				&client.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pvc.UID}}); client.IgnoreNotFound(err) != nil {
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
		return nil, fmt.Errorf("%w: ConfigMap %s/%s has no controller ownerReference to this EtcdRestore (uid %s)",
			ErrSavedNotOwned, cm.Namespace, cm.Name, rs.UID)
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

func (r *Reconciler) save(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	sts *appsv1.StatefulSet) (*appsv1.StatefulSet, error) {
	s := Saveable(sts)
	data, err := Encode(s)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: SavedName(rs), Namespace: rs.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "etcdbackup-restorer"}},
		Data: map[string]string{SavedSpecKey: data},
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
