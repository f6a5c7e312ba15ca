package upload

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

type destinations struct {
	s3     *s3test.Server
	t      *testing.T
	lookup error
	seal   backupformat.Encryption
	// bucket is the bucket's name ("backups" when empty); stored, when set, runs after each
	// successful put.
	bucket string
	stored func()
}

func (d *destinations) Encryption(context.Context, destination.Destination) (backupformat.Encryption, error) {
	return d.seal, nil
}

func (d *destinations) Lookup(context.Context, string) (destination.Destination, error) {
	if d.lookup != nil {
		return destination.Destination{}, d.lookup
	}
	return destination.Destination{Name: "s3", BucketName: d.name(), Endpoint: d.s3.Host}, nil
}

func (d *destinations) name() string {
	if d.bucket == "" {
		return "backups"
	}
	return d.bucket
}

func (d *destinations) Bucket(_ context.Context, dest destination.Destination) (destination.Bucket, error) {
	b, err := dest.Open(s3test.AccessKey, s3test.SecretKey, destination.WithPartSize(5<<20))
	if err != nil {
		return nil, err
	}
	return hooked{Bucket: b, stored: d.stored}, nil
}

// hooked runs stored after each successful put.
type hooked struct {
	destination.Bucket
	stored func()
}

func (h hooked) Put(ctx context.Context, key string, r io.Reader, size int64, opts destination.PutOptions) error {
	err := h.Bucket.Put(ctx, key, r, size, opts)
	if err == nil && h.stored != nil {
		h.stored()
	}
	return err
}

type fixture struct {
	config   *kubermaticv1.EtcdBackupConfig
	reader   client.Client
	h        *Handler
	js       jetstream.JetStream
	s3       *s3test.Server
	dest     *destinations
	snapshot []byte
	msg      jetstream.Msg
	handle   bus.Handler
	// stagedSize is the size of the backup as it is stored.
	stagedSize uint64
}

// validRequest is a request the scheduler would send for config cluster-c/cfg.
func validRequest() *etcdbackupv1.BackupRequested {
	at := time.Date(2021, 3, 2, 15, 24, 0, 0, time.UTC)
	backup := backupname.Backup("cfg", at)
	return &etcdbackupv1.BackupRequested{
		Config: &etcdbackupv1.ConfigRef{Namespace: "cluster-c", Name: "cfg", Uid: "0b2d7c4e-uid"}, Cluster: "c",
		BackupName: backup, JobName: backupname.Job("c", "cfg", backup), Destination: "s3",
		ObjectKey: backupname.ObjectKey("c", "cluster-c", "cfg", backup), ScheduledTime: timestamppb.New(at),
		Trigger: etcdbackupv1.Trigger_TRIGGER_SCHEDULE,
	}
}

// setup stages a backup as the snapshotter does (compressed while it streamed) and fetches its
// snapshot-ready message.
func setup(t *testing.T) *fixture {
	t.Helper()
	return setupWith(t, func(*etcdbackupv1.BackupRequested) {})
}

// setupWith is setup with the request changed by forge before it is published.
func setupWith(t *testing.T, forge func(*etcdbackupv1.BackupRequested)) *fixture {
	t.Helper()
	return setupStaged(t, forge, true)
}

// setupStaged stages the snapshot compressed (as the snapshotter does) or raw (as an earlier
// snapshotter did).
func setupStaged(t *testing.T, forge func(*etcdbackupv1.BackupRequested), compressed bool) *fixture {
	t.Helper()
	return setupSealed(t, forge, compressed, backupformat.Encryption{})
}

