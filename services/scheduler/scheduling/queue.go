package scheduling

import (
	"context"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStreamQueue queues backup requests on the requests stream. The request's Nats-Msg-Id is
// "<namespace>/<backup name>", so the stream keeps one request per backup however many
// schedulers publish it.
type JetStreamQueue struct {
	JS jetstream.JetStream
	// Metrics count every request the stream accepted as new.
	Metrics *Metrics
}

// Enqueue publishes req and, when it is new, a Running status event that lists the backup.
func (q JetStreamQueue) Enqueue(ctx context.Context, req *etcdbackupv1.BackupRequested) error {
	dup, err := bus.Publish(ctx, q.JS, bus.SubjectBackupRequested, bus.MsgID(req), req)
	if err != nil || dup {
		return err
	}
	q.Metrics.queued.WithLabelValues(req.GetTrigger().String()).Inc()
	return bus.PublishStatus(ctx, q.JS, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SCHEDULER,
		etcdbackupv1.Phase_PHASE_RUNNING, "queued"))
}
