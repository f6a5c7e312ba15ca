// Package scheduling decides when a config's backups are due and queues them: the
// EtcdBackupConfig reconciler and the manual trigger both go through Planner.
package scheduling

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/schedule"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Destinations looks up a Seed backup destination by name ("" for the default).
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
}

// Queue publishes a backup request. Publishing the same backup twice must queue it once.
type Queue interface {
	Enqueue(ctx context.Context, req *etcdbackupv1.BackupRequested) error
}

// Blocked explains why a config takes no backups now: the reason and message of its
// SchedulingActive condition.
type Blocked struct {
	Reason  string
	Message string
	// Warning marks a problem a person must fix (as opposed to a paused cluster).
	Warning bool
}

func (b *Blocked) Error() string { return b.Message }

// Planner checks a config's preconditions and builds its backup requests.
type Planner struct {
	Reader       client.Reader
	Destinations Destinations
	// Buckets opens a destination's bucket (destination.Resolver, reading credentials
	// uncached: the cache would watch every Secret); nil: Object Lock is not checked here.
	Buckets interface {
		Bucket(ctx context.Context, d destination.Destination) (destination.Bucket, error)
	}
	Queue Queue
	// API reads the config afresh and records its last manual backup (an annotation, under an
	// optimistic lock); nil: Reader reads and nothing is recorded.
	API client.Client
	// ManualInterval is the least time between two manual backups of one config.
	ManualInterval time.Duration
	// MinInterval is the least time between two scheduled backups of one config: a schedule
	// asking for more is refused (ScheduleTooFrequent). 0: no floor.
	MinInterval time.Duration
	// OnePerCluster queues a backup only while no other backup of its cluster is queued or
	// running (any config's, in status): a tenant's configs share their cluster's one place in
	// the queue, however many they are. A due slot waits its turn; the manual trigger refuses.
	// The snapshotter holds the same line for requests that come anyway (a race, a replay).
	OnePerCluster bool

	shortest shortestCache
}

// Target is what a config's backups need, once its preconditions hold.
type Target struct {
	Cluster     *kubermaticv1.Cluster
	Destination destination.Destination
}

// Check verifies that the config's cluster exists, is not being restored nor paused, and that its
// destination is configured. It returns a *Blocked error for each of those, and other
// errors (API unreachable) as they are.
func (p *Planner) Check(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) (Target, error) {
	if k := cfg.Spec.Keep; k != nil && (*k < 1 || *k > kubermaticv1.MaxKeep) {
		// This project's CRD refuses it; KKP's takes any integer.
		return Target{}, &Blocked{Reason: kubermaticv1.ReasonInvalidKeep,
			Message: fmt.Sprintf("spec.keep is %d: keep from 1 to %d backups (or leave it unset for %d)", *k,
				kubermaticv1.MaxKeep, kubermaticv1.DefaultKeep), Warning: true}
	}
	if _, err := cfg.Retention(); err != nil {
		return Target{}, &Blocked{Reason: kubermaticv1.ReasonInvalidRetention, Warning: true,
			Message: err.Error() + `: e.g. "hourly=24,daily=7,weekly=4,monthly=12"; retention deletes none of this ` +
				"config's backups until it is mended"}
	}
	if d := cfg.Spec.Destination; d != "" {
		if errs := validation.IsDNS1123Subdomain(d); len(errs) > 0 {
			return Target{}, &Blocked{Reason: kubermaticv1.ReasonInvalidDestination, Warning: true,
				Message: fmt.Sprintf("spec.destination %q is not a destination name: %s", d, strings.Join(errs, "; "))}
		}
	}
	if cfg.Spec.Cluster.Name == "" {
		return Target{}, &Blocked{Reason: kubermaticv1.ReasonClusterNotFound, Message: "spec.cluster.name is empty",
			Warning: true}
	}
	var cluster kubermaticv1.Cluster
	if err := p.Reader.Get(ctx, types.NamespacedName{Name: cfg.Spec.Cluster.Name}, &cluster); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return Target{}, &Blocked{Reason: kubermaticv1.ReasonClusterNotFound,
				Message: fmt.Sprintf("cluster %q does not exist", cfg.Spec.Cluster.Name), Warning: true}
		}
		return Target{}, fmt.Errorf("get cluster %s: %w", cfg.Spec.Cluster.Name, err)
	}
	if err := ClusterNamespace(&cluster, cfg.Namespace, "EtcdBackupConfig"); err != nil {
		return Target{}, err
	}
	dest, err := p.Destinations.Lookup(ctx, cfg.Spec.Destination)
	if err != nil {
		switch {
		case errors.Is(err, destination.ErrNoDestinations):
			return Target{}, &Blocked{Reason: kubermaticv1.ReasonNoDestinations, Message: err.Error(), Warning: true}
		case errors.Is(err, destination.ErrObjectLockInvalid):
			return Target{}, &Blocked{Reason: destination.Reason(err), Message: err.Error(), Warning: true}
		case destination.IsConfigError(err):
			return Target{}, &Blocked{Reason: kubermaticv1.ReasonDestinationNotFound, Message: err.Error(), Warning: true}
		}
		return Target{}, fmt.Errorf("look up destination: %w", err)
	}
	// A destination that promises immutable backups is refused while its bucket cannot keep
	// the promise (no Object Lock), before a backup is taken for it. An S3 outage blocks
	// nothing: the upload waits for S3 as any other.
	if p.Buckets != nil && dest.Lock != nil {
		if _, err := p.Buckets.Bucket(ctx, dest); destination.IsConfigError(err) {
			return Target{}, &Blocked{Reason: destination.Reason(err), Message: err.Error(), Warning: true}
		}
	}
	// The restore holding the lock backs the cluster up first, through its pre-restore config.
	preRestore := cluster.PreRestoreBackupDue(cfg.Namespace, cfg.Name)
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != "" && !preRestore {
		return Target{}, &Blocked{Reason: kubermaticv1.ReasonClusterRestoring,
			Message: fmt.Sprintf("cluster %q is being restored by EtcdRestore %s; no backups are taken until it finishes",
				cluster.Name, holder)}
	}
	if cluster.Spec.Pause && !preRestore {
		return Target{}, &Blocked{Reason: kubermaticv1.ReasonClusterPaused,
			Message: fmt.Sprintf("cluster %q is paused; no backups are taken while it is", cluster.Name)}
	}
	return Target{Cluster: &cluster, Destination: dest}, nil
}