// setupSealed is setupStaged with the staged backup encrypted to seal, as a snapshotter does
// for a destination with an encryption Secret (compressed only).
func setupSealed(t *testing.T, forge func(*etcdbackupv1.BackupRequested), compressed bool,
	seal backupformat.Encryption) *fixture {
	t.Helper()
	ctx := t.Context()
	js := natstest.Bus(t, 64<<20)
	obs, err := js.ObjectStore(ctx, bus.StagingBucket)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{js: js, s3: s3test.Run(t, "backups"), snapshot: make([]byte, 3<<20+32)}
	_, _ = rand.Read(f.snapshot[:1<<20]) // partly compressible
	trailer := sha256.Sum256(f.snapshot[:len(f.snapshot)-32])
	copy(f.snapshot[len(f.snapshot)-32:], trailer[:]) // etcd's own hash: a snapshot a restore accepts
	f.dest = &destinations{s3: f.s3, t: t}
	req := validRequest()
	forge(req)
	sum := sha256.Sum256(f.snapshot)
	ready := &etcdbackupv1.SnapshotReady{Request: req, StagedObject: bus.MsgID(req),
		SnapshotSize: uint64(len(f.snapshot)), SnapshotSha256: hex.EncodeToString(sum[:]), Revision: 7,
		StartedTime: timestamppb.Now()}
	staged := f.snapshot
	if compressed {
		var buf bytes.Buffer
		enc, err := backupformat.NewSealingWriter(&buf, backupformat.Level, 1, seal)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := enc.Write(f.snapshot); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		staged, ready.StoredSize, ready.StoredSha256 = buf.Bytes(), uint64(enc.Size()), enc.SHA256()
		ready.Codec, ready.Recipients = enc.Codec(), strings.Join(seal.Fingerprints, ",")
	}
	f.stagedSize = uint64(len(staged))
	if _, err := staging.Put(ctx, js, bus.StagingBucket, bus.MsgID(req), "test", bytes.NewReader(staged)); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(ctx, js, bus.SubjectSnapshotReady, bus.MsgID(req), ready); err != nil {
		t.Fatal(err)
	}
	cons, err := bus.Consumer(ctx, js, bus.ConsumerUploader, 3)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	f.msg = <-batch.Messages()
	if f.msg == nil {
		t.Fatal("no message")
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	f.config = &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "cfg", UID: "0b2d7c4e-uid"},
		Spec:       kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Destination: "s3"},
	}
	f.reader = fake.NewClientBuilder().WithScheme(scheme).WithObjects(f.config).Build()
	f.h = New(Options{
		Reader: f.reader,
		JS:     js, Staging: obs, Destinations: f.dest, Bus: bus.NewMetrics(prometheus.NewRegistry()), WorkDir: t.TempDir(),
		StagingReadBytes: 1 << 20, StagingIdle: 5 * time.Second, Log: slog.New(slog.DiscardHandler),
	}, prometheus.NewRegistry())
	f.handle = f.h.Handler(3)
	return f
}

// uploaded is the bytes the handler stored.
func (f *fixture) uploaded() int64 { return int64(testutil.ToFloat64(f.h.metrics.bytes)) }

