// Package prune applies retention: the Planner lists a config's prefix and queues deletions
// (deduplicated across replicas by Nats-Msg-Id), the Deleter deletes one object per request,
// and the Reconciler holds each config's finalizer until its prefix is empty.
package prune

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/pruner/retention"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Destinations resolves Seed destinations and their S3 clients.
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Client(ctx context.Context, d destination.Destination) (*minio.Client, error)
}

// Planner decides and queues the deletions of a config.
type Planner struct {
	JS           jetstream.JetStream
	Destinations Destinations
	// Reader reads Clusters and EtcdRestores (the restores that hold backups); nil: none held.
	Reader client.Reader
	Log    *slog.Logger
	// Listed reports what a listing found of a config's backups (nil: not reported).
	Listed func(namespace, config string, count int, bytes int64, newest time.Time)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Listing is what Decide found in the bucket and decided from it.
type Listing struct {
	// Current is the config's destination now.
	Current destination.Destination
	// Destinations are those listed: Current and every other that status records a backup in.
	Destinations map[string]destination.Destination
	// Unreachable are destinations status records backups in that are no longer configured:
	// their backups cannot be listed or deleted (a config's deletion waits for them).
	Unreachable map[string]error
	Objects     []retention.Object
	Decision    retention.Decision
}

// Decide lists cfg's prefix in its destination and in every other destination its status
// records a backup in (a changed spec.destination or Seed default leaves backups behind), and
// decides retention from the listings (the bucket is the truth), cfg, and the restores that
// need a backup; it queues nothing.
func (p *Planner) Decide(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) (Listing, error) {
	cur, err := p.Destinations.Lookup(ctx, cfg.Spec.Destination)
	if err != nil {
		return Listing{}, err
	}
	l := Listing{Current: cur, Destinations: map[string]destination.Destination{}, Unreachable: map[string]error{}}
	names := []string{cur.Name}
	for _, e := range cfg.Status.Backups() {
		if e.Destination != "" && e.DeletePhase != kubermaticv1.PhaseCompleted && !slices.Contains(names, e.Destination) {
			names = append(names, e.Destination)
		}
	}
	prefix := backupname.Prefix(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name)
	listed := map[string]bool{}
	for _, name := range names {
		dest := cur
		if name != cur.Name {
			if dest, err = p.Destinations.Lookup(ctx, name); err != nil {
				if destination.IsConfigError(err) {
					l.Unreachable[name] = err
					continue
				}
				return Listing{}, err
			}
		}
		s3, err := p.Destinations.Client(ctx, dest)
		if err != nil {
			return Listing{}, err
		}
		for o := range s3.ListObjects(ctx, dest.BucketName, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if o.Err != nil {
				return Listing{}, fmt.Errorf("list %s in destination %q: %w", prefix, dest.Name, o.Err)
			}
			if parsed, ok := retention.ParseKey(cfg.Name, o.Key); ok {
				parsed.Destination, parsed.Size, parsed.Stored = dest.Name, o.Size, o.LastModified
				l.Objects = append(l.Objects, parsed)
			}
		}
		l.Destinations[name], listed[name] = dest, true
	}
	held, err := p.held(ctx, cfg)
	if err != nil {
		return Listing{}, err
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	l.Decision = retention.Plan(cfg, l.Objects, retention.Scope{Current: cur.Name, Listed: listed, Held: held, Now: now()})
	return l, nil
}

// held returns the backups of cfg a restore needs, with why: the one every unfinished
// EtcdRestore in cfg's namespace names, and while cfg's cluster is locked, the one its
// holder names. Retention and the config's deletion skip them until the restore ends.
func (p *Planner) held(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) (map[string]string, error) {
	if p.Reader == nil {
		return nil, nil
	}
	held := map[string]string{}
	hold := func(rs *kubermaticv1.EtcdRestore, why string) {
		if _, ok := backupname.Parse(cfg.Name, rs.Spec.BackupName); ok {
			held[rs.Spec.BackupName] = fmt.Sprintf("%s: EtcdRestore %s/%s restores from it", why, rs.Namespace, rs.Name)
		}
	}
	var restores kubermaticv1.EtcdRestoreList
	if err := p.Reader.List(ctx, &restores, client.InNamespace(cfg.Namespace)); err != nil {
		return nil, fmt.Errorf("list etcdrestores in %s: %w", cfg.Namespace, err)
	}
	for i := range restores.Items {
		rs := &restores.Items[i]
		if st := rs.EffectiveStatus(); !st.Finished() {
			hold(rs, "held")
		}
	}
	var cluster kubermaticv1.Cluster
	if err := p.Reader.Get(ctx, types.NamespacedName{Name: cfg.Spec.Cluster.Name}, &cluster); client.IgnoreNotFound(err) != nil {
		return nil, fmt.Errorf("get cluster %s: %w", cfg.Spec.Cluster.Name, err)
	}
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != "" {
		if ns, name, ok := strings.Cut(holder, "/"); ok {
			var rs kubermaticv1.EtcdRestore
			if err := p.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &rs); client.IgnoreNotFound(err) != nil {
				return nil, fmt.Errorf("get etcdrestore %s: %w", holder, err)
			} else if err == nil && rs.Namespace == cfg.Namespace {
				hold(&rs, "held while cluster "+cluster.Name+" is locked")
			}
		}
	}
	return held, nil
}

// Plan lists cfg's prefix (read cfg first: an entry completed before the listing is in it),
// queues every deletion retention decides, lists unlisted objects in status and marks
// vanished ones. It returns the listing; its Decision's Pending and its Unreachable are what
// a config's deletion still waits for.
func (p *Planner) Plan(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) (Listing, error) {
	l, err := p.Decide(ctx, cfg)
	if err != nil {
		return l, err
	}
	d, objects := l.Decision, l.Objects
	cluster := cfg.Spec.Cluster.Name
	if p.Listed != nil {
		var bytes int64
		var newest time.Time
		for _, o := range objects {
			bytes += o.Size
			if o.Scheduled.After(newest) {
				newest = o.Scheduled
			}
		}
		p.Listed(cfg.Namespace, cfg.Name, len(objects), bytes, newest)
	}
	ref := &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)}
	for _, o := range d.Unlisted {
		ev := &etcdbackupv1.StatusEvent{
			Config: ref, Cluster: cluster, BackupName: o.Backup, ScheduledTime: timestamppb.New(o.Scheduled),
			Stage: etcdbackupv1.Stage_STAGE_PRUNER, Phase: etcdbackupv1.Phase_PHASE_COMPLETED,
			Message: "found in the bucket, not listed before", Destination: o.Destination, ObjectKey: o.Key, Size: uint64(o.Size),
		}
		// Until the status writer lists it, every pass finds it again: say it once.
		if err := bus.PublishStatusOnce(ctx, p.JS, ev, cfg.Namespace+"/"+o.Backup+"/found"); err != nil {
			return l, err
		}
	}
	for _, e := range d.Vanished {
		ev := &etcdbackupv1.StatusEvent{
			Config: ref, Cluster: cluster, BackupName: e.BackupName, ScheduledTime: timestamppb.New(e.ScheduledTime.Time),
			Stage: etcdbackupv1.Stage_STAGE_PRUNER, Phase: etcdbackupv1.Phase_PHASE_COMPLETED, Operation: etcdbackupv1.Operation_OPERATION_DELETE,
			Message: fmt.Sprintf("object %s is no longer in destination %q", e.ObjectKey, e.Destination), Destination: e.Destination, ObjectKey: e.ObjectKey,
			JobName: backupname.DeleteJob(cluster, cfg.Name, e.BackupName),
		}
		if err := bus.PublishStatusOnce(ctx, p.JS, ev, cfg.Namespace+"/"+e.BackupName+"/vanished"); err != nil {
			return l, err
		}
	}
	for _, del := range d.Delete {
		req := &etcdbackupv1.DeleteRequested{
			Config: ref, Cluster: cluster, BackupName: del.Backup,
			DeleteJobName: backupname.DeleteJob(cluster, cfg.Name, del.Backup),
			Destination:   del.Destination, ObjectKey: del.Key, Reason: del.Reason,
			ScheduledTime: timestamppb.New(del.Scheduled),
		}
		if _, err := bus.Publish(ctx, p.JS, bus.SubjectDeleteRequested, bus.DeleteMsgID(req), req); err != nil {
			return l, err
		}
	}
	if len(d.Delete) > 0 {
		p.Log.Info("deletions queued", "config", cfg.Namespace+"/"+cfg.Name, "count", len(d.Delete), "objects", len(objects))
	}
	for _, h := range d.Held {
		p.Log.Debug("deletion held", "config", cfg.Namespace+"/"+cfg.Name, "backup", h.Backup, "why", h.Reason)
	}
	return l, nil
}

