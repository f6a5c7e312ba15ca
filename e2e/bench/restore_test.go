package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// BenchmarkRestore backs up a 3-member etcd of ETCDBACKUP_BENCH_MIB MiB (default 256; the
// data as ETCDBACKUP_BENCH_DATA says, see fillData) and restores it through the restorer, the
// real restore step and 3 embedded members. Reported: verify (the restorer's streaming check),
// download and restore (the slowest member's restore step: fetch with checks, then etcdutl),
// wait (the rest of the rebuild: members starting until etcd is healthy and the restorer sees
// it), the whole restore, and the restore step's peak RSS. Side by side in the same run, R1's
// yardstick (stockRestore): the same etcd's snapshot downloaded with another S3 client and
// restored with etcdutl, and the ratios of the restore step and of the whole restore to it.
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
	dbSize := fillData(b, ctx, cli, k.ClientURLs()[0], mib)
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
	stock := stockRestore(b, ctx, env, cli)

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
		b.ReportMetric(stock.download.Seconds(), "stock-download-s")
		b.ReportMetric(stock.restore.Seconds(), "stock-restore-s")
		b.ReportMetric(stock.members.Seconds(), "stock-3-members-s")
		b.ReportMetric((fetch+restore)/stock.members.Seconds(), "R1-step/stock-3-members")
		b.ReportMetric((fetch+restore)/stock.total().Seconds(), "R1-step/stock-alone")
		b.ReportMetric(total.Seconds()/stock.total().Seconds(), "R1-total/stock-alone")
		b.Logf("R1 restore step on 3 members at once (download and restore, the slowest) %.2fs vs stock on 3 members "+
			"at once %.2fs: %.3f× (target ≤ 1.3×); vs stock on one member alone (download %.2fs + etcdutl restore "+
			"%.2fs): %.3f×; the whole restore %.2fs, %.3f× that; restore step peak RSS %.1f MiB",
			fetch+restore, stock.members.Seconds(), (fetch+restore)/stock.members.Seconds(), stock.download.Seconds(),
			stock.restore.Seconds(), (fetch+restore)/stock.total().Seconds(), total.Seconds(),
			total.Seconds()/stock.total().Seconds(), peak/(1<<20))
		reportTarget("R1", (fetch+restore)/stock.members.Seconds(), 1.3, "×", fmt.Sprintf(
			"restore step on 3 members %.2fs against download + etcdutl restore on 3 members %.2fs, %.0f MiB "+
				"database; the step's peak RSS %.1f MiB", fetch+restore, stock.members.Seconds(),
			float64(dbSize)/(1<<20), peak/(1<<20)))
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

type stockTimes struct {
	// download and restore: one member's, alone; members: the slowest of three members'
	// download and restore run at once, as the restore step runs on every member.
	download, restore, members time.Duration
}

func (s stockTimes) total() time.Duration { return s.download + s.restore }

// stockRestore is R1's yardstick, on the same etcd and S3 server: the etcd's snapshot (what
// `etcdctl snapshot save` writes) stored as a plain object, then timed: its download to a file
// with minio-go's FGetObject (an S3 client, not this project's restore step) and etcdutl's
// snapshot restore of it into a new data dir, with the hash check the restore step runs too;
// first for one member alone, then for three members at once.
func stockRestore(b *testing.B, ctx context.Context, env *sandbox.Env, cli *clientv3.Client) stockTimes {
	b.Helper()
	dir := b.TempDir()
	db := filepath.Join(dir, "snapshot.db")
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(db)
	if err != nil {
		b.Fatal(err)
	}
	_, err = io.Copy(f, rc)
	_ = rc.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	const key = "stock-restore/snapshot.db"
	if _, err := env.S3.Client().FPutObject(ctx, sandbox.Bucket, key, db, minio.PutObjectOptions{}); err != nil {
		b.Fatal(err)
	}
	if err := os.Remove(db); err != nil {
		b.Fatal(err)
	}
	var t stockTimes
	member := func(name string) (download, restore time.Duration, err error) {
		path := filepath.Join(dir, name+".db")
		start := time.Now()
		if err := env.S3.Client().FGetObject(ctx, sandbox.Bucket, key, path, minio.GetObjectOptions{}); err != nil {
			return 0, 0, err
		}
		download = time.Since(start)
		start = time.Now()
		const peer = "http://127.0.0.1:2380"
		err = etcdsnapshot.NewV3(zap.NewNop()).Restore(etcdsnapshot.RestoreConfig{SnapshotPath: path, Name: name,
			OutputDataDir: filepath.Join(dir, name), PeerURLs: []string{peer}, InitialCluster: name + "=" + peer,
			InitialClusterToken: "stock"})
		restore = time.Since(start)
		if rerr := os.RemoveAll(filepath.Join(dir, name)); err == nil {
			err = rerr
		}
		if rerr := os.Remove(path); err == nil {
			err = rerr
		}
		return download, restore, err
	}
	if t.download, t.restore, err = member("alone"); err != nil {
		b.Fatal(err)
	}
	var g errgroup.Group
	var mu sync.Mutex
	for i := range 3 {
		g.Go(func() error {
			d, r, err := member("member-" + strconv.Itoa(i))
			mu.Lock()
			t.members = max(t.members, d+r)
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return t
}
