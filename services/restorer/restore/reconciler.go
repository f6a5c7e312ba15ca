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
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
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
	// PreRestoreBackup backs the cluster's etcd up before the restore (preRestoreBackup);
	// PreRestoreTimeout is how long the restore waits for that backup.
	PreRestoreBackup  bool
	PreRestoreTimeout time.Duration
	// WorkDir is where a point-in-time restore builds its database ("": the system's
	// temporary directory); it needs twice the database's size.
	WorkDir string
}

// PodLogs returns the last lines of a container's log.
type PodLogs func(ctx context.Context, namespace, pod, container string) ([]byte, error)

// Destinations resolves Seed destinations, their buckets and the identities their backups
// are decrypted with (destination.Resolver).
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Bucket(ctx context.Context, d destination.Destination) (destination.Bucket, error)
	Identities(ctx context.Context, d destination.Destination) (backupformat.Identities, error)
}

// Reconciler is the EtcdRestore controller.
type Reconciler struct {
	// Client reads EtcdRestores and Clusters from the cache and writes.
	Client client.Client
	// API reads everything else uncached: StatefulSets, PVCs, Pods, Secrets, ConfigMaps and
	// EtcdBackupConfigs of the clusters being restored only.
	API client.Reader
	// Destinations resolves destinations, their buckets and decryption identities.
	Destinations Destinations
	Recorder     events.EventRecorder
	Log          *slog.Logger
	// Publish sends a phase change to subscribers on the bus (bus.Announcer; nil: not sent).
	Publish func(ctx context.Context, ev *etcdbackupv1.StatusEvent)
	// Logs reads the tail of a container's log (pods/log); the rebuild reads each member's
	// download progress from its restore step's log (nil: progress without bytes).
	Logs PodLogs
	Opts Options
	// Metrics are the restores' (NewMetrics); Bus counts each failure's reason with the other
	// stages' failures.
	Metrics *Metrics
	Bus     *bus.Metrics
	Now     func() time.Time

	deferred sync.Map // uids of restores told their deletion waits
	// restore (namespace/name) -> the phase the schema refused in status; forgotten when the restore is gone
	refused sync.Map
}

// SetupWithManager registers the Reconciler with mgr, running concurrency restores at once:
// every EtcdRestore, and the unfinished restores of a Cluster that changes (a lock released, a
// feature enabled or a pause changed lets them go on).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	err := ctrl.NewControllerManagedBy(mgr).Named("etcdrestore").
		For(&kubermaticv1.EtcdRestore{}).
		Watches(&kubermaticv1.Cluster{}, handler.EnqueueRequestsFromMapFunc(r.restoresOf)).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("restorer controller: %w", err)
	}
	return nil
}

// restoresOf maps a Cluster to its unfinished EtcdRestores.
func (r *Reconciler) restoresOf(ctx context.Context, obj client.Object) []ctrl.Request {
	var list kubermaticv1.EtcdRestoreList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil
	}
	var out []ctrl.Request
	for _, rs := range list.Items {
		if st := rs.EffectiveStatus(); rs.Spec.Cluster.Name != obj.GetName() || st.Finished() {
			continue
		}
		out = append(out, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&rs)})
	}
	return out
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

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
		if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(&rs,
			client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
		rs = *patched
	}
	return r.step(ctx, &rs)
}

// step runs the step of rs's phase. An error in a step that holds the cluster paused is
// retried until the restore's timeout, then ends it (timedOut).
func (r *Reconciler) step(ctx context.Context, rs *kubermaticv1.EtcdRestore) (ctrl.Result, error) {
	var res ctrl.Result
	var err error
	switch rs.Status.Phase {
	case kubermaticv1.RestorePhaseStarted:
		res, err = r.teardown(ctx, rs)
	case kubermaticv1.RestorePhaseStsRebuilding:
		res, err = r.rebuild(ctx, rs)
	default:
		return r.prepare(ctx, rs)
	}
	if err != nil && r.expired(rs) && !rs.Status.Finished() {
		return ctrl.Result{}, r.timedOut(ctx, rs, err)
	}
	return res, err
}

// timedOut ends a restore whose teardown or rebuild kept failing until its timeout: before
// anything was deleted the cluster is unpaused and unlocked, after it stays paused.
func (r *Reconciler) timedOut(ctx context.Context, rs *kubermaticv1.EtcdRestore, cause error) error {
	cluster, err := r.cluster(ctx, rs)
	if err != nil {
		return errors.Join(cause, err)
	}
	msg := fmt.Sprintf("gave up after %s, still failing: %v", r.Opts.Timeout, cause)
	if cluster == nil {
		return r.fail(ctx, rs, "Timeout", msg)
	}
	saved, err := r.savedExists(ctx, rs)
	if err != nil {
		return errors.Join(cause, err)
	}
	if rs.Status.Phase == kubermaticv1.RestorePhaseStarted && !saved {
		return r.abort(ctx, rs, cluster, nil, "Timeout", msg)
	}
	return r.failPaused(ctx, rs, cluster, "Timeout", msg+".")
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
	if rs.Status.Phase == kubermaticv1.RestorePhaseStsRebuilding ||
		(rs.Status.Phase == kubermaticv1.RestorePhaseStarted && saved) {
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
		// Unpaused only if this restore paused it (its Verification is on the cluster).
		if err := r.unlock(ctx, rs, true, time.Time{}); err != nil {
			return ctrl.Result{}, err
		}
	}
	r.event(rs, corev1.EventTypeNormal, "Cancelled", "Delete",
		"restore deleted before etcd was touched: cluster unlocked and left as it was")
	r.cleanup(ctx, rs)
	return ctrl.Result{}, r.removeFinalizer(ctx, rs)
}