// objects lists the bucket.
func (f *fixture) objects(t *testing.T) []destination.ObjectInfo {
	t.Helper()
	var out []destination.ObjectInfo
	if err := f.s3.Bucket(t, "backups").List(t.Context(), "", func(o destination.ObjectInfo) error {
		out = append(out, o)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// stored reads the object at key: its info and bytes (nil when there is none).
func (f *fixture) stored(t *testing.T, key string) (destination.ObjectInfo, []byte) {
	t.Helper()
	r, info, err := f.s3.Bucket(t, "backups").Get(t.Context(), key)
	if errors.Is(err, destination.ErrObjectNotFound) {
		return info, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return info, body
}

func (f *fixture) statusEvents(t *testing.T) []*etcdbackupv1.StatusEvent {
	t.Helper()
	s, _ := f.js.Stream(t.Context(), bus.StreamStatus)
	info, _ := s.Info(t.Context())
	var out []*etcdbackupv1.StatusEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev etcdbackupv1.StatusEvent
		if err := bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, &ev)
	}
	return out
}

// The staged backup is stored as it is, compressed, with its sha256 as metadata; a raw
// snapshot staged by an earlier snapshotter is compressed first and stored the same way.
func TestUploadStoresCompressedSnapshotWithItsHash(t *testing.T) {
	for _, compressed := range []bool{true, false} {
		t.Run(map[bool]string{true: "staged compressed", false: "staged raw"}[compressed], func(t *testing.T) {
			testUploadStores(t, setupStaged(t, func(*etcdbackupv1.BackupRequested) {}, compressed))
		})
	}
}

func testUploadStores(t *testing.T, f *fixture) {
	t.Helper()
	ctx := context.Background()
	if err := f.handle(ctx, f.msg); err != nil {
		t.Fatal(err)
	}
	info, stored := f.stored(t, "c/cluster-c/cfg/cfg-2021-03-02T15-24-00.db.zst")
	sum := sha256.Sum256(stored)
	meta, err := backupformat.ParseMeta(info.Metadata)
	if err != nil || meta.SHA256 != hex.EncodeToString(sum[:]) || meta.SnapshotSize != int64(len(f.snapshot)) ||
		meta.Revision != 7 {
		t.Fatalf("metadata %v (%v); sha256 of object %x, snapshot of %d bytes at revision 7", info.Metadata, err, sum,
			len(f.snapshot))
	}
	dec, _ := zstd.NewReader(bytes.NewReader(stored))
	raw, err := io.ReadAll(dec)
	if err != nil || !bytes.Equal(raw, f.snapshot) {
		t.Fatalf("stored object does not decompress to the snapshot: %v", err)
	}
	if len(stored) >= len(f.snapshot) {
		t.Fatalf("stored %d bytes for a %d-byte snapshot: not compressed", len(stored), len(f.snapshot))
	}
	evs := f.statusEvents(t)
	last := evs[len(evs)-1]
	if last.GetPhase() != etcdbackupv1.Phase_PHASE_COMPLETED || last.GetSha256() != hex.EncodeToString(sum[:]) ||
		last.GetSize() != uint64(len(stored)) {
		t.Fatalf("last status event %v", last)
	}
	obs, _ := f.js.ObjectStore(ctx, bus.StagingBucket)
	if _, err := obs.GetInfo(ctx, f.msg.Headers().Get(bus.HeaderMsgID)); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("staged copy not deleted after upload: %v", err)
	}
}

// A redelivery after a stored backup (the ack was lost) completes again without uploading
// again, although the staged copy is gone.
func TestRedeliveryAfterStoreDoesNotUploadAgain(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := f.handle(ctx, f.msg); err != nil {
		t.Fatal(err)
	}
	first := f.uploaded()
	if err := f.handle(ctx, f.msg); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	if f.uploaded() != first || first == 0 {
		t.Fatalf("uploaded %d bytes the first time, %d in all: uploaded again", first, f.uploaded())
	}
	if objects := f.objects(t); len(objects) != 1 {
		t.Fatalf("%d objects in the bucket, want 1", len(objects))
	}
	// The second completion reports the object from the bucket's record, as the first did.
	evs := f.statusEvents(t)
	var objs []*etcdbackupv1.StoredObject
	for _, ev := range evs {
		if ev.GetPhase() == etcdbackupv1.Phase_PHASE_COMPLETED {
			objs = append(objs, ev.GetObject())
		}
	}
	if len(objs) != 2 || objs[0].GetCodec() != backupformat.CodecZstd || !proto.Equal(objs[0], objs[1]) ||
		objs[0].GetSnapshotSize() != uint64(len(f.snapshot)) {
		t.Fatalf("completions' objects %v, want two alike, codec %s, of a %d-byte snapshot", objs,
			backupformat.CodecZstd, len(f.snapshot))
	}
}

// A backup whose config was deleted meanwhile is not stored: its backups are being deleted.
func TestDeletedConfigGetsNoBackup(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := f.reader.Delete(ctx, f.config); err != nil {
		t.Fatal(err)
	}
	if err := f.handle(ctx, f.msg); err != nil {
		t.Fatal(err)
	}
	if objects := f.objects(t); len(objects) != 0 {
		t.Fatalf("stored %v for a deleted config", objects)
	}
	if f.uploaded() != 0 {
		t.Fatalf("uploaded %d bytes", f.uploaded())
	}
}

func TestUploadFailures(t *testing.T) {
	t.Run("S3 down is retried and says so", func(t *testing.T) {
		f := setup(t)
		f.s3.Close()
		err := f.handle(context.Background(), f.msg)
		if err == nil || bus.IsPermanent(err) {
			t.Fatalf("err = %v, want a transient error", err)
		}
		evs := f.statusEvents(t)
		if last := evs[len(evs)-1]; last.GetPhase() != etcdbackupv1.Phase_PHASE_RUNNING ||
			!bytes.Contains([]byte(last.GetMessage()), []byte("upload failed, retrying")) {
			t.Fatalf("last status event %v", last)
		}
	})
	t.Run("staged bytes unlike the sha256 the snapshotter sent store nothing", func(t *testing.T) {
		f := setupStaged(t, func(*etcdbackupv1.BackupRequested) {}, true)
		// Re-publish the message with a digest that does not describe the staged bytes.
		var ready etcdbackupv1.SnapshotReady
		if err := bus.Decode(f.msg.Data(), f.msg.Headers().Get(bus.HeaderContentType), &ready); err != nil {
			t.Fatal(err)
		}
		ready.StoredSha256 = strings.Repeat("0", 64)
		err := f.h.Handle(context.Background(), &ready, bus.Delivery{Attempt: 1, Subject: bus.SubjectSnapshotReady})
		if !bus.IsPermanent(err) || !strings.Contains(err.Error(), "the snapshotter sent "+ready.StoredSha256) {
			t.Fatalf("err = %v, want a permanent digest mismatch", err)
		}
		if _, err := f.s3.Bucket(t, "backups").Stat(context.Background(),
			ready.GetRequest().GetObjectKey()); !errors.Is(err, destination.ErrObjectNotFound) {
			t.Fatalf("an object was stored: stat err %v", err)
		}
	})
	t.Run("staged bytes unlike their own digest store nothing", func(t *testing.T) {
		f := setupStaged(t, func(*etcdbackupv1.BackupRequested) {}, true)
		var ready etcdbackupv1.SnapshotReady
		if err := bus.Decode(f.msg.Data(), f.msg.Headers().Get(bus.HeaderContentType), &ready); err != nil {
			t.Fatal(err)
		}
		// The staged copy damaged: the same size and digest on record, one byte changed.
		ctx := t.Context()
		obs, err := f.js.ObjectStore(ctx, bus.StagingBucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := obs.GetInfo(ctx, ready.GetStagedObject())
		if err != nil {
			t.Fatal(err)
		}
		r, err := staging.Open(ctx, f.js, bus.StagingBucket, ready.GetStagedObject(), 1<<20, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		staged, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		staged[len(staged)/2] ^= 1
		if _, err := staging.Put(ctx, f.js, bus.StagingBucket, ready.GetStagedObject(), "test",
			bytes.NewReader(staged)); err != nil {
			t.Fatal(err)
		}
		damaged, err := obs.GetInfo(ctx, ready.GetStagedObject())
		if err != nil {
			t.Fatal(err)
		}
		damaged.Digest = info.Digest
		raw, err := json.Marshal(damaged)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg("$O." + bus.StagingBucket + ".M." +
			base64.URLEncoding.EncodeToString([]byte(ready.GetStagedObject())))
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Data = raw
		if _, err := f.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}

		err = f.h.Handle(ctx, &ready, bus.Delivery{Attempt: 1, Subject: bus.SubjectSnapshotReady})
		if !bus.IsPermanent(err) || !errors.Is(err, staging.ErrCorrupt) {
			t.Fatalf("err = %v, want a permanent corrupt staged copy", err)
		}
		if _, err := f.s3.Bucket(t, "backups").Stat(ctx,
			ready.GetRequest().GetObjectKey()); !errors.Is(err, destination.ErrObjectNotFound) {
			t.Fatalf("an object was stored: stat err %v", err)
		}
	})
	t.Run("unknown destination fails the backup", func(t *testing.T) {
		f := setup(t)
		f.dest.lookup = destination.ErrNotFound
		err := f.handle(context.Background(), f.msg)
		if !bus.IsPermanent(err) {
			t.Fatalf("err = %v, want permanent", err)
		}
		evs := f.statusEvents(t)
		if last := evs[len(evs)-1]; last.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED {
			t.Fatalf("last status event %v", last)
		}
	})
}

// A snapshot-ready message that names another cluster or destination than its config's is
// rejected: nothing is stored, the backup is Failed with the reason, and the config gets an Event.
func TestForgedDestinationsAreRejected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		forge  func(*etcdbackupv1.BackupRequested)
		reason string
	}{
		{"another cluster and its key", func(r *etcdbackupv1.BackupRequested) {
			r.Cluster = "victim"
			r.JobName = backupname.Job("victim", "cfg", r.BackupName)
			r.ObjectKey = backupname.ObjectKey("victim", "cluster-c", "cfg", r.BackupName)
		}, "cluster"},
		{"another destination", func(r *etcdbackupv1.BackupRequested) { r.Destination = "attacker" }, "destination"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setupWith(t, tc.forge)
			rec := events.NewFakeRecorder(5)
			f.h.Events = rec
			err := f.handle(context.Background(), f.msg)
			var rej *bus.RejectError
			if !bus.IsPermanent(err) || !errors.As(err, &rej) || rej.Reason != tc.reason {
				t.Fatalf("err = %v, want a rejection for %s", err, tc.reason)
			}
			if f.uploaded() != 0 {
				t.Fatalf("stored %d bytes", f.uploaded())
			}
			evs := f.statusEvents(t)
			if last := evs[len(evs)-1]; last.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED {
				t.Fatalf("last status event %v, want Failed", last)
			}
			select {
			case e := <-rec.Events:
				if !strings.Contains(e, "MessageRejected") {
					t.Fatalf("event %q", e)
				}
			default:
				t.Fatal("no Event on the config")
			}
		})
	}
}

