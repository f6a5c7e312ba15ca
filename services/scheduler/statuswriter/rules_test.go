package statuswriter

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// A stage other than the scheduler (which queued it) and the pruner (which found it in the
// bucket) reports only backups the config's status lists. An event of another backup waits
// a few deliveries for the scheduler's event, then is rejected (unlisted) and lists nothing:
// a stolen snapshotter key cannot fill a config with Running entries that never end.
func TestOnlyQueuedBackupsAreListed(t *testing.T) {
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	a := config("a", "daily", "u-a")
	api := newCounting(t, a)
	w := New(api.client, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	running := lifecycle(a, slot)[1] // the snapshotter's, with no queued event before it
	for attempt := uint64(1); attempt < UnlistedAttempts; attempt++ {
		running.Delivery.Attempt = attempt
		err := handleOne(w, running.Msg, running.Delivery)
		if err == nil || bus.IsPermanent(err) || !strings.Contains(err.Error(), "not listed") {
			t.Fatalf("delivery %d of an unlisted backup's event: %v, want it deferred", attempt, err)
		}
	}
	running.Delivery.Attempt = UnlistedAttempts
	err := handleOne(w, running.Msg, running.Delivery)
	var rej *bus.RejectError
	if !errors.As(err, &rej) || rej.Reason != trust.ReasonUnlisted {
		t.Fatalf("delivery %d: %v, want a rejection (unlisted)", UnlistedAttempts, err)
	}
	if bs := getConfig(t, api.client, a).Status.Backups(); len(bs) != 0 {
		t.Fatalf("status lists %+v, want nothing", bs)
	}
	// Queued first, in the same batch or before: listed, and the snapshotter's event applies.
	items := lifecycle(a, slot)[:2]
	for i, err := range w.HandleBatch(context.Background(), []bus.Item[*etcdbackupv1.StatusEvent]{items[1], items[0]}) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if bs := getConfig(t, api.client, a).Status.Backups(); len(bs) != 1 || bs[0].BackupMessage != "taking snapshot" {
		t.Fatalf("status %+v, want the backup listed with the snapshotter's word", bs)
	}
}

// bucketDestinations is one destination, "s3", of bucket b.
type bucketDestinations struct{ b destination.Bucket }

func (d bucketDestinations) Lookup(context.Context, string) (destination.Destination, error) {
	return destination.Destination{Name: "s3", BucketName: d.b.Name()}, nil
}

func (d bucketDestinations) Bucket(context.Context, destination.Destination) (destination.Bucket, error) {
	return d.b, nil
}

// An uploader's completion is shown only when the bucket holds the object at the backup's key
// with the reported sha256 and size; one it does not confirm is rejected (unconfirmed) and the
// backup stays Running.
func TestCompletionIsConfirmedByTheBucket(t *testing.T) {
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		store func(b destination.Bucket, key string, meta backupformat.Meta) error
		ok    bool
	}{
		{"no object at the key", func(destination.Bucket, string, backupformat.Meta) error { return nil }, false},
		{"another object at the key", func(b destination.Bucket, key string, meta backupformat.Meta) error {
			meta.SHA256 = strings.Repeat("b", 64)
			return b.Put(context.Background(), key, bytes.NewReader(make([]byte, 544)), 544,
				destination.PutOptions{Metadata: meta.Map()})
		}, false},
		{"the object reported", func(b destination.Bucket, key string, meta backupformat.Meta) error {
			return b.Put(context.Background(), key, bytes.NewReader(make([]byte, 544)), 544,
				destination.PutOptions{Metadata: meta.Map()})
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := config("a", "daily", "u-a")
			api := newCounting(t, a)
			w := New(api.client, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			b := s3test.Run(t, "backups").Bucket(t, "backups")
			w.Destinations = bucketDestinations{b}
			items := lifecycle(a, slot)
			done := items[3].Msg
			record := backupformat.Meta{SHA256: done.GetSha256(), Codec: backupformat.CodecZstdAge,
				Recipients: backupformat.Fingerprint("age1a"), SnapshotSHA256: strings.Repeat("c", 64), SnapshotSize: 544,
				KeyCount: 9}
			if err := tc.store(b, done.GetObjectKey(), record); err != nil {
				t.Fatal(err)
			}
			// What the event claims of the object is not what status shows.
			done.Object = &etcdbackupv1.StoredObject{Codec: backupformat.CodecZstd, SnapshotSize: 1}
			errs := w.HandleBatch(context.Background(), items)
			var rej *bus.RejectError
			switch {
			case tc.ok && errs[3] != nil:
				t.Fatalf("a confirmed completion: %v", errs[3])
			case !tc.ok && (!errors.As(errs[3], &rej) || rej.Reason != trust.ReasonUnconfirmed):
				t.Fatalf("an unconfirmed completion: %v, want a rejection (unconfirmed)", errs[3])
			}
			want := kubermaticv1.PhaseRunning
			if tc.ok {
				want = kubermaticv1.PhaseCompleted
			}
			bs := getConfig(t, api.client, a).Status.Backups()
			if len(bs) != 1 || bs[0].BackupPhase != want {
				t.Fatalf("status %+v, want the backup %s", bs, want)
			}
			wantObject := &kubermaticv1.StoredObject{Codec: backupformat.CodecZstdAge,
				Recipients: []string{backupformat.Fingerprint("age1a")}, SnapshotSize: 544,
				SnapshotSHA256: strings.Repeat("c", 64), KeyCount: 9}
			if !tc.ok {
				wantObject = nil
			}
			if !reflect.DeepEqual(bs[0].Object, wantObject) {
				t.Fatalf("status shows the object %+v, want the bucket's record %+v", bs[0].Object, wantObject)
			}
		})
	}
}
