// prepare: the preconditions, the lock, the backup verified and the member pods' credentials
// proven, then the pause (phase Started). Anything that fails here leaves the cluster as it was.

package restore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
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
	cluster, res, err := r.lock(ctx, rs)
	if cluster == nil || err != nil {
		return res, err
	}
	if res, done, err := r.preRestoreBackup(ctx, rs, cluster); !done || err != nil {
		return res, err
	}
	start := r.now()
	t, v, err := r.verify(ctx, rs, cluster)
	if err != nil {
		return r.refuse(ctx, rs, cluster, t, err)
	}
	took := r.now().Sub(start)
	r.Metrics.steps.WithLabelValues("verify").Observe(took.Seconds())
	rec := Verification{UID: string(rs.UID), Restore: Lock(rs), Destination: t.destination, ObjectKey: t.key,
		SHA256: v.SHA256}
	if err := r.patchCluster(ctx, cluster, pausePatch(rec)); err != nil {
		return ctrl.Result{}, err
	}
	msg := fmt.Sprintf("backup %s verified in %s (%d bytes stored, %d bytes of snapshot, sha256 %s); cluster %s paused",
		rs.Spec.BackupName, took.Round(time.Millisecond), v.Size, v.SnapshotSize, v.SHA256, cluster.Name)
	if p := t.pit; p != nil {
		msg = fmt.Sprintf("point-in-time database at revision %d built in %s from %s and %d journal segments, %d "+
			"HashKV of the source reproduced (%d bytes of snapshot, sha256 %s); cluster %s paused", p.Revision,
			took.Round(time.Millisecond), p.Anchor, p.Segments, p.Hashes, v.SnapshotSize, v.SHA256, cluster.Name)
	}
	return ctrl.Result{RequeueAfter: r.Opts.Poll}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseStarted,
		corev1.EventTypeNormal, "Started", msg,
		func(s *kubermaticv1.EtcdRestoreStatus) {
			s.Destination, s.ObjectKey, s.SHA256 = t.destination, t.key, v.SHA256
			s.Progress = "tearing down"
		})
}

// lock checks what a restore of rs's cluster needs before anything (the cluster exists, in
// rs's namespace, with etcd-launcher) and takes the cluster's lock. It returns the cluster
// once rs holds the lock; nil when the restore ended or waits, with what to return.
func (r *Reconciler) lock(ctx context.Context,
	rs *kubermaticv1.EtcdRestore) (*kubermaticv1.Cluster, ctrl.Result, error) {
	cluster, err := r.cluster(ctx, rs)
	if err != nil {
		return nil, ctrl.Result{}, err
	}
	if cluster == nil {
		return nil, ctrl.Result{}, r.fail(ctx, rs, "ClusterNotFound",
			fmt.Sprintf("cluster %q does not exist. Nothing was changed; create the EtcdRestore for an existing cluster.",
				rs.Spec.Cluster.Name))
	}
	// Everything the restore touches (the etcd StatefulSet, its PVCs, the saved spec and the
	// credentials) is in the EtcdRestore's namespace, and what it locks and pauses is the
	// cluster it names: both must be the same cluster's, or a typo tears down one cluster's
	// etcd while pausing another.
	if ns := cluster.NamespaceName(); rs.Namespace != ns {
		return nil, ctrl.Result{}, r.fail(ctx, rs, kubermaticv1.ReasonClusterNamespaceMismatch, fmt.Sprintf(
			"the EtcdRestore is in namespace %q, but cluster %q lives in %q. Nothing was changed; create the EtcdRestore in "+
				"the cluster's namespace.",
			rs.Namespace, cluster.Name, ns))
	}
	if !cluster.Spec.Features[kubermaticv1.FeatureEtcdLauncher] {
		return nil, ctrl.Result{}, r.setPhase(ctx, rs, kubermaticv1.RestorePhaseEtcdLauncherNotEnabled,
			corev1.EventTypeWarning, "EtcdLauncherNotEnabled",
			fmt.Sprintf("cluster %s does not have spec.features.%s: true; enable it and the restore proceeds. Nothing was "+
				"changed.",
				cluster.Name, kubermaticv1.FeatureEtcdLauncher), nil)
	}
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != Lock(rs) {
		if holder != "" && !r.stale(ctx, holder) {
			return nil, ctrl.Result{RequeueAfter: 5 * r.Opts.Poll}, r.setPhase(ctx, rs, "", corev1.EventTypeNormal,
				"WaitingForLock",
				fmt.Sprintf("waiting: cluster %s is being restored by EtcdRestore %s; this restore starts after it",
					cluster.Name, holder), nil)
		}
		if err := r.patchCluster(ctx, cluster, lockPatch(cluster, Lock(rs), true)); err != nil {
			return nil, ctrl.Result{}, err // a conflict: someone else locked it, look again
		}
	}
	if rs.Status.StartTime == nil {
		err := r.setPhase(ctx, rs, "", corev1.EventTypeNormal, "Verifying",
			fmt.Sprintf("cluster %s locked; verifying backup %s", cluster.Name, rs.Spec.BackupName),
			func(s *kubermaticv1.EtcdRestoreStatus) {
				t := metav1.NewTime(r.now())
				s.StartTime = &t
				s.Progress = "verifying"
			})
		if err != nil {
			return nil, ctrl.Result{}, err
		}
	}
	return cluster, ctrl.Result{}, nil
}