// A config re-created under the same name gets nothing of the old one's backups.
func TestRecreatedConfigGetsNoBackup(t *testing.T) {
	f := setup(t)
	f.config.UID = "another-uid"
	if err := f.reader.Update(context.Background(), f.config); err != nil {
		t.Fatal(err)
	}
	if err := f.handle(context.Background(), f.msg); err != nil {
		t.Fatal(err)
	}
	if f.uploaded() != 0 {
		t.Fatalf("stored %d bytes for a re-created config", f.uploaded())
	}
}

// On its last allowed delivery, a snapshot whose upload keeps failing is a dead letter: its
// backup is Failed with the last error.
func TestDeadLetterMarksTheBackupFailed(t *testing.T) {
	f := setup(t)
	f.s3.Close()
	err := f.h.Handler(1)(context.Background(), f.msg)
	if !bus.IsPermanent(err) || !strings.Contains(err.Error(), "dead letter") {
		t.Fatalf("err = %v, want a dead letter", err)
	}
	evs := f.statusEvents(t)
	if l := evs[len(evs)-1]; l.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED || !strings.Contains(l.GetMessage(),
		"gave up") {
		t.Fatalf("last status event %v, want Failed saying it gave up", l)
	}
}

// A config deleted while its upload runs: the pruner may have found its prefix empty and let
// the config go, so the upload deletes the object it stored, and reports nothing stored.
func TestUploadFinishingAfterItsConfigIsGoneDeletesItsObject(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.dest.stored = func() {
		if err := f.reader.Delete(ctx, f.config); err != nil {
			t.Error(err)
		}
	}
	if err := f.handle(ctx, f.msg); err != nil {
		t.Fatal(err)
	}
	if f.uploaded() == 0 {
		t.Fatal("nothing was uploaded: the test did not delete the config during the upload")
	}
	if objects := f.objects(t); len(objects) != 0 {
		t.Fatalf("%v stay in the bucket after their config was deleted during the upload", objects)
	}
	for _, ev := range f.statusEvents(t) {
		if ev.GetPhase() == etcdbackupv1.Phase_PHASE_COMPLETED {
			t.Fatalf("a Completed status for a backup whose config is gone: %v", ev)
		}
	}
}