// ClusterNamespace returns a *Blocked error (ClusterNamespaceMismatch) unless namespace is
// cluster's own: its status.namespaceName, else cluster-<name>. Everything a backup reaches
// (etcd's endpoints and certificates, the object key) is derived from that namespace, so an
// object elsewhere that names the cluster would act on one cluster with another's parts.
func ClusterNamespace(cluster *kubermaticv1.Cluster, namespace, kind string) error {
	if want := cluster.NamespaceName(); namespace != want {
		return &Blocked{Reason: kubermaticv1.ReasonClusterNamespaceMismatch, Warning: true,
			Message: fmt.Sprintf("the %s is in namespace %q, but cluster %q lives in %q: an object must be in its cluster's "+
				"namespace", kind, namespace, cluster.Name, want)}
	}
	return nil
}

// Request builds the request for the backup of cfg scheduled at slot.
func Request(cfg *kubermaticv1.EtcdBackupConfig, t Target, slot time.Time,
	trigger etcdbackupv1.Trigger) *etcdbackupv1.BackupRequested {
	slot = slot.UTC().Truncate(time.Second)
	cluster := t.Cluster.Name
	name := backupname.Backup(cfg.Name, slot)
	return &etcdbackupv1.BackupRequested{
		Config:        &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)},
		Cluster:       cluster,
		BackupName:    name,
		JobName:       backupname.Job(cluster, cfg.Name, name),
		Destination:   t.Destination.Name,
		ObjectKey:     backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, name),
		ScheduledTime: timestamppb.New(slot),
		Trigger:       trigger,
	}
}

