package prune

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	"github.com/etcd-backup/etcdbackup/services/pruner/retention"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// keepForGrace records the backups a config being deleted keeps (graced, newest first) in its
// DeletedBackupSet, created with the finalizer that deletes them; a set already there (an
// earlier pass) is kept as it is.
func (r *Reconciler) keepForGrace(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	graced []retention.Object) (*backupv1.DeletedBackupSet, error) {
	deleted := cfg.DeletionTimestamp.Time
	set := &backupv1.DeletedBackupSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:       backupv1.DeletedBackupSetName(cfg.Namespace, cfg.Name, cfg.UID),
			Finalizers: []string{backupv1.DeletedBackupSetFinalizer},
		},
		Spec: backupv1.DeletedBackupSetSpec{
			Namespace: cfg.Namespace, Config: cfg.Name, ConfigUID: cfg.UID, Cluster: cfg.Spec.Cluster.Name,
			DeletedAt: metav1.NewTime(deleted), Expires: metav1.NewTime(deleted.Add(r.Planner.Grace)),
		},
	}
	var ns corev1.Namespace
	if err := r.API.Get(ctx, types.NamespacedName{Name: cfg.Namespace}, &ns); client.IgnoreNotFound(err) != nil {
		return nil, fmt.Errorf("get namespace %s: %w", cfg.Namespace, err)
	}
	set.Spec.NamespaceUID = ns.UID
	for _, o := range graced {
		b := backupv1.DeletedBackup{Name: o.Backup, Destination: o.Destination, ObjectKey: o.Key, Size: o.Size}
		if !o.Stored.IsZero() {
			t := metav1.NewTime(o.Stored)
			b.Stored = &t
		}
		set.Spec.Backups = append(set.Spec.Backups, b)
	}
	err := r.Client.Create(ctx, set)
	if apierrors.IsAlreadyExists(err) {
		var have backupv1.DeletedBackupSet
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(set), &have); err != nil {
			return nil, fmt.Errorf("get deletedbackupset %s: %w", set.Name, err)
		}
		if have.Spec.ConfigUID != cfg.UID {
			return nil, fmt.Errorf("deletedbackupset %s records config uid %s, not %s", set.Name, have.Spec.ConfigUID,
				cfg.UID)
		}
		return &have, nil
	}
	if err != nil {
		return nil, fmt.Errorf("create deletedbackupset %s: %w", set.Name, err)
	}
	r.Recorder.Eventf(cfg, set, corev1.EventTypeNormal, "BackupsKept", "Delete",
		"%d backups kept until %s in DeletedBackupSet %s (kubectl get deletedbackupsets %s)", len(set.Spec.Backups),
		set.Spec.Expires.UTC().Format(time.RFC3339), set.Name, set.Name)
	return set, nil
}

// Grace keeps the backups of deleted configs (DeletedBackupSets) until they expire, then
// deletes them and the set. A set deleted by hand deletes its backups at once. A config
// re-created with the same name, namespace and cluster lists the backups as its own (they are
// under its prefix): the set is then dropped and the backups left to that config's retention.
// Backups an unfinished EtcdRestore names are deleted only after it ends.
type Grace struct {
	Client       client.Client
	Destinations Destinations
	Recorder     events.EventRecorder
	Metrics      *Metrics
	Log          *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// SetupWithManager registers the controller: every DeletedBackupSet, the set an EtcdRestore
// restores from (a deletion waiting for the restore goes on when it ends), and the sets of a
// config's namespace and name (one created again adopts them).
func (g *Grace) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).Named("deletedbackupset-pruner").
		For(&backupv1.DeletedBackupSet{}).
		Watches(&kubermaticv1.EtcdBackupConfig{}, handler.EnqueueRequestsFromMapFunc(g.setsOf)).
		Watches(&kubermaticv1.EtcdRestore{}, handler.EnqueueRequestsFromMapFunc(
			func(_ context.Context, obj client.Object) []reconcile.Request {
				if name := obj.GetAnnotations()[backupv1.AnnotationDeletedBackups]; name != "" {
					return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
				}
				return nil
			})).
		Complete(g)
	if err != nil {
		return fmt.Errorf("deletedbackupset controller: %w", err)
	}
	return nil
}

// setsOf maps a config to the sets a config of its namespace and name left.
func (g *Grace) setsOf(ctx context.Context, obj client.Object) []reconcile.Request {
	var sets backupv1.DeletedBackupSetList
	if err := g.Client.List(ctx, &sets); err != nil {
		g.Log.Warn("list deletedbackupsets", "err", err)
		return nil
	}
	var reqs []reconcile.Request
	for _, s := range sets.Items {
		if s.Spec.Namespace == obj.GetNamespace() && s.Spec.Config == obj.GetName() {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: s.Name}})
		}
	}
	return reqs
}