// The snapshot of a config being deleted is not stored, and its backup ends Failed in
// status, so that the config's deletion (which waits for Running backups) does not wait.
func TestConfigBeingDeletedGetsNoBackupAndAFailedEntry(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.config.Finalizers = []string{kubermaticv1.DeleteAllBackupsFinalizer}
	if err := f.reader.Update(ctx, f.config); err != nil {
		t.Fatal(err)
	}
	if err := f.reader.Delete(ctx, f.config); err != nil {
		t.Fatal(err)
	}
	if err := f.handle(ctx, f.msg); err != nil {
		t.Fatal(err)
	}
	if f.uploaded() != 0 {
		t.Fatalf("uploaded %d bytes for a config being deleted", f.uploaded())
	}
	evs := f.statusEvents(t)
	if len(evs) == 0 || evs[len(evs)-1].GetPhase() != etcdbackupv1.Phase_PHASE_FAILED ||
		!strings.Contains(evs[len(evs)-1].GetMessage(), "being deleted") {
		t.Fatalf("status events %v, want the backup Failed because its config is being deleted", evs)
	}
}

// To a destination that encrypts: a backup the snapshotter sealed to its recipients is stored
// as it is, with its codec and recipients' fingerprints as metadata, and opens with the
// identity to the snapshot; a raw staged one (an earlier snapshotter) is sealed here; one
// staged in the clear, or sealed to other recipients, is not stored at all.
func TestEncryptingDestination(t *testing.T) {
	id, seal := s3test.AgeKey(t)
	_, other := s3test.AgeKey(t)
	for _, tc := range []struct {
		name       string
		staged     backupformat.Encryption
		compressed bool
		ok         bool
	}{
		{"sealed by the snapshotter", seal, true, true},
		{"raw, sealed by the uploader", backupformat.Encryption{}, false, true},
		{"staged in the clear", backupformat.Encryption{}, true, false},
		{"sealed to other recipients", other, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setupSealed(t, func(*etcdbackupv1.BackupRequested) {}, tc.compressed, tc.staged)
			f.dest.seal = seal
			_ = f.handle(t.Context(), f.msg)
			info, body := f.stored(t, validRequest().GetObjectKey())
			if !tc.ok {
				if body != nil {
					t.Fatalf("stored %d bytes; want nothing stored", len(body))
				}
				evs := f.statusEvents(t)
				if last := evs[len(evs)-1]; last.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED ||
					!strings.Contains(last.GetMessage(), "requires zstd+age") {
					t.Fatalf("last status %v, want Failed saying what the destination requires", last)
				}
				return
			}
			meta, err := backupformat.ParseMeta(info.Metadata)
			if err != nil || meta.Codec != backupformat.CodecZstdAge || meta.Recipients != seal.Fingerprints[0] {
				t.Fatalf("metadata %+v (%v), want codec %s to %s", info.Metadata, err, backupformat.CodecZstdAge,
					seal.Fingerprints[0])
			}
			// Subscribers see what the bucket records: the codec and whom it is sealed to.
			evs := f.statusEvents(t)
			if o := evs[len(evs)-1].GetObject(); o.GetCodec() != backupformat.CodecZstdAge ||
				!slices.Equal(o.GetRecipients(), seal.Fingerprints) ||
				o.GetSnapshotSize() != uint64(len(f.snapshot)) || o.GetSnapshotSha256() != meta.SnapshotSHA256 {
				t.Fatalf("the completion's object %v, want codec %s to %v of a %d-byte snapshot", o,
					backupformat.CodecZstdAge, seal.Fingerprints, len(f.snapshot))
			}
			if bytes.Contains(body, f.snapshot[1<<20:1<<20+256]) {
				t.Fatal("the stored object holds the snapshot in the clear")
			}
			var out bytes.Buffer
			if _, err := backupformat.Open(bytes.NewReader(body), meta, []age.Identity{id},
				&out, 0); err != nil || !bytes.Equal(out.Bytes(), f.snapshot) {
				t.Fatalf("open with the identity: %v (%d bytes, want %d)", err, out.Len(), len(f.snapshot))
			}
		})
	}
}

