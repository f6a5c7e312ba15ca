package bus_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var scheduled = time.Date(2026, 3, 2, 15, 24, 0, 0, time.UTC)

func validRequest() *etcdbackupv1.BackupRequested {
	backup := backupname.Backup("daily", scheduled)
	return &etcdbackupv1.BackupRequested{
		Config: &etcdbackupv1.ConfigRef{Namespace: "cluster-abc", Name: "daily",
			Uid: "6f1c2a3e-0000-4000-8000-000000000001"},
		Cluster: "abc", BackupName: backup, JobName: backupname.Job("abc", "daily", backup),
		Destination: "s3", ObjectKey: backupname.ObjectKey("abc", "cluster-abc", "daily", backup),
		ScheduledTime: timestamppb.New(scheduled), Trigger: etcdbackupv1.Trigger_TRIGGER_SCHEDULE,
	}
}

func validReady() *etcdbackupv1.SnapshotReady {
	r := validRequest()
	return &etcdbackupv1.SnapshotReady{Request: r, StagedObject: bus.MsgID(r), SnapshotSize: 512*10 + 32,
		SnapshotSha256: strings.Repeat("ab", 32), Revision: 5, StartedTime: timestamppb.Now()}
}

func validStored() *etcdbackupv1.BackupStored {
	r := validRequest()
	return &etcdbackupv1.BackupStored{Request: r, Bucket: "b", ObjectKey: r.GetObjectKey(), Size: 100,
		Sha256:       strings.Repeat("cd", 32),
		SnapshotSize: 512*10 + 32, SnapshotSha256: strings.Repeat("ab", 32), FinishedTime: timestamppb.Now()}
}

func validDelete() *etcdbackupv1.DeleteRequested {
	r := validRequest()
	return &etcdbackupv1.DeleteRequested{Config: r.GetConfig(), Cluster: r.GetCluster(), BackupName: r.GetBackupName(),
		DeleteJobName: backupname.DeleteJob("abc", "daily", r.GetBackupName()), Destination: "s3",
		ObjectKey: r.GetObjectKey(),
		Reason:    bus.DeleteReasonRetention, ScheduledTime: r.GetScheduledTime()}
}

func validStatus() *etcdbackupv1.StatusEvent {
	ev := bus.StatusFor(validRequest(), etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED, "stored")
	ev.Time = timestamppb.Now()
	return ev
}

