package bench

import (
	"context"
	"regexp"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/procstat"
	"github.com/etcd-backup/etcdbackup/services/restorer/drill"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var drillTook = regexp.MustCompile(` in ([0-9.]+m?s|[0-9]+m[0-9.]+s)$`)

// BenchmarkDrill takes one backup of a database of ETCDBACKUP_BENCH_MIB (256 by default) and
// lets the restorer drill it: the drill's own duration (from its condition) and the
// restorer's peak anonymous memory and RSS while it ran.
func BenchmarkDrill(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	env, dbSize := filledEnv(b, ctx)
	ns := "cluster-" + sandbox.DemoCluster
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "drilled",
			Annotations: map[string]string{kubermaticv1.AnnotationDrillSchedule: "@every 24h"}},
		Spec: kubermaticv1.EtcdBackupConfigSpec{
			Cluster:  corev1.ObjectReference{APIVersion: "kubermatic.k8c.io/v1", Kind: "Cluster", Name: sandbox.DemoCluster},
			Schedule: "@every 24h",
		},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	restorer := env.ServicesOf("restorer")[0]
	b.ResetTimer()
	for range b.N {
		sampler := procstat.SampleProcess(restorer.Pid(), 20*time.Millisecond)
		entry := backupOnce(b, ctx, env, ns, cfg.Name)
		var cond *kubermaticv1.EtcdBackupConfigCondition
		err := sandbox.Poll(ctx, 30*time.Minute, 200*time.Millisecond, func() (bool, error) {
			var got kubermaticv1.EtcdBackupConfig
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cfg), &got); err != nil {
				return false, err
			}
			cond = got.Status.Condition(kubermaticv1.ConditionBackupRestorable)
			return cond != nil && cond.Reason != "", nil
		})
		if err != nil {
			b.Fatal(err)
		}
		anon, file := sampler.Stop()
		if cond.Reason != drill.ReasonPassed {
			b.Fatalf("the drill of %s: %s: %s", entry.BackupName, cond.Reason, cond.Message)
		}
		m := drillTook.FindStringSubmatch(cond.Message)
		if m == nil {
			b.Fatalf("no duration in %q", cond.Message)
		}
		took, err := time.ParseDuration(m[1])
		if err != nil {
			b.Fatal(err)
		}
		rss, err := restorer.PeakRSS()
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s", cond.Message)
		b.ReportMetric(float64(dbSize)/(1<<20), "db-MiB")
		b.ReportMetric(took.Seconds(), "drill-s")
		b.ReportMetric(float64(anon)/(1<<20), "restorer-peak-anon-MiB")
		b.ReportMetric(float64(file)/(1<<20), "restorer-peak-file-MiB")
		b.ReportMetric(float64(rss)/(1<<20), "restorer-peak-RSS-MiB")
	}
}
