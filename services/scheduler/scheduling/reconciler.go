package scheduling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Reconciler queues each EtcdBackupConfig's due backup and keeps its SchedulingActive
// condition true to what is happening. It runs on the leader (--leader-elect); more replicas
// at once queue each slot once (slots are derived from the schedule alone and the queue drops
// a request it already holds), but only the leader's claims keep one backup of a cluster in
// the queue at a time.
type Reconciler struct {
	Client   client.Client
	Planner  *Planner
	Recorder events.EventRecorder
	Now      func() time.Time
	Log      *slog.Logger
	// Metrics get each config's schedule interval and what blocks it.
	Metrics *Metrics
	// RunningTimeout bounds how long a backup may stay Running in status; past it, the backup
	// is reported Failed (Report). 0: never.
	RunningTimeout time.Duration
	// Report publishes a status event (bus.PublishStatus).
	Report func(ctx context.Context, ev *etcdbackupv1.StatusEvent) error

	// claims are the backups this replica queued under Planner.OnePerCluster that status may
	// not show yet (the status writer lags the queue by a moment): cluster's namespace/name →
	// claim. The controller runs on one replica (leader election), so its claims are all.
	claimsMu sync.Mutex
	claims   map[string]claim
}

// claim is a backup queued for a cluster, and when.
type claim struct {
	config, backup string
	at             time.Time
}

// claimFor is how long a claim holds its cluster when status does not show its backup: the
// status writer lists a queued backup within moments, and from then status holds the place.
const claimFor = time.Minute

// clusterIndex indexes EtcdBackupConfigs by spec.cluster.name.
const clusterIndex = "spec.cluster.name"

// SetupWithManager registers the Reconciler with mgr: every EtcdBackupConfig, the configs of
// a Cluster whose spec (pause) or annotations (etcd endpoints) change (KKP updates a Cluster's
// status all the time), every config when the Seed changes, and, with configMap, when the
// destinations ConfigMap (the only one the manager caches) changes.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, configMap bool) error {
	err := mgr.GetFieldIndexer().IndexField(ctx, &kubermaticv1.EtcdBackupConfig{}, clusterIndex,
		func(o client.Object) []string {
			return []string{o.(*kubermaticv1.EtcdBackupConfig).Spec.Cluster.Name}
		})
	if err != nil {
		return fmt.Errorf("index configs by cluster: %w", err)
	}
	configs := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return configsFor(ctx, mgr.GetClient(), obj)
	})
	// A config whose backup ended frees its cluster's place: the configs waiting for it look
	// again at once.
	siblings := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return siblingsOf(ctx, mgr.GetClient(), obj.(*kubermaticv1.EtcdBackupConfig))
	})
	clusterChanged := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
		predicate.AnnotationChangedPredicate{}))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("etcdbackupconfig-scheduler").
		For(&kubermaticv1.EtcdBackupConfig{}).
		Watches(&kubermaticv1.EtcdBackupConfig{}, siblings, builder.WithPredicates(predicate.Funcs{
			UpdateFunc:  func(e event.UpdateEvent) bool { return inFlight(e.ObjectOld) && !inFlight(e.ObjectNew) },
			CreateFunc:  func(event.CreateEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		Watches(&kubermaticv1.Cluster{}, configs, clusterChanged).
		Watches(&kubermaticv1.Seed{}, configs, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	if configMap {
		b = b.Watches(&corev1.ConfigMap{}, configs)
	}
	if err := b.Complete(r); err != nil {
		return fmt.Errorf("scheduler controller: %w", err)
	}
	return nil
}

// configsFor maps a Cluster to the configs that back it up, and a Seed (or the destinations
// ConfigMap) to every config.
func configsFor(ctx context.Context, c client.Reader, obj client.Object) []reconcile.Request {
	var list kubermaticv1.EtcdBackupConfigList
	var opts []client.ListOption
	if _, isCluster := obj.(*kubermaticv1.Cluster); isCluster {
		opts = append(opts, client.MatchingFields{clusterIndex: obj.GetName()})
	}
	if err := c.List(ctx, &list, opts...); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, cfg := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cfg)})
	}
	return reqs
}

