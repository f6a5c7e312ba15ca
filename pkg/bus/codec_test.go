package bus_test

import (
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/proto"
)

var emptyRequest = etcdbackupv1.BackupRequested{}

func TestCodecRoundTrip(t *testing.T) {
	in := &etcdbackupv1.TriggerBackupRequest{Namespace: "cluster-x", Config: "daily-backup"}
	for _, json := range []bool{false, true} {
		data, ct, err := bus.Encode(in, json)
		if err != nil {
			t.Fatal(err)
		}
		for _, header := range []string{ct, ""} {
			var out etcdbackupv1.TriggerBackupRequest
			if err := bus.Decode(data, header, &out); err != nil {
				t.Fatalf("json=%v header=%q: %v", json, header, err)
			}
			if !proto.Equal(in, &out) {
				t.Fatalf("json=%v header=%q: got %v", json, header, &out)
			}
		}
	}
	var out etcdbackupv1.TriggerBackupRequest
	if err := bus.Decode([]byte(`{"namespace": 5}`), "", &out); err == nil {
		t.Fatal("wrong JSON type accepted")
	}
}

func TestStatusSubject(t *testing.T) {
	if got := bus.StatusSubject(etcdbackupv1.Stage_STAGE_SNAPSHOTTER); got != "etcdbackup.status.snapshotter" {
		t.Fatalf("got %s", got)
	}
}

// Whatever arrives on the wire, decoding never panics, and what decodes re-encodes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"namespace":"cluster-x","config":"daily"}`), "")
	f.Add([]byte{0x0a, 0x03, 'a', 'b', 'c'}, "application/protobuf")
	f.Add([]byte(`{"backupName":`), "application/json")
	f.Fuzz(func(t *testing.T, data []byte, contentType string) {
		for _, m := range []proto.Message{&etcdbackupv1.TriggerBackupRequest{}, &etcdbackupv1.BackupRequested{},
			&etcdbackupv1.StatusEvent{}, &etcdbackupv1.SnapshotReady{}} {
			if err := bus.Decode(data, contentType, m); err != nil {
				continue
			}
			if _, _, err := bus.Encode(m, true); err != nil {
				t.Fatalf("decoded %T does not encode: %v", m, err)
			}
		}
	})
}
