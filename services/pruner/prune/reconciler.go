package prune

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/pruner/retention"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Reconciler keeps the delete-all-backups finalizer on every EtcdBackupConfig, applies
// retention every Interval (besides after each stored backup), and when a config is deleted,
// deletes its backups before it lets the object go: all of them, or with a grace period
// (Planner.Grace) all but those its retention keeps, which it records in a DeletedBackupSet
// first (the Grace controller deletes them when the grace ends).
type Reconciler struct {
	Client client.Client
	// API reads the config's namespace (uncached), for the DeletedBackupSet.
	API      client.Reader
	Planner  *Planner
	Recorder events.EventRecorder
	Interval time.Duration
	Log      *slog.Logger
}

// SetupWithManager registers the Reconciler with mgr: every EtcdBackupConfig, and the config
// whose backup an EtcdRestore names (retention decides again when a restore that held a
// backup ends).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).Named("etcdbackupconfig-pruner").
		For(&kubermaticv1.EtcdBackupConfig{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return !OnlyStatusChanged(e.ObjectOld, e.ObjectNew) },
		})).
		Watches(&kubermaticv1.EtcdRestore{}, handler.EnqueueRequestsFromMapFunc(ConfigOfRestore)).
		Complete(r)
	if err != nil {
		return fmt.Errorf("pruner controller: %w", err)
	}
	return nil
}