// Manual queues a backup of the config now, as the manual trigger asks. It refuses, saying
// why, while a backup of the config is Running, within ManualInterval of its last manual
// backup, and while the config is blocked by TooManyBackups. Across scheduler replicas the
// interval holds: the time is recorded on the config under an optimistic lock before the
// backup is queued, and a replica that loses the race reads the winner's time and refuses.
func (p *Planner) Manual(ctx context.Context, namespace, name string,
	now time.Time) (*etcdbackupv1.BackupRequested, error) {
	if namespace == "" || name == "" {
		return nil, errors.New("namespace and config are required")
	}
	var req *etcdbackupv1.BackupRequested
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cfg kubermaticv1.EtcdBackupConfig
		r := client.Reader(p.Reader)
		if p.API != nil {
			r = p.API
		}
		if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &cfg); err != nil {
			if client.IgnoreNotFound(err) == nil {
				return fmt.Errorf("etcdbackupconfig %s/%s does not exist", namespace, name)
			}
			return fmt.Errorf("get etcdbackupconfig %s/%s: %w", namespace, name, err)
		}
		if err := p.manualAllowed(&cfg, now); err != nil {
			return err
		}
		t, err := p.Check(ctx, &cfg)
		if err != nil {
			return err
		}
		if p.OnePerCluster {
			busy, err := p.ClusterBusy(ctx, &cfg, "")
			if err != nil {
				return err
			}
			if busy != "" {
				return fmt.Errorf("backup %s of cluster %s is queued or running; one backup of a cluster at a time: "+
					"trigger again when it has finished", busy, cfg.Spec.Cluster.Name)
			}
		}
		if p.API != nil {
			patched := cfg.DeepCopy()
			if patched.Annotations == nil {
				patched.Annotations = map[string]string{}
			}
			patched.Annotations[kubermaticv1.AnnotationLastManualBackup] = now.UTC().Format(time.RFC3339)
			if err := p.API.Patch(ctx, patched, client.MergeFromWithOptions(&cfg,
				client.MergeFromWithOptimisticLock{})); err != nil {
				return err
			}
		}
		req = Request(&cfg, t, now, etcdbackupv1.Trigger_TRIGGER_MANUAL)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := p.Queue.Enqueue(ctx, req); err != nil {
		return nil, err
	}
	return req, nil
}

// ClusterBusy returns a backup of cfg's cluster, other than backup, that a config of its
// namespace lists as queued or running ("": none): the cluster's place in the queue is taken.
// An entry whose end was never reported holds it until --running-timeout ends the entry.
func (p *Planner) ClusterBusy(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	backup string) (string, error) {
	if b := runningBackup(cfg, backup); b != "" {
		return cfg.Name + "/" + b, nil
	}
	siblings, err := Siblings(ctx, p.Reader, cfg)
	if err != nil {
		return "", err
	}
	for _, s := range siblings {
		if b := runningBackup(&s, ""); b != "" {
			return s.Name + "/" + b, nil
		}
	}
	return "", nil
}

// Siblings lists the other configs of cfg's cluster: those of its namespace (the cluster's
// own; a config elsewhere cannot back it up) that name the same cluster.
func Siblings(ctx context.Context, r client.Reader, cfg *kubermaticv1.EtcdBackupConfig) (
	[]kubermaticv1.EtcdBackupConfig, error) {
	var list kubermaticv1.EtcdBackupConfigList
	if err := r.List(ctx, &list, client.InNamespace(cfg.Namespace)); err != nil {
		return nil, fmt.Errorf("list the configs of namespace %s: %w", cfg.Namespace, err)
	}
	out := list.Items[:0]
	for _, s := range list.Items {
		if s.Name != cfg.Name && s.Spec.Cluster.Name == cfg.Spec.Cluster.Name {
			out = append(out, s)
		}
	}
	return out, nil
}

// runningBackup returns a backup other than except that cfg lists as queued or running.
func runningBackup(cfg *kubermaticv1.EtcdBackupConfig, except string) string {
	for _, b := range cfg.Status.Backups() {
		if b.BackupPhase == kubermaticv1.PhaseRunning && b.BackupName != except {
			return b.BackupName
		}
	}
	return ""
}

// manualAllowed says why a manual backup of cfg may not be queued now, if it may not.
func (p *Planner) manualAllowed(cfg *kubermaticv1.EtcdBackupConfig, now time.Time) error {
	key := cfg.Namespace + "/" + cfg.Name
	if cfg.DeletionTimestamp != nil {
		return fmt.Errorf("etcdbackupconfig %s is being deleted", key)
	}
	for _, b := range cfg.Status.Backups() {
		if b.BackupPhase == kubermaticv1.PhaseRunning {
			return fmt.Errorf("backup %s of %s is running; trigger again when it has finished", b.BackupName, key)
		}
	}
	if n, piled := Piled(cfg); piled {
		return fmt.Errorf("etcdbackupconfig %s is blocked by TooManyBackups (%d backups not deleted, more than twice keep "+
			"%d)", key, n, cfg.KeepCount())
	}
	if last, err := time.Parse(time.RFC3339, cfg.Annotations[kubermaticv1.AnnotationLastManualBackup]); err == nil {
		if next := last.Add(p.ManualInterval); now.Before(next) {
			return fmt.Errorf("the last manual backup of %s was queued at %s; the next may be queued from %s "+
				"(--trigger-min-interval %s)",
				key, last.Format(time.RFC3339), next.UTC().Format(time.RFC3339), p.ManualInterval)
		}
	}
	return nil
}