func validObject() *etcdbackupv1.StoredObject {
	return &etcdbackupv1.StoredObject{Codec: "zstd+age", Recipients: []string{"0123456789abcdef"}, SnapshotSize: 5152,
		SnapshotSha256: strings.Repeat("ab", 32), KeyCount: 3, LockMode: "COMPLIANCE",
		RetainUntil: timestamppb.New(time.Now().AddDate(10, 0, 0))}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		msg   proto.Message
		wants string // "" when valid, else a part of the error
	}{
		{"a request", validRequest(), ""},
		{"a request without uid", with(validRequest(), func(m *etcdbackupv1.BackupRequested) { m.Config.Uid = "" }), "uid"},
		{"an empty request", &etcdbackupv1.BackupRequested{}, "config"},
		{"a namespace that is no name", with(validRequest(),
			func(m *etcdbackupv1.BackupRequested) { m.Config.Namespace = "Cluster_ABC" }), "namespace"},
		{"a backup of another config", with(validRequest(),
			func(m *etcdbackupv1.BackupRequested) { m.BackupName = "other-2026-03-02T15:24:00" }), "backup_name"},
		{"a scheduled time unlike the name's", with(validRequest(), func(m *etcdbackupv1.BackupRequested) {
			m.ScheduledTime = timestamppb.New(scheduled.Add(time.Hour))
		}), "scheduled_time"},
		{"a time far in the future", with(validRequest(), func(m *etcdbackupv1.BackupRequested) {
			at := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
			m.BackupName = backupname.Backup("daily", at)
			m.ScheduledTime = timestamppb.New(at)
		}), "out of range"},
		{"an object key of another cluster", with(validRequest(), func(m *etcdbackupv1.BackupRequested) {
			m.ObjectKey = backupname.ObjectKey("victim", "cluster-victim", "daily", m.BackupName)
		}), "object_key"},
		{"a job name of another backup", with(validRequest(), func(m *etcdbackupv1.BackupRequested) { m.JobName = "x" }),
			"job_name"},
		{"no trigger", with(validRequest(), func(m *etcdbackupv1.BackupRequested) { m.Trigger = 0 }), "trigger"},
		{"a snapshot ready", validReady(), ""},
		{"a snapshot ready, compressed when staged", with(validReady(), func(m *etcdbackupv1.SnapshotReady) {
			m.StoredSize, m.StoredSha256 = 1234, strings.Repeat("ab", 32)
		}), ""},
		{"a stored size without its digest", with(validReady(),
			func(m *etcdbackupv1.SnapshotReady) { m.StoredSize = 1234 }), "stored_sha256"},
		{"a stored digest without its size", with(validReady(),
			func(m *etcdbackupv1.SnapshotReady) { m.StoredSha256 = strings.Repeat("ab", 32) }), "stored_size"},
		{"a staged object of another backup", with(validReady(),
			func(m *etcdbackupv1.SnapshotReady) { m.StagedObject = "cluster-x/other" }), "staged_object"},
		{"a snapshot size etcd never makes", with(validReady(),
			func(m *etcdbackupv1.SnapshotReady) { m.SnapshotSize = 1000 }), "snapshot_size"},
		{"a sha256 that is no hash", with(validReady(), func(m *etcdbackupv1.SnapshotReady) { m.SnapshotSha256 = "zz" }),
			"snapshot_sha256"},
		{"a stored backup", validStored(), ""},
		{"a stored key unlike the request's", with(validStored(),
			func(m *etcdbackupv1.BackupStored) { m.ObjectKey = "elsewhere.db.zst" }), "object_key"},
		{"a stored size of zero", with(validStored(), func(m *etcdbackupv1.BackupStored) { m.Size = 0 }), "size"},
		{"a deletion", validDelete(), ""},
		{"a deletion of a backup that stored nothing", with(validDelete(),
			func(m *etcdbackupv1.DeleteRequested) { m.ObjectKey = "" }), ""},
		{"a deletion of another key", with(validDelete(),
			func(m *etcdbackupv1.DeleteRequested) { m.ObjectKey = "victim/cluster-victim/x/x.db.zst" }), "object_key"},
		{"a deletion for no reason", with(validDelete(), func(m *etcdbackupv1.DeleteRequested) { m.Reason = "because" }),
			"reason"},
		{"a status event", validStatus(), ""},
		{"a status event with its stored object's record", with(validStatus(), func(m *etcdbackupv1.StatusEvent) {
			m.Object = validObject()
		}), ""},
		{"a recipient that is not a fingerprint", with(validStatus(), func(m *etcdbackupv1.StatusEvent) {
			m.Object = validObject()
			m.Object.Recipients = append(m.Object.Recipients, "age1qqqqqqqqqqqqqqqqqq")
		}), "object.recipients"},
		{"too many recipients", with(validStatus(), func(m *etcdbackupv1.StatusEvent) {
			m.Object = validObject()
			m.Object.Recipients = slices.Repeat(m.Object.Recipients, bus.MaxRecipients+1)
		}), "object.recipients"},
		{"a codec that is markup", with(validStatus(), func(m *etcdbackupv1.StatusEvent) {
			m.Object = &etcdbackupv1.StoredObject{Codec: "<script>"}
		}), "object.codec"},
		{"a lock mode S3 does not know", with(validStatus(), func(m *etcdbackupv1.StatusEvent) {
			m.Object = &etcdbackupv1.StoredObject{LockMode: "FOREVER"}
		}), "object.lock_mode"},
		{"a snapshot digest that is no digest", with(validStatus(), func(m *etcdbackupv1.StatusEvent) {
			m.Object = &etcdbackupv1.StoredObject{SnapshotSha256: "abc"}
		}), "object.snapshot_sha256"},
		{"a status event of no stage", with(validStatus(), func(m *etcdbackupv1.StatusEvent) { m.Stage = 0 }), "stage"},
		{"a status event of no phase", with(validStatus(), func(m *etcdbackupv1.StatusEvent) { m.Phase = 42 }), "phase"},
		{"a status message too long", with(validStatus(),
			func(m *etcdbackupv1.StatusEvent) { m.Message = strings.Repeat("x", bus.MaxMessageText+1) }), "message"},
		{"a restore event", &etcdbackupv1.StatusEvent{Config: &etcdbackupv1.ConfigRef{Namespace: "cluster-abc", Name: "r",
			Uid: "u-1"},
			Stage: etcdbackupv1.Stage_STAGE_RESTORER, Phase: etcdbackupv1.Phase_PHASE_RUNNING,
			Operation: etcdbackupv1.Operation_OPERATION_RESTORE, BackupName: "daily-x"}, ""},
		{"a trigger request", &etcdbackupv1.TriggerBackupRequest{Namespace: "cluster-abc", Config: "daily"}, ""},
		{"an empty trigger request", &etcdbackupv1.TriggerBackupRequest{}, "namespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := bus.Validate(tc.msg)
			switch {
			case tc.wants == "" && err != nil:
				t.Fatalf("valid message refused: %v", err)
			case tc.wants != "" && err == nil:
				t.Fatal("invalid message accepted")
			case tc.wants != "" && !strings.Contains(err.Error(), tc.wants):
				t.Fatalf("error %q does not mention %q", err, tc.wants)
			}
		})
	}
}

func with[M proto.Message](m M, f func(M)) M {
	f(m)
	return m
}

// FuzzDecodeAndValidate feeds arbitrary bodies, as protobuf and as JSON, to the decoder and
// validator of every message the bus carries: neither may panic, and what validates must
// survive a round trip and validate again.
func FuzzDecodeAndValidate(f *testing.F) {
	for _, m := range []proto.Message{validRequest(), validReady(), validStored(), validDelete(), validStatus()} {
		b, _, _ := bus.Encode(m, false)
		f.Add(b, false)
		j, _, _ := bus.Encode(m, true)
		f.Add(j, true)
	}
	f.Add([]byte("{}"), true)
	f.Add([]byte("not a message"), false)
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool) {
		ct := bus.ContentTypeProtobuf
		if asJSON {
			ct = bus.ContentTypeJSON
		}
		for _, m := range []proto.Message{&etcdbackupv1.BackupRequested{}, &etcdbackupv1.SnapshotReady{},
			&etcdbackupv1.BackupStored{},
			&etcdbackupv1.DeleteRequested{}, &etcdbackupv1.StatusEvent{}, &etcdbackupv1.TriggerBackupRequest{}} {
			if bus.Decode(data, ct, m) != nil || bus.Validate(m) != nil {
				continue
			}
			again, _, err := bus.Encode(m, asJSON)
			if err != nil {
				t.Fatalf("a valid %T does not encode: %v", m, err)
			}
			back := m.ProtoReflect().New().Interface()
			if err := bus.Decode(again, ct, back); err != nil {
				t.Fatalf("a valid %T does not decode again: %v", m, err)
			}
			if err := bus.Validate(back); err != nil {
				t.Fatalf("a valid %T is invalid after a round trip: %v", m, err)
			}
		}
	})
}