// siblingsOf is Siblings as requests to reconcile.
func siblingsOf(ctx context.Context, c client.Reader, cfg *kubermaticv1.EtcdBackupConfig) []reconcile.Request {
	siblings, err := Siblings(ctx, c, cfg)
	if err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(siblings))
	for _, s := range siblings {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
	}
	return reqs
}

// inFlight reports whether obj, a config, lists a backup as queued or running.
func inFlight(obj client.Object) bool {
	cfg, ok := obj.(*kubermaticv1.EtcdBackupConfig)
	return ok && runningBackup(cfg, "") != ""
}

// turn returns what holds the place of cfg's cluster in the queue ("": the place is free and
// now claimed for backup): a backup of the cluster queued or running in status, or one this
// replica queued that status does not show yet.
func (r *Reconciler) turn(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, backup string,
	now time.Time) (string, error) {
	busy, err := r.Planner.ClusterBusy(ctx, cfg, backup)
	if err != nil || busy != "" {
		return busy, err
	}
	key := cfg.Namespace + "/" + cfg.Spec.Cluster.Name
	r.claimsMu.Lock()
	defer r.claimsMu.Unlock()
	if c, ok := r.claims[key]; ok && (c.config != cfg.Name || c.backup != backup) {
		shown, err := r.shown(ctx, cfg.Namespace, c)
		if err != nil {
			return "", err
		}
		// Shown (and, since ClusterBusy found nothing running, ended), or never shown in time.
		if !shown && now.Sub(c.at) < claimFor {
			return c.config + "/" + c.backup + " (queued, not in status yet)", nil
		}
	}
	if r.claims == nil {
		r.claims = map[string]claim{}
	}
	r.claims[key] = claim{config: cfg.Name, backup: backup, at: now}
	return "", nil
}

// shown reports whether c's config lists c's backup in status.
func (r *Reconciler) shown(ctx context.Context, namespace string, c claim) (bool, error) {
	var cfg kubermaticv1.EtcdBackupConfig
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: c.config}, &cfg); err != nil {
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}
	for _, b := range cfg.Status.Backups() {
		if b.BackupName == c.backup {
			return true, nil
		}
	}
	return false, nil
}

// waitForCluster is how often a config whose due backup waits for another backup of its
// cluster looks again, besides being woken when that backup ends.
const waitForCluster = 30 * time.Second

// retryBlocked is how often a config blocked by missing configuration is looked at again,
// besides the watches on Clusters and the Seed that wake it up at once.
const retryBlocked = 5 * time.Minute

