// Package prune applies retention: the Planner lists a config's prefix and queues deletions
// (deduplicated across replicas by Nats-Msg-Id), the Deleter deletes one object per request,
// and the Reconciler holds each config's finalizer until its prefix is empty.
package prune

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/pruner/retention"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Destinations resolves Seed destinations and their buckets (destination.Resolver).
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Bucket(ctx context.Context, d destination.Destination) (destination.Bucket, error)
}

// Planner decides and queues the deletions of a config.
type Planner struct {
	JS           jetstream.JetStream
	Destinations Destinations
	// Reader reads Clusters and EtcdRestores (the restores that hold backups); nil: none held.
	Reader client.Reader
	Log    *slog.Logger
	// Metrics get what each listing found of a config's backups (NewMetrics).
	Metrics *Metrics
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Grace is how long a deleted config's kept backups stay (0: they are deleted with it).
	Grace time.Duration
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
	// Held are the backups a restore needs (backup name -> why).
	Held map[string]string
	// Copy is what the pass did in the destination Current copies to (Plan; nil: none).
	Copy *Copy
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
		objects, err := p.list(ctx, cfg, dest)
		if err != nil {
			return Listing{}, err
		}
		l.Objects = append(l.Objects, objects...)
		l.Destinations[name], listed[name] = dest, true
	}
	held, err := p.held(ctx, cfg)
	if err != nil {
		return Listing{}, err
	}
	l.Held = held
	l.Decision = retention.Plan(cfg, l.Objects, retention.Scope{Current: cur.Name, Listed: listed, Held: held,
		Now: p.now(), Grace: p.Grace > 0})
	return l, nil
}

func (p *Planner) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// list returns cfg's backups in dest: the objects under its prefix.
func (p *Planner) list(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	dest destination.Destination) ([]retention.Object, error) {
	b, err := p.Destinations.Bucket(ctx, dest)
	if err != nil {
		return nil, err
	}
	var objects []retention.Object
	prefix := backupname.Prefix(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name)
	err = b.List(ctx, prefix, func(o destination.ObjectInfo) error {
		if parsed, ok := retention.ParseKey(cfg.Name, o.Key); ok {
			parsed.Destination, parsed.Size, parsed.Stored = dest.Name, o.Size, o.LastModified
			objects = append(objects, parsed)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s in destination %q: %w", prefix, dest.Name, err)
	}
	return objects, nil
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
	if err := p.Reader.Get(ctx, types.NamespacedName{Name: cfg.Spec.Cluster.Name},
		&cluster); client.IgnoreNotFound(err) != nil {
		return nil, fmt.Errorf("get cluster %s: %w", cfg.Spec.Cluster.Name, err)
	}
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != "" {
		if ns, name, ok := strings.Cut(holder, "/"); ok {
			var rs kubermaticv1.EtcdRestore
			if err := p.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name},
				&rs); client.IgnoreNotFound(err) != nil {
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
	p.Metrics.listed(cfg.Namespace, cfg.Name, l.Objects)
	if err := p.correct(ctx, cfg, l.Decision); err != nil {
		return l, err
	}
	if err := p.queue(ctx, cfg, l.Decision); err != nil {
		return l, err
	}
	if n := len(l.Decision.Delete); n > 0 {
		p.Log.Info("deletions queued", "config", cfg.Namespace+"/"+cfg.Name, "count", n, "objects", len(l.Objects))
	}
	if n, err := p.pruneJournal(ctx, cfg, l); err != nil {
		return l, err
	} else if n > 0 {
		p.Log.Info("journal segments deleted", "config", cfg.Namespace+"/"+cfg.Name, "count", n)
	}
	if n, err := p.sweepLocked(ctx, cfg, l); err != nil {
		return l, err
	} else if n > 0 {
		p.Log.Info("versions past their object lock destroyed", "config", cfg.Namespace+"/"+cfg.Name, "count", n)
	}
	if l.Current.CopyTo != "" {
		c, err := p.copyOut(ctx, cfg, l)
		if err != nil {
			return l, err
		}
		l.Copy = &c
	}
	for _, h := range l.Decision.Held {
		p.Log.Debug("deletion held", "config", cfg.Namespace+"/"+cfg.Name, "backup", h.Backup, "why", h.Reason)
	}
	return l, nil
}

// correct tells the status writer what the bucket says and status does not: backups found in
// it, and backups gone from it.
func (p *Planner) correct(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, d retention.Decision) error {
	ref, cluster := configRef(cfg), cfg.Spec.Cluster.Name
	for _, o := range d.Unlisted {
		ev := &etcdbackupv1.StatusEvent{
			Config: ref, Cluster: cluster, BackupName: o.Backup, ScheduledTime: timestamppb.New(o.Scheduled),
			Stage: etcdbackupv1.Stage_STAGE_PRUNER, Phase: etcdbackupv1.Phase_PHASE_COMPLETED,
			Message: "found in the bucket, not listed before", Destination: o.Destination, ObjectKey: o.Key,
			Size: uint64(o.Size),
		}
		// Until the status writer lists it, every pass finds it again: say it once.
		if err := bus.PublishStatusOnce(ctx, p.JS, ev, cfg.Namespace+"/"+o.Backup+"/found"); err != nil {
			return err
		}
	}
	for _, e := range d.Vanished {
		ev := &etcdbackupv1.StatusEvent{
			Config: ref, Cluster: cluster, BackupName: e.BackupName, ScheduledTime: timestamppb.New(e.ScheduledTime.Time),
			Stage: etcdbackupv1.Stage_STAGE_PRUNER, Phase: etcdbackupv1.Phase_PHASE_COMPLETED,
			Operation:   etcdbackupv1.Operation_OPERATION_DELETE,
			Message:     bus.VanishedMessage(e.ObjectKey, e.Destination),
			Destination: e.Destination, ObjectKey: e.ObjectKey, JobName: backupname.DeleteJob(cluster, cfg.Name, e.BackupName),
		}
		if err := bus.PublishStatusOnce(ctx, p.JS, ev, cfg.Namespace+"/"+e.BackupName+"/vanished"); err != nil {
			return err
		}
	}
	return nil
}

// queue queues every deletion d decides, once across replicas (Nats-Msg-Id).
func (p *Planner) queue(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, d retention.Decision) error {
	ref, cluster := configRef(cfg), cfg.Spec.Cluster.Name
	for _, del := range d.Delete {
		req := &etcdbackupv1.DeleteRequested{
			Config: ref, Cluster: cluster, BackupName: del.Backup,
			DeleteJobName: backupname.DeleteJob(cluster, cfg.Name, del.Backup),
			Destination:   del.Destination, ObjectKey: del.Key, Reason: del.Reason,
			ScheduledTime: timestamppb.New(del.Scheduled),
		}
		if _, err := bus.Publish(ctx, p.JS, bus.SubjectDeleteRequested, bus.DeleteMsgID(req), req); err != nil {
			return err
		}
	}
	return nil
}

func configRef(cfg *kubermaticv1.EtcdBackupConfig) *etcdbackupv1.ConfigRef {
	return &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)}
}
