package bench

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// BenchmarkRestore backs up a 3-member etcd of ETCDBACKUP_BENCH_MIB MiB (default 256) and
// restores it through the restorer, the real restore step and 3 embedded members. Reported:
// verify (the restorer's streaming check), download and restore (the slowest member's restore
// step: fetch with checks, then etcdutl), wait (the rest of the rebuild: members starting
// until etcd is healthy and the restorer sees it), the whole restore, and the restore step's
// peak RSS.
func BenchmarkRestore(b *testing.B) {
	mib := benchMiB(b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	// Poll often, so that the figures measure the work rather than the default 2 s poll.
	env := startEnv(b, ctx, nil, map[string][]string{"restorer": {"--poll-interval=100ms"}})
	const cluster = "bench-restore"
	k, err := env.StartEtcdCluster(ctx, cluster, 3, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Stop()
	cli, err := k.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	dbSize := fill(b, ctx, cli, k.ClientURLs()[0], mib)
	ns := "cluster-" + cluster
	ref := corev1.ObjectReference{APIVersion: "kubermatic.k8c.io/v1", Kind: "Cluster", Name: cluster}
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench"},
		Spec:       kubermaticv1.EtcdBackupConfigSpec{Cluster: ref, Schedule: "@every 24h"},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	backup := backupOnce(b, ctx, env, ns, "bench")

	b.ResetTimer()
	for i := range b.N {
		rs := &kubermaticv1.EtcdRestore{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench-" + strconv.Itoa(i)},
			Spec:       kubermaticv1.EtcdRestoreSpec{Cluster: ref, BackupName: backup.BackupName},
		}
		stepsBefore := len(k.Steps())
		start := time.Now()
		if err := env.Client.Create(ctx, rs); err != nil {
			b.Fatal(err)
		}
		err := sandbox.Poll(ctx, 30*time.Minute, 100*time.Millisecond, func() (bool, error) {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs), rs); err != nil {
				return false, err
			}
			if rs.Status.Phase == kubermaticv1.RestorePhaseFailed {
				return false, sandbox.Abort(&restoreFailed{rs.Status.Message})
			}
			return rs.Status.Phase == kubermaticv1.RestorePhaseCompleted, nil
		})
		if err != nil {
			b.Fatal(err)
		}
		total := time.Since(start)
		var verify, teardown, rebuild float64
		for _, svc := range env.ServicesOf("restorer") {
			for step, v := range map[string]*float64{"verify": &verify, "teardown": &teardown, "rebuild": &rebuild} {
				got, err := svc.Metric(ctx, "etcdbackup_restore_step_duration_seconds", map[string]string{"step": step})
				if err != nil {
					b.Fatal(err)
				}
				*v += got
			}
		}
		var fetch, restore, peak, file, anon float64
		for _, s := range k.Steps()[stepsBefore:] {
			r := stepReport(b, s.Log)
			fetch, restore = max(fetch, r.Fetch), max(restore, r.Restore)
			peak, file, anon = max(peak, r.Peak), max(file, r.File), max(anon, r.Anon)
		}
		b.ReportMetric(float64(dbSize)/(1<<20), "db-MiB")
		b.ReportMetric(float64(backup.Size)/(1<<20), "stored-MiB")
		b.ReportMetric(verify, "verify-s")
		b.ReportMetric(teardown, "teardown-s")
		b.ReportMetric(fetch, "download-s")
		b.ReportMetric(restore, "restore-s")
		b.ReportMetric(rebuild-fetch-restore, "wait-s")
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(peak/(1<<20), "restore-step-peak-RSS-MiB")
		b.ReportMetric(file/(1<<20), "restore-step-peak-file-MiB")
		b.ReportMetric(anon/(1<<20), "restore-step-peak-anon-MiB")
		b.Logf("%s", rs.Status.Message)
	}
}

type restoreFailed struct{ msg string }

func (r *restoreFailed) Error() string { return "restore failed: " + r.msg }

// stepRecord is the restore step's last log line.
type stepRecord struct {
	Msg     string  `json:"msg"`
	Fetch   float64 `json:"fetch_seconds"`
	Restore float64 `json:"restore_seconds"`
	// Peak is its own VmHWM (getrusage cannot give that for a child of a large process);
	// Anon and File the sampled peaks of its anonymous and file-backed resident memory.
	Peak float64 `json:"peak_rss_bytes"`
	Anon float64 `json:"peak_anon_bytes"`
	File float64 `json:"peak_file_bytes"`
}

func stepReport(b *testing.B, log string) stepRecord {
	b.Helper()
	for _, line := range strings.Split(log, "\n") {
		var rec stepRecord
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "member restored" {
			return rec
		}
	}
	b.Fatalf("no 'member restored' line in the restore step's log:\n%s", log)
	return stepRecord{}
}
