package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/robfig/cron/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
)

// Condition reasons of ConditionBackupRestorable.
const (
	ReasonPassed          = "DrillPassed"
	ReasonFailed          = "DrillFailed"
	ReasonNotRun          = "DrillNotRun"
	ReasonInvalidSchedule = "InvalidDrillSchedule"
)

// Controller drills each config's newest completed backup on its schedule: the config's
// annotation etcdbackup.k8c.io/drill-schedule (cron, or "off"), else Default.
type Controller struct {
	// Client reads configs from the cache and writes their condition and annotation.
	Client       client.Client
	Destinations *destination.Resolver
	Recorder     events.EventRecorder
	Log          *slog.Logger
	// Publish sends a drill's result to subscribers on the bus (nil: not sent).
	Publish func(ctx context.Context, ev *etcdbackupv1.StatusEvent)
	// Default is the schedule of configs without the annotation ("" or "off": none).
	Default string
	// Scratch is where drills restore; it needs twice the snapshot's size free.
	Scratch string
	// Metrics are the drills' (NewMetrics).
	Metrics *Metrics
	Now     func() time.Time
	// MaxSnapshot bounds a drilled snapshot (0: backupformat.DefaultMaxSnapshotSize).
	MaxSnapshot int64

	// ran is when this process last drilled each config (by uid): the cache a reconcile reads
	// may not hold the condition written a moment ago, and a drill must not run twice for it.
	ran sync.Map
}

// lastDrill is when cfg was last drilled: its condition's heartbeat, or this process's own
// record when the cache is behind (zero: never).
func (c *Controller) lastDrill(cfg *kubermaticv1.EtcdBackupConfig) time.Time {
	var last time.Time
	if cond := cfg.Status.Condition(kubermaticv1.ConditionBackupRestorable); cond != nil &&
		cond.Reason != ReasonInvalidSchedule {
		last = cond.LastHeartbeatTime.Time
	}
	if v, ok := c.ran.Load(cfg.UID); ok && v.(time.Time).After(last) {
		last = v.(time.Time)
	}
	return last
}

