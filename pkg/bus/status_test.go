package bus_test

import (
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
)

// An event is believed only from its own stage's subject, and only the uploader, the pruner
// and the restorer complete anything.
func TestStatusFromItsStage(t *testing.T) {
	ev := func(stage etcdbackupv1.Stage, phase etcdbackupv1.Phase) *etcdbackupv1.StatusEvent {
		return &etcdbackupv1.StatusEvent{Stage: stage, Phase: phase}
	}
	for _, tc := range []struct {
		subject string
		ev      *etcdbackupv1.StatusEvent
		want    bool
	}{
		{"etcdbackup.status.uploader", ev(etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED), true},
		{"etcdbackup.status.snapshotter", ev(etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED), false},
		{"etcdbackup.status.snapshotter", ev(etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_COMPLETED),
			false},
		{"etcdbackup.status.snapshotter", ev(etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_RUNNING), true},
		{"etcdbackup.status.restorer", ev(etcdbackupv1.Stage_STAGE_RESTORER, etcdbackupv1.Phase_PHASE_COMPLETED), true},
		{"etcdbackup.status.trigger", ev(etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_RUNNING), false},
		{"etcdbackup.status.uploader.x", ev(etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_RUNNING), false},
	} {
		if got := bus.StatusFromItsStage(tc.subject, tc.ev) == nil; got != tc.want {
			t.Errorf("%s from %s (%s): %v, want %v", tc.ev.GetStage(), tc.subject, tc.ev.GetPhase(), got, tc.want)
		}
	}
}