// target is the backup a restore restores, as far as it is known: for its messages.
type target struct {
	backup, destination, bucket, key string
	// pit is the point-in-time database built for the restore, when it has a target.
	pit *PointInTime
}

// NoStatefulSetError: the cluster's namespace has no etcd StatefulSet to rebuild.
type NoStatefulSetError struct {
	Namespace, Name string
	// Hint ends the message.
	Hint string
}

func (e *NoStatefulSetError) Error() string {
	return fmt.Sprintf("there is no StatefulSet %s/%s to rebuild%s", e.Namespace, e.Name, e.Hint)
}

// verify locates rs's backup, streams it through every check with the restorer's own keys,
// and proves the member pods' keys read the same object, all before the cluster is touched.
func (r *Reconciler) verify(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster) (target, member.Verified, error) {
	t := target{backup: rs.Spec.BackupName}
	backup, err := Locate(ctx, r.API, rs)
	if err != nil {
		return t, member.Verified{}, err
	}
	t.key, t.destination = backup.ObjectKey, rs.Spec.Destination
	if t.destination == "" || backup.Deleted {
		t.destination = backup.Destination
	}
	dest, err := r.Destinations.Lookup(ctx, t.destination)
	if err != nil {
		return t, member.Verified{}, err
	}
	t.destination, t.bucket = dest.Name, dest.BucketName
	b, err := r.Destinations.Bucket(ctx, dest)
	if dest.CopyTo != "" && rs.Annotations[kubermaticv1.AnnotationRestoreTo] == "" {
		if dest, b, err = r.orCopy(ctx, rs, dest, b, err, t.key); err == nil {
			t.destination, t.bucket = dest.Name, dest.BucketName
		}
	}
	if err != nil {
		return t, member.Verified{}, err
	}
	ids, err := r.identities(ctx, rs, cluster, dest)
	if err != nil {
		return t, member.Verified{}, err
	}
	vctx, cancel := context.WithTimeout(ctx, r.Opts.Timeout)
	defer cancel()
	if to, ok := rs.Annotations[kubermaticv1.AnnotationRestoreTo]; ok {
		if t.pit, err = r.buildPointInTime(vctx, rs, b, ids, to); err != nil {
			return t, member.Verified{}, err
		}
		t.key = t.pit.Key
	}
	v, err := member.Verify(vctx, b, t.key, ids.List, r.Opts.Step.MaxSnapshotSize)
	if err != nil {
		return t, v, fmt.Errorf("verify backup: %w", err)
	}
	// Nothing to rebuild into, nothing to pause for.
	if err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: r.Opts.StatefulSet},
		&appsv1.StatefulSet{}); err != nil {
		if apierrors.IsNotFound(err) {
			return t, v, &NoStatefulSetError{rs.Namespace, r.Opts.StatefulSet,
				" (the EtcdRestore must be in the cluster's namespace)"}
		}
		return t, v, err
	}
	// The member pods download with other credentials than the restorer's: proven now, while
	// a refusal still leaves the cluster as it was.
	if _, err := r.proveCredentials(ctx, rs, cluster, dest, t.key, v.SHA256, ids); err != nil {
		return t, v, err
	}
	return t, v, nil
}

// refusal is one row of refusals.
type refusal struct {
	err    error
	match  func(error) bool
	reason string
	// words say it, with {backup}, {destination}, {bucket}, {key} and {err}; "" is the
	// error's own words.
	words string
}