func (g *Grace) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Reconcile implements reconcile.Reconciler.
func (g *Grace) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var set backupv1.DeletedBackupSet
	if err := g.Client.Get(ctx, req.NamespacedName, &set); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !controllerutil.ContainsFinalizer(&set, backupv1.DeletedBackupSetFinalizer) {
		g.Metrics.grace.DeleteLabelValues(set.Spec.Namespace, set.Spec.Config)
		return ctrl.Result{}, nil
	}
	if set.DeletionTimestamp == nil {
		if adopter, err := g.adopter(ctx, &set); err != nil || adopter != nil {
			return ctrl.Result{}, g.handOver(ctx, &set, adopter, err)
		}
		if until := set.Spec.Expires.Sub(g.now()); until > 0 {
			g.Metrics.grace.WithLabelValues(set.Spec.Namespace, set.Spec.Config).Set(float64(len(set.Spec.Backups)))
			return ctrl.Result{RequeueAfter: until}, g.setStatus(ctx, &set, backupv1.DeletedPhaseKept,
				fmt.Sprintf("kept until %s: restore with an EtcdRestore annotated %s: %s", set.Spec.Expires.UTC().Format(
					time.RFC3339), backupv1.AnnotationDeletedBackups, set.Name))
		}
		g.Log.Info("grace period ended", "deletedbackupset", set.Name)
		if err := g.Client.Delete(ctx, &set); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		return ctrl.Result{}, nil
	}
	if holder, err := g.holder(ctx, &set); err != nil {
		return ctrl.Result{}, err
	} else if holder != "" {
		return ctrl.Result{RequeueAfter: 10 * time.Second}, g.setStatus(ctx, &set, backupv1.DeletedPhaseDeleting,
			fmt.Sprintf("deletion waits until EtcdRestore %s, which restores from these backups, ends", holder))
	}
	retained, err := g.deleteBackups(ctx, &set)
	if err == nil && retained > 0 {
		return ctrl.Result{RequeueAfter: time.Hour}, g.setStatus(ctx, &set, backupv1.DeletedPhaseDeleting,
			fmt.Sprintf("deleted; %d versions stay until their object lock runs out, then they are destroyed", retained))
	}
	if err != nil {
		if destination.IsConfigError(err) {
			g.Recorder.Eventf(&set, nil, corev1.EventTypeWarning, destination.Reason(err), "Delete", "%v", err)
			return ctrl.Result{RequeueAfter: 30 * time.Second}, g.setStatus(ctx, &set, backupv1.DeletedPhaseDeleting,
				"backups cannot be deleted, retrying: "+err.Error())
		}
		return ctrl.Result{}, err
	}
	if _, err := g.release(ctx, &set); err != nil {
		return ctrl.Result{}, err
	}
	g.Log.Info("backups of a deleted config deleted", "deletedbackupset", set.Name, "backups", len(set.Spec.Backups))
	return ctrl.Result{}, nil
}

// adopter is the config re-created under set's prefix (same namespace, name and cluster),
// whose retention lists the backups as its own; nil when there is none.
func (g *Grace) adopter(ctx context.Context, set *backupv1.DeletedBackupSet) (*kubermaticv1.EtcdBackupConfig, error) {
	var cfg kubermaticv1.EtcdBackupConfig
	err := g.Client.Get(ctx, types.NamespacedName{Namespace: set.Spec.Namespace, Name: set.Spec.Config}, &cfg)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get etcdbackupconfig %s/%s: %w", set.Spec.Namespace, set.Spec.Config, err)
	}
	if cfg.UID == set.Spec.ConfigUID || cfg.DeletionTimestamp != nil || cfg.Spec.Cluster.Name != set.Spec.Cluster {
		return nil, nil
	}
	return &cfg, nil
}

// handOver drops set without deleting its backups: adopter lists them as its own.
func (g *Grace) handOver(ctx context.Context, set *backupv1.DeletedBackupSet, adopter *kubermaticv1.EtcdBackupConfig,
	err error) error {
	if err != nil {
		return err
	}
	released, err := g.release(ctx, set)
	if err != nil || released == nil {
		return err
	}
	if err := g.Client.Delete(ctx, released); client.IgnoreNotFound(err) != nil {
		return err
	}
	g.Recorder.Eventf(adopter, nil, corev1.EventTypeNormal, "BackupsAdopted", "Adopt",
		"the %d backups of the config deleted at %s (DeletedBackupSet %s) are this config's again: retention counts them",
		len(set.Spec.Backups), set.Spec.DeletedAt.UTC().Format(time.RFC3339), set.Name)
	g.Log.Info("deleted config's backups adopted", "deletedbackupset", set.Name,
		"config", adopter.Namespace+"/"+adopter.Name)
	return nil
}

