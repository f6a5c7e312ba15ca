package staging_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

func store(t *testing.T) (jetstream.JetStream, jetstream.ObjectStore) {
	t.Helper()
	js := natstest.JetStream(t)
	obs, err := js.CreateObjectStore(context.Background(), jetstream.ObjectStoreConfig{Bucket: "STAGE",
		Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	return js, obs
}

func TestPutAndRead(t *testing.T) {
	js, _ := store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, size := range []int{0, 1, staging.ChunkSize - 1, staging.ChunkSize, 3*staging.ChunkSize + 17} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		// The writer hands data over in small pieces, as etcd's client does.
		info, err := staging.Put(ctx, js, "STAGE", "obj", "test", iotest.HalfReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatal(err)
		}
		if want := (size + staging.ChunkSize - 1) / staging.ChunkSize; int(info.Chunks) != want {
			t.Fatalf("size %d: %d chunks, want %d full chunks", size, info.Chunks, want)
		}
		r, err := staging.Open(ctx, js, "STAGE", "obj", 1<<20, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// A slow reader, one byte at a time at first, still gets everything.
		got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(r, 10)))
		if err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(append(got, rest...), data) {
			t.Fatalf("size %d: read back different bytes", size)
		}
	}
}

func TestPutLeavesNothingWhenTheWriterFails(t *testing.T) {
	js, obs := store(t)
	ctx := context.Background()
	boom := errors.New("snapshot corrupt")
	r := io.MultiReader(bytes.NewReader(make([]byte, 2*staging.ChunkSize)), iotest.ErrReader(boom))
	if _, err := staging.Put(ctx, js, "STAGE", "bad", "test", r); !errors.Is(err, boom) {
		t.Fatalf("Put err = %v, want %v", err, boom)
	}
	if _, err := obs.GetInfo(ctx, "bad"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("a failed put left an object: %v", err)
	}
}

func TestOpenMissing(t *testing.T) {
	js, _ := store(t)
	if _, err := staging.Open(context.Background(), js, "STAGE", "nope", 1<<20, time.Second); !errors.Is(err,
		jetstream.ErrObjectNotFound) {
		t.Fatalf("err = %v", err)
	}
}

// Put bounds the chunks in flight: a server whose stream ingest queue holds a quarter of the
// object, and that fsyncs every write, still takes it (nats.go's ObjectStore.Put sends every
// chunk at once and fails with "429 too many requests" here). What Put wrote reads back with
// nats.go's own ObjectStore.Get, and a second put of the name replaces the first and its chunks.
func TestPutStaysWithinTheServersIngestQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := natstest.JetStream(t, func(o *server.Options) {
		o.SyncAlways = true
		o.StreamMaxBufferedSize = 16 << 20
	})
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "STAGE", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<20)
	_, _ = rand.Read(data)
	if _, err := staging.Put(ctx, js, "STAGE", "big", "test", bytes.NewReader(data)); err != nil {
		t.Fatalf("put of 64 MiB into a 16 MiB ingest queue: %v", err)
	}
	again := data[:3*staging.ChunkSize]
	if _, err := staging.Put(ctx, js, "STAGE", "big", "test", bytes.NewReader(again)); err != nil {
		t.Fatal(err)
	}
	got, err := obs.GetBytes(ctx, "big")
	if err != nil {
		t.Fatalf("nats.go cannot read what Put wrote: %v", err)
	}
	if !bytes.Equal(got, again) {
		t.Fatalf("read back %d bytes, want the second put's %d", len(got), len(again))
	}
	s, err := js.Stream(ctx, "OBJ_STAGE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(3 + 1); info.State.Msgs != want {
		t.Fatalf("the bucket holds %d messages, want %d (the first put's chunks purged)", info.State.Msgs, want)
	}
}

// No consumer outlives its read: a Reader read to the end, and one closed half-way, leave the
// staging stream with no consumer (nats.go's ordered consumers otherwise stay for 5 minutes,
// and a busy uploader hit the server's consumer limit).
func TestReadersLeaveNoConsumer(t *testing.T) {
	js, _ := store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data := make([]byte, 3*staging.ChunkSize)
	_, _ = rand.Read(data)
	if _, err := staging.Put(ctx, js, "STAGE", "obj", "test", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r, err := staging.Open(ctx, js, "STAGE", "obj", 1<<20, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := io.ReadAll(r); err != nil {
				t.Fatal(err)
			}
		} else if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, "OBJ_STAGE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Consumers; n != 0 {
		t.Fatalf("%d consumers left on the staging stream after 20 closed reads, want 0", n)
	}
}

func TestFree(t *testing.T) {
	js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "CAPPED",
		Storage: jetstream.MemoryStorage, MaxBytes: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	free, err := staging.Free(ctx, js, "CAPPED")
	if err != nil || free != 4<<20 {
		t.Fatalf("Free of an empty 4 MiB bucket = %d, %v", free, err)
	}
	data := make([]byte, 3<<20)
	if _, err := staging.Put(ctx, js, "CAPPED", "obj", "test", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if free, err = staging.Free(ctx, js, "CAPPED"); err != nil || free >= 1<<20 {
		t.Fatalf("Free after 3 MiB = %d, %v", free, err)
	}
	// Full: a second object does not fit, and is refused rather than old ones dropped.
	if _, err := staging.Put(ctx, js, "CAPPED", "obj2", "test", bytes.NewReader(data)); err == nil {
		t.Fatal("a put beyond MaxBytes succeeded")
	}
	if _, err := staging.Open(ctx, js, "CAPPED", "obj", 1<<20, 5*time.Second); err != nil {
		t.Fatalf("the first object is gone after the refused put: %v", err)
	}
}

// PutCompressed stages the backup as it will be stored: with recipients, an age file that
// opens with the identity to the snapshot (the encrypting writer's header is written before
// Put reads anything: it must not wait for it).
func TestPutCompressedSeals(t *testing.T) {
	js, _ := store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, seal := s3test.AgeKey(t)
	snap := bytes.Repeat([]byte("etcd-kv-"), 64*64)
	sum := sha256.Sum256(snap)
	snap = append(snap, sum[:]...)
	w, err := staging.PutCompressed(ctx, js, "STAGE", "sealed", "test", bytes.NewReader(snap), 0, backupformat.Level, 1,
		seal, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := staging.Open(ctx, js, "STAGE", "sealed", 1<<20, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	staged, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if w.Codec() != backupformat.CodecZstdAge || !bytes.HasPrefix(staged,
		[]byte("age-encryption.org/v1\n")) || int64(len(staged)) != w.Size() {
		t.Fatalf("codec %s, %d bytes staged (writer says %d), starting %q", w.Codec(), len(staged), w.Size(),
			staged[:min(len(staged), 22)])
	}
	var out bytes.Buffer
	st := backupformat.Meta{SHA256: w.SHA256(), Codec: w.Codec(), Recipients: seal.Fingerprints[0]}
	if _, err := backupformat.Open(bytes.NewReader(staged), st, []age.Identity{id},
		&out, 0); err != nil || !bytes.Equal(out.Bytes(), snap) {
		t.Fatalf("open the staged backup: %v", err)
	}
}