// OnlyStatusChanged says an update of a config changed its status alone: the status writer's
// patches of every backup (queued, staged, completed), the journal's window every status
// interval, the scheduler's and the drills' conditions. None is retention's to act on: a
// stored backup comes as the uploader's BackupStored message (Stored), a deletion as the
// deletion timestamp, an ended restore as its EtcdRestore, and everything else at the next
// Interval. Each pass lists the config's prefix, and a quick backup patches status about three
// times.
func OnlyStatusChanged(oldObj, newObj client.Object) bool {
	o, ok1 := oldObj.(*kubermaticv1.EtcdBackupConfig)
	n, ok2 := newObj.(*kubermaticv1.EtcdBackupConfig)
	if !ok1 || !ok2 {
		return false
	}
	o, n = o.DeepCopy(), n.DeepCopy()
	for _, c := range []*kubermaticv1.EtcdBackupConfig{o, n} {
		c.Status, c.ResourceVersion, c.ManagedFields = kubermaticv1.EtcdBackupConfigStatus{}, "", nil
	}
	return equality.Semantic.DeepEqual(o, n)
}

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cfg kubermaticv1.EtcdBackupConfig
	if err := r.Client.Get(ctx, req.NamespacedName, &cfg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if cfg.DeletionTimestamp == nil {
		return r.retain(ctx, &cfg)
	}
	if !controllerutil.ContainsFinalizer(&cfg, kubermaticv1.DeleteAllBackupsFinalizer) {
		return ctrl.Result{}, nil
	}
	l, err := r.Planner.Plan(ctx, &cfg)
	if err != nil {
		r.setCondition(ctx, &cfg, "DestinationUnreachable",
			fmt.Sprintf("backups cannot be deleted, the object is kept until they are: %v", err), true)
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if len(l.Unreachable) > 0 {
		names := slices.Sorted(maps.Keys(l.Unreachable))
		r.setCondition(ctx, &cfg, "DestinationUnreachable", fmt.Sprintf(
			"status records backups in destination(s) %v, which the Seed no longer configures (%v): they cannot be listed or "+
				"deleted, and the object is kept. "+
				"Configure the destination again, or remove the finalizer %s by hand to leave those backups behind.",
			names, l.Unreachable[names[0]], kubermaticv1.DeleteAllBackupsFinalizer), true)
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if d := l.Decision; d.Pending() > 0 {
		r.setCondition(ctx, &cfg, "DeletionPending", pending(d), false)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	graced := l.Decision.Graced
	if l.Copy != nil {
		graced = append(graced, l.Copy.Graced...)
	}
	if len(graced) > 0 {
		set, err := r.keepForGrace(ctx, &cfg, graced)
		if err != nil {
			return ctrl.Result{}, err
		}
		r.Log.Info("backups kept for the grace period", "config", req.String(), "backups", len(set.Spec.Backups),
			"deletedbackupset", set.Name, "expires", set.Spec.Expires.UTC().Format(time.RFC3339))
	}
	patched := cfg.DeepCopy()
	controllerutil.RemoveFinalizer(patched, kubermaticv1.DeleteAllBackupsFinalizer)
	if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(&cfg,
		client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.Log.Info("config released", "config", req.String(), "kept", len(l.Decision.Graced))
	r.Planner.Metrics.forget(req.Namespace, req.Name)
	return ctrl.Result{}, nil
}

// retain keeps the finalizer on a live config and applies its retention, again every Interval.
// A destination's configuration error waits for the next pass: the uploader's Failed backups
// and the scheduler's condition say why.
func (r *Reconciler) retain(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(cfg, kubermaticv1.DeleteAllBackupsFinalizer) {
		patched := cfg.DeepCopy()
		controllerutil.AddFinalizer(patched, kubermaticv1.DeleteAllBackupsFinalizer)
		if err := r.Client.Patch(ctx, patched, client.MergeFromWithOptions(cfg,
			client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
		*cfg = *patched
	}
	l, err := r.Planner.Plan(ctx, cfg)
	if err != nil && !destination.IsConfigError(err) {
		return ctrl.Result{}, fmt.Errorf("retention of %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	if err == nil && l.Copy != nil {
		ok, reason, msg := copyCondition(l.Copy, r.Planner.now())
		status := corev1.ConditionTrue
		if !ok {
			status = corev1.ConditionFalse
		}
		r.condition(ctx, cfg, kubermaticv1.ConditionBackupsCopied, status, reason, msg, !ok && l.Copy.Err != nil)
	}
	return ctrl.Result{RequeueAfter: r.Interval}, nil
}

// pending says what a config's deletion still waits for.
func pending(d retention.Decision) string {
	msg := fmt.Sprintf("%d backups left to delete", len(d.Delete))
	if len(d.Held) > 0 {
		msg += fmt.Sprintf("; %d held until a restore ends (%s)", len(d.Held), d.Held[0].Reason)
	}
	if len(d.Waiting) > 0 {
		msg += fmt.Sprintf("; waiting for %d backups still running (%s), up to %s from their start", len(d.Waiting),
			d.Waiting[0].BackupName, retention.RunningGrace)
	}
	return msg
}

// setCondition records on a config being deleted why it is still there.
func (r *Reconciler) setCondition(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, reason, message string,
	warning bool) {
	r.condition(ctx, cfg, kubermaticv1.ConditionBackupsDeleted, corev1.ConditionFalse, reason, message, warning)
}

// condition writes a condition of cfg's status when it changed, with a Warning Event then if
// warning.
func (r *Reconciler) condition(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, kind string,
	status corev1.ConditionStatus, reason, message string, warning bool) {
	patched := cfg.DeepCopy()
	changed := patched.Status.SetCondition(kind, status, reason, message, metav1.Now())
	if !changed {
		return
	}
	if err := r.Client.Status().Patch(ctx, patched, client.MergeFromWithOptions(cfg,
		client.MergeFromWithOptimisticLock{})); err != nil {
		r.Log.Warn("set condition", "config", cfg.Namespace+"/"+cfg.Name, "err", err)
		return
	}
	if warning {
		action := "Delete"
		if kind == kubermaticv1.ConditionBackupsCopied {
			action = "Copy"
		}
		r.Recorder.Eventf(cfg, nil, corev1.EventTypeWarning, reason, action, "%s", message)
	}
}

// Stored handles the pruner consumer's messages: retention right after a backup is stored.
type Stored struct {
	Reader client.Reader
	// Configs, when set, is the cache read before Reader (trust.Checker).
	Configs client.Reader
	Planner *Planner
	// Events records a Warning on a config whose message was rejected (nil: none).
	Events events.EventRecorder
}

// Handler is the pruner consumer's handler, whose messages are delivered at most maxDeliver
// times: Handle, with a destination's configuration errors permanent.
func (s *Stored) Handler(maxDeliver int) bus.Handler {
	return bus.Typed(maxDeliver, s.Handle, bus.Classify[*etcdbackupv1.BackupStored](deleteFailures))
}

// Handle plans the config of the stored backup; a config that is gone or was re-created is
// skipped, and a message naming another cluster or key than the config's is rejected.
func (s *Stored) Handle(ctx context.Context, stored *etcdbackupv1.BackupStored, d bus.Delivery) error {
	req := stored.GetRequest()
	claim := trust.ClaimOf(req)
	claim.ObjectKey = stored.GetObjectKey()
	cfg, err := trust.Checker{Reader: s.Reader, Cache: s.Configs, Events: s.Events}.Config(ctx, d.Subject, claim)
	if err != nil || cfg == nil {
		return err
	}
	_, err = s.Planner.Plan(ctx, cfg)
	return err
}

// ConfigOfRestore maps an EtcdRestore to the config whose backup it names, so that retention
// decides again as soon as a restore that held a backup ends.
func ConfigOfRestore(_ context.Context, obj client.Object) []reconcile.Request {
	rs, ok := obj.(*kubermaticv1.EtcdRestore)
	if !ok {
		return nil
	}
	config, ok := backupname.ConfigOf(rs.Spec.BackupName)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: rs.Namespace, Name: config}}}
}
