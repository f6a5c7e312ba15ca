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

// Enqueue publishes the Running status event that lists the backup, then req. The event goes
// first: the status writer lists a backup only on the scheduler's word, and a stage's report
// that came before it would wait. A request whose publish fails after its event leaves the
// backup listed but not started; the slot is still due (Due) and queued again.
func (q JetStreamQueue) Enqueue(ctx context.Context, req *etcdbackupv1.BackupRequested) error {
	// Once per backup within the duplicate window, however many replicas and reconciles queue it.
	if err := bus.PublishStatusOnce(ctx, q.JS, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SCHEDULER,
		etcdbackupv1.Phase_PHASE_RUNNING, "queued"), "queued/"+bus.MsgID(req)); err != nil {
		return err
	}
	dup, err := bus.Publish(ctx, q.JS, bus.SubjectBackupRequested, bus.MsgID(req), req)
	if err != nil || dup {
		return err
	}
	q.Metrics.queued.WithLabelValues(req.GetTrigger().String()).Inc()
	return nil
}