// A running upload reports its bytes stored of the backup's size, in its message and in
// structured fields, at least every ProgressEvery.
func TestUploadReportsProgress(t *testing.T) {
	f := setup(t)
	f.h.ProgressEvery = 50 * time.Microsecond
	ctx := context.Background()
	if err := f.handle(ctx, f.msg); err != nil {
		t.Fatal(err)
	}
	var reports int
	for _, ev := range f.statusEvents(t) {
		if !strings.HasPrefix(ev.GetMessage(), "uploading: ") {
			continue
		}
		reports++
		if ev.GetBytesTotal() != f.stagedSize || ev.GetBytesDone() > ev.GetBytesTotal() {
			t.Fatalf("progress %q: %d of %d bytes; the backup is %d", ev.GetMessage(), ev.GetBytesDone(), ev.GetBytesTotal(),
				f.stagedSize)
		}
	}
	if reports == 0 {
		t.Fatal("no progress report at a 50 µs interval")
	}
}

// A destination whose bucket does not exist is a configuration error: the backup is Failed at
// once with reason BucketNotFound, not retried, and its staged copy is dropped. The pruner,
// the restorer and the drill give the same reason the same permanence.
func TestMissingBucketFailsTheBackupForGood(t *testing.T) {
	f := setup(t)
	f.dest.bucket = "no-such-bucket"
	err := f.handle(context.Background(), f.msg)
	if !bus.IsPermanent(err) || !errors.Is(err,
		destination.ErrBucketNotFound) || destination.Reason(err) != "BucketNotFound" {
		t.Fatalf("err = %v, want a permanent BucketNotFound", err)
	}
	evs := f.statusEvents(t)
	want := `upload: bucket "no-such-bucket" of destination "s3" does not exist`
	if last := evs[len(evs)-1]; last.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED || last.GetMessage() != want {
		t.Fatalf("last status event %v, want Failed %q", last, want)
	}
	if n := testutil.ToFloat64(f.h.Bus.Failures("upload", "BucketNotFound")); n != 1 {
		t.Fatalf("failures{upload,BucketNotFound} = %v, want 1", n)
	}
	obs, _ := f.js.ObjectStore(context.Background(), bus.StagingBucket)
	if _, err := obs.GetInfo(context.Background(), bus.MsgID(validRequest())); !errors.Is(err,
		jetstream.ErrObjectNotFound) {
		t.Fatalf("staged copy kept after a failure for good: %v", err)
	}
}