// Metrics observes deletions; any field may be nil.
type Metrics struct {
	Deleted func(cluster, destination string)
	// Failed counts a failed attempt by reason: config, s3.
	Failed func(reason string)
}

// Deleter deletes backups.
type Deleter struct {
	// Reader reads the config a deletion names.
	Reader client.Reader
	// Planner decides anew whether the deletion is one retention or config deletion planned.
	Planner      *Planner
	JS           jetstream.JetStream
	Destinations Destinations
	// Events records a Warning on a config whose deletion message was rejected (nil: none).
	Events  events.EventRecorder
	Log     *slog.Logger
	Metrics Metrics
}

// Handle deletes one backup (the typed handler of the pruner-deleter consumer: wrap it with
// bus.Typed). A deletion message is not an order: the config must exist under its uid, its
// key and destination must be the config's, and retention or the config's deletion must plan
// it now, from a fresh listing. Anything else is rejected and leaves an Event. Deleting an
// object that is already gone counts as done; S3 errors are retried with backoff; a
// destination that is no longer configured fails the deletion.
func (d *Deleter) Handle(ctx context.Context, req *etcdbackupv1.DeleteRequested, dl bus.Delivery) error {
	log := d.Log.With("backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetDeleteJobName(), "key", req.GetObjectKey())
	start := time.Now()
	cfg, err := trust.Config(ctx, d.Reader, req.GetConfig())
	if err != nil {
		return err
	}
	if cfg == nil {
		return bus.Reject(trust.ReasonNotPlanned, fmt.Errorf("etcdbackupconfig %s/%s with uid %s does not exist", req.GetConfig().GetNamespace(), req.GetConfig().GetName(), req.GetConfig().GetUid()))
	}
	l, err := d.Planner.Decide(ctx, cfg)
	dest, listed := l.Destinations[req.GetDestination()]
	if err == nil {
		err = trust.Check(trust.Derive(cfg, req.GetBackupName(), req.GetDestination()), req.GetCluster(), req.GetObjectKey(), "")
		switch {
		case err != nil:
		case !listed:
			err = bus.Reject(trust.ReasonDestination, fmt.Errorf("the message names destination %q, the config has backups in %v", req.GetDestination(), slices.Sorted(maps.Keys(l.Destinations))))
		case heldBy(l.Decision, req) != "":
			// Queued before a restore began to need it: retention decides again after the restore.
			log.Info("deletion held", "why", heldBy(l.Decision, req))
			return nil
		case !planned(l.Decision, req):
			if req.GetObjectKey() != "" && stored(l.Objects, req.GetDestination(), req.GetBackupName()) {
				err = bus.Reject(trust.ReasonNotPlanned, fmt.Errorf("backup %s is in the bucket and neither retention nor the config's deletion plans to delete it", req.GetBackupName()))
			} else {
				log.Info("deletion already done")
				return d.done(ctx, req, log, start)
			}
		}
		var rej *bus.RejectError
		if errors.As(err, &rej) {
			trust.Record(d.Events, cfg, dl.Subject, err)
			return err
		}
	}
	if err == nil {
		_ = bus.PublishStatus(ctx, d.JS, bus.DeleteStatusFor(req, etcdbackupv1.Phase_PHASE_RUNNING, "deleting ("+req.GetReason()+")"))
		err = d.remove(ctx, dest, req.GetObjectKey())
	}
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		reason := "s3"
		if destination.IsConfigError(err) {
			reason = "config"
		}
		if d.Metrics.Failed != nil {
			d.Metrics.Failed(reason)
		}
		if destination.IsConfigError(err) {
			if perr := bus.PublishStatus(ctx, d.JS, bus.DeleteStatusFor(req, etcdbackupv1.Phase_PHASE_FAILED, "delete: "+err.Error())); perr != nil {
				return perr
			}
			return bus.Permanent(err)
		}
		log.Warn("delete failed, will retry", "err", err, "attempt", dl.Attempt)
		_ = bus.PublishStatus(ctx, d.JS, bus.DeleteStatusFor(req, etcdbackupv1.Phase_PHASE_RUNNING, "delete failed, retrying: "+err.Error()))
		return err
	}
	return d.done(ctx, req, log, start)
}

