package statuswriter

import (
	"errors"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
)

// A stage's event is believed only on its own subject and only for what that stage may say.
func TestAllowed(t *testing.T) {
	const (
		sched, snap, up, prune = "etcdbackup.status.scheduler", "etcdbackup.status.snapshotter",
			"etcdbackup.status.uploader", "etcdbackup.status.pruner"
	)
	ev := func(stage etcdbackupv1.Stage, phase etcdbackupv1.Phase, op etcdbackupv1.Operation) *etcdbackupv1.StatusEvent {
		return &etcdbackupv1.StatusEvent{Stage: stage, Phase: phase, Operation: op, ObjectKey: "k", Destination: "d",
			Size: 9, Sha256: "s"}
	}
	tests := []struct {
		name    string
		subject string
		ev      *etcdbackupv1.StatusEvent
		ok      bool
		keepKey bool
	}{
		{"the uploader completes a backup", up, ev(3, 2, 0), true, true},
		{"the snapshotter reports progress without a key", snap, ev(2, 1, 0), true, false},
		{"the snapshotter fails a backup", snap, ev(2, 3, 0), true, false},
		{"the pruner deletes", prune, ev(4, 2, 2), true, true},
		{"the pruner confirms a backup from the bucket", prune, ev(4, 2, 0), true, true},
		{"an uploader event on the snapshotter's subject", snap, ev(3, 2, 0), false, false},
		{"a stage's event on an unknown subject", "etcdbackup.status.evil", ev(3, 2, 0), false, false},
		{"the snapshotter completing a backup", snap, ev(2, 2, 0), false, false},
		{"the scheduler completing a backup", sched, ev(1, 2, 0), false, false},
		{"the uploader reporting a deletion", up, ev(3, 2, 2), false, false},
		{"the pruner failing a backup", prune, ev(4, 3, 0), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Allowed(tc.subject, tc.ev)
			var rej *bus.RejectError
			if tc.ok != (err == nil) {
				t.Fatalf("allowed = %v (%v), want %v", err == nil, err, tc.ok)
			}
			if err != nil && (!errors.As(err, &rej) || rej.Reason != "stage") {
				t.Fatalf("refused without a stage rejection: %v", err)
			}
			if tc.ok && (tc.ev.GetObjectKey() != "") != tc.keepKey {
				t.Fatalf("object key kept = %v, want %v", tc.ev.GetObjectKey() != "", tc.keepKey)
			}
		})
	}
}
