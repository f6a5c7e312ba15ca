package staging_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/natsauth"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/pkg/snapshot"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkStageEtcdSnapshot measures the snapshotter's hot path in one process: etcd's
// snapshot stream through the verifier into the staging object store (file storage), against
// the same stream read straight to io.Discard. "stage" stages into a plain nats-server;
// "stage-tls" into one started from deploy/k8s/nats.yaml's configuration (TLS, nkeys,
// permissions), connected as the snapshotter: the cost of the secure bus, side by side.
// ETCDBACKUP_BENCH_MIB sets the database size (default 256).
func BenchmarkStageEtcdSnapshot(b *testing.B) {
	ctx := context.Background()
	e := etcdtest.Start(b)
	cli := e.Client(b)
	value := make([]byte, 1<<20)
	mib := 256
	if v, err := strconv.Atoi(os.Getenv("ETCDBACKUP_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	for i := range mib {
		_, _ = rand.Read(value)
		if _, err := cli.Put(ctx, fmt.Sprintf("/k/%04d", i), string(value)); err != nil {
			b.Fatal(err)
		}
	}
	js := plainJetStream(b)
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "STAGE", Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	secureJS := secureStaging(b, ctx)
	for _, mode := range []string{"discard", "stage", "stage-tls"} {
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
					target, bucket := js, "STAGE"
					if mode == "stage-tls" {
						target, bucket = secureJS, bus.StagingBucket
					}
					var info *jetstream.ObjectInfo
					info, err = staging.Put(ctx, target, bucket, "snap", "bench", v)
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

// secureStaging starts nats-server from the deploy's configuration, with the staging bucket,
// and returns JetStream as the snapshotter sees it, over TLS with its nkey.
func secureStaging(b *testing.B, ctx context.Context) jetstream.JetStream {
	b.Helper()
	conf, err := natsauth.DeployConfig(filepath.Join("..", ".."))
	if err != nil {
		b.Fatal(err)
	}
	creds, err := natsauth.NewCredentials(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	srv, err := creds.Start(conf, natsauth.Options{Port: -1, StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	n := service.NATS{URL: srv.ClientURL(), Creds: creds.Seed(bus.IdentitySnapshotter), CA: creds.CA()}
	opts, err := n.Options(bus.IdentitySnapshotter)
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := bus.NewJetStream(nc)
	if err != nil {
		b.Fatal(err)
	}
	topo := bus.DefaultTopology()
	if err := bus.EnsureFor(ctx, js, topo, bus.IdentitySnapshotter); err != nil {
		b.Fatal(err)
	}
	return js
}

// plainJetStream is a nats-server without TLS or authentication that fsyncs every write, as
// the deploy's does.
func plainJetStream(b *testing.B) jetstream.JetStream {
	b.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(), SyncAlways: true, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats not ready")
	}
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := bus.NewJetStream(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js
}
