package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkPrune times how long the pruners take to delete ETCDBACKUP_BENCH_PRUNE backups
// (default 1000) of one config with keep 1: the objects are planted in its prefix first, then
// the config is created, and the clock runs until one object is left.
func BenchmarkPrune(b *testing.B) {
	n := 1000
	if v := os.Getenv("ETCDBACKUP_BENCH_PRUNE"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	env := startEnv(b, ctx, map[string]int{"pruner": 3}, nil)
	const cluster = "prune1000"
	if err := env.AddCluster(ctx, cluster, env.DemoEtcd.Endpoint); err != nil {
		b.Fatal(err)
	}
	ns, name := "cluster-"+cluster, "many"
	prefix := backupname.Prefix(cluster, ns, name)
	s3 := env.S3.Client()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	start := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		g.Go(func() error {
			key := backupname.ObjectKey(cluster, ns, name, backupname.Backup(name, start.Add(time.Duration(i)*time.Minute)))
			_, err := s3.PutObject(gctx, sandbox.Bucket, key, bytes.NewReader([]byte("backup")), 6, minio.PutObjectOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	keep := 1
	begin := time.Now()
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kubermaticv1.EtcdBackupConfigSpec{
			Cluster:  corev1.ObjectReference{APIVersion: "kubermatic.k8c.io/v1", Kind: "Cluster", Name: cluster},
			Schedule: "@every 24h", Keep: &keep,
		},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	err := sandbox.Poll(ctx, 25*time.Minute, 250*time.Millisecond, func() (bool, error) {
		left := 0
		for o := range s3.ListObjects(ctx, sandbox.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if o.Err != nil {
				return false, o.Err
			}
			left++
		}
		return left == keep, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(time.Since(begin).Seconds(), "prune-s")
	b.ReportMetric(float64(n-keep)/time.Since(begin).Seconds(), "deletes/s")
}

// startEnv starts a sandbox with the services built from this tree.
func startEnv(b *testing.B, ctx context.Context, replicas map[string]int, args map[string][]string) *sandbox.Env {
	b.Helper()
	tools := sandbox.ToolDir()
	if err := sandbox.CheckTools(tools); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	root, err := sandbox.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	if err := sandbox.BuildServices(ctx, root, filepath.Join(dir, "bin")); err != nil {
		b.Fatal(err)
	}
	env, err := sandbox.Start(ctx, sandbox.Options{Dir: dir, ToolDir: tools, ServiceDir: filepath.Join(dir, "bin"),
		Replicas: replicas, Args: args})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(env.Close)
	return env
}