// Reconcile implements reconcile.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cfg kubermaticv1.EtcdBackupConfig
	if err := r.Client.Get(ctx, req.NamespacedName, &cfg); err != nil {
		if apierrors.IsNotFound(err) {
			r.Metrics.forget(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	now := r.Now()
	// A config being deleted waits for its running backups: those that never end end here too.
	stale, err := r.endStale(ctx, &cfg, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	var res ctrl.Result
	if cfg.DeletionTimestamp != nil {
		r.Metrics.forget(req.Namespace, req.Name)
	} else {
		res, err = r.schedule(ctx, &cfg, now)
	}
	if !stale.IsZero() && err == nil && (res.RequeueAfter == 0 || stale.Sub(now) < res.RequeueAfter) {
		res.RequeueAfter = max(stale.Sub(now), 10*time.Millisecond)
	}
	return res, err
}

// schedule queues cfg's due backup and records whether its backups run, and says when to
// look again.
func (r *Reconciler) schedule(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	now time.Time) (ctrl.Result, error) {
	slot, due, next, err := Due(cfg, now)
	if err != nil {
		return ctrl.Result{}, r.block(ctx, cfg, &Blocked{Reason: kubermaticv1.ReasonInvalidSchedule, Message: err.Error(),
			Warning: true})
	}
	if err := r.Planner.Frequency(cfg); err != nil {
		var blocked *Blocked
		if errors.As(err, &blocked) {
			return r.blocked(ctx, cfg, blocked, 0, false)
		}
		return ctrl.Result{}, err
	}
	target, err := r.Planner.Check(ctx, cfg)
	if n, piled := Piled(cfg); piled && err == nil {
		err = &Blocked{Reason: kubermaticv1.ReasonTooManyBackups, Warning: true,
			Message: fmt.Sprintf("%d backups are listed and not deleted, more than twice keep (%d): scheduling pauses until "+
				"the pruner catches up", n, cfg.KeepCount())}
	}
	var blocked *Blocked
	if errors.As(err, &blocked) {
		return r.blocked(ctx, cfg, blocked, next.Sub(now), !next.IsZero())
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	waiting := false
	if due && r.Planner.OnePerCluster {
		backup := backupname.Backup(cfg.Name, slot)
		busy, err := r.turn(ctx, cfg, backup, now)
		if err != nil {
			return ctrl.Result{}, err
		}
		if waiting = busy != ""; waiting {
			r.Metrics.waited.Inc()
			r.Log.Debug("backup waits for another of its cluster", "config", cfg.Namespace+"/"+cfg.Name, "backup", backup,
				"behind", busy)
		}
	}
	if due && !waiting {
		if err := r.queue(ctx, cfg, target, slot); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.active(ctx, cfg, target, now); err != nil {
		return ctrl.Result{}, err
	}
	if waiting {
		return ctrl.Result{RequeueAfter: waitForCluster}, nil
	}
	if next.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(next.Sub(now), 10*time.Millisecond)}, nil
}

// endStale reports Failed each backup of cfg Running for more than RunningTimeout since it
// started (or was scheduled): no stage reported its end (an event lost, a request dropped).
// It returns when the next Running one will be stale (zero: none).
func (r *Reconciler) endStale(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	now time.Time) (time.Time, error) {
	var next time.Time
	if r.RunningTimeout <= 0 || r.Report == nil {
		return next, nil
	}
	for _, b := range cfg.Status.Backups() {
		start := b.BackupStartTime.Time
		if start.IsZero() {
			start = b.ScheduledTime.Time
		}
		if b.BackupPhase != kubermaticv1.PhaseRunning || start.IsZero() {
			continue
		}
		if deadline := start.Add(r.RunningTimeout); now.Before(deadline) {
			if next.IsZero() || deadline.Before(next) {
				next = deadline
			}
			continue
		}
		ev := &etcdbackupv1.StatusEvent{
			Config:  &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)},
			Cluster: cfg.Spec.Cluster.Name, BackupName: b.BackupName, JobName: b.JobName,
			ScheduledTime: timestamppb.New(b.ScheduledTime.Time), Stage: etcdbackupv1.Stage_STAGE_SCHEDULER,
			Phase: etcdbackupv1.Phase_PHASE_FAILED, Time: timestamppb.New(now),
			Message: fmt.Sprintf("no stage reported this backup's end within %s of its start (--running-timeout): "+
				"marked Failed; a later completion still shows", r.RunningTimeout),
		}
		if err := r.Report(ctx, ev); err != nil {
			return next, fmt.Errorf("end backup %s, running since %s: %w", b.BackupName, start.Format(time.RFC3339), err)
		}
		r.Log.Info("backup running too long, marked Failed", "config", cfg.Namespace+"/"+cfg.Name, "backup",
			b.BackupName, "since", start)
	}
	return next, nil
}

// blocked records why cfg takes no backups and when to look again: at the next slot when only
// time can lift it (a paused or restoring cluster, backups piled up), else every retryBlocked
// besides the watches that wake it.
func (r *Reconciler) blocked(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b *Blocked,
	untilNext time.Duration, scheduled bool) (ctrl.Result, error) {
	if err := r.block(ctx, cfg, b); err != nil {
		return ctrl.Result{}, err
	}
	switch b.Reason {
	case kubermaticv1.ReasonClusterPaused, kubermaticv1.ReasonClusterRestoring, kubermaticv1.ReasonTooManyBackups:
		if scheduled {
			return ctrl.Result{RequeueAfter: untilNext}, nil
		}
	}
	return ctrl.Result{RequeueAfter: retryBlocked}, nil
}

// queue queues cfg's backup of slot (once, whatever the number of replicas).
func (r *Reconciler) queue(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, target Target,
	slot time.Time) error {
	trigger := etcdbackupv1.Trigger_TRIGGER_SCHEDULE
	if cfg.Spec.Schedule == "" {
		trigger = etcdbackupv1.Trigger_TRIGGER_ONE_TIME
	}
	br := Request(cfg, target, slot, trigger)
	if err := r.Planner.Queue.Enqueue(ctx, br); err != nil {
		return fmt.Errorf("queue backup %s: %w", br.GetBackupName(), err)
	}
	r.Log.Info("backup queued", "config", cfg.Namespace+"/"+cfg.Name, "cluster", cfg.Spec.Cluster.Name,
		"backup", br.GetBackupName(), "job", br.GetJobName(), "scheduled", slot)
	return nil
}

// active records that cfg's backups run: SchedulingActive true, and its schedule's interval.
func (r *Reconciler) active(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, target Target,
	now time.Time) error {
	reason, msg := kubermaticv1.ReasonScheduled, fmt.Sprintf("backups run on schedule %q to destination %q",
		cfg.Spec.Schedule, target.Destination.Name)
	if cfg.Spec.Schedule == "" {
		reason, msg = kubermaticv1.ReasonOneTimeBackup, fmt.Sprintf("one-time backup to destination %q",
			target.Destination.Name)
	}
	if err := r.setCondition(ctx, cfg, true, reason, msg); err != nil {
		return err
	}
	r.Metrics.observe(cfg.Namespace, cfg.Name, Interval(cfg, now), "")
	return nil
}

// block records why a config takes no backups: condition False and, when the condition
// changes, an Event (Warning for problems a person must fix).
func (r *Reconciler) block(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b *Blocked) error {
	r.Metrics.observe(cfg.Namespace, cfg.Name, Interval(cfg, r.Now()), b.Reason)
	prev := cfg.Status.Condition(kubermaticv1.ConditionSchedulingActive)
	changed := prev == nil || prev.Status != corev1.ConditionFalse || prev.Reason != b.Reason || prev.Message != b.Message
	if err := r.setCondition(ctx, cfg, false, b.Reason, b.Message); err != nil {
		return err
	}
	if changed {
		kind := corev1.EventTypeNormal
		if b.Warning {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(cfg, nil, kind, b.Reason, "Schedule", "%s", b.Message)
		r.Log.Info("scheduling blocked", "config", cfg.Namespace+"/"+cfg.Name, "reason", b.Reason, "message", b.Message)
	}
	return nil
}

// setCondition patches SchedulingActive into status if it changed, with an optimistic lock so
// a concurrent status writer's update is never overwritten.
func (r *Reconciler) setCondition(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, active bool, reason,
	message string) error {
	patched := cfg.DeepCopy()
	if !patched.Status.SetCondition(kubermaticv1.ConditionSchedulingActive, condition(active), reason, message,
		metav1.NewTime(r.Now())) {
		return nil
	}
	if err := r.Client.Status().Patch(ctx, patched, client.MergeFromWithOptions(cfg,
		client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("set condition %s on %s/%s: %w", kubermaticv1.ConditionSchedulingActive, cfg.Namespace, cfg.Name,
			err)
	}
	*cfg = *patched
	return nil
}