func (d *Deleter) done(ctx context.Context, req *etcdbackupv1.DeleteRequested, log *slog.Logger, start time.Time) error {
	if err := bus.PublishStatus(ctx, d.JS, bus.DeleteStatusFor(req, etcdbackupv1.Phase_PHASE_COMPLETED, "deleted ("+req.GetReason()+")")); err != nil {
		return err
	}
	if d.Metrics.Deleted != nil {
		d.Metrics.Deleted(req.GetCluster(), req.GetDestination())
	}
	log.Info("backup deleted", "reason", req.GetReason(), "seconds", time.Since(start).Seconds())
	return nil
}

// DeadLetter marks a deletion that failed its last allowed delivery Failed with the last error.
func (d *Deleter) DeadLetter(ctx context.Context, req *etcdbackupv1.DeleteRequested, err error) {
	_ = bus.PublishStatus(ctx, d.JS, bus.DeleteStatusFor(req, etcdbackupv1.Phase_PHASE_FAILED, "delete: gave up after the last allowed delivery: "+err.Error()))
}

// planned reports whether decision deletes the backup req names, from the destination it names.
func planned(decision retention.Decision, req *etcdbackupv1.DeleteRequested) bool {
	for _, del := range decision.Delete {
		if del.Backup == req.GetBackupName() && del.Key == req.GetObjectKey() && del.Destination == req.GetDestination() {
			return true
		}
	}
	return false
}

// heldBy says why decision holds the backup req names ("" if it does not).
func heldBy(decision retention.Decision, req *etcdbackupv1.DeleteRequested) string {
	for _, h := range decision.Held {
		if h.Backup == req.GetBackupName() {
			return h.Reason
		}
	}
	return ""
}

func stored(objects []retention.Object, dest, backup string) bool {
	for _, o := range objects {
		if o.Backup == backup && o.Destination == dest {
			return true
		}
	}
	return false
}

func (d *Deleter) remove(ctx context.Context, dest destination.Destination, key string) error {
	if key == "" {
		return nil // a backup that never stored anything
	}
	s3, err := d.Destinations.Client(ctx, dest)
	if err != nil {
		return err
	}
	if err := s3.RemoveObject(ctx, dest.BucketName, key, minio.RemoveObjectOptions{}); err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" {
			return nil
		}
		return fmt.Errorf("delete %s from destination %q: %w", key, dest.Name, err)
	}
	return nil
}