// While S3 is down, each retry is logged once, by the worker, with the backup: the handler,
// which logs through the same logger, says nothing of it.
func TestEachRetryIsLoggedOnce(t *testing.T) {
	f := setup(t)
	log, logs := logtest.New()
	f.h.Log = log
	f.s3.Close()
	cons, err := bus.Consumer(context.Background(), f.js, bus.ConsumerUploader, 3)
	if err != nil {
		t.Fatal(err)
	}
	w, err := bus.NewWorker(cons, f.h.Handler(3), bus.WithLogger(f.h.Log),
		bus.WithBackoff(func(uint64) time.Duration { return time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Start(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := f.msg.Nak(); err != nil { // the fixture's fetch: deliver it again, to the worker
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "message terminated") {
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter after 3 deliveries:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var retries, terminated, other int
	for _, line := range logs.Lines() {
		switch {
		case strings.Contains(line, `"msg":"job failed, will retry"`) && strings.Contains(line,
			`"backup":"`+validRequest().GetBackupName()):
			retries++
		case strings.Contains(line, `"msg":"message terminated"`):
			terminated++
		default:
			other++
			t.Errorf("a line besides the worker's: %s", line)
		}
	}
	// The fixture's own fetch was the first delivery: the worker got the other two.
	if retries != 1 || terminated != 1 || other != 0 {
		t.Fatalf("%d retry lines and %d terminations for 2 deliveries, want 1 and 1:\n%s", retries, terminated, logs.String())
	}
}

// A stored backup is never replaced: a request for a key that already holds another backup (a
// replay after the dedup window, a stolen scheduler key) or an object with no backup record is
// rejected (reason "exists") with a Failed status event saying why, and the object stays as
// it was.
func TestStoredBackupIsNeverReplaced(t *testing.T) {
	other := bytes.Repeat([]byte{7}, 1<<20+32)
	for _, tc := range []struct {
		name  string
		plant func(f *fixture, key string)
	}{
		{"another backup", func(f *fixture, key string) {
			f.s3.PutBackup(t, "backups", key, other, backupformat.Encryption{},
				backupformat.Meta{SnapshotSHA256: fmt.Sprintf("%x", sha256.Sum256(other)), SnapshotSize: int64(len(other))})
		}},
		{"an object with no backup record", func(f *fixture, key string) {
			if err := f.s3.Bucket(t, "backups").Put(context.Background(), key, bytes.NewReader(other),
				int64(len(other)), destination.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t)
			key := validRequest().GetObjectKey()
			tc.plant(f, key)
			before, beforeBytes := f.stored(t, key)
			err := f.handle(context.Background(), f.msg)
			var rej *bus.RejectError
			if !errors.As(err, &rej) || rej.Reason != ReasonExists {
				t.Fatalf("err = %v, want a rejection (exists)", err)
			}
			after, afterBytes := f.stored(t, key)
			if !bytes.Equal(beforeBytes, afterBytes) || !maps.Equal(before.Metadata, after.Metadata) || f.uploaded() != 0 {
				t.Fatalf("the stored object changed (%d -> %d bytes, %v -> %v) or %d bytes were uploaded", len(beforeBytes),
					len(afterBytes), before.Metadata, after.Metadata, f.uploaded())
			}
			evs := f.statusEvents(t)
			if last := evs[len(evs)-1]; last.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED ||
				!strings.Contains(last.GetMessage(), "never replaced") {
				t.Fatalf("last status event %v, want Failed saying the stored backup is never replaced", last)
			}
		})
	}
}

// With no delivery count (max-deliver 0), a transient failure is retried for as long as the
// staged copy lives, each retry saying how long the backup has waited; once the copy is about
// to expire the backup is Failed. A long S3 outage loses no backup the staging still holds.
func TestUploadIsRetriedWhileTheStagedCopyLives(t *testing.T) {
	f := setup(t)
	f.s3.Close()
	f.h.StagingTTL = 24 * time.Hour
	err := f.h.Handler(bus.Unlimited)(context.Background(), f.msg)
	if err == nil || bus.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient failure to retry", err)
	}
	evs := f.statusEvents(t)
	if l := evs[len(evs)-1]; l.GetPhase() != etcdbackupv1.Phase_PHASE_RUNNING ||
		!strings.Contains(l.GetMessage(), "(waiting ") || !strings.Contains(l.GetMessage(), "retried until") {
		t.Fatalf("last status event %v, want Running saying how long it has waited", l)
	}
	// The staged copy is about to expire: given up.
	f.h.StagingTTL = time.Millisecond
	err = f.h.Handler(bus.Unlimited)(context.Background(), f.msg)
	if !bus.IsPermanent(err) {
		t.Fatalf("err = %v, want the backup given up", err)
	}
	evs = f.statusEvents(t)
	if l := evs[len(evs)-1]; l.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED ||
		!strings.Contains(l.GetMessage(), "gave up after retrying for") {
		t.Fatalf("last status event %v, want Failed saying it gave up", l)
	}
}
