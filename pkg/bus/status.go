package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/progress"

	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// StatusSubject is the subject a stage publishes its status events on.
func StatusSubject(stage etcdbackupv1.Stage) string {
	name := strings.ToLower(strings.TrimPrefix(stage.String(), "STAGE_"))
	return SubjectStatusPrefix + "." + name
}

// PublishStatus publishes ev as protojson on its stage's status subject, stamping its time
// when unset. Status events are readable with `nats sub 'etcdbackup.status.>'`.
func PublishStatus(ctx context.Context, js jetstream.JetStream, ev *etcdbackupv1.StatusEvent) error {
	return PublishStatusOnce(ctx, js, ev, "")
}

// PublishStatusOnce publishes ev like PublishStatus, but only once per msgID within the status
// stream's duplicate window: for events that a periodic pass would otherwise repeat.
func PublishStatusOnce(ctx context.Context, js jetstream.JetStream, ev *etcdbackupv1.StatusEvent, msgID string) error {
	if ev.GetTime() == nil {
		ev.Time = timestamppb.Now()
	}
	_, err := publish(ctx, js, StatusSubject(ev.GetStage()), msgID, ev, true)
	return err
}

// StatusFromItsStage checks an event against the subject it arrived on: the stage it names must
// be the subject's (NATS lets each identity publish on its own status subject only), and only
// the uploader, the pruner and the restorer complete anything (a scheduler or snapshotter key
// cannot say a backup was stored). Every consumer of status events believes one only after it.
func StatusFromItsStage(subject string, ev *etcdbackupv1.StatusEvent) error {
	stage := StatusStage(subject)
	if stage == "" || stage != strings.ToLower(strings.TrimPrefix(ev.GetStage().String(), "STAGE_")) {
		return fmt.Errorf("an event of stage %s arrived on %s", ev.GetStage(), subject)
	}
	switch ev.GetStage() {
	case etcdbackupv1.Stage_STAGE_SCHEDULER, etcdbackupv1.Stage_STAGE_SNAPSHOTTER:
		if ev.GetPhase() == etcdbackupv1.Phase_PHASE_COMPLETED {
			return fmt.Errorf("stage %s cannot complete a backup; only the uploader stores one", ev.GetStage())
		}
	}
	return nil
}

// StatusFor starts a status event about the backup req asks for.
func StatusFor(req *etcdbackupv1.BackupRequested, stage etcdbackupv1.Stage, phase etcdbackupv1.Phase,
	message string) *etcdbackupv1.StatusEvent {
	return &etcdbackupv1.StatusEvent{
		Config:        req.GetConfig(),
		Cluster:       req.GetCluster(),
		BackupName:    req.GetBackupName(),
		JobName:       req.GetJobName(),
		ScheduledTime: req.GetScheduledTime(),
		Stage:         stage,
		Phase:         phase,
		Message:       message,
		Destination:   req.GetDestination(),
		ObjectKey:     req.GetObjectKey(),
	}
}

// ReportProgress publishes, every `every` (progress.Interval when 0) until the returned stop
// is called, a PHASE_RUNNING status event of stage about the backup req asks for: its message
// says "<doing>: <done> of <total>" in words, and BytesDone and BytesTotal give the numbers for
// subscribers that draw a bar (total 0: not known). A failed publish is logged, not returned.
func ReportProgress(ctx context.Context, js jetstream.JetStream, log *slog.Logger, req *etcdbackupv1.BackupRequested,
	stage etcdbackupv1.Stage, doing string, every time.Duration, done func() int64, total int64) (stop func()) {
	if every <= 0 {
		every = progress.Interval
	}
	return progress.Every(ctx, every, func() {
		n := done()
		ev := StatusFor(req, stage, etcdbackupv1.Phase_PHASE_RUNNING, doing+": "+progress.Say(n, total))
		ev.BytesDone, ev.BytesTotal = uint64(max(n, 0)), uint64(max(total, 0))
		if err := PublishStatus(ctx, js, ev); err != nil {
			log.Warn("publish progress", "backup", req.GetBackupName(), "err", err)
		}
	})
}

// DeleteStatusFor starts a status event about the deletion req asks for.
func DeleteStatusFor(req *etcdbackupv1.DeleteRequested, phase etcdbackupv1.Phase,
	message string) *etcdbackupv1.StatusEvent {
	return &etcdbackupv1.StatusEvent{
		Config:        req.GetConfig(),
		Cluster:       req.GetCluster(),
		BackupName:    req.GetBackupName(),
		JobName:       req.GetDeleteJobName(),
		ScheduledTime: req.GetScheduledTime(),
		Stage:         etcdbackupv1.Stage_STAGE_PRUNER,
		Phase:         phase,
		Message:       message,
		Destination:   req.GetDestination(),
		ObjectKey:     req.GetObjectKey(),
		Operation:     etcdbackupv1.Operation_OPERATION_DELETE,
	}
}

// DeleteMsgID is the Nats-Msg-Id of a deletion: "<namespace>/<backup name>/delete".
func DeleteMsgID(req *etcdbackupv1.DeleteRequested) string {
	return req.GetConfig().GetNamespace() + "/" + req.GetBackupName() + "/delete"
}

// MsgID is the Nats-Msg-Id of every message about one backup: "<namespace>/<backup name>".
func MsgID(req *etcdbackupv1.BackupRequested) string {
	return req.GetConfig().GetNamespace() + "/" + req.GetBackupName()
}

// Announcer returns a function that publishes a status event for subscribers (a restore's
// phase, a drill's verdict), waiting at most 2 s and logging a failure: the object in the API
// is the record, and its work does not wait for NATS.
func Announcer(js jetstream.JetStream, log *slog.Logger) func(context.Context, *etcdbackupv1.StatusEvent) {
	return func(ctx context.Context, ev *etcdbackupv1.StatusEvent) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := PublishStatus(pctx, js, ev); err != nil {
			log.Warn("publish status event", "config", ev.GetConfig().GetNamespace()+"/"+ev.GetConfig().GetName(),
				"operation", ev.GetOperation().String(), "err", err)
		}
	}
}

// vanishedSuffix ends the message of the pruner's report that a backup's object is gone
// without a deletion of its own (VanishedMessage).
const vanishedSuffix = " without a deletion reported"

// VanishedMessage is the pruner's message for a stored backup whose object is no longer in
// its destination, no deletion having reported its end.
func VanishedMessage(key, destination string) string {
	return fmt.Sprintf("object %s is no longer in destination %q,%s", key, destination, vanishedSuffix)
}

// IsVanished says msg is a VanishedMessage: a deletion's own report of its end, which may
// come a moment later (the deletion and a listing raced), says more and replaces it.
func IsVanished(msg string) bool { return strings.HasSuffix(msg, vanishedSuffix) }