// SetupWithManager registers the Controller with mgr: every EtcdBackupConfig, one drill at
// a time (each restores a whole backup).
func (c *Controller) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).Named("drill").
		For(&kubermaticv1.EtcdBackupConfig{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(c)
	if err != nil {
		return fmt.Errorf("drill controller: %w", err)
	}
	return nil
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// notRunRetry is how soon a drill that could not run for a transient reason (S3 away, no disk)
// is tried again; one refused by the destination's configuration waits for its next time.
const notRunRetry = 10 * time.Minute

// Reconcile implements reconcile.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cfg kubermaticv1.EtcdBackupConfig
	if err := c.Client.Get(ctx, req.NamespacedName, &cfg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	sched, wait, err := c.due(ctx, &cfg)
	if err != nil {
		return ctrl.Result{}, err
	}
	// A requested drill runs now; else the schedule's, or the request's, whichever comes first.
	if asked, after := c.requested(&cfg); !asked && (sched == nil || wait > 0) {
		if after > 0 && (wait == 0 || after < wait) {
			wait = after
		}
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	backup, ok := newest(&cfg)
	if !ok {
		return ctrl.Result{}, nil // a completed backup changes the config, which brings it back
	}
	res, err := c.drill(ctx, &cfg, backup)
	at := c.now()
	c.ran.Store(cfg.UID, at)
	var next time.Duration // a requested drill of a config without a schedule: none
	if sched != nil {
		next = sched.Next(at).Sub(at)
	}
	switch {
	case errors.Is(err, ErrFailed):
		return ctrl.Result{RequeueAfter: next}, c.failed(ctx, &cfg, backup, at, err)
	case err != nil && ctx.Err() != nil:
		return ctrl.Result{}, err
	case err != nil:
		if !destination.IsConfigError(err) && sched != nil {
			next = min(next, notRunRetry)
		}
		return ctrl.Result{RequeueAfter: next}, c.notRun(ctx, &cfg, backup, at, err)
	}
	return ctrl.Result{RequeueAfter: next}, c.passed(ctx, &cfg, backup, at, res)
}

// due returns cfg's drill schedule (nil: it has none, or none that parses, said in its
// condition) and how long until its next drill (0: now).
func (c *Controller) due(ctx context.Context,
	cfg *kubermaticv1.EtcdBackupConfig) (cron.Schedule, time.Duration, error) {
	spec := cfg.Annotations[kubermaticv1.AnnotationDrillSchedule]
	if spec == "" {
		spec = c.Default
	}
	if cfg.DeletionTimestamp != nil || spec == "" || spec == "off" {
		return nil, 0, nil
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		msg := fmt.Sprintf("drill schedule %q (annotation %s or the restorer's --drill-schedule) is not a cron schedule: %v",
			spec, kubermaticv1.AnnotationDrillSchedule, err)
		return nil, 0, c.setCondition(ctx, cfg, corev1.ConditionUnknown, ReasonInvalidSchedule, msg, corev1.EventTypeWarning)
	}
	now := c.now()
	if last := c.lastDrill(cfg); !last.IsZero() {
		if next := sched.Next(last); now.Before(next) {
			return sched, next.Sub(now), nil
		}
	}
	return sched, 0, nil
}

// requested says whether a drill asked for by annotation (AnnotationDrillRequested) is due
// now; when one is asked for but may not run yet (a drill ran less than DrillRequestEvery ago),
// how long until it may. A drill since the request (the condition's heartbeat after it) ends
// the request.
func (c *Controller) requested(cfg *kubermaticv1.EtcdBackupConfig) (bool, time.Duration) {
	raw := cfg.Annotations[kubermaticv1.AnnotationDrillRequested]
	if raw == "" || cfg.DeletionTimestamp != nil {
		return false, 0
	}
	at, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		c.Log.Info("drill request is not an RFC 3339 time, ignored", "namespace", cfg.Namespace, "config", cfg.Name,
			"annotation", kubermaticv1.AnnotationDrillRequested, "value", raw)
		return false, 0
	}
	now := c.now()
	if at.After(now) {
		return false, at.Sub(now) // a clock ahead of the restorer's: asked for then
	}
	last := c.lastDrill(cfg)
	switch {
	case last.IsZero():
		return true, 0
	case !last.Before(at):
		return false, 0 // drilled since
	case now.Sub(last) < kubermaticv1.DrillRequestEvery:
		return false, last.Add(kubermaticv1.DrillRequestEvery).Sub(now)
	}
	return true, 0
}

// failed records a backup that is not restorable as it is.
func (c *Controller) failed(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b kubermaticv1.BackupStatus,
	at time.Time, err error) error {
	c.Metrics.drills.WithLabelValues("failed").Inc()
	msg := fmt.Sprintf("backup %s failed its restore drill at %s: %v", b.BackupName, at.UTC().Format(time.RFC3339), err)
	c.publish(ctx, cfg, b, etcdbackupv1.Phase_PHASE_FAILED, msg)
	return c.setCondition(ctx, cfg, corev1.ConditionFalse, ReasonFailed, msg, corev1.EventTypeWarning)
}

// notRun records a drill that could not run: nothing is known of the backup.
func (c *Controller) notRun(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b kubermaticv1.BackupStatus,
	at time.Time, err error) error {
	c.Metrics.drills.WithLabelValues("error").Inc()
	why := err.Error()
	if reason := destination.Reason(err); reason != "" {
		why = reason + ": " + why
	}
	msg := fmt.Sprintf("the drill of backup %s could not run at %s (nothing is known of the backup): %s", b.BackupName,
		at.UTC().Format(time.RFC3339), why)
	return c.setCondition(ctx, cfg, corev1.ConditionUnknown, ReasonNotRun, msg, corev1.EventTypeWarning)
}

// passed records a backup that restored, and keeps it from retention.
func (c *Controller) passed(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b kubermaticv1.BackupStatus,
	at time.Time, res Result) error {
	c.Metrics.drills.WithLabelValues("passed").Inc()
	c.Metrics.lastSuccess.WithLabelValues(cfg.Namespace, cfg.Name).Set(float64(at.Unix()))
	msg := fmt.Sprintf("backup %s restored in a drill at %s: %d keys at revision %d, %.1f MiB of snapshot, in %s",
		b.BackupName, at.UTC().Format(time.RFC3339), res.Keys, res.Revision, float64(res.SnapshotSize)/(1<<20),
		res.Took.Round(time.Millisecond))
	if res.Journal != nil {
		msg += "; " + res.Journal.String()
	}
	c.publish(ctx, cfg, b, etcdbackupv1.Phase_PHASE_COMPLETED, msg)
	if err := c.markRestorable(ctx, cfg, b.BackupName); err != nil {
		return err
	}
	return c.setCondition(ctx, cfg, corev1.ConditionTrue, ReasonPassed, msg, corev1.EventTypeNormal)
}

// newest returns the config's newest completed backup whose deletion has not begun.
func newest(cfg *kubermaticv1.EtcdBackupConfig) (kubermaticv1.BackupStatus, bool) {
	var best kubermaticv1.BackupStatus
	var bestAt time.Time
	for _, e := range cfg.Status.Backups() {
		at, ok := backupname.Parse(cfg.Name, e.BackupName)
		if !ok || e.BackupPhase != kubermaticv1.PhaseCompleted || e.DeletePhase != "" {
			continue
		}
		if best.BackupName == "" || at.After(bestAt) {
			best, bestAt = e, at
		}
	}
	return best, best.BackupName != ""
}

func (c *Controller) drill(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	b kubermaticv1.BackupStatus) (Result, error) {
	name := b.Destination
	if name == "" {
		name = cfg.Spec.Destination
	}
	dest, err := c.Destinations.Lookup(ctx, name)
	if err != nil {
		return Result{}, err
	}
	bucket, err := c.Destinations.Bucket(ctx, dest)
	if err != nil {
		return Result{}, err
	}
	ids, err := c.Destinations.Identities(ctx, dest)
	if err != nil {
		return Result{}, err
	}
	// The key is derived from the config, never read from status.
	key := backupname.ObjectKey(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name, b.BackupName)
	c.Log.Info("drill started", "config", cfg.Namespace+"/"+cfg.Name, "backup", b.BackupName, "destination", dest.Name)
	res, err := Run(ctx, bucket, key, ids.List, c.Scratch, c.MaxSnapshot)
	c.Log.Info("drill finished", "config", cfg.Namespace+"/"+cfg.Name, "backup", b.BackupName, "keys", res.Keys,
		"revision", res.Revision, "seconds", res.Took.Seconds(), "err", err)
	if err != nil {
		return res, err
	}
	// A continuous config: its newest point-in-time window too.
	prefix := backupname.Prefix(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name)
	jr, ok, err := RunJournal(ctx, bucket, prefix, ids.List, c.Scratch, c.MaxSnapshot)
	if ok {
		res.Journal = &jr
		c.Log.Info("journal drill finished", "config", cfg.Namespace+"/"+cfg.Name, "window", jr.Window.String(),
			"revisions", jr.Revisions, "hashes", jr.Hash, "seconds", jr.Took.Seconds(), "err", err)
	}
	return res, err
}

// setCondition writes the BackupRestorable condition (a merge patch of that key alone) and,
// when it changed, an Event of eventType.
func (c *Controller) setCondition(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	status corev1.ConditionStatus, reason, msg, eventType string) error {
	patched := cfg.DeepCopy()
	if !patched.Status.SetCondition(kubermaticv1.ConditionBackupRestorable, status, reason, msg, metav1.NewTime(c.now())) {
		return nil
	}
	if err := c.Client.Status().Patch(ctx, patched, client.MergeFrom(cfg)); err != nil {
		return fmt.Errorf("set condition %s of %s/%s: %w", kubermaticv1.ConditionBackupRestorable, cfg.Namespace, cfg.Name,
			err)
	}
	if c.Recorder != nil {
		c.Recorder.Eventf(cfg, nil, eventType, reason, "Drill", "%s", msg)
	}
	*cfg = *patched
	return nil
}

// markRestorable records the newest backup that passed a drill: retention never deletes it
// by count, so a config always keeps one backup known to restore.
func (c *Controller) markRestorable(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, backup string) error {
	if cfg.Annotations[kubermaticv1.AnnotationLastRestorable] == backup {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		kubermaticv1.AnnotationLastRestorable: backup}}})
	obj := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name}}
	if err := c.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("record the restorable backup of %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	return nil
}

func (c *Controller) publish(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b kubermaticv1.BackupStatus,
	phase etcdbackupv1.Phase, msg string) {
	if c.Publish == nil {
		return
	}
	c.Publish(ctx, &etcdbackupv1.StatusEvent{
		Config:     &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)},
		Cluster:    cfg.Spec.Cluster.Name,
		BackupName: b.BackupName,
		Stage:      etcdbackupv1.Stage_STAGE_RESTORER,
		Operation:  etcdbackupv1.Operation_OPERATION_DRILL,
		Phase:      phase,
		Message:    msg,
		Time:       timestamppb.New(c.now()),
	})
}
