package staging_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
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
// snapshot stream (Kubernetes-like objects, as e2e/bench fills) through the verifier into the
// staging object store (file storage), against the same stream read straight to io.Discard.
// "compress-discard" compresses (backupformat) into io.Discard; "stage" stages raw into a
// plain nats-server; "stage-tls" raw into one started from deploy/k8s/nats.yaml's
// configuration (TLS, nkeys, permissions), connected as the snapshotter; "compress-stage-tls"
// is the snapshotter's path: compressed as it streams, into the secure bus. MB/s are of the
// raw snapshot. ETCDBACKUP_BENCH_MIB sets the database size (default 256).
func BenchmarkStageEtcdSnapshot(b *testing.B) {
	ctx := context.Background()
	e := etcdtest.Start(b)
	cli := e.Client(b)
	mib := 256
	if v, err := strconv.Atoi(os.Getenv("ETCDBACKUP_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	for i := range mib * 32 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/ns-%03d/cm-%06d", i%100, i), configMap(i)); err != nil {
			b.Fatal(err)
		}
	}
	js := plainJetStream(b)
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "STAGE",
		Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	secureJS := secureStaging(b, ctx)
	for _, mode := range []string{"discard", "compress-discard", "stage", "stage-tls", "compress-stage-tls"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				resp, err := cli.SnapshotWithVersion(ctx)
				if err != nil {
					b.Fatal(err)
				}
				v := snapshot.NewVerifier(resp.Snapshot)
				var n int64
				switch mode {
				case "discard":
					n, err = io.Copy(io.Discard, v)
				case "compress-discard":
					var w *backupformat.Writer
					if w, err = backupformat.NewWriter(io.Discard, backupformat.Level, 1); err == nil {
						if n, err = w.ReadFrom(v); err == nil {
							err = w.Close()
						}
					}
				case "compress-stage-tls":
					var w *backupformat.Writer
					w, err = staging.PutCompressed(ctx, secureJS, bus.StagingBucket, "snap", "bench", v, 0, backupformat.Level, 1,
						backupformat.Encryption{}, nil)
					if w != nil {
						n = v.Size()
						b.ReportMetric(float64(w.Size())/float64(n), "ratio")
					}
				default:
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
	// The streams are the setup identity's to create.
	sn := service.NATS{URL: srv.ClientURL(), Creds: creds.Seed(bus.IdentitySetup), CA: creds.CA()}
	sopts, err := sn.Options(bus.IdentitySetup)
	if err != nil {
		b.Fatal(err)
	}
	snc, err := nats.Connect(srv.ClientURL(), sopts...)
	if err != nil {
		b.Fatal(err)
	}
	defer snc.Close()
	sjs, err := bus.NewJetStream(snc)
	if err != nil {
		b.Fatal(err)
	}
	if err := bus.Ensure(ctx, sjs, bus.DefaultTopology()); err != nil {
		b.Fatal(err)
	}
	return js
}

// plainJetStream is a nats-server without TLS or authentication that fsyncs every write, as
// the deploy's does.
func plainJetStream(b *testing.B) jetstream.JetStream {
	b.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(),
		SyncAlways: true, NoLog: true, NoSigs: true})
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

// configMap is a 32 KiB Kubernetes-like object: 8 KiB of random base64 (secrets,
// certificates) and 24 KiB of repetitive lines, as e2e/bench fills etcd.
func configMap(i int) string {
	secret := make([]byte, 6<<10)
	_, _ = rand.Read(secret)
	var lines strings.Builder
	for j := 0; lines.Len() < 24<<10; j++ {
		fmt.Fprintf(&lines, "setting-%d=value-%d-of-configmap-%d\\n", j, j*7%13, i%50)
	}
	return fmt.Sprintf(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-%06d","namespace":"ns-%03d"},`+
		`"data":{"config":"%s","certificate":"%s"}}`,
		i, i%100, lines.String(), base64.StdEncoding.EncodeToString(secret))
}