// refusals sorts what can go wrong before anything is deleted: the first row an error matches
// ends the restore with its reason; any other error is retried until the restore's timeout.
var refusals = []refusal{
	{err: ErrBackupNotFound, reason: "BackupNotFound"},
	{err: ErrTarget, reason: "TargetNotRestorable"},
	{err: ErrNotPermitted, reason: "NotPermitted"},
	{err: journal.ErrCorrupt, reason: "JournalCorrupt",
		words: "the journal of {backup} in destination {destination} failed verification ({err}); restore to a point " +
			"before it, or from a full backup"},
	{err: journal.ErrDiverged, reason: "JournalDiverged",
		words: "replaying the journal of {backup} in destination {destination} did not give the source's data ({err}); " +
			"restore from a full backup"},
	{err: ErrIdentity, reason: ReasonDecryptionFailed},
	{err: ErrCredentials, match: refusedKeys, reason: "CredentialsRefused"},
	{err: ErrCredentials, reason: "CredentialsInvalid"},
	{err: member.ErrDecrypt, reason: ReasonDecryptionFailed,
		words: "backup {backup} in destination {destination}: {err}. Name a Secret with the right identity in annotation " +
			kubermaticv1.AnnotationDecryptionSecret + " (in the cluster's namespace, key " + destination.IdentityKey +
			"), or set the destination's decryptionSecret"},
	{err: destination.ErrObjectNotFound, reason: "BackupNotFound",
		words: "backup {backup} does not exist in destination {destination} (bucket {bucket}, key {key}); " +
			"pick a backup listed in an EtcdBackupConfig's status.lastBackups"},
	{err: member.ErrCorrupt, reason: "BackupCorrupt",
		words: "backup {backup} in destination {destination} failed verification ({err}); restore from another backup"},
	{match: noStatefulSet, reason: "StatefulSetNotFound"},
	{match: destination.IsConfigError, reason: ""}, // the destination's own reason
}

func noStatefulSet(err error) bool {
	var e *NoStatefulSetError
	return errors.As(err, &e)
}

// refusedKeys reports keys the store refused.
func refusedKeys(err error) bool { return errors.Is(err, member.ErrRefused) }

// refused returns the reason and words of err when it ends the restore; ok is false for an
// error to retry.
func refused(t target, err error) (reason, words string, ok bool) {
	for _, row := range refusals {
		if (row.err != nil && !errors.Is(err, row.err)) || (row.match != nil && !row.match(err)) {
			continue
		}
		reason, words = row.reason, row.words
		if reason == "" {
			reason = destination.Reason(err)
		}
		if words == "" {
			return reason, err.Error(), true
		}
		return reason, strings.NewReplacer("{backup}", strconv.Quote(t.backup), "{destination}", strconv.Quote(t.destination),
			"{bucket}", t.bucket, "{key}", t.key, "{err}", err.Error()).Replace(words), true
	}
	return "", "", false
}

// refuse ends a restore that failed before the cluster was paused, or retries a transient
// failure until the timeout: either way nothing was changed.
func (r *Reconciler) refuse(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	t target, err error) (ctrl.Result, error) {
	final := r.expired(rs)
	reason, words, ok := refused(t, err)
	if (ok || final) && t.pit != nil {
		r.deletePointInTimeIn(ctx, rs, t.destination)
	}
	if ok {
		return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, reason, words)
	}
	if final {
		return ctrl.Result{}, r.failUnlocked(ctx, rs, cluster, "VerifyFailed", fmt.Sprintf("gave up after %s: %v",
			r.Opts.Timeout, err))
	}
	_ = r.setPhase(ctx, rs, "", corev1.EventTypeWarning, "Retrying",
		fmt.Sprintf("retrying (nothing was changed yet): %v", err), nil)
	return ctrl.Result{}, err
}

// orCopy is the destination a restore reads key from: dest, unless its bucket cannot be
// opened or does not hold key (the bucket lost, the store down) and the destination it copies
// to does; then that one, said in an Event. Any other case is dest, with its own error.
func (r *Reconciler) orCopy(ctx context.Context, rs *kubermaticv1.EtcdRestore, dest destination.Destination,
	b destination.Bucket, err error, key string) (destination.Destination, destination.Bucket, error) {
	if err == nil {
		if _, err = b.Stat(ctx, key); err == nil {
			return dest, b, nil
		}
	}
	copyDest, cerr := r.Destinations.Lookup(ctx, dest.CopyTo)
	if cerr != nil {
		return dest, b, err
	}
	cb, cerr := r.Destinations.Bucket(ctx, copyDest)
	if cerr == nil {
		_, cerr = cb.Stat(ctx, key)
	}
	if cerr != nil {
		return dest, b, err
	}
	r.event(rs, corev1.EventTypeWarning, "RestoringFromCopy", "Verify", fmt.Sprintf(
		"destination %q cannot give %s (%v); restoring from its copy in destination %q", dest.Name, key, err,
		copyDest.Name))
	return copyDest, cb, nil
}