// Known reports whether status lists the backup as more than queued: a stage started it, or
// it ended. A backup listed only as queued (no stage has reported it) is queued again, which
// the stream's dedup makes harmless: its request may have failed to publish after its event.
func Known(cfg *kubermaticv1.EtcdBackupConfig, backup string) bool {
	for _, b := range cfg.Status.Backups() {
		if b.BackupName == backup {
			return b.BackupPhase != kubermaticv1.PhaseRunning || !b.BackupStartTime.IsZero()
		}
	}
	return false
}

// Piled returns how many of the config's finished backups (Completed or Failed) are not
// deleted, and whether that is more than twice keep: deletions are not keeping up, and
// scheduling pauses until they do (KKP's TooManyBackups). Running backups are not counted:
// they are not the pruner's to delete yet, and an entry that never ends must not stop the
// config. One-time configs never pile up.
func Piled(cfg *kubermaticv1.EtcdBackupConfig) (int, bool) {
	n := 0
	for _, b := range cfg.Status.Backups() {
		finished := b.BackupPhase == kubermaticv1.PhaseCompleted || b.BackupPhase == kubermaticv1.PhaseFailed
		if finished && b.DeletePhase != kubermaticv1.PhaseCompleted {
			n++
		}
	}
	return n, cfg.Spec.Schedule != "" && n > 2*cfg.KeepCount()
}

// Anchor is the time a config's slots count from: its creation.
func Anchor(cfg *kubermaticv1.EtcdBackupConfig) time.Time {
	return cfg.CreationTimestamp.UTC()
}

// Due returns the slot whose backup should be queued now, if any, and when to look again
// (zero: only when the object changes).
func Due(cfg *kubermaticv1.EtcdBackupConfig, now time.Time) (slot time.Time, due bool, next time.Time, err error) {
	if cfg.Spec.Schedule == "" {
		slot = Anchor(cfg)
		return slot, !Known(cfg, backupname.Backup(cfg.Name, slot)), time.Time{}, nil
	}
	s, err := schedule.Parse(cfg.Spec.Schedule)
	if err != nil {
		return time.Time{}, false, time.Time{}, err
	}
	next = s.Next(Anchor(cfg), now)
	latest, ok := s.Latest(Anchor(cfg), now)
	if !ok {
		return time.Time{}, false, next, nil
	}
	return latest, !Known(cfg, backupname.Backup(cfg.Name, latest)), next, nil
}

// Interval is the time between two of the config's slots around now (0: a one-time backup or
// an invalid schedule): what "a backup is overdue" is measured against.
func Interval(cfg *kubermaticv1.EtcdBackupConfig, now time.Time) time.Duration {
	if cfg.Spec.Schedule == "" {
		return 0
	}
	s, err := schedule.Parse(cfg.Spec.Schedule)
	if err != nil {
		return 0
	}
	next := s.Next(Anchor(cfg), now)
	return s.Next(Anchor(cfg), next).Sub(next)
}

// condition is the SchedulingActive condition's status for active.
func condition(active bool) corev1.ConditionStatus {
	if active {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}

// Frequency returns a *Blocked error (ScheduleTooFrequent) when cfg's schedule asks for
// backups more often than MinInterval, and the schedule's parse error if it has one.
func (p *Planner) Frequency(cfg *kubermaticv1.EtcdBackupConfig) error {
	if cfg.Spec.Schedule == "" || p.MinInterval <= 0 {
		return nil
	}
	s, err := schedule.Parse(cfg.Spec.Schedule)
	if err != nil {
		return err
	}
	if gap := p.shortest.of(cfg.Spec.Schedule, s, p.MinInterval); gap > 0 && gap < p.MinInterval {
		return &Blocked{Reason: kubermaticv1.ReasonScheduleTooFrequent, Warning: true, Message: fmt.Sprintf(
			"schedule %q takes backups %s apart; this seed takes them at most every %s (the scheduler's --min-interval): "+
				"choose a schedule at least that far apart", cfg.Spec.Schedule, gap, p.MinInterval)}
	}
	return nil
}

// shortestCache remembers each schedule's shortest gap: finding it may read a year of a cron
// expression's slots, and every config is looked at each time one of its slots comes.
type shortestCache struct {
	mu   sync.Mutex
	gaps map[string]time.Duration
}

// maxCachedSchedules bounds the cache; it starts again empty when full.
const maxCachedSchedules = 4096

func (c *shortestCache) of(spec string, s schedule.Schedule, floor time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gap, ok := c.gaps[spec]; ok {
		return gap
	}
	if c.gaps == nil || len(c.gaps) >= maxCachedSchedules {
		c.gaps = map[string]time.Duration{}
	}
	gap := s.Shortest(floor)
	c.gaps[spec] = gap
	return gap
}
