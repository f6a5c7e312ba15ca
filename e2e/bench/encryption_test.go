package bench

import (
	"context"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/procstat"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkEncryptionCost takes one backup of the same database to the plain destination and
// one to the encrypting one (age, sealed in the snapshotter), in one run, and reports each
// one's time, snapshot throughput and the snapshotter's and uploader's peak anonymous memory
// while it ran. ETCDBACKUP_BENCH_MIB sizes the database (256 by default; 1100 for issue 12's
// figure).
func BenchmarkEncryptionCost(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	env, dbSize := filledEnv(b, ctx)
	ns := "cluster-" + sandbox.DemoCluster
	for _, dest := range []string{"warm-up", sandbox.Destination, sandbox.SealedDestination} {
		to := dest
		if dest == "warm-up" {
			to = sandbox.Destination
		}
		cfg := &kubermaticv1.EtcdBackupConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "to-" + dest},
			Spec: kubermaticv1.EtcdBackupConfigSpec{
				Cluster:     corev1.ObjectReference{APIVersion: "kubermatic.k8c.io/v1", Kind: "Cluster", Name: sandbox.DemoCluster},
				Schedule:    "@every 24h",
				Destination: to,
			},
		}
		if err := env.Client.Create(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
	// The first backup reads etcd's database from disk; the ones after it from the page cache.
	// One unmeasured backup first, so that both measured ones start warm.
	backupOnce(b, ctx, env, ns, "to-warm-up")
	b.ResetTimer()
	for range b.N {
		seconds := map[string]float64{}
		for _, dest := range []string{sandbox.Destination, sandbox.SealedDestination} {
			label := "plain"
			if dest == sandbox.SealedDestination {
				label = "age"
			}
			samplers := map[string]*procstat.Sampler{}
			for _, svc := range []string{"snapshotter", "uploader"} {
				samplers[svc] = procstat.SampleProcess(env.ServicesOf(svc)[0].Pid(), 20*time.Millisecond)
			}
			entry := backupOnce(b, ctx, env, ns, "to-"+dest)
			_, snap, upload, triggered := stageTimes(b, ctx, env, entry.BackupName)
			seconds[label] = triggered.Seconds()
			b.ReportMetric(triggered.Seconds(), label+"-trigger-to-completed-s")
			b.ReportMetric(float64(dbSize)/(1<<20)/snap.Seconds(), label+"-snapshot-MiB/s")
			b.ReportMetric(upload.Seconds(), label+"-upload-s")
			b.ReportMetric(float64(entry.Size)/(1<<20), label+"-stored-MiB")
			for _, svc := range []string{"snapshotter", "uploader"} {
				anon, _ := samplers[svc].Stop()
				b.ReportMetric(float64(anon)/(1<<20), label+"-"+svc+"-peak-anon-MiB")
			}
		}
		b.ReportMetric(float64(dbSize)/(1<<20), "db-MiB")
		b.ReportMetric(seconds["age"]/seconds["plain"], "age/plain-time")
	}
}

// filledEnv starts the sandbox with the deployed services and fills the demo etcd with
// ETCDBACKUP_BENCH_MIB of Kubernetes-like objects; it returns the database's size.
func filledEnv(b *testing.B, ctx context.Context) (*sandbox.Env, int64) {
	b.Helper()
	env := startEnv(b, ctx, nil, nil)
	cli, err := env.DemoEtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	return env, fill(b, ctx, cli, env.DemoEtcd.Endpoint, benchMiB(b))
}
