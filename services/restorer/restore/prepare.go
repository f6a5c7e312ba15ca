// prepare: the preconditions, the lock, the backup verified and the member pods' credentials
// proven, then the pause (phase Started). Anything that fails here leaves the cluster as it was.

package restore

import (
	"context"
	"errors"
	"fmt"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
	"github.com/minio/minio-go/v7"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
)

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
			s.Progress = "verifying"
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
	ids, err := r.identities(ctx, rs, cluster, dest)
	if err != nil {
		if errors.Is(err, ErrIdentity) {
			return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, ReasonDecryptionFailed, err.Error())
		}
		return r.retryPrepare(ctx, rs, cluster, err)
	}
	start := r.now()
	vctx, cancel := context.WithTimeout(ctx, r.Opts.Timeout)
	v, err := member.Verify(vctx, s3, dest.BucketName, backup.ObjectKey, ids.List)
	cancel()
	switch {
	case errors.Is(err, member.ErrDecrypt):
		return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, ReasonDecryptionFailed,
			fmt.Sprintf("backup %q in destination %q: %v. Name a Secret with the right identity in annotation %s (in the cluster's namespace, key %s), or set the destination's decryptionSecret", rs.Spec.BackupName, dest.Name, err, kubermaticv1.AnnotationDecryptionSecret, destination.IdentityKey))
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
	if _, err := r.proveCredentials(ctx, rs, cluster, dest, backup.ObjectKey, v.SHA256, ids); err != nil {
		if errors.Is(err, member.ErrDecrypt) {
			return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, ReasonDecryptionFailed, err.Error())
		}
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
		s.Progress = "tearing down"
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