// release removes set's finalizer (its backups are deleted or adopted) and forgets its metric;
// it returns the set as patched, nil when it is gone already.
func (g *Grace) release(ctx context.Context, set *backupv1.DeletedBackupSet) (*backupv1.DeletedBackupSet, error) {
	patched := set.DeepCopy()
	controllerutil.RemoveFinalizer(patched, backupv1.DeletedBackupSetFinalizer)
	if err := g.Client.Patch(ctx, patched, client.MergeFromWithOptions(set,
		client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	g.Metrics.grace.DeleteLabelValues(set.Spec.Namespace, set.Spec.Config)
	return patched, nil
}

// holder names an unfinished EtcdRestore that restores from one of set's backups: annotated
// with the set, or in the config's namespace naming one of its backups ("" when none).
func (g *Grace) holder(ctx context.Context, set *backupv1.DeletedBackupSet) (string, error) {
	var restores kubermaticv1.EtcdRestoreList
	if err := g.Client.List(ctx, &restores); err != nil {
		return "", fmt.Errorf("list etcdrestores: %w", err)
	}
	for _, rs := range restores.Items {
		if st := rs.EffectiveStatus(); st.Finished() {
			continue
		}
		_, ours := set.Backup(rs.Spec.BackupName)
		if ours && (rs.Annotations[backupv1.AnnotationDeletedBackups] == set.Name || rs.Namespace == set.Spec.Namespace) {
			return rs.Namespace + "/" + rs.Name, nil
		}
	}
	return "", nil
}

// deleteBackups deletes every backup of set (one already gone counts as deleted). In an Object
// Lock destination it destroys their versions as their locks let them go; it returns how many
// are still retained.
func (g *Grace) deleteBackups(ctx context.Context, set *backupv1.DeletedBackupSet) (int, error) {
	if set.Status.Phase != backupv1.DeletedPhaseDeleting {
		if err := g.setStatus(ctx, set, backupv1.DeletedPhaseDeleting, "deleting the backups"); err != nil {
			return 0, err
		}
	}
	var errs []error
	retained := 0
	for _, b := range set.Spec.Backups {
		key, err := trust.DeletedKey(set, b)
		if err != nil { // nothing of the deleted config's: not this pruner's to delete
			g.Recorder.Eventf(set, nil, corev1.EventTypeWarning, "BackupNotTheConfigs", "Delete", "%v; left as it is", err)
			continue
		}
		b.ObjectKey = key
		r, err := g.deleteBackup(ctx, b)
		if err != nil {
			errs = append(errs, fmt.Errorf("backup %s in destination %q: %w", b.Name, b.Destination, err))
			continue
		}
		retained += r
		g.Metrics.deleted.WithLabelValues(set.Spec.Cluster, b.Destination).Inc()
	}
	return retained, errors.Join(errs...)
}

// deleteBackup deletes one backup, and where Object Lock kept its versions, destroys those
// whose lock ran out; it returns how many stay retained.
func (g *Grace) deleteBackup(ctx context.Context, b backupv1.DeletedBackup) (int, error) {
	dest, err := g.Destinations.Lookup(ctx, b.Destination)
	if err != nil {
		return 0, err
	}
	bucket, err := g.Destinations.Bucket(ctx, dest)
	if err != nil {
		return 0, err
	}
	v, ok := bucket.(destination.Versions)
	if dest.Lock == nil || !ok {
		return 0, bucket.Delete(ctx, b.ObjectKey)
	}
	// Hidden once: each Delete of a versioned key adds a delete marker.
	if _, err := bucket.Stat(ctx, b.ObjectKey); err == nil {
		if err := bucket.Delete(ctx, b.ObjectKey); err != nil {
			return 0, err
		}
	} else if !errors.Is(err, destination.ErrObjectNotFound) {
		return 0, err
	}
	_, retained, _, err := sweep(ctx, v, b.ObjectKey, g.now())
	return retained, err
}

// setStatus writes set's phase and message, with how many backups it holds and the newest.
func (g *Grace) setStatus(ctx context.Context, set *backupv1.DeletedBackupSet, phase, msg string) error {
	patched := set.DeepCopy()
	patched.Status = backupv1.DeletedBackupSetStatus{Phase: phase, Message: msg, Backups: len(set.Spec.Backups)}
	if len(set.Spec.Backups) > 0 {
		patched.Status.Newest = set.Spec.Backups[0].Name
	}
	if patched.Status == set.Status {
		return nil
	}
	if err := g.Client.Status().Patch(ctx, patched, client.MergeFrom(set)); err != nil {
		return client.IgnoreNotFound(err)
	}
	*set = *patched
	return nil
}
