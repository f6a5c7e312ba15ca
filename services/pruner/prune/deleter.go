package prune

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/pruner/retention"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Deleter deletes backups.
type Deleter struct {
	// Reader reads the config a deletion names.
	Reader client.Reader
	// Planner decides anew whether the deletion is one retention or config deletion planned.
	Planner      *Planner
	JS           jetstream.JetStream
	Destinations Destinations
	// Events records a Warning on a config whose deletion message was rejected (nil: none).
	Events events.EventRecorder
	// Bus counts failures, with the Worker's other bus metrics.
	Bus     *bus.Metrics
	Log     *slog.Logger
	Metrics *Metrics
}

// Handler is the pruner-deleter consumer's handler, whose messages are delivered at most
// maxDeliver times: Handle with the deleter's epilogue (Report).
func (d *Deleter) Handler(maxDeliver int) bus.Handler {
	return bus.Typed(maxDeliver, d.Handle, bus.Report(d.JS, d.Bus, bus.Outcome[*etcdbackupv1.DeleteRequested]{
		Stage:    "delete",
		Classes:  deleteFailures,
		Event:    bus.DeleteStatusFor,
		Retrying: func(_ bus.Delivery, err error) string { return "delete failed, retrying: " + err.Error() },
		Failed:   func(err error) string { return "delete: " + err.Error() },
		Attrs: func(req *etcdbackupv1.DeleteRequested) []any {
			return []any{"backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetDeleteJobName(), "key",
				req.GetObjectKey()}
		},
	}))
}

// deleteFailures are the deleter's reasons (etcdbackup_failures_total{stage="delete"}).
// A destination this replica does not know is retried: the pruner that planned the deletion
// listed the backup in it, so this replica's view of the Seed (read at most every
// destination.ConfigTTL, from its cache) is behind; one removed from the Seed meanwhile fails
// after the last delivery.
var deleteFailures = bus.Classes{Rows: []bus.Class{
	{Err: destination.ErrNotFound, Reason: "DestinationNotFound"},
	{Match: destination.IsConfigError, ReasonOf: destination.Reason, Permanent: true},
	{Match: kube.IsAPIError, Reason: "kubernetes"},
}, Else: "s3"}

// Handle deletes one backup. A deletion message is not an order: the config must exist under
// its uid, its key and destination must be the config's, and retention or the config's
// deletion must plan it now, from a fresh listing. Anything else is rejected and leaves an
// Event. Deleting an object that is already gone counts as done.
func (d *Deleter) Handle(ctx context.Context, req *etcdbackupv1.DeleteRequested, dl bus.Delivery) error {
	start := time.Now()
	cfg, err := trust.Config(ctx, d.Reader, req.GetConfig())
	if err != nil {
		return err
	}
	if cfg == nil {
		return bus.Reject(trust.ReasonNotPlanned, fmt.Errorf("etcdbackupconfig %s/%s with uid %s does not exist",
			req.GetConfig().GetNamespace(), req.GetConfig().GetName(), req.GetConfig().GetUid()))
	}
	l, err := d.Planner.Decide(ctx, cfg)
	if err != nil {
		return err
	}
	v, err := d.due(cfg, l, req, dl.Subject)
	switch {
	case err != nil, v == held:
		return err
	case v == gone:
		return d.done(ctx, req, start, "")
	}
	_ = bus.PublishStatus(ctx, d.JS, bus.DeleteStatusFor(req, etcdbackupv1.Phase_PHASE_RUNNING,
		"deleting ("+req.GetReason()+")"))
	note := ""
	if key := req.GetObjectKey(); key != "" { // "": a backup that never stored anything
		dest := l.Destinations[req.GetDestination()]
		b, err := d.Destinations.Bucket(ctx, dest)
		if err != nil {
			return err
		}
		if err := b.Delete(ctx, key); err != nil {
			return err
		}
		if dest.Lock != nil {
			note = lockNote(*dest.Lock, l.Objects, req)
		}
	}
	return d.done(ctx, req, start, note)
}

// lockNote says until when Object Lock retains the version of the backup req deleted (hidden
// behind a delete marker), after which the pruner destroys it.
func lockNote(lock destination.Lock, objects []retention.Object, req *etcdbackupv1.DeleteRequested) string {
	for _, o := range objects {
		if o.Backup == req.GetBackupName() && o.Destination == req.GetDestination() && !o.Stored.IsZero() {
			return fmt.Sprintf("; object lock (%s) retains its version until %s, then the pruner destroys it", lock,
				lock.Until(o.Stored).UTC().Format(time.RFC3339))
		}
	}
	return fmt.Sprintf("; object lock (%s) retains its version until its retention runs out", lock)
}

// verdict is what a deletion message calls for.
type verdict int

const (
	remove verdict = iota // delete the object
	held                  // nothing now: a restore needs the backup
	gone                  // nothing: the object is gone already
)

// due checks req against cfg and a fresh listing: it rejects (with an Event) a deletion that
// names another cluster, key or destination than the config's, or that nothing plans.
func (d *Deleter) due(cfg *kubermaticv1.EtcdBackupConfig, l Listing, req *etcdbackupv1.DeleteRequested,
	subject string) (verdict, error) {
	k := trust.Checker{Events: d.Events}
	if err := trust.Check(trust.Derive(cfg, req.GetBackupName(), req.GetDestination()), req.GetCluster(),
		req.GetObjectKey(), ""); err != nil {
		return held, k.Reject(cfg, subject, err)
	}
	if _, listed := l.Destinations[req.GetDestination()]; !listed {
		return held, k.Reject(cfg, subject, bus.Reject(trust.ReasonDestination,
			fmt.Errorf("the message names destination %q, the config has backups in %v",
				req.GetDestination(), slices.Sorted(maps.Keys(l.Destinations)))))
	}
	if why := heldBy(l.Decision, req); why != "" {
		// Queued before a restore began to need it: retention decides again after the restore.
		d.Log.Info("deletion held", "backup", req.GetBackupName(), "why", why)
		return held, nil
	}
	if planned(l.Decision, req) {
		return remove, nil
	}
	if req.GetObjectKey() != "" && stored(l.Objects, req.GetDestination(), req.GetBackupName()) {
		return held, k.Reject(cfg, subject, bus.Reject(trust.ReasonNotPlanned,
			fmt.Errorf("backup %s is in the bucket and neither retention nor the config's deletion plans to delete it",
				req.GetBackupName())))
	}
	d.Log.Info("deletion already done", "backup", req.GetBackupName())
	return gone, nil
}

func (d *Deleter) done(ctx context.Context, req *etcdbackupv1.DeleteRequested, start time.Time, note string) error {
	if err := bus.PublishStatus(ctx, d.JS, bus.DeleteStatusFor(req, etcdbackupv1.Phase_PHASE_COMPLETED,
		"deleted ("+req.GetReason()+")"+note)); err != nil {
		return err
	}
	d.Metrics.deleted.WithLabelValues(req.GetCluster(), req.GetDestination()).Inc()
	d.Log.Info("backup deleted", "backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetDeleteJobName(),
		"reason", req.GetReason(), "seconds", time.Since(start).Seconds())
	return nil
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
