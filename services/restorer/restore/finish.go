// finish: how a restore ends when it fails, and what it cleans up.

package restore

import (
	"context"
	"fmt"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// cleanup deletes the saved spec and the copied credentials (they are owned by the restore
// too, for the garbage collector, should this fail).
func (r *Reconciler) cleanup(ctx context.Context, rs *kubermaticv1.EtcdRestore) {
	r.deleteOwned(ctx, rs, &corev1.ConfigMap{})
	r.deleteOwned(ctx, rs, &corev1.Secret{})
	r.deletePointInTime(ctx, rs)
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
		r.Log.Warn("clean up after restore: not this restore's, left alone", "restore", Lock(rs), "object",
			client.ObjectKeyFromObject(obj).String())
		return
	}
	uid := obj.GetUID()
	if err := r.Client.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		r.Log.Warn("clean up after restore", "restore", Lock(rs), "err", err)
	}
}

// failUnlocked ends a restore that failed before the cluster was paused: the lock goes, the
// cluster is as it was.
func (r *Reconciler) failUnlocked(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	reason, msg string) error {
	if cluster.Annotations[kubermaticv1.AnnotationActiveRestore] == Lock(rs) {
		if err := r.unlock(ctx, rs, false, time.Time{}); err != nil {
			return err
		}
	}
	return r.fail(ctx, rs, reason, msg+". Nothing was changed: the cluster was not paused and is unlocked.")
}

// failPaused ends a restore that failed after the etcd StatefulSet was touched. The cluster
// stays paused (its etcd is not what KKP left) and is unlocked so that another restore can run.
func (r *Reconciler) failPaused(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	reason, msg string) error {
	if cluster.Annotations[kubermaticv1.AnnotationActiveRestore] == Lock(rs) {
		if err := r.unlock(ctx, rs, false, time.Time{}); err != nil {
			return err
		}
	}
	return r.fail(ctx, rs, reason, fmt.Sprintf(
		"%s The cluster stays paused and is unlocked; its etcd StatefulSet %s/%s was torn down for the rebuild. "+
			"Its spec as it was is in ConfigMap %s (key %s) until this EtcdRestore is deleted. "+
			"Create a new EtcdRestore to try again (delete this one afterwards), or set spec.pause=false on Cluster %s to "+
			"hand it back to KKP as it is.",
		msg, rs.Namespace, r.Opts.StatefulSet, SavedName(rs), SavedSpecKey, cluster.Name))
}

// failNotOwned ends a restore whose saved-spec ConfigMap is not its own. Nothing is rebuilt
// from it; the cluster stays paused (whether its StatefulSet was already torn down cannot be
// told from someone else's object) and is unlocked.
func (r *Reconciler) failNotOwned(ctx context.Context, rs *kubermaticv1.EtcdRestore, cause error) error {
	if err := r.unlock(ctx, rs, false, time.Time{}); err != nil {
		return err
	}
	return r.fail(ctx, rs, "SavedSpecNotOwned", fmt.Sprintf(
		"%v. The restorer does not rebuild from it. The cluster stays paused and is unlocked: check StatefulSet %s/%s, "+
			"then create a new EtcdRestore or unpause the cluster.",
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
	r.Metrics.finished.WithLabelValues("failed").Inc()
	r.Bus.Failed("restore", reason)
	return r.removeFinalizer(ctx, rs)
}

func (r *Reconciler) removeFinalizer(ctx context.Context, rs *kubermaticv1.EtcdRestore) error {
	r.deferred.Delete(rs.UID)
	if !controllerutil.ContainsFinalizer(rs, kubermaticv1.RestoreFinalizer) {
		return nil
	}
	patched := rs.DeepCopy()
	controllerutil.RemoveFinalizer(patched, kubermaticv1.RestoreFinalizer)
	if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(rs,
		client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(err)
	}
	*rs = *patched
	return nil
}
