package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
)

// Condition reasons of ConditionBackupRestorable.
const (
	ReasonPassed          = "DrillPassed"
	ReasonFailed          = "DrillFailed"
	ReasonNotRun          = "DrillNotRun"
	ReasonInvalidSchedule = "InvalidDrillSchedule"
)

// Metrics observe drills (nil funcs are not called).
type Metrics struct {
	// Finished is called with "passed", "failed" or "error" (the drill could not run).
	Finished func(result string)
	// Passed is called with the config of a passed drill and when it passed.
	Passed func(namespace, config string, at time.Time)
}

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
	Metrics Metrics
	Now     func() time.Time
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Reconcile implements reconcile.Reconciler.
func (c *Controller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cfg kubermaticv1.EtcdBackupConfig
	if err := c.Client.Get(ctx, req.NamespacedName, &cfg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if cfg.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	spec := cfg.Annotations[kubermaticv1.AnnotationDrillSchedule]
	if spec == "" {
		spec = c.Default
	}
	if spec == "" || spec == "off" {
		return ctrl.Result{}, nil
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		msg := fmt.Sprintf("drill schedule %q (annotation %s or the restorer's --drill-schedule) is not a cron schedule: %v", spec, kubermaticv1.AnnotationDrillSchedule, err)
		return ctrl.Result{}, c.setCondition(ctx, &cfg, corev1.ConditionUnknown, ReasonInvalidSchedule, msg, corev1.EventTypeWarning)
	}
	backup, ok := newest(&cfg)
	if !ok {
		return ctrl.Result{}, nil // a completed backup changes the config, which brings it back
	}
	now := c.now()
	if cond := cfg.Status.Condition(kubermaticv1.ConditionBackupRestorable); cond != nil && cond.Reason != ReasonInvalidSchedule {
		if next := sched.Next(cond.LastHeartbeatTime.Time); now.Before(next) {
			return ctrl.Result{RequeueAfter: next.Sub(now)}, nil
		}
	}
	res, err := c.drill(ctx, &cfg, backup)
	at := c.now()
	switch {
	case errors.Is(err, ErrFailed):
		c.finished("failed")
		msg := fmt.Sprintf("backup %s failed its restore drill at %s: %v", backup.BackupName, at.UTC().Format(time.RFC3339), err)
		c.publish(ctx, &cfg, backup, etcdbackupv1.Phase_PHASE_FAILED, msg)
		if err := c.setCondition(ctx, &cfg, corev1.ConditionFalse, ReasonFailed, msg, corev1.EventTypeWarning); err != nil {
			return ctrl.Result{}, err
		}
	case err != nil:
		c.finished("error")
		if ctx.Err() != nil {
			return ctrl.Result{}, err
		}
		msg := fmt.Sprintf("the drill of backup %s could not run at %s (nothing is known of the backup): %v", backup.BackupName, at.UTC().Format(time.RFC3339), err)
		if perr := c.setCondition(ctx, &cfg, corev1.ConditionUnknown, ReasonNotRun, msg, corev1.EventTypeWarning); perr != nil {
			return ctrl.Result{}, perr
		}
		return ctrl.Result{RequeueAfter: 10 * time.Minute}, nil
	default:
		c.finished("passed")
		if c.Metrics.Passed != nil {
			c.Metrics.Passed(cfg.Namespace, cfg.Name, at)
		}
		msg := fmt.Sprintf("backup %s restored in a drill at %s: %d keys at revision %d, %.1f MiB of snapshot, in %s",
			backup.BackupName, at.UTC().Format(time.RFC3339), res.Keys, res.Revision, float64(res.SnapshotSize)/(1<<20), res.Took.Round(time.Millisecond))
		c.publish(ctx, &cfg, backup, etcdbackupv1.Phase_PHASE_COMPLETED, msg)
		if err := c.markRestorable(ctx, &cfg, backup.BackupName); err != nil {
			return ctrl.Result{}, err
		}
		if err := c.setCondition(ctx, &cfg, corev1.ConditionTrue, ReasonPassed, msg, corev1.EventTypeNormal); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: sched.Next(at).Sub(at)}, nil
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

func (c *Controller) drill(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b kubermaticv1.BackupStatus) (Result, error) {
	name := b.Destination
	if name == "" {
		name = cfg.Spec.Destination
	}
	dest, err := c.Destinations.Lookup(ctx, name)
	if err != nil {
		return Result{}, err
	}
	s3, err := c.Destinations.Client(ctx, dest)
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
	res, err := Run(ctx, s3, dest.BucketName, key, ids.List, c.Scratch)
	c.Log.Info("drill finished", "config", cfg.Namespace+"/"+cfg.Name, "backup", b.BackupName, "keys", res.Keys, "revision", res.Revision, "seconds", res.Took.Seconds(), "err", err)
	return res, err
}

// setCondition writes the BackupRestorable condition (a merge patch of that key alone) and,
// when it changed, an Event of eventType.
func (c *Controller) setCondition(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, status corev1.ConditionStatus, reason, msg, eventType string) error {
	patched := cfg.DeepCopy()
	if !patched.Status.SetCondition(kubermaticv1.ConditionBackupRestorable, status, reason, msg, metav1.NewTime(c.now())) {
		return nil
	}
	if err := c.Client.Status().Patch(ctx, patched, client.MergeFrom(cfg)); err != nil {
		return fmt.Errorf("set condition %s of %s/%s: %w", kubermaticv1.ConditionBackupRestorable, cfg.Namespace, cfg.Name, err)
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
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{kubermaticv1.AnnotationLastRestorable: backup}}})
	obj := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name}}
	if err := c.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("record the restorable backup of %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	return nil
}

func (c *Controller) publish(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, b kubermaticv1.BackupStatus, phase etcdbackupv1.Phase, msg string) {
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

func (c *Controller) finished(result string) {
	if c.Metrics.Finished != nil {
		c.Metrics.Finished(result)
	}
}
