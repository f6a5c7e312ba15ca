package staging_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/snapshot"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkStageEtcdSnapshot measures the snapshotter's hot path in one process: etcd's
// snapshot stream through the verifier into the staging object store (file storage), against
// the same stream read straight to io.Discard.
func BenchmarkStageEtcdSnapshot(b *testing.B) {
	ctx := context.Background()
	e := etcdtest.Start(b)
	cli := e.Client(b)
	value := make([]byte, 1<<20)
	for i := range 256 {
		_, _ = rand.Read(value)
		if _, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), string(value)); err != nil {
			b.Fatal(err)
		}
	}
	js := natstest.JetStream(b)
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "STAGE", Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"discard", "stage"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				resp, err := cli.SnapshotWithVersion(ctx)
				if err != nil {
					b.Fatal(err)
				}
				v := snapshot.NewVerifier(resp.Snapshot)
				var n int64
				if mode == "discard" {
					n, err = io.Copy(io.Discard, v)
				} else {
					var info *jetstream.ObjectInfo
					info, err = staging.Put(ctx, obs, "snap", "bench", v)
					if info != nil {
						n = int64(info.Size)
					}
				}
				resp.Snapshot.Close()
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(n)
			}
		})
	}
}
